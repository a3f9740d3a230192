"""Plans of configurations chosen without a search: one given configuration, and the baselines.

:func:`make_plan` turns one configuration (threshold, cut points, tiers) into a
:class:`~earlyexit.formats.Plan` with its estimate; PORTEND's three baselines
(edge-only, cloud-only, Neurosurgeon's best single split) are such plans. All
are re-exported by :mod:`earlyexit.planner.api`.

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> sorted(baselines(synthetic_profile(6), "portend-aws"))
    ['cloud_only', 'edge_only', 'neurosurgeon']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from earlyexit.formats import PartitionPlan, Plan, Profile, Topology
from earlyexit.planner.latency import CostModel, evaluate
from earlyexit.planner.search import Candidate
from earlyexit.planner.topology import resolve_profile, resolve_topology

__all__ = ["make_plan", "baselines", "edge_only", "cloud_only", "neurosurgeon"]

ProfileLike = Profile | str | os.PathLike[str] | Mapping[str, Any]
TopologyLike = Topology | str | os.PathLike[str] | Mapping[str, Any]


def make_plan(
    cm: CostModel,
    threshold: float,
    cuts: Sequence[int],
    tiers: Sequence[int],
    estimator: str = "portend",
    objective: str = "min_latency",
    constraint: Mapping[str, float] | None = None,
) -> Plan:
    """Build a :class:`~earlyexit.formats.Plan` for one configuration (estimated with ``evaluate``).

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> from earlyexit.planner.topology import resolve_topology
        >>> cm = CostModel(synthetic_profile(6), resolve_topology("portend-aws"))
        >>> make_plan(cm, 0.0, [6], [0]).partitions[0].last_block
        6
    """
    est = evaluate(
        cm.profile, cm.topology, threshold, list(cuts), list(tiers), estimator, cost_model=cm
    )
    parts, prev = [], 0
    for c, d in zip(cuts, tiers, strict=False):
        parts.append(
            PartitionPlan(
                first_block=prev + 1,
                last_block=int(c),
                tier=int(d),
                tier_name=cm.topology.tiers[d].name,
            )
        )
        prev = int(c)
    extra = {
        "model": cm.profile.model,
        "dataset": cm.profile.dataset,
        "num_blocks": cm.profile.num_blocks,
    }
    if cm.profile.extra.get("model_digest"):  # export compares it with the model it exports
        extra["model_digest"] = cm.profile.extra["model_digest"]
    if cm.topology.name:
        extra["topology"] = cm.topology.name
    return Plan(
        threshold=float(threshold),
        partitions=tuple(parts),
        estimate=est,
        estimator=estimator,
        objective=objective,
        constraint=dict(constraint or {}),
        profile_digest=cm.profile.digest(),
        topology_digest=cm.topology.digest(),
        extra=extra,
    )


def _from_candidate(
    cm: CostModel, cand: Candidate, estimator: str, objective: str, constraint: Mapping[str, float]
) -> Plan:
    return make_plan(cm, cand.threshold, cand.cuts, cand.tiers, estimator, objective, constraint)


# ---------------------------------------------------------------------- baselines


def _cm(profile: ProfileLike, topology: TopologyLike) -> CostModel:
    return CostModel(resolve_profile(profile), resolve_topology(topology))


def edge_only(profile: ProfileLike, topology: TopologyLike, estimator: str = "portend") -> Plan:
    """All N blocks on the source tier, no early exit.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> edge_only(synthetic_profile(6), "portend-aws").tier_indices
        (0,)
    """
    cm = _cm(profile, topology)
    return make_plan(cm, 0.0, [cm.n], [cm.source], estimator, "edge_only")


def cloud_only(profile: ProfileLike, topology: TopologyLike, estimator: str = "portend") -> Plan:
    """All N blocks on the last tier, no early exit.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> cloud_only(synthetic_profile(6), "portend-aws").tier_indices
        (2,)
    """
    cm = _cm(profile, topology)
    return make_plan(cm, 0.0, [cm.n], [cm.m - 1], estimator, "cloud_only")


def neurosurgeon(profile: ProfileLike, topology: TopologyLike, estimator: str = "portend") -> Plan:
    """Neurosurgeon: one split point between the source tier and the last tier, no early exit, full DNN.

    The split after block p (0..N) runs blocks 1..p on the source and p+1..N on
    the last tier; p = 0 is cloud-only and p = N edge-only. The fastest split
    wins (ties: fewer partitions, then the earlier split).

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> neurosurgeon(synthetic_profile(6), "portend-aws").partitions[-1].last_block
        6
    """
    cm = _cm(profile, topology)
    n, src, last = cm.n, cm.source, cm.m - 1
    options: list[tuple[list[int], list[int]]] = [([n], [src])]
    if last != src:
        options.append(([n], [last]))
        options += [([p, n], [src, last]) for p in range(1, n)]
    best = None
    for cuts, tiers in options:
        est = evaluate(cm.profile, cm.topology, 0.0, cuts, tiers, estimator, cost_model=cm)
        key = (est.latency_s, len(cuts), cuts)
        if best is None or key < best[0]:
            best = (key, cuts, tiers)
    if best is None:  # pragma: no cover - options always holds edge-only
        raise RuntimeError("neurosurgeon: no option")
    return make_plan(cm, 0.0, best[1], best[2], estimator, "neurosurgeon")


def baselines(
    profile: ProfileLike, topology: TopologyLike, estimator: str = "portend"
) -> dict[str, Plan]:
    """The three baselines of PORTEND: ``edge_only``, ``cloud_only``, ``neurosurgeon``.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> sorted(baselines(synthetic_profile(6), "portend-aws"))
        ['cloud_only', 'edge_only', 'neurosurgeon']
    """
    prof, topo = resolve_profile(profile), resolve_topology(topology)
    return {
        "edge_only": edge_only(prof, topo, estimator),
        "cloud_only": cloud_only(prof, topo, estimator),
        "neurosurgeon": neurosurgeon(prof, topo, estimator),
    }
