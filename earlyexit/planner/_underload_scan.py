"""The search under load's evaluation loop: candidates in order, a batch per placement.

:func:`_scan` evaluates candidates of :mod:`earlyexit.planner.underload` under load,
best bound (or accuracy) first, with :func:`~earlyexit.planner._load_many.load_many`
on the candidates of one placement at once, and replays the decisions as if they were
evaluated one by one (the same stopping rule and budget), so batching only evaluates
ahead.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from earlyexit.planner._load_many import load_groups
from earlyexit.planner._select import ACC_ATOL, LAT_ATOL
from earlyexit.planner._underload_bounds import _LOSS_ATOL, _latency, stays
from earlyexit.planner.latency import CostModel

__all__: list[str] = []  # internal to the search under load


Rows = Callable[[np.ndarray], tuple[tuple[int, ...], np.ndarray, np.ndarray]]


def _loaded(
    cm: CostModel, batch: list[tuple[tuple[int, ...], np.ndarray, np.ndarray]],
    lam: float, k_cap: int, model: str,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """Loaded latency, loss ratio and accuracy of configurations at several placements
    ((D, cuts (R, L), E (R, L)) each), in one fixed point."""
    delay, loss = load_groups(cm, batch, lam, k_cap, model)
    out, at = [], 0
    for d, cuts, e in batch:
        n = cuts.shape[0]
        lat = _latency(cm, cuts, d, e[None], stays(e)[None])[0]
        out.append((lat + delay[at : at + n], loss[at : at + n], (cm.acc[cuts] * e).sum(axis=1)))
        at += n
    return out


def _scan(
    cm: CostModel, order: np.ndarray, place: Callable[[int], object], rows: Rows,
    lbs: np.ndarray | None, accs: np.ndarray | None, objective: str, bound: float | None,
    eps: float, lam: float, k_cap: int, model: str, memo: dict | None = None,
    budget: tuple[int, str] = (1_000, "too many configurations to evaluate"),
) -> list[tuple[int, float, float]]:  # fmt: skip
    """Evaluate candidates in ``order`` until none left can win, a batch at a time.

    The decisions are those of evaluating them one by one: P_lat (``objective``
    ``"min_latency"``) stops at the first whose lower bound ``lbs`` exceeds the best
    loaded latency found, P_acc at the first whose accuracy ``accs`` is below the best
    found, ``"all"`` never; a batch only evaluates ahead.
    ``place(i)`` is a key of candidate i's placement, ``rows(idx)`` the placement, cut
    points and E_k of candidates of one placement.

    ``memo`` keeps the values of configurations already evaluated (by placement, cut
    points and E_k), shared by the scans of one search.

    Returns:
        The feasible ones evaluated, as (index, loaded latency, accuracy).

    Raises:
        ValueError: more than ``budget[0]`` could not be ruled out (message ``budget[1]``).
    """
    memo = {} if memo is None else memo
    got: list[tuple[int, float, float]] = []
    best_r, best_a, count, pos, size = math.inf, -math.inf, 0, 0, 32
    while pos < order.size:
        chunk = order[pos : pos + size]
        if objective == "min_latency" and lbs is not None:
            chunk = chunk[lbs[chunk] <= best_r + LAT_ATOL]
        chunk = chunk[: budget[0] + 1 - count]
        pos, size = pos + size, min(4 * size, 512)
        if chunk.size == 0:
            break
        groups: dict[object, list[int]] = {}
        for j, i in enumerate(chunk.tolist()):
            groups.setdefault(place(i), []).append(j)
        r_lat, r_loss, r_acc = np.empty(chunk.size), np.empty(chunk.size), np.empty(chunk.size)
        todo = []
        for js in groups.values():
            d, cuts, e = rows(chunk[js])
            keys = [(d, *cr, *er) for cr, er in zip(cuts.tolist(), e.tolist(), strict=True)]
            new = [j for j, kk in enumerate(keys) if kk not in memo]
            todo.append((js, d, cuts, e, keys, new))
        fresh = [
            (d, cuts[new], e[new], [keys[j] for j in new]) for _, d, cuts, e, keys, new in todo
        ]
        batch = [(d, cuts, e) for d, cuts, e, kk in fresh if kk]
        if batch:  # every placement of the chunk in one fixed point
            vals = _loaded(cm, batch, lam, k_cap, model)
            for kks, v in zip([kk for *_, kk in fresh if kk], vals, strict=True):
                for kk, *val in zip(kks, *v, strict=True):
                    memo[kk] = val
        for js, _d, _cuts, _e, keys, _new in todo:
            r_lat[js], r_loss[js], r_acc[js] = np.array([memo[kk] for kk in keys]).T
        for j, i in enumerate(chunk.tolist()):
            if objective == "min_latency" and lbs is not None and lbs[i] > best_r + LAT_ATOL:
                return got
            a = float(r_acc[j]) if accs is None else float(accs[i])
            if objective == "max_accuracy" and a < best_a - ACC_ATOL:
                return got
            count += 1
            if count > budget[0]:
                raise ValueError(budget[1])
            r = float(r_lat[j])
            if not (r_loss[j] <= eps + _LOSS_ATOL and math.isfinite(r)):
                continue
            if objective == "max_accuracy" and bound is not None and r > bound + LAT_ATOL:
                continue
            got.append((i, r, a))
            best_r, best_a = min(best_r, r), max(best_a, a)
    return got
