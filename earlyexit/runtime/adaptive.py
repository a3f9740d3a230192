"""Adaptive deployments: several candidate plans loaded at once, a controller that switches.

A :class:`SwitchableDeployment` runs every candidate plan (for instance the
:func:`~earlyexit.runtime.replan.candidate_plans` of a bandwidth range, each
exported into its own bundle) over one set of emulated links. Every tier starts,
before the first sample, a worker for each partition that any candidate places
on it, so a switch loads nothing. Which plan a sample runs under is fixed when
the source sends it: the source addresses it to that plan's first worker, and
the sample keeps that plan's partitions and threshold to its result. A switch
is the source sending the next samples to another plan's first worker; samples
in flight finish under the plan they were sent with, so none is lost or
answered twice (one client collects every plan's results, once per id).

Links are measured by the runtime itself (docs/adaptive.md): each sender (a
worker for the link to its next partition, the client for the link its inputs
cross) times its own transfers from send to acknowledgement, minus the time
the receiver reports it held the message (the ``held`` field of acks), and
probes with messages of another size when it needs them. Workers report their
estimates upstream in heartbeats (``links``), so they reach the client in
band. :func:`run_trace` plays the source: one sample at a time, it feeds the
estimates to a :class:`~earlyexit.runtime.replan.Replanner` between samples
(``mode="adaptive"``), or keeps the first plan (``"static"``), or switches at
the trace's true change times to the best candidate of each phase
(``"oracle"``).

Torch-free: bundles are run by ONNX Runtime, plans made by the planner.

Example:
    ```python
    plans = [(0.2, (0, 1)), (0.9, (0, 1))]
    with deploy_switchable(synthetic={"num_partitions": 2}, plans=plans) as d:
        d.use(1); r = d.client.infer(d.inputs(1)[0])
    ```
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from earlyexit.formats import Plan, Topology
from earlyexit.formats.trace import LinkTrace
from earlyexit.runtime._phases import (
    gains,
    phase_model,
    phase_table,
    pool_rounds,
    settling_times,
)
from earlyexit.runtime._switchable import (
    Candidate,
    SwitchableDeployment,
    deploy_switchable,
    load_candidates,
)
from earlyexit.runtime.client import Result
from earlyexit.runtime.replan import Replanner, same_configuration

__all__ = [
    "Candidate",
    "SwitchableDeployment",
    "compare_on_trace",
    "deploy_switchable",
    "interleave_rounds",
    "oracle_choice",
    "phase_model",
    "phase_table",
    "pool_rounds",
    "run_trace",
    "settling_times",
]


# ---------------------------------------------------------------------- the source loop
_MODES = ("adaptive", "static", "oracle")


def _best_index(candidates: Sequence[Plan], replanner: Replanner, topo: Topology) -> int:
    best = replanner.best(topo)
    return next(i for i, c in enumerate(candidates) if same_configuration(c, best))


def oracle_choice(schedule: Sequence[tuple[float, int]], t: float) -> int:
    """The plan the oracle runs at trace time ``t``: that of the last step started by then.

    Args:
        schedule: ``(step start, best candidate)`` per step of the trace, in time order.
        t: trace time (before the first step: the first step's plan).

    Returns:
        The candidate index.
    """
    idx = schedule[0][1]
    for a, i in schedule:
        if a > t:
            break
        idx = i
    return idx


def run_trace(
    dep: SwitchableDeployment,
    x: np.ndarray,
    y: np.ndarray | None,
    mode: str,
    replanner: Replanner,
    trace: LinkTrace,
    duration_s: float,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Play the source for ``duration_s`` of the trace, one sample at a time, cycling ``x``.

    Args:
        dep: a deployment whose candidates carry plans (``Candidate.plan``), in
            the order of ``replanner.candidates``.
        x, y: inputs and labels (labels None: no accuracy).
        mode: ``"adaptive"`` (the replanner switches on the runtime's link
            estimates), ``"static"`` (candidate 0 throughout) or ``"oracle"``
            (the best candidate of each phase, switched at the trace's change times).
        replanner: holds the candidates and the constraint; its clock is the trace's.
        trace: the trace the links follow (it started at ``dep.epoch``).
        duration_s: how long to run, in trace seconds.
        timeout_s: the longest wait for one result.

    Returns:
        ``{"samples": [{"t", "plan", "latency_s", "correct", "partition", "degraded"}...],
        "switches": [{"t", "from", "to", "replan_ms", "links"}...], "replan_ms": [...],
        "estimates": [{"t", "link", "bandwidth_mbps", "propagation_ms"}...]}``.

    Raises:
        ValueError: an unknown mode, or candidates without plans.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    plans = [c.plan for c in dep.candidates]
    if any(p is None for p in plans) or replanner.candidates is None:
        raise ValueError("run_trace needs candidates with plans and a replanner over them")
    if dep.epoch is None:
        raise ValueError("the deployment has no emulated links (no topology): nothing to follow")
    base = replanner.topology
    oracle = [(a, _best_index(replanner.candidates, replanner, trace.topology_at(base, a)))
              for a, _, _ in trace.phases(duration_s)]  # fmt: skip
    dep.use(0)
    wait = dep.epoch - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    seen: dict[tuple[int, int], float] = {}
    out: dict[str, Any] = {"samples": [], "switches": [], "replan_ms": [], "estimates": [],
                           "mode": mode, "late_start_s": max(0.0, -wait)}  # fmt: skip
    i = 0
    while (t := time.monotonic() - dep.epoch) < duration_s:
        if mode == "oracle":
            dep.use(oracle_choice(oracle, t))
        dep.client.poll(0.0)  # take the control messages (acks, heartbeats with estimates)
        dep.client.probe()
        for (a, b), (bw, ms, at) in list(dep.client.link_reports.items()):
            if b != a + 1 or seen.get((a, b), -1.0) >= at:
                continue
            seen[(a, b)] = at
            out["estimates"].append({"t": t, "link": a, "bandwidth_mbps": bw, "propagation_ms": ms})
            if mode != "adaptive":
                continue
            n_before = len(replanner.stats.replan_s)
            sw = replanner.observe(a, bw, ms, now=t)
            if len(replanner.stats.replan_s) > n_before:
                out["replan_ms"].append(1e3 * replanner.stats.replan_s[-1])
            if sw is not None:
                new = next(j for j, p in enumerate(plans) if same_configuration(p, sw.new))
                out["switches"].append({"t": t, "from": dep.active, "to": new,
                                        "replan_ms": 1e3 * sw.replan_s,
                                        "links": {k: [v.bandwidth_mbps, v.propagation_ms]
                                                  for k, v in sw.links.items()}})  # fmt: skip
                dep.use(new)
        plan_idx = dep.active
        r: Result = dep.client.infer(x[i % len(x)], timeout_s)
        out["samples"].append({
            "t": t, "plan": plan_idx, "latency_s": r.latency_s, "partition": r.partition,
            "degraded": r.degraded,
            "correct": None if y is None or r.logits is None else bool(r.prediction == int(y[i % len(x)])),
        })  # fmt: skip
        i += 1
    return out


def interleave_rounds(
    play: Callable[[str], dict[str, Any]], modes: Sequence[str], rounds: int
) -> list[dict[str, dict[str, Any]]]:
    """Run every mode ``rounds`` times, interleaved, the order rotated each round.

    Round ``r`` runs the modes starting from the ``r``-th (A S O, S O A, O A S, ...),
    so that a slow drift of the host touches every mode alike.

    Args:
        play: runs one mode once (a fresh deployment) and returns :func:`run_trace`'s output.
        modes: the modes, in the first round's order.
        rounds: how many rounds (>= 1).

    Returns:
        One ``{mode: run}`` per round, each keyed in the order of ``modes``; every
        run carries ``round`` and ``slot`` (its position in that round's order).

    Raises:
        ValueError: ``rounds`` not an integer >= 1, or no modes.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if not modes:
        raise ValueError("modes must name at least one mode")
    n = len(modes)
    out = []
    for r in range(rounds):
        order = list(modes[r % n :]) + list(modes[: r % n])
        got: dict[str, dict[str, Any]] = {}
        for slot, mode in enumerate(order):
            got[mode] = {**play(mode), "round": r, "slot": slot}
        out.append({m: got[m] for m in modes})
    return out


def compare_on_trace(
    profile: Any,
    topology: Topology | str,
    bundles: Sequence[str | os.PathLike[str]],
    x: np.ndarray,
    y: np.ndarray | None,
    trace: LinkTrace,
    *,
    duration_s: float | None = None,
    settle_s: float = 4.0,
    min_accuracy: float | None = None,
    estimator: str = "exact",
    change: float = 0.3,
    dwell_s: float = 1.0,
    min_gain: float = 0.05,
    modes: Sequence[str] = _MODES,
    start_timeout_s: float = 120.0,
    rounds: int = 1,
) -> dict[str, Any]:
    """Adaptive against static and oracle on one trace: a fresh deployment per run.

    The candidate that is best at the trace's start is the static plan and
    where every mode starts. With ``rounds`` > 1 the modes run interleaved,
    the order rotated each round (:func:`interleave_rounds`); the table pools
    every round's settled samples per phase and mode, and gives each round's
    adaptive/oracle ratio per phase beside it, so the host's drift between runs shows.

    Args:
        profile: the profile the candidates were planned from (object or path).
        topology: the topology (its traced link follows ``trace``).
        bundles: one bundle per candidate plan.
        x, y: inputs (cycled) and labels.
        trace: the link trace.
        duration_s: run length (default: the trace's last step + the previous phase's length).
        settle_s: samples of the first ``settle_s`` after each change are left out of the table.
        min_accuracy, estimator, change, dwell_s, min_gain: the replanner's.
        modes: which of ``adaptive``, ``static``, ``oracle`` to run.
        start_timeout_s: bound on each process's start-up.
        rounds: how many times each mode runs (interleaved; 1: each once, in ``modes``' order).

    Returns:
        ``{"trace", "candidates", "runs": {mode: the first round's run}, "rounds": [{mode:
        run}...], "table", "settle_s", "best", "replan_ms", "settling"}``. ``table`` is
        :func:`phase_table` over the pooled rounds, each row with, besides,
        :func:`phase_model`'s figures, ``degraded`` (the phase of the lowest bandwidth),
        ``oracle_speedup`` and ``adaptive_speedup`` (static's mean latency over theirs),
        ``adaptive_share`` (the part of the latency the oracle saves over static that
        the adaptive run saves; None where the oracle saves under 5 %),
        ``adaptive_oracle`` and, per round, ``adaptive_oracle_rounds`` and their
        ``adaptive_oracle_spread`` (max - min). ``settling`` holds
        :func:`settling_times` per round.

    Raises:
        ValueError: a bad mode or ``rounds``, or no candidate that meets the constraint.
    """
    from earlyexit.planner import resolve_profile, resolve_topology

    prof, topo = resolve_profile(profile), resolve_topology(topology)
    bad = [m for m in modes if m not in _MODES]
    if bad or not modes:
        raise ValueError(f"modes must be among {_MODES}, got {list(modes)}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    cands = load_candidates(bundles, None, None)
    plans = [c.plan for c in cands]
    start_topo = trace.topology_at(topo, 0.0)

    def replanner(plans: list) -> Replanner:
        return Replanner(prof, start_topo, plans[0], min_accuracy=min_accuracy, estimator=estimator,
                         change=change, dwell_s=dwell_s, min_gain=min_gain, candidates=plans)  # fmt: skip

    first = _best_index(plans, replanner(plans), start_topo)
    order = [first] + [i for i in range(len(cands)) if i != first]
    bundles = [bundles[i] for i in order]
    plans = [plans[i] for i in order]
    end = trace.phases()[-1][1] if duration_s is None else float(duration_s)
    n_workers = sum(len(p.partitions) for p in plans)

    def play(mode: str) -> dict[str, Any]:
        with deploy_switchable(bundles, topology=topo, trace=trace,
                               trace_lead_s=3.0 + 2.5 * n_workers,
                               start_timeout_s=start_timeout_s) as dep:  # fmt: skip
            # one sample per plan before the trace starts: the first sample pays for nothing
            for i in range(len(plans)):
                dep.use(i)
                dep.client.infer(x[0], 30.0)
            return run_trace(dep, x, y, mode, replanner(plans), trace, end)

    per_round = interleave_rounds(play, modes, rounds)
    rp = replanner(plans)
    best = [_best_index(plans, rp, trace.topology_at(topo, a)) for a, _, _ in trace.phases(end)]
    table = phase_table(pool_rounds(per_round) if rounds > 1 else per_round[0], trace, end,
                        settle_s, best)  # fmt: skip
    each = [phase_table(runs, trace, end, settle_s, best) for runs in per_round]
    low = min(row["bandwidth_mbps"][0] for row in table)
    for k, (row, model) in enumerate(
        zip(table, phase_model(rp, trace, table, settle_s), strict=True)
    ):
        row.update(model, degraded=row["bandwidth_mbps"][0] == low)
        ad_or = [(t[k].get("adaptive_latency_ms"), t[k].get("oracle_latency_ms")) for t in each]
        gains(row, [a / o if a and o else None for a, o in ad_or])
    return {
        "trace": trace.to_dict(),
        "candidates": [p.to_dict() for p in plans],
        "runs": per_round[0],
        "rounds": per_round,
        "table": table,
        "settle_s": settle_s,
        "best": best,
        "replan_ms": [
            v for runs in per_round for v in runs.get("adaptive", {}).get("replan_ms", [])
        ],
        "settling": [
            settling_times(runs["adaptive"], trace, end, best)
            for runs in per_round
            if "adaptive" in runs
        ],  # fmt: skip
    }
