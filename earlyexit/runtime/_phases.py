"""Tables of trace runs: per phase, measured against the model, rounds pooled, settling times.

Pure functions over :func:`~earlyexit.runtime.adaptive.run_trace` outputs (no
deployment, no sockets); :func:`~earlyexit.runtime.adaptive.compare_on_trace`
builds its table with them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from earlyexit.formats.trace import LinkTrace
from earlyexit.runtime.replan import Replanner

__all__ = ["gains", "phase_model", "phase_table", "pool_rounds", "settling_times"]


def phase_table(
    runs: Mapping[str, Mapping[str, Any]],
    trace: LinkTrace,
    duration_s: float,
    settle_s: float,
    best: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Per phase and per mode: mean and median latency and accuracy of the samples sent.

    A phase is a step of the trace or, with ``best``, a run of consecutive steps
    with the same best candidate (a ramp's steps merged where the oracle keeps
    its plan). Samples of the first ``settle_s`` after each phase's start (but
    the first) are left out: the controller settles then (docs/adaptive.md);
    ``{mode}_all_latency_ms`` includes them.

    Args:
        runs: mode -> :func:`run_trace`'s output.
        trace, duration_s: the trace and how long the runs lasted.
        settle_s: time after each change before samples count.
        best: the best candidate of each step of the trace (the oracle's choice).

    Returns:
        One row per phase: ``start``, ``end``, ``bandwidth_mbps`` (min, max),
        ``propagation_ms``, ``best`` and, per mode, ``{mode}_latency_ms``,
        ``{mode}_median_ms``, ``{mode}_accuracy``, ``{mode}_samples``,
        ``{mode}_degraded`` (in the whole phase), ``{mode}_all_latency_ms``.

    Raises:
        ValueError: ``best`` of another length than the trace's steps.
    """
    steps = trace.phases(duration_s)
    if best is not None and len(best) != len(steps):
        raise ValueError(f"best must give one index per trace step ({len(steps)}), got {len(best)}")
    phases: list[list[Any]] = []
    for k, (a, b, step) in enumerate(steps):
        tag = best[k] if best is not None else k
        if phases and phases[-1][3] == tag:
            phases[-1][1] = b
            phases[-1][2].append(step)
        else:
            phases.append([a, b, [step], tag])
    rows = []
    for a, b, st, tag in phases:
        bws = [x.bandwidth_mbps for x in st]
        row: dict[str, Any] = {"start": a, "end": b, "bandwidth_mbps": [min(bws), max(bws)],
                               "propagation_ms": st[0].propagation_ms,
                               "best": tag if best is not None else None}  # fmt: skip
        lo = a + (settle_s if a > 0 else 0.0)
        for mode, run in runs.items():
            phase = [x for x in run["samples"] if a <= x["t"] < b]
            settled = [x for x in phase if x["t"] >= lo]
            lat = [x["latency_s"] for x in settled]
            acc = [x["correct"] for x in settled if x["correct"] is not None]
            row[f"{mode}_samples"] = len(settled)
            row[f"{mode}_degraded"] = sum(bool(x.get("degraded")) for x in phase)
            row[f"{mode}_latency_ms"] = 1e3 * float(np.mean(lat)) if lat else None
            row[f"{mode}_median_ms"] = 1e3 * float(np.median(lat)) if lat else None
            row[f"{mode}_accuracy"] = float(np.mean(acc)) if acc else None
            row[f"{mode}_all_latency_ms"] = (
                1e3 * float(np.mean([x["latency_s"] for x in phase])) if phase else None
            )
        rows.append(row)
    return rows


def pool_rounds(rounds: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every round's samples, switches and estimates per mode, in one run per mode.

    Sample times are trace times, so :func:`phase_table` on the pooled runs
    counts every round's settled samples of a phase together.

    Args:
        rounds: :func:`interleave_rounds`' output.

    Returns:
        ``{mode: {"samples", "switches", "replan_ms", "estimates", "mode", "rounds"}}``
        (each list the rounds' lists one after the other, each item tagged with its ``round``).
    """
    pooled: dict[str, dict[str, Any]] = {}
    for r, runs in enumerate(rounds):
        for mode, run in runs.items():
            dst = pooled.setdefault(mode, {"samples": [], "switches": [], "replan_ms": [],
                                           "estimates": [], "mode": mode, "rounds": 0})  # fmt: skip
            dst["rounds"] += 1
            for key in ("samples", "switches", "estimates"):
                dst[key].extend({**item, "round": r} for item in run.get(key, []))
            dst["replan_ms"].extend(run.get("replan_ms", []))
    return pooled


def phase_model(
    replanner: Replanner, trace: LinkTrace, rows: Sequence[Mapping[str, Any]], settle_s: float
) -> list[dict[str, float]]:
    """The model's static and oracle latency of each phase, over its settled part.

    Static is the replanner's plan in force (``current``: the compared runs'
    candidate 0) throughout, the oracle the best plan of each step (over the
    replanner's candidates, or over the whole search space with
    ``candidates=None``: what no plan at all could beat); each is the planner's
    estimate at the step's bandwidth and delay, averaged over the phase's
    settled time ``[start + settle_s, end)`` (no settling in the first phase)
    as a one-at-a-time source sees it: a time-weighted harmonic mean, since a
    sample leaves when the previous one is answered.

    Args:
        replanner: holds the profile, the static plan, the candidates and the base topology.
        trace: the trace.
        rows: :func:`phase_table`'s rows (``start``, ``end``).
        settle_s: as given to :func:`phase_table`.

    Returns:
        Per row ``{"model_static_ms", "model_oracle_ms", "model_oracle_speedup"}``
        (NaN for a phase no longer than the settling time).

    Raises:
        ValueError: a step where no plan meets the replanner's constraint.
    """
    base, static = replanner.topology, replanner.current
    out = []
    for row in rows:
        a, b = float(row["start"]), float(row["end"])
        lo = a + (settle_s if a > 0 else 0.0)
        w_sum = inv_static = inv_oracle = 0.0
        for s, e, _ in trace.phases(b):
            w = min(e, b) - max(s, lo)
            if w <= 0:
                continue
            topo = trace.topology_at(base, max(s, lo))
            oracle = replanner._latency(replanner.best(topo), topo)
            w_sum += w
            inv_static += w / replanner._latency(static, topo)
            inv_oracle += w / oracle
        if w_sum <= 0:
            nan = math.nan
            out.append(
                {"model_static_ms": nan, "model_oracle_ms": nan, "model_oracle_speedup": nan}
            )
            continue
        st, orc = 1e3 * w_sum / inv_static, 1e3 * w_sum / inv_oracle
        out.append(
            {"model_static_ms": st, "model_oracle_ms": orc, "model_oracle_speedup": st / orc}
        )
    return out


def settling_times(
    run: Mapping[str, Any], trace: LinkTrace, duration_s: float, best: Sequence[int]
) -> list[dict[str, Any]]:
    """How long after each change of the oracle's plan the adaptive run switched to it.

    Args:
        run: an adaptive :func:`run_trace` output (``switches`` with ``t`` and ``to``).
        trace, duration_s: the trace and the run's length.
        best: the best candidate of each step of the trace.

    Returns:
        Per change of ``best``: ``{"t": change time, "to": the new best, "after_s":
        delay to the first switch to it at or after the change; negative when the
        run had already switched to it since the previous change (it anticipated);
        None: not before the next change}``.
    """
    steps = trace.phases(duration_s)
    changes = [(steps[k][0], best[k]) for k in range(1, len(steps)) if best[k] != best[k - 1]]
    switches = sorted(run.get("switches", []), key=lambda sw: sw["t"])
    out = []
    for j, (t, to) in enumerate(changes):
        since = changes[j - 1][0] if j else -math.inf
        until = changes[j + 1][0] if j + 1 < len(changes) else math.inf
        before = [sw for sw in switches if since <= sw["t"] < t]
        hit = [sw["t"] for sw in switches if t <= sw["t"] < until and sw["to"] == to]
        if before and before[-1]["to"] == to:  # already there when the change came
            after: float | None = before[-1]["t"] - t
        else:
            after = (min(hit) - t) if hit else None
        out.append({"t": t, "to": to, "after_s": after})
    return out


def gains(row: dict[str, Any], ratios: Sequence[float | None]) -> None:
    """Add the measured speed-ups, the adaptive run's share and the rounds' ratios to ``row``."""
    st, ad, orc = (row.get(f"{m}_latency_ms") for m in ("static", "adaptive", "oracle"))
    row["oracle_speedup"] = st / orc if st and orc else None
    row["adaptive_speedup"] = st / ad if st and ad else None
    row["adaptive_oracle"] = ad / orc if ad and orc else None
    # the share of the latency the oracle saves that the adaptive run saves too (none to share
    # when the oracle saves under 5 %: the ratio would be noise over noise)
    gain = row["oracle_speedup"]
    row["adaptive_share"] = (st - ad) / (st - orc) if gain and ad and gain >= 1.05 else None
    vals = [v for v in ratios if v is not None]
    row["adaptive_oracle_rounds"] = list(ratios)
    row["adaptive_oracle_spread"] = max(vals) - min(vals) if vals else None
