"""A plain Python brute force of the model: the reference the fast search is tested against.

It enumerates every configuration (T, P, D) of the search space, computes E_k,
S_k and the accuracy with the chosen estimator exactly as docs/spec.md writes
them, and the latency with its formula term by term (the runtime's hand-off
cost included), in plain Python floats.
PORTEND's own optimizer was such a loop (30 minutes for ResNet-110 on a
laptop). Use it on small inputs only.

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> from earlyexit.planner.latency import CostModel
    >>> from earlyexit.planner.space import make_space
    >>> from earlyexit.planner.topology import resolve_topology
    >>> cm = CostModel(synthetic_profile(5), resolve_topology("portend-aws"))
    >>> cands = brute_force_candidates(cm, make_space(cm), "portend")
    >>> len(cands[0])  # 11 thresholds x (5*3 + 10*6 + 10*6)
    1485
"""

from __future__ import annotations

from itertools import combinations, permutations

import numpy as np

from earlyexit.planner._select import pareto_select, select_best
from earlyexit.planner.estimators import exact_fractions
from earlyexit.planner.latency import CostModel
from earlyexit.planner.space import SearchSpace

__all__ = ["brute_force_candidates", "brute_force_best", "brute_force_pareto"]


def brute_force_candidates(
    cm: CostModel,
    space: SearchSpace,
    estimator: str = "portend",
) -> tuple[list[float], list[float], list[tuple]]:
    """Latency, accuracy and tie key of every configuration in the space.

    Returns:
        (latencies, accuracies, keys) where a key is ``(L, D, P, T)``.
    """
    n, m = cm.n, cm.m
    src, dst = cm.source, cm.destination
    ct = cm.compute.tolist()
    # the PORTEND terms of a transfer (serialize, transmit, propagate) from the cost
    # model; the runtime's hand-off cost H and its CPU per partition run are added
    # term by term below, from the profile directly, so that the search's folded
    # arrays are checked
    x = (cm.ser + cm.txm + cm.prop[:, :, None]).tolist()
    r = (cm.rser + cm.rtxm + cm.rprop).tolist()
    h = [_hop(cm, w) for w in range(m)]
    run = [_run_cpu(cm, w, h[w]) for w in range(m)]
    lk = [_link_hop(cm, w) for w in range(m)]
    hop = [[(h[a] + h[b]) / 2.0 + (0.0 if a == b else (lk[a] + lk[b]) / 2.0) for b in range(m)]
           for a in range(m)]  # fmt: skip
    acc_b = cm.acc.tolist()
    blocks = [b for b in range(1, n + 1) if space.cut_allowed[b]]
    required = set(space.required)
    samples = cm.profile.samples
    lats: list[float] = []
    accs: list[float] = []
    keys: list[tuple] = []
    for ti in space.t_idx:
        thr = float(cm.thresholds[ti])
        er = cm.er[ti].tolist()
        for n_parts in range(space.min_parts, space.max_parts + 1):
            placements = [
                d
                for d in permutations(range(m), n_parts)
                if all(space.tier_allowed[k, d[k]] for k in range(n_parts))
            ]
            if not placements:
                continue
            for cuts in combinations(blocks, n_parts):
                if not required.issubset(cuts):
                    continue
                if estimator == "portend":
                    e = [er[cuts[0]]] if n_parts > 1 else []
                    for k in range(1, n_parts - 1):
                        e.append(er[cuts[k]] - er[cuts[k - 1]])
                    e.append(1.0 - sum(e))
                    s = [1.0 - sum(e[: k + 1]) for k in range(n_parts)]
                    acc = sum(acc_b[c] * ek for c, ek in zip(cuts, e, strict=False))
                else:
                    if samples is None:
                        raise ValueError("estimator 'exact' needs profile.samples")
                    e, s, acc = exact_fractions(samples.entropy, samples.correct, thr, cuts)
                for d in placements:
                    lat = x[src][d[0]][0] + hop[src][d[0]]
                    prev = 0
                    for k in range(n_parts):
                        lat += (s[k] + e[k]) * (ct[d[k]][prev][cuts[k]] + run[d[k]])
                        if k < n_parts - 1:
                            lat += s[k] * (x[d[k]][d[k + 1]][cuts[k]] + hop[d[k]][d[k + 1]])
                        lat += e[k] * (r[d[k]] + hop[d[k]][dst])
                        prev = cuts[k]
                    lats.append(lat + _client_cooling(cm, lat))
                    accs.append(acc)
                    keys.append((n_parts, d, cuts, thr))
    return lats, accs, keys


def _client_cooling(cm: CostModel, lat: float) -> float:
    """The client's CPU growth after waiting ``lat``, stretched, read from the profile
    directly (docs/spec.md#the-client): the source's encode, the destination's decode."""
    out = 0.0
    for tier, key in ((cm.source, "encode_s"), (cm.destination, "decode_s")):
        curve = cm.profile.devices[cm.topology.tiers[tier].device].client_curve
        if curve is None:
            continue
        waits, cpu = curve["wait_s"], curve[key]
        if lat <= waits[0]:
            grown = 0.0
        elif lat >= waits[-1]:
            grown = cpu[-1] - cpu[0]
        else:
            j = next(i for i in range(1, len(waits)) if lat <= waits[i])
            u = (lat - waits[j - 1]) / (waits[j] - waits[j - 1])
            grown = cpu[j - 1] + u * (cpu[j] - cpu[j - 1]) - cpu[0]
        out += cm.topology.tiers[tier].slowdown * grown
    return out


def _hop(cm: CostModel, tier: int) -> float:
    """``hop_s`` of ``tier``'s device, read from the profile (absent: 0)."""
    dev = cm.profile.devices[cm.topology.tiers[tier].device]
    return 0.0 if dev.hop_s is None else float(dev.hop_s)


def _link_hop(cm: CostModel, tier: int) -> float:
    """``link_hop_s`` of ``tier``'s device, read from the profile (absent: 0)."""
    dev = cm.profile.devices[cm.topology.tiers[tier].device]
    return 0.0 if dev.link_hop_s is None else float(dev.link_hop_s)


def _run_cpu(cm: CostModel, tier: int, hop: float) -> float:
    """``(slowdown - 1) hop_cpu_s`` of ``tier`` (at least ``-hop``), from the profile (absent: 0)."""
    dev = cm.profile.devices[cm.topology.tiers[tier].device]
    cpu = 0.0 if dev.hop_cpu_s is None else float(dev.hop_cpu_s)
    return max(-hop, (float(cm.topology.tiers[tier].slowdown) - 1.0) * cpu)


def brute_force_best(
    cm: CostModel, space: SearchSpace, estimator: str, objective: str, bound: float | None
) -> tuple[float, float, tuple] | None:
    """The optimum (latency, accuracy, key) by enumeration, or None if infeasible."""
    lats, accs, keys = brute_force_candidates(cm, space, estimator)
    i = select_best(np.array(lats), np.array(accs), keys, objective, bound)
    return None if i is None else (lats[i], accs[i], keys[i])


def brute_force_pareto(
    cm: CostModel,
    space: SearchSpace,
    estimator: str,
) -> list[tuple[float, float, tuple]]:
    """The Pareto frontier (latency, accuracy, key) by enumeration, sorted by latency."""
    lats, accs, keys = brute_force_candidates(cm, space, estimator)
    return [
        (lats[i], accs[i], keys[i]) for i in pareto_select(np.array(lats), np.array(accs), keys)
    ]
