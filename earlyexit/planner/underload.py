"""The best configuration under a Poisson load, exactly (docs/spec.md#load).

Under load a configuration's mean latency is its unloaded latency Lat plus
queueing delays (:mod:`earlyexit.planner.queueing`), never less, and it may
lose samples. The search is exact over the same space as
:func:`earlyexit.planner.search.search`, in two ways:

- PORTEND, P_lat, the approximate queues (:func:`_fast_under_load`): the label DP
  of :mod:`earlyexit.planner._portend` with a lower bound of every tier's wait
  added to each partition; its optimum, evaluated under load, is an incumbent U,
  and a second pass lists every configuration whose bound is at most U, evaluated
  in order of the bound;
- otherwise: today's optimum (no load) evaluated under load gives U; every
  configuration's Lat and accuracy are computed at once (numpy, per placement)
  and those that cannot win are dropped (Lat plus the tiers' own waits above U,
  or a tier alone losing more than the bound); the rest are evaluated under load
  in order of that bound (P_lat) or of accuracy (P_acc) until nothing left can
  win. The winner is chosen with the ties and tolerances of
  :mod:`earlyexit.planner._select`.

At most :data:`MAX_EVALUATIONS` configurations are evaluated one by one. The
bounds are in :mod:`earlyexit.planner._underload_bounds`; a plan's capacity and
the message for a bound nobody meets in :mod:`earlyexit.planner._underload_capacity`
(re-exported here). The property tests compare the search with a brute force
(every configuration of the space evaluated under load).

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> from earlyexit.planner.latency import CostModel
    >>> from earlyexit.planner.space import make_space
    >>> from earlyexit.planner.topology import resolve_topology
    >>> cm = CostModel(synthetic_profile(8), resolve_topology("portend-aws"))
    >>> found = search_under_load(cm, make_space(cm), "portend", "min_latency", 0.6, 5.0, 20, 0.01)
    >>> found is not None and found[1].loss_ratio <= 0.01
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import combinations, permutations

import numpy as np

from earlyexit.planner._select import ACC_ATOL, LAT_ATOL, select_best
from earlyexit.planner._underload_bounds import (
    _LOSS_ATOL,
    _fractions,
    _latency,
    _tier_bounds,
    _wait_table,
    portend_e,
)
from earlyexit.planner._underload_capacity import _evaluate, _unloaded, capacity
from earlyexit.planner._underload_capacity import explain_infeasible as explain_infeasible
from earlyexit.planner._underload_scan import _scan
from earlyexit.planner.latency import CostModel
from earlyexit.planner.queueing import (
    LoadEstimate,
    check_load_args,
    estimate_of_solved,
    load_of_configuration,
)
from earlyexit.planner.search import Candidate, search
from earlyexit.planner.space import SearchSpace

__all__ = ["search_under_load", "capacity", "MAX_CONFIGURATIONS", "MAX_EVALUATIONS"]

MAX_CONFIGURATIONS = 50_000_000
"""Configurations enumerated under load at most (restrict the space with hints beyond it)."""
MAX_EVALUATIONS = 1_000
"""Configurations evaluated one by one under load at most (each ~1 ms; beyond: ValueError)."""


def _groups(
    cm: CostModel, space: SearchSpace
) -> Iterator[tuple[int, np.ndarray, list[tuple[int, ...]]]]:
    """(L, cut tuples (C, L), placements) of the space, as the brute force enumerates it."""
    blocks = [b for b in range(1, cm.n + 1) if space.cut_allowed[b]]
    required = set(space.required)
    total = 0
    for n_parts in range(space.min_parts, space.max_parts + 1):
        places = [
            d
            for d in permutations(range(cm.m), n_parts)
            if all(space.tier_allowed[k, d[k]] for k in range(n_parts))
        ]
        if not places or len(blocks) < n_parts:
            continue
        total += math.comb(len(blocks), n_parts) * len(places) * len(space.t_idx)
        if total > MAX_CONFIGURATIONS:
            raise ValueError(
                f"the space holds more than {MAX_CONFIGURATIONS} configurations, too many to "
                "evaluate under load; restrict it with hints (max_partitions, tiers, cut_points, "
                "thresholds)"
            )
        cuts = np.array(
            [c for c in combinations(blocks, n_parts) if required.issubset(c)], dtype=np.int64
        ).reshape(-1, n_parts)
        if cuts.shape[0]:
            yield n_parts, cuts, places


def _fast_under_load(
    cm: CostModel, space: SearchSpace, bound: float | None,
    lam: float, k_cap: int, eps: float, details: dict | None = None,
    reuse: dict | None = None,
) -> tuple[list[tuple[tuple, float, float]], int] | None:  # fmt: skip
    """P_lat under load for PORTEND and the approx queues, by the label DP with the wait table.

    One run of the DP lists every configuration whose bound (Lat + the tiers' wait
    bounds, a lower bound of Lat_lambda) is at most a bar U, with no dominance. U
    starts infinite and falls as the run goes: before each layer is pruned, its
    labels' best completions by at most one more partition (real configurations that
    meet the accuracy bound) are evaluated under load, a few at a time (the least
    bounds first, only those below U), and the least loaded latency of those that meet
    the loss bound becomes U. Every configuration that may beat (or tie) the best is
    then listed (its bound is at most its loaded latency); they are evaluated in order
    of the bound until it exceeds the best. With no incumbent at the end (U still
    infinite), that is every configuration whose tiers do not lose too much alone, if
    at most :data:`MAX_EVALUATIONS`.

    ``details`` (if given) receives the stations of the configurations evaluated (by
    placement, cut points and E_k; :func:`~earlyexit.planner._underload_scan._loaded`);
    ``reuse`` (if given) the label DP under ``"searcher"``.

    Returns:
        (the evaluated feasible configurations as (key, loaded latency, accuracy), their
        count), or None when this path does not apply (no table, or no incumbent and too
        many configurations).
    """
    from earlyexit.planner._labels import CutCodes, LazyKeys
    from earlyexit.planner._portend import PortendSearch

    tab = _wait_table(cm, space, lam, min(eps, 1.0), k_cap)
    if tab is None:
        return None
    codes = CutCodes(cm.n, cm.m, space.max_parts)
    thr = cm.thresholds[space.t_idx]
    memo: dict = {}  # configurations evaluated, shared by the probes and the scan

    def e_of(ts: np.ndarray, cuts: np.ndarray) -> np.ndarray:
        return portend_e(cm.er[space.t_idx[ts][:, None], cuts])

    def probe(configs: list[tuple[int, tuple[int, ...], tuple[int, ...]]], last: bool) -> float:
        ts = np.array([cf[0] for cf in configs], dtype=np.int64)

        def rows(idx: np.ndarray) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
            cuts = np.array([configs[i][2] for i in idx.tolist()], dtype=np.int64)
            return configs[int(idx[0])][1], cuts, e_of(ts[idx], cuts)

        # the last layer's, with no bar yet (near saturation): bounded by the tiers' losses first
        got = _scan(
            cm, np.arange(len(configs)), lambda i: configs[i][1], rows, None, None, "all",
            None, eps, lam, k_cap, "approx", memo, _budget(), details, 0.0 if last else 1.0,
        )  # fmt: skip
        return min((r for _i, r, _a in got), default=math.inf)

    ps = PortendSearch(  # the DP's Lat at busy times: a lower bound under load
        cm.busy_view(), space, "min_latency", bound, codes=codes, extra=tab,
        fixed_inc=math.inf, probe=probe,
    )  # fmt: skip
    if reuse is not None:
        reuse["searcher"] = ps
    fin, nparts = ps.run("min_latency", bound)
    lbs = fin.lat
    if not math.isfinite(ps.inc) and lbs.size > MAX_EVALUATIONS:
        return None
    keys = LazyKeys(nparts, fin.dcode, fin.pcode, fin.t, codes, thr)

    def rows(idx: np.ndarray) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
        n_parts = int(keys.n_parts[idx[0]])
        d = codes.decode_tiers(int(keys.dcode[idx[0]]), n_parts)
        cuts = np.array([codes.decode(keys.pcode[i], n_parts) for i in idx], dtype=np.int64)
        return d, cuts, e_of(fin.t[idx], cuts)

    got = _scan(
        cm, np.argsort(lbs, kind="stable"), lambda i: (int(nparts[i]), int(fin.dcode[i])),
        rows, lbs, None, "min_latency", None, eps, lam, k_cap, "approx", memo, _budget(),
        details, RULE_OUT,
    )  # fmt: skip
    return [(keys[i], r, a) for i, r, a in got], len(got)


RULE_OUT = 0.25
"""The listing's scan bounds by the tiers' losses first once one evaluated loses more
than this fraction of the bound (near saturation, where the listing holds lossy ones)."""


def _winner(
    cm: CostModel, t_i: int, cuts: tuple[int, ...], d: tuple[int, ...], lam: float,
    k_cap: int, details: dict,
) -> tuple[LoadEstimate, float]:  # fmt: skip
    """The P_lat winner of the label DP path under load (approx queues), and its accuracy:
    its stations from the scan's fixed point (``details``), not solved again."""
    e, s, lat, acc = _unloaded(cm, float(cm.thresholds[t_i]), cuts, d, "portend")
    e_row = portend_e(cm.er[np.array([[t_i]]), np.array([cuts])])  # as the scan's rows
    got = details.get((tuple(d), *cuts, *e_row[0].tolist()))
    if got is None:  # pragma: no cover - the winner was evaluated by the scan
        return load_of_configuration(cm, cuts, d, e, s, lat, lam, k_cap, "approx"), float(acc)
    solved, row, delay, loss = got
    le = estimate_of_solved(cm, cuts, d, e, solved, row, delay, loss, lat, lam, k_cap)
    return le, float(acc)


def _budget() -> tuple[int, str]:
    return MAX_EVALUATIONS, _too_many()


def _too_many() -> str:
    return (
        f"under load, more than {MAX_EVALUATIONS} configurations could not be ruled out by "
        "the bounds; restrict the space with hints (max_partitions, tiers, cut_points, "
        "thresholds), or lower the rate"
    )


def search_under_load(
    cm: CostModel,
    space: SearchSpace,
    estimator: str,
    objective: str,
    bound: float | None,
    arrival_rate: float,
    queue_capacity: int | None = None,
    max_loss: float | None = None,
    queue_model: str = "approx",
    *,
    reuse: dict | None = None,
) -> tuple[Candidate, LoadEstimate] | None:
    """The optimum under load: P_lat on the loaded latency, or P_acc with a loaded-latency bound.

    Args:
        cm, space, estimator: as :func:`~earlyexit.planner.search.search`.
        objective: ``"min_latency"`` or ``"max_accuracy"``.
        bound: the accuracy lower bound (P_lat) or the loaded-latency upper bound (P_acc).
        arrival_rate, queue_capacity, queue_model: the load
            (:func:`~earlyexit.planner.queueing.evaluate_load`).
        max_loss: the loss-ratio bound (None: no bound).
        reuse: if given, receives under ``"searcher"`` the label DP of the PORTEND P_lat
            path (for :func:`explain_infeasible`'s search of today's plan).

    Returns:
        (the candidate, with its unloaded latency; its load estimate), or None if infeasible.

    Raises:
        ValueError: bad load arguments, an unknown objective, a space too large.
    """
    lam, k_cap, model = check_load_args(arrival_rate, queue_capacity, queue_model)
    if objective not in ("min_latency", "max_accuracy"):
        raise ValueError(f"objective: expected 'min_latency' or 'max_accuracy', got {objective!r}")
    eps = math.inf if max_loss is None else float(max_loss)

    def ok(le: LoadEstimate) -> bool:
        return le.loss_ratio <= eps + _LOSS_ATOL and math.isfinite(le.latency_s)

    if estimator == "portend" and objective == "min_latency" and model == "approx" and lam > 0:
        details: dict = {}
        fast = _fast_under_load(cm, space, bound, lam, k_cap, eps, details, reuse)
        if fast is not None:
            got_f = fast[0]
            if not got_f:
                return None
            j = select_best(
                np.array([g[1] for g in got_f]), np.array([g[2] for g in got_f]),
                [g[0] for g in got_f], objective, None,
            )  # fmt: skip
            key = got_f[int(j)][0]
            t_pos = int(np.flatnonzero(cm.thresholds[space.t_idx] == key[3])[0])
            le, a = _winner(cm, int(space.t_idx[t_pos]), key[2], key[1], lam, k_cap, details)
            cand = Candidate(
                latency=float(le.unloaded_latency_s),
                accuracy=a,
                threshold_index=int(space.t_idx[t_pos]),
                threshold=float(key[3]),
                cuts=tuple(key[2]),
                tiers=tuple(key[1]),
            )
            return cand, le
    # 1. incumbent from today's optimum
    inc = math.inf if objective == "min_latency" else -math.inf
    base = search(cm, space, estimator, objective, bound) if objective == "min_latency" else []
    if base:
        c0 = base[0]
        le0, _ = _evaluate(cm, estimator, c0.threshold_index, c0.cuts, c0.tiers, lam, k_cap, model)
        if ok(le0):
            inc = le0.latency_s
    # 2. every configuration's Lat and accuracy; keep the ones that may win
    # a lower bound on the loaded latency: Lat plus the first tier's own queueing delay
    lat_l, lb_l, acc_l, key_l = [], [], [], []
    e_of: dict[tuple[int, ...], tuple[int, np.ndarray]] = {}  # placement: (first index, E rows)
    solved: dict = {}
    for n_parts, cuts, places in _groups(cm, space):
        e, s, acc = _fractions(cm, space, estimator, cuts)
        for d in places:
            lat = _latency(cm, cuts, d, e, s)
            # the cheap tests first (Lat at busy times <= Lat_lambda), then the tiers' bounds
            low = _latency(cm, cuts, d, e, s, busy=True) if cm.has_busy else lat
            if objective == "min_latency":
                keep = low <= inc + LAT_ATOL
                if bound is not None:
                    keep &= acc >= bound - ACC_ATOL
            else:
                keep = low <= bound + LAT_ATOL if bound is not None else np.isfinite(lat)
            ti, ci = np.nonzero(keep)
            lb = low[ti, ci]
            if lam > 0 and ti.size:
                f_loss, f_wait = _tier_bounds(
                    cm, cuts[ci], d, e[ti, ci], lam, min(eps, 1.0), k_cap, model, solved
                )
                lb = lb + f_wait
                if max_loss is not None:
                    lb = np.where(f_loss > eps * (1 + 1e-9) + _LOSS_ATOL, np.inf, lb)
                bar = inc if objective == "min_latency" else (math.inf if bound is None else bound)
                sel = np.flatnonzero(np.isfinite(lb) & (lb <= bar + LAT_ATOL))
                ti, ci, lb = ti[sel], ci[sel], lb[sel]
            e_of[d] = (len(key_l), e[ti, ci])
            lat_l.append(lat[ti, ci])
            lb_l.append(lb)
            acc_l.append(acc[ti, ci])
            key_l += [
                (n_parts, d, tuple(int(x) for x in cuts[c]), int(t))
                for t, c in zip(ti, ci, strict=True)
            ]
    if not key_l:
        return None
    lats, lbs, accs = np.concatenate(lat_l), np.concatenate(lb_l), np.concatenate(acc_l)
    # 3. evaluate under load, best first, until nothing left can win
    order = (
        np.argsort(lbs, kind="stable")
        if objective == "min_latency"
        else np.argsort(-accs, kind="stable")
    )
    est = estimator

    def rows(idx: np.ndarray) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
        d = key_l[int(idx[0])][1]
        start, e_blk = e_of[d]
        cuts = np.array([key_l[int(i)][2] for i in idx], dtype=np.int64)
        return d, cuts, e_blk[idx - start]

    got = _scan(
        cm, order, lambda i: key_l[i][1], rows, lbs, accs, objective, bound, eps, lam, k_cap,
        model, None, _budget(),
    )  # fmt: skip
    if not got:
        return None
    thr = cm.thresholds[space.t_idx]
    keys = [(key_l[i][0], key_l[i][1], key_l[i][2], float(thr[key_l[i][3]])) for i, _, _ in got]
    r_arr = np.array([r for _, r, _ in got])
    a_arr = np.array([accs[i] for i, _, _ in got])
    j = select_best(r_arr, a_arr, keys, objective, None)
    if j is None:  # pragma: no cover - got is not empty
        return None
    i = got[j][0]
    n_parts, d, cuts_t, t_pos = key_l[i]
    le, _ = _evaluate(cm, est, int(space.t_idx[t_pos]), cuts_t, d, lam, k_cap, model)
    cand = Candidate(
        latency=float(lats[i]),
        accuracy=float(accs[i]),
        threshold_index=int(space.t_idx[t_pos]),
        threshold=float(thr[t_pos]),
        cuts=cuts_t,
        tiers=tuple(int(x) for x in d),
    )
    return cand, le
