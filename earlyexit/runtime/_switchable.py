"""Switchable deployments: every candidate plan's workers started at once, one client.

How a switch works, and why no sample is lost or answered twice, is described
in :mod:`earlyexit.runtime.adaptive`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit.formats import Manifest, Plan, Topology
from earlyexit.formats.trace import LinkTrace
from earlyexit.runtime._launch import (
    Running,
    check_settings,
    fit_topology,
    runner_specs,
    start_client,
    synthetic_size,
    worker_template,
)
from earlyexit.runtime.chain import check_threshold
from earlyexit.runtime.client import Client
from earlyexit.runtime.policies import policy_text

__all__ = ["Candidate", "SwitchableDeployment", "load_candidates", "deploy_switchable"]


@dataclass(frozen=True)
class Candidate:
    """One plan a switchable deployment can run.

    Attributes:
        threshold: its exit threshold.
        tiers: the tier of each partition.
        blocks: the 1-based block of each partition's exit (None: unknown).
        bundle: its bundle directory (None for a synthetic model).
        plan: the plan itself, if known (a bundle's manifest carries it).
    """

    threshold: float
    tiers: tuple[int, ...]
    blocks: tuple[int | None, ...]
    bundle: str | None = None
    plan: Plan | None = None


class SwitchableDeployment(Running):
    """Every candidate's workers, shared links, one client; :meth:`use` picks the plan.

    Attributes:
        client: submits inputs and collects every plan's results.
        candidates: the plans, in order (a plan index is a position here).
        active: the index of the plan new samples are sent under.
        epoch: the ``time.monotonic()`` at which a link trace starts (None: no trace).
        source: the source tier.
    """

    def __init__(self, client: Client, candidates: list[Candidate], routes: list[list[str]],
                 source: int, epoch: float | None, input_shape: tuple[int, ...],
                 cleanup: weakref.finalize, log_dir: Path) -> None:  # fmt: skip
        super().__init__(client, log_dir, input_shape, cleanup)
        self.candidates = candidates
        self._routes = routes
        self.source = source
        self.epoch = epoch
        self.active = -1
        self.use(0)

    def use(self, index: int) -> None:
        """Send the next samples under candidate ``index`` (samples in flight keep theirs).

        Raises:
            ValueError: for an index that is not a candidate's.
        """
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not 0 <= index < len(self.candidates):
            raise ValueError(f"index must be in 0..{len(self.candidates) - 1}, got {index}")
        if index != self.active:
            self.active = int(index)
            self.client.input_route = self._routes[index]
            self.client.route_tiers = (self.source, self.candidates[index].tiers[0])


def load_candidates(bundles: Sequence[str | os.PathLike[str]] | None, synthetic: Mapping[str, Any] | None,
                    plans: Sequence[tuple[float, Sequence[int]]] | None) -> list[Candidate]:  # fmt: skip
    """The candidates: one per bundle (its manifest's plan), or per synthetic ``(threshold, tiers)``.

    Raises:
        ValueError: neither or both of ``bundles`` and ``synthetic``, no plans, bad tiers.
    """
    if (bundles is None) == (synthetic is None):
        raise ValueError("give exactly one of bundles= (bundle directories) or synthetic= (kwargs)")
    if bundles is not None:
        if isinstance(bundles, (str, os.PathLike)) or not len(bundles):
            raise ValueError("bundles must be a non-empty list of bundle directories")
        out = []
        for b in bundles:
            m = Manifest.load(b)
            out.append(Candidate(float(m.threshold), tuple(m.plan.tier_indices),
                                 tuple(m.plan.cut_points), str(Path(b).resolve()), m.plan))  # fmt: skip
        return out
    if not plans:
        raise ValueError("synthetic= needs plans=[(threshold, tiers), ...]")
    num, _ = synthetic_size(synthetic or {})
    out = []
    for threshold, tiers in plans:
        tiers = tuple(int(t) for t in tiers)
        if len(tiers) != num or len(set(tiers)) != num:
            raise ValueError(f"each plan needs {num} distinct tiers, got {list(tiers)}")
        out.append(Candidate(check_threshold(threshold), tiers, (None,) * num))
    return out


def deploy_switchable(
    bundles: Sequence[str | os.PathLike[str]] | None = None,
    *,
    synthetic: Mapping[str, Any] | None = None,
    plans: Sequence[tuple[float, Sequence[int]]] | None = None,
    topology: Topology | str | None = None,
    trace: LinkTrace | None = None,
    trace_lead_s: float = 0.0,
    apply_slowdown: bool = True,
    precision: str = "fp32",
    start_timeout_s: float = 60.0,
    niceness: int | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    policy: str | Mapping[str, Any] | None = None,
) -> SwitchableDeployment:
    """Start every candidate plan's workers over one set of emulated links.

    Args:
        bundles: one bundle directory per candidate plan.
        synthetic: instead, :class:`~earlyexit.runtime.synthetic.SyntheticModel`
            kwargs, with ``plans`` ``[(threshold, tiers), ...]`` (tests).
        plans: the synthetic candidates.
        topology: links, MTU, slowdowns, source and destination (None: one host,
            no emulation, source and destination 0).
        trace: makes its link follow this trace (needs ``topology``).
        trace_lead_s: the trace starts this long after the links start (so that
            the workers are up when it does); :attr:`SwitchableDeployment.epoch`.
        apply_slowdown: emulate each tier's slowdown.
        precision: bundle precision.
        start_timeout_s, niceness: as :func:`~earlyexit.runtime.deployment.deploy`.
        log_dir: where process logs go (default: a temporary folder, removed on close).
        policy: every worker's exit policy, as for
            :func:`~earlyexit.runtime.deployment.deploy` (docs/load.md), checked
            against each candidate's exits; not ``adaee``, which learns from the
            feedback of one first tier (each candidate has its own).

    Returns:
        The running deployment, candidate 0 in use.

    Raises:
        ValueError: bad candidates, tiers outside the topology, a trace without topology.
        RuntimeError: a process failed to start.
    """
    check_settings(start_timeout_s, precision, niceness)
    cands = load_candidates(bundles, synthetic, plans)
    topo = fit_topology(topology, [c.tiers for c in cands])
    if trace is not None and (topo is None or not isinstance(trace, LinkTrace)):
        raise ValueError("trace must be a LinkTrace and needs a topology")
    if trace is not None and topo is not None and trace.link >= len(topo.links):
        raise ValueError(f"trace.link {trace.link} but the topology has {len(topo.links)} link(s)")
    template = worker_template()  # WorkerOptions' defaults, as deploy()'s
    text = policy_text(policy)
    if json.loads(text)["policy"] == "adaee":
        raise ValueError(
            "policy: adaee learns from the feedback sent to one first tier, and each "
            "candidate plan has its own; use threshold, probabilities or knapsack here"
        )
    # the policy checked against every candidate's exits, before anything starts
    templates = [
        dataclasses.replace(template, partition=len(c.tiers) - 1, num_partitions=len(c.tiers),
                            threshold=c.threshold, policy=text)
        for c in cands
    ]  # fmt: skip
    st = start_client(topo, apply_slowdown=apply_slowdown, log_dir=log_dir, keep_logs=False,
                      prefix="earlyexit-adapt-", start_timeout_s=start_timeout_s,
                      niceness=niceness)  # fmt: skip
    epoch = None
    try:
        if topo is not None:
            epoch = time.monotonic() + float(trace_lead_s)
            st.start_links(trace, epoch)
        routes = []
        for ci, c in enumerate(cands):
            specs = runner_specs(c.bundle, synthetic, len(c.tiers), precision)
            _, first = st.start_chain(specs, c.tiers, c.blocks, c.threshold, templates[ci],
                                      prefix=f"plan{ci}-", measure_links=True)  # fmt: skip
            routes.append(first)
        if cands[0].bundle is not None:
            shape = tuple(Manifest.load(cands[0].bundle).input_shape)
        else:
            _, shape = synthetic_size(synthetic or {})
    except BaseException:
        st.cleanup()
        raise
    return SwitchableDeployment(st.client, cands, routes, st.source, epoch, shape, st.cleanup,
                                st.log_path)  # fmt: skip
