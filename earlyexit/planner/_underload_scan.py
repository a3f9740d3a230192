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
from earlyexit.planner._underload_bounds import _LOSS_ATOL, _latency, _tier_bounds, stays
from earlyexit.planner.latency import CostModel

__all__: list[str] = []  # internal to the search under load


Rows = Callable[[np.ndarray], tuple[tuple[int, ...], np.ndarray, np.ndarray]]


def _loaded(
    cm: CostModel, batch: list[tuple[tuple[int, ...], np.ndarray, np.ndarray]],
    lam: float, k_cap: int, model: str, details: dict | None = None,
    keys: list[list] | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """Loaded latency, loss ratio and accuracy of configurations at several placements
    ((D, cuts (R, L), E (R, L)) each), in one fixed point.

    With ``details``, each configuration's stations are kept there under its key (from
    ``keys``, per placement): (the :class:`~earlyexit.planner._load_many.Solved`, its
    row, its delay, its loss ratio), for
    :func:`~earlyexit.planner.queueing.estimate_of_solved`.
    """
    # raw E, as load_of_configuration: the stations clip negative PORTEND fractions, the
    # busy-time saving weighs partitions by the unloaded model's S_k-1 (docs/spec.md#load)
    delay, loss, solved = load_groups(cm, batch, lam, k_cap, model, detail=True)
    out, at = [], 0
    for g, (d, cuts, e) in enumerate(batch):
        n = cuts.shape[0]
        lat = _latency(cm, cuts, d, e[None], stays(e)[None])[0]
        out.append((lat + delay[at : at + n], loss[at : at + n], (cm.acc[cuts] * e).sum(axis=1)))
        if details is not None and keys is not None:
            for j, kk in enumerate(keys[g]):
                details[kk] = (solved, at + j, float(delay[at + j]), float(loss[at + j]))
        at += n
    return out


Fresh = list[tuple[tuple[int, ...], np.ndarray, np.ndarray, list]]


def _rule_out(
    cm: CostModel, fresh: Fresh, lam: float, eps: float, k_cap: int, memo: dict
) -> Fresh:  # fmt: skip
    """Drop the configurations whose tiers alone lose more than ``eps`` (approx queues).

    :func:`~earlyexit.planner._underload_bounds._tier_bounds` (each tier's own loss
    with its own service mixture, at the least rate it can see) rules them out
    without the fixed point; their memo entry records that bound as the loss (they
    are infeasible either way). Placements with the same number of partitions are
    bounded together.
    """
    by_len: dict[int, list[int]] = {}
    for g, (d, _cuts, _e, kk) in enumerate(fresh):
        if kk:
            by_len.setdefault(len(d), []).append(g)
    out_mask = [np.zeros(len(f[3]), dtype=bool) for f in fresh]
    bar = eps * (1 + 1e-9) + _LOSS_ATOL
    for gs in by_len.values():
        cuts = np.concatenate([fresh[g][1] for g in gs])
        e = np.concatenate([fresh[g][2] for g in gs])
        d = np.concatenate([np.tile(fresh[g][0], (len(fresh[g][3]), 1)) for g in gs])
        loss_lb, _w = _tier_bounds(cm, cuts, d, e, lam, min(eps, 1.0), k_cap, "approx")
        at = 0
        for g in gs:
            n = len(fresh[g][3])
            out_mask[g] = loss_lb[at : at + n] > bar
            acc = (cm.acc[fresh[g][1]] * fresh[g][2]).sum(axis=1)
            for kk, lo, a in zip(fresh[g][3], loss_lb[at : at + n], acc, strict=True):
                if lo > bar:
                    memo[kk] = (math.inf, float(lo), float(a))
            at += n
    return [
        (d, cuts[~m], e[~m], [kk for kk, o in zip(keys, m, strict=True) if not o])
        for (d, cuts, e, keys), m in zip(fresh, out_mask, strict=True)
    ]


def _scan(
    cm: CostModel, order: np.ndarray, place: Callable[[int], object], rows: Rows,
    lbs: np.ndarray | None, accs: np.ndarray | None, objective: str, bound: float | None,
    eps: float, lam: float, k_cap: int, model: str, memo: dict | None = None,
    budget: tuple[int, str] = (1_000, "too many configurations to evaluate"),
    details: dict | None = None, rule_out: float = 1.0,
) -> list[tuple[int, float, float]]:  # fmt: skip
    """Evaluate candidates in ``order`` until none left can win, a batch at a time.

    The decisions are those of evaluating them one by one: P_lat (``objective``
    ``"min_latency"``) stops at the first whose lower bound ``lbs`` exceeds the best
    loaded latency found, P_acc at the first whose accuracy ``accs`` is below the best
    found, ``"all"`` never; a batch only evaluates ahead.
    ``place(i)`` is a key of candidate i's placement, ``rows(idx)`` the placement, cut
    points and E_k of candidates of one placement.

    ``memo`` keeps the values of configurations already evaluated (by placement, cut
    points and E_k), shared by the scans of one search; ``details`` their stations
    (see :func:`_loaded`).
    Once one evaluated so far loses more than ``rule_out`` times the bound (0: from
    the first batch), the rest are first bounded by their tiers' own losses
    (:func:`_rule_out`).

    Returns:
        The feasible ones evaluated, as (index, loaded latency, accuracy).

    Raises:
        ValueError: more than ``budget[0]`` could not be ruled out (message ``budget[1]``).
    """
    memo = {} if memo is None else memo
    got: list[tuple[int, float, float]] = []
    best_r, best_a, count, pos, size = math.inf, -math.inf, 0, 0, 128
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
        near = rule_out * eps + _LOSS_ATOL
        lossy = rule_out <= 0 or any(v[1] > near for v in memo.values())
        if model == "approx" and math.isfinite(eps) and lossy:
            # some evaluated so far lose too much: bound the rest first (cheaper than the
            # fixed points of those that do, which settle slowly when the losses are large)
            fresh = _rule_out(cm, fresh, lam, eps, k_cap, memo)
        batch = [(d, cuts, e) for d, cuts, e, kk in fresh if kk]
        if batch:  # every placement of the chunk in one fixed point
            kks_all = [kk for *_, kk in fresh if kk]
            vals = _loaded(cm, batch, lam, k_cap, model, details, kks_all)
            for kks, v in zip(kks_all, vals, strict=True):
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
