"""How an optimum and a frontier are chosen among candidates: tolerances and ties.

Shared by the fast search and the brute force, so that both answer the same
question. Values closer than ``LAT_ATOL`` seconds or ``ACC_ATOL`` accuracy are
tied (floating-point sums of the same terms in another order differ by far less).

- P_lat: minimize latency subject to accuracy >= bound - ACC_ATOL; among tied
  latencies the higher accuracy; then the tie key.
- P_acc: maximize accuracy subject to latency <= bound + LAT_ATOL; among tied
  accuracies the lower latency; then the tie key.
- Pareto: points no other point beats by more than the tolerance in one
  objective while being within the tolerance or better in the other; each
  group of tied points is represented by its smallest tie key.

The tie key is ``(L, D, P, T)``: fewer partitions, then lower tiers compared
lexicographically on the tier tuple (D_1, .., D_L), then earlier cut points
(lexicographic on P), then the lower threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LAT_ATOL", "ACC_ATOL", "OBJECTIVES", "select_best", "pareto_select", "unbeaten"]

LAT_ATOL = 1e-9
ACC_ATOL = 1e-9
OBJECTIVES = ("min_latency", "max_accuracy")

Key = tuple  # (L, D tuple, P tuple, threshold)


def select_best(
    lat: np.ndarray, acc: np.ndarray, keys: Sequence[Key], objective: str, bound: float | None
) -> int | None:
    """Index of the optimum among candidates, or None if none is feasible."""
    lat = np.asarray(lat, dtype=np.float64)
    acc = np.asarray(acc, dtype=np.float64)
    if objective == "min_latency":
        ok = np.ones(lat.shape, bool) if bound is None else acc >= bound - ACC_ATOL
        if not ok.any():
            return None
        v = lat[ok].min()
        ok &= lat <= v + LAT_ATOL
        a = acc[ok].max()
        ok &= acc >= a - ACC_ATOL
    elif objective == "max_accuracy":
        ok = np.ones(lat.shape, bool) if bound is None else lat <= bound + LAT_ATOL
        if not ok.any():
            return None
        a = acc[ok].max()
        ok &= acc >= a - ACC_ATOL
        v = lat[ok].min()
        ok &= lat <= v + LAT_ATOL
    else:
        raise ValueError(f"objective: expected one of {list(OBJECTIVES)}, got {objective!r}")
    idx = np.flatnonzero(ok)
    return int(min(idx, key=lambda i: keys[i]))


def unbeaten(lat: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats beyond the tolerances (ties kept).

    A point is beaten by one with latency lower beyond ``LAT_ATOL`` and accuracy at
    least as high (within ``ACC_ATOL``), or with accuracy higher beyond ``ACC_ATOL``
    and latency within ``LAT_ATOL``. The indices come in (latency, -accuracy) order.
    """
    order = np.lexsort((-acc, lat))
    sl, sa = lat[order], acc[order]
    pm = np.maximum.accumulate(sa)
    i1 = np.searchsorted(sl, sl - LAT_ATOL, side="left") - 1
    beaten = (i1 >= 0) & (pm[np.maximum(i1, 0)] >= sa - ACC_ATOL)
    i2 = np.searchsorted(sl, sl + LAT_ATOL, side="right") - 1
    beaten |= pm[i2] > sa + ACC_ATOL
    return order[~beaten]


def pareto_select(lat: np.ndarray, acc: np.ndarray, keys: Sequence[Key]) -> list[int]:
    """Indices of the frontier (sorted by latency), one per group of tied points.

    ``keys`` is only indexed at the few points that survive (it may decode lazily).
    """
    lat = np.asarray(lat, dtype=np.float64)
    acc = np.asarray(acc, dtype=np.float64)
    if lat.size == 0:
        return []
    surv = unbeaten(lat, acc)
    # group tied survivors (within tolerance in both), keep the smallest key of each group
    surv = sorted(surv.tolist(), key=lambda i: (lat[i], -acc[i]))
    out: list[int] = []
    group: list[int] = []
    for i in surv:
        if group and (
            lat[i] - lat[group[-1]] > LAT_ATOL or abs(acc[i] - acc[group[-1]]) > ACC_ATOL
        ):
            out.append(min(group, key=lambda j: keys[j]))
            group = []
        group.append(i)
    if group:
        out.append(min(group, key=lambda j: keys[j]))
    return out
