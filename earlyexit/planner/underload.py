"""The best configuration under a Poisson load, exactly, and the capacity of a plan.

Under load a configuration's mean latency is its unloaded latency Lat plus
queueing delays (:mod:`earlyexit.planner.queueing`), never less, and it may
lose samples. The search is exact over the same space as
:func:`earlyexit.planner.search.search`:

1. today's optimum (the fast search, no load) is evaluated under load; if it
   meets the loss bound, its loaded latency is an incumbent U;
2. every configuration's Lat and accuracy are computed at once (numpy,
   vectorized over thresholds and cut tuples, per placement), and those that
   cannot win are dropped: P_lat keeps accuracy >= bound and Lat <= U
   (R >= Lat); P_acc keeps Lat <= the latency bound;
3. the rest are evaluated under load in order of Lat (P_lat) or accuracy
   (P_acc), stopping as soon as the next one's Lat exceeds the best loaded
   latency found (or its accuracy is below the best found); the winner is
   chosen among the feasible ones with the ties and tolerances of
   :mod:`earlyexit.planner._select`.

The property tests compare it with a brute force (every configuration of the
space evaluated under load). ``capacity`` bisects on the arrival rate: the loss
ratio of a fixed plan grows with lambda.

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

from earlyexit.formats import Plan
from earlyexit.planner._select import ACC_ATOL, LAT_ATOL, select_best
from earlyexit.planner.estimators import exit_fractions
from earlyexit.planner.latency import CostModel
from earlyexit.planner.queueing import (
    LoadEstimate,
    approx_many,
    check_load_args,
    load_of_configuration,
    mg1k_exact,
)
from earlyexit.planner.search import Candidate, search
from earlyexit.planner.space import SearchSpace

__all__ = ["search_under_load", "capacity", "MAX_CONFIGURATIONS", "MAX_EVALUATIONS"]

MAX_CONFIGURATIONS = 50_000_000
"""Configurations enumerated under load at most (restrict the space with hints beyond it)."""
MAX_EVALUATIONS = 1_000
"""Configurations evaluated one by one under load at most (each ~1 ms; beyond: ValueError)."""
_LOSS_ATOL = 1e-12


def _fractions(
    cm: CostModel, space: SearchSpace, estimator: str, cuts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E, S (T, C, L) and accuracy (T, C) of every cut tuple at every searched threshold."""
    t_idx = space.t_idx
    n_t, n_c, n_parts = len(t_idx), cuts.shape[0], cuts.shape[1]
    e = np.zeros((n_t, n_c, n_parts))
    if estimator == "portend":
        er = cm.er[t_idx][:, cuts]  # (T, C, L)
        if n_parts > 1:
            e[:, :, 0] = er[:, :, 0]
            e[:, :, 1:-1] = er[:, :, 1:-1] - er[:, :, :-2]
        e[:, :, -1] = 1.0 - e[:, :, :-1].sum(axis=2)
        acc = (cm.acc[cuts][None] * e).sum(axis=2)
    else:
        samples = cm.profile.samples
        if samples is None:
            raise ValueError("estimator 'exact' needs profile.samples")
        thr = cm.thresholds[t_idx]
        okb = samples.entropy[:, None, :] < thr[None, :, None]  # (N, T, S)
        cor = samples.correct.astype(bool)
        s_count = samples.entropy.shape[1]
        acc = np.zeros((n_t, n_c))
        for ci in range(n_c):
            rem = np.ones((n_t, s_count), dtype=bool)
            hits = np.zeros(n_t)
            for k in range(n_parts):
                c = int(cuts[ci, k])
                here = rem & okb[c - 1] if k < n_parts - 1 else rem
                e[:, ci, k] = here.sum(axis=1) / s_count
                hits += (here & cor[c - 1][None]).sum(axis=1)
                rem = rem & ~here
            acc[:, ci] = hits / s_count
    s = 1.0 - np.cumsum(e, axis=2)
    s[:, :, -1] = 0.0
    return e, s, acc


def _latency(
    cm: CostModel, cuts: np.ndarray, d: tuple[int, ...], e: np.ndarray, s: np.ndarray
) -> np.ndarray:
    """Lat (T, C) of every cut tuple at placement d (docs/spec.md#latency, term by term)."""
    n_parts = len(d)
    lat = np.full(e.shape[:2], float(cm.x[cm.source, d[0], 0]))
    prev = np.zeros(cuts.shape[0], dtype=np.int64)
    for k in range(n_parts):
        c = cuts[:, k]
        lat = lat + (s[:, :, k] + e[:, :, k]) * cm.ct[d[k], prev, c][None]
        if k < n_parts - 1:
            lat = lat + s[:, :, k] * cm.x[d[k], d[k + 1], c][None]
        lat = lat + e[:, :, k] * cm.r[d[k]]
        prev = c
    return lat


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


def _evaluate(
    cm: CostModel, estimator: str, t_i: int, cuts: tuple[int, ...], d: tuple[int, ...],
    lam: float, k_cap: int, model: str,
) -> LoadEstimate:  # fmt: skip
    thr = float(cm.thresholds[t_i])
    e, s, _acc = exit_fractions(cm.profile, thr, cuts, estimator)
    lat, _ = cm.latency(cuts, d, e, s)
    return load_of_configuration(cm, cuts, d, e, s, lat, lam, k_cap, model)


_EXACT_BOUND_STATIONS = 6000  # the exact queue model: stations the bounds solve per search


def _tier_bounds(
    cm: CostModel, cuts: np.ndarray, d: tuple[int, ...], e: np.ndarray,
    lam: float, eps1: float, k_cap: int, model: str, cache: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Lower bounds (R,) on the loss ratio and on the queueing delay: every tier's own.

    ``cuts`` (R, L) and ``e`` (R, L) are one configuration per row, all placed at ``d``.

    Tier D_k serves only partition k (a placement uses a tier once), with the service
    mixture of :func:`~earlyexit.planner.queueing.load_of_configuration` (it does not
    depend on the losses). Its arrival rate is lambda reach_k surv_k, and a configuration
    whose loss ratio is at most ``eps1`` has surv_k >= 1 - eps1 / reach_k (the samples
    dropped before partition k are lost), so the rate is at least lambda (reach_k - eps1)
    (exactly lambda at a first tier that is the source). Its wait and loss grow with the
    rate, the samples it drops are lost once: the loss ratio is at least the sum of
    (reach_k - eps1) L_k and the delay at least the sum of reach_k W_k at those rates.
    Valid for the configurations that meet the loss bound (the others are discarded).
    """
    n_r, n_parts = e.shape
    ec = np.clip(e, 0.0, None)
    tot = ec.sum(axis=1, keepdims=True)
    good = tot[:, 0] > 0
    ec = ec / np.where(tot > 0, tot, 1.0)
    reach_all = np.cumsum(ec[:, ::-1], axis=1)[:, ::-1]  # sum of ec[k:]
    devs = cm.profile.devices
    loss_lb = np.zeros(n_r)
    wait_lb = np.zeros(n_r)
    prev = np.zeros(n_r, dtype=np.int64)
    for k in range(n_parts):
        w = d[k]
        c = cuts[:, k]
        hop = devs[cm.topology.tiers[w].device].hop_s
        base = cm.dt[w, prev] + cm.ct[w, prev, c] + (0.0 if hop is None else float(hop))
        t_exit = base + cm.rst[w]
        t_fwd = base + cm.st[w, c]
        reach = reach_all[:, k]
        p_exit = np.where(reach > 0, ec[:, k] / np.where(reach > 0, reach, 1.0), 1.0)
        if k == n_parts - 1:
            p_exit = np.ones_like(p_exit)
        f = reach if (k == 0 and w == cm.source) else np.maximum(reach - eps1, 0.0)
        f = np.where(good, f, 0.0)
        rate = lam * f
        mean = p_exit * t_exit + (1.0 - p_exit) * t_fwd
        m2 = p_exit * t_exit**2 + (1.0 - p_exit) * t_fwd**2
        with np.errstate(divide="ignore", invalid="ignore"):
            scv = np.where(
                mean > 0, np.maximum(m2 / np.where(mean > 0, mean, 1.0) ** 2 - 1.0, 0.0), 0.0
            )
        rho = rate * mean
        if model == "approx":
            lo, num = approx_many(rho, scv, k_cap)
        else:
            lo, num = np.zeros(rho.shape), np.zeros(rho.shape)
            rows = np.stack([rate, t_exit, t_fwd, p_exit], axis=-1)
            live = np.flatnonzero(rho > 0)
            uniq, inv = np.unique(rows[live], axis=0, return_inverse=True)
            cache = {} if cache is None else cache  # solved stations, shared by the search
            keys = [tuple(r) for r in uniq.tolist()]
            if len(cache) + sum(kk not in cache for kk in keys) > _EXACT_BOUND_STATIONS:
                prev = c
                continue  # no bound from this tier (0 is a valid one)
            for kk in keys:
                if kk not in cache:
                    cache[kk] = mg1k_exact(kk[0], kk[1:3], [kk[3], 1.0 - kk[3]], k_cap)
            vals = np.array([cache[kk] for kk in keys]).reshape(-1, 2)
            lo[live] = vals[inv.ravel(), 0]
            num[live] = vals[inv.ravel(), 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            carried = rate * (1.0 - lo)
            wq = np.where(carried > 0, num / np.where(carried > 0, carried, 1.0), np.inf) - mean
        wq = np.where(rho > 0, np.maximum(wq, 0.0), 0.0)
        loss_lb += f * lo
        wait_lb += np.where(reach > 0, reach * wq, 0.0)
        prev = c
    return loss_lb, wait_lb


_TABLE_MAX = 4_000_000  # (threshold, tier, block, block) entries of the DP's wait table at most


def _wait_table(
    cm: CostModel, space: SearchSpace, lam: float, eps1: float, k_cap: int
) -> np.ndarray | None:
    """W (3, T, M, N+1, N+1): lower bounds of a tier's wait for the label DP (approx model).

    W_mid / W_last [t, w, b, c] bound the visits times the mean wait of tier w serving
    blocks b+1..c at threshold t, more partitions following or not, per unit of
    1 - ER_b (the DP multiplies by it), at the least rate it can see
    (:func:`_tier_bounds`); inf where the samples it drops alone exceed the loss bound.
    The table holds min(W_mid, W_last), then W_mid and W_last minus it: the DP adds the
    first at once, the rest when known.

    Exit rates that are not nested (ER falls somewhere) make negative fractions, which
    the load model clips and renormalizes by a total at most 1 + D (D: the sum of ER's
    falls at that threshold): then a tier's visits are at least (1 - ER_b) / (1 + D)
    (1 at the first tier), and its wait at least that of a constant service at the
    shorter of its two times (the wait grows with the mean and the SCV).
    None: the table would be too large.
    """
    n, m = cm.n, cm.m
    er = cm.er[space.t_idx]
    n_t = er.shape[0]
    if 3 * n_t * m * (n + 1) ** 2 > _TABLE_MAX:
        return None
    bi, ci = np.nonzero(np.arange(n + 1)[None, :] > np.arange(n + 1)[:, None])  # pairs b < c
    first = (bi == 0)[None, :]
    falls = np.maximum(-np.diff(er, axis=1), 0.0).sum(axis=1) + np.maximum(er.max(1) - 1.0, 0.0)
    nested = (falls == 0)[:, None]  # (T, 1)
    reach = (1.0 - er)[:, bi]  # (T, P)
    vis = np.where(first, 1.0, reach / (1.0 + falls)[:, None])
    pos = reach > 0
    per = np.where(pos, vis / np.where(pos, reach, 1.0), 0.0)  # vis / (1 - ER_b)
    p_mid = np.clip(np.where(pos, (er[:, ci] - er[:, bi]) / np.where(pos, reach, 1.0), 1.0), 0, 1)
    devs = cm.profile.devices
    out = np.zeros((3, n_t, m, n + 1, n + 1))
    for w in range(m):
        if not space.tier_allowed[:, w].any():
            continue
        hop = devs[cm.topology.tiers[w].device].hop_s
        base = cm.dt[w, bi] + cm.ct[w, bi, ci] + (0.0 if hop is None else float(hop))  # (P,)
        t_exit = base + cm.rst[w]
        t_fwd = base + cm.st[w, ci]
        t_min = np.minimum(t_exit, t_fwd)
        f = np.maximum(vis - eps1, 0.0)
        if w == cm.source:
            f = np.where(first, vis, f)
        rate = lam * f
        both = []
        for p_exit in (p_mid, np.ones_like(p_mid)):
            mean = np.where(nested, p_exit * t_exit + (1.0 - p_exit) * t_fwd, t_min)
            m2 = np.where(nested, p_exit * t_exit**2 + (1.0 - p_exit) * t_fwd**2, t_min**2)
            with np.errstate(divide="ignore", invalid="ignore"):
                scv = np.where(
                    mean > 0, np.maximum(m2 / np.where(mean > 0, mean, 1.0) ** 2 - 1.0, 0.0), 0.0
                )
            rho = rate * mean
            lo, num = approx_many(rho, scv, k_cap)
            with np.errstate(divide="ignore", invalid="ignore"):
                carried = rate * (1.0 - lo)
                wq = np.where(carried > 0, num / np.where(carried > 0, carried, 1.0), np.inf)
            wq = np.where(rho > 0, np.maximum(wq - mean, 0.0), 0.0) * per
            tab = np.where(f * lo > eps1 * (1 + 1e-9) + _LOSS_ATOL, np.inf, wq)
            both.append(np.where(pos, tab, 0.0))
        low = np.minimum(both[0], both[1])
        fin = np.isfinite(low)
        out[0, :, w, bi, ci] = low.T
        out[1, :, w, bi, ci] = np.where(fin, both[0] - np.where(fin, low, 0.0), 0.0).T
        out[2, :, w, bi, ci] = np.where(fin, both[1] - np.where(fin, low, 0.0), 0.0).T
    return out


def _fast_under_load(
    cm: CostModel, space: SearchSpace, bound: float | None,
    lam: float, k_cap: int, eps: float,
) -> tuple[list[tuple[tuple, LoadEstimate, float]], int] | None:  # fmt: skip
    """P_lat under load for PORTEND and the approx queues, by the label DP with the wait table.

    1. the DP minimizes Lat + the tiers' wait bounds (a lower bound of Lat_lambda); its
       optimum, evaluated under load, gives an incumbent U (if it meets the loss bound);
    2. the DP again, with U fixed and no dominance, lists every configuration whose bound
       is at most U; they are evaluated in order of the bound until it exceeds the best.

    Returns:
        (the evaluated feasible configurations as (key, load estimate, accuracy), their
        count evaluated), or None when this path does not apply (no table, no incumbent).
    """
    from earlyexit.planner._labels import CutCodes, LazyKeys
    from earlyexit.planner._portend import PortendSearch

    tab = _wait_table(cm, space, lam, min(eps, 1.0), k_cap)
    if tab is None:
        return None
    codes = CutCodes(cm.n, cm.m, space.max_parts)
    thr = cm.thresholds[space.t_idx]

    def run(fixed: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, LazyKeys]:
        ps = PortendSearch(cm, space, "min_latency", bound, codes=codes, extra=tab, fixed_inc=fixed)
        fin, nparts = ps.run("min_latency", bound)
        keys = LazyKeys(nparts, fin.dcode, fin.pcode, fin.t, codes, thr)
        return fin.lat, fin.acc, fin.t, keys

    def ev(key: tuple, t_pos: int) -> tuple[LoadEstimate, float]:
        _n, d, cuts, _thr = key
        t_i = int(space.t_idx[t_pos])
        e, s, acc = exit_fractions(cm.profile, float(cm.thresholds[t_i]), cuts, "portend")
        lat, _ = cm.latency(cuts, d, e, s)
        le = load_of_configuration(cm, cuts, d, e, s, lat, lam, k_cap, "approx")
        return le, float(acc)

    def ok(le: LoadEstimate) -> bool:
        return le.loss_ratio <= eps + _LOSS_ATOL and math.isfinite(le.latency_s)

    lb0, _acc0, t0, keys0 = run(None)
    if lb0.size == 0:  # every configuration meeting the accuracy bound loses too much at a tier
        return [], 0
    inc = math.inf
    for i in np.argsort(lb0, kind="stable")[:4]:
        le, _a = ev(keys0[int(i)], int(t0[i]))
        if ok(le):
            inc = min(inc, le.latency_s)
    if not math.isfinite(inc):
        return None
    lbs, _accs, ts, keys = run(inc)
    got: list[tuple[tuple, LoadEstimate, float]] = []
    best, count = math.inf, 0
    for i in np.argsort(lbs, kind="stable"):
        if lbs[i] > best + LAT_ATOL:
            break
        count += 1
        if count > MAX_EVALUATIONS:
            raise ValueError(_too_many())
        key = keys[int(i)]
        le, a = ev(key, int(ts[i]))
        if not ok(le):
            continue
        got.append((key, le, a))
        best = min(best, le.latency_s)
    return got, count


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
) -> tuple[Candidate, LoadEstimate] | None:
    """The optimum under load: P_lat on the loaded latency, or P_acc with a loaded-latency bound.

    Args:
        cm, space, estimator: as :func:`~earlyexit.planner.search.search`.
        objective: ``"min_latency"`` or ``"max_accuracy"``.
        bound: the accuracy lower bound (P_lat) or the loaded-latency upper bound (P_acc).
        arrival_rate, queue_capacity, queue_model: the load
            (:func:`~earlyexit.planner.queueing.evaluate_load`).
        max_loss: the loss-ratio bound (None: no bound).

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
        fast = _fast_under_load(cm, space, bound, lam, k_cap, eps)
        if fast is not None:
            got_f = fast[0]
            if not got_f:
                return None
            j = select_best(
                np.array([g[1].latency_s for g in got_f]), np.array([g[2] for g in got_f]),
                [g[0] for g in got_f], objective, None,
            )  # fmt: skip
            key, le, a = got_f[int(j)]
            t_pos = int(np.flatnonzero(cm.thresholds[space.t_idx] == key[3])[0])
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
        le0 = _evaluate(cm, estimator, c0.threshold_index, c0.cuts, c0.tiers, lam, k_cap, model)
        if ok(le0):
            inc = le0.latency_s
    # 2. every configuration's Lat and accuracy; keep the ones that may win
    # a lower bound on the loaded latency: Lat plus the first tier's own queueing delay
    lat_l, lb_l, acc_l, key_l = [], [], [], []
    solved: dict = {}
    for n_parts, cuts, places in _groups(cm, space):
        e, s, acc = _fractions(cm, space, estimator, cuts)
        for d in places:
            lat = _latency(cm, cuts, d, e, s)
            # the cheap tests first (Lat <= Lat_lambda), then the tiers' bounds on the rest
            if objective == "min_latency":
                keep = lat <= inc + LAT_ATOL
                if bound is not None:
                    keep &= acc >= bound - ACC_ATOL
            else:
                keep = lat <= bound + LAT_ATOL if bound is not None else np.isfinite(lat)
            ti, ci = np.nonzero(keep)
            lb = lat[ti, ci]
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
    got: list[tuple[int, LoadEstimate]] = []
    best_r, best_a = math.inf, -math.inf
    n_eval = 0
    for i in order:
        if objective == "min_latency" and lbs[i] > best_r + LAT_ATOL:
            break
        if objective == "max_accuracy" and accs[i] < best_a - ACC_ATOL:
            break
        n_parts, d, cuts_t, t_pos = key_l[i]
        n_eval += 1
        if n_eval > MAX_EVALUATIONS:
            raise ValueError(_too_many())
        le = _evaluate(cm, estimator, int(space.t_idx[t_pos]), cuts_t, d, lam, k_cap, model)
        if not ok(le):
            continue
        if objective == "max_accuracy" and bound is not None and le.latency_s > bound + LAT_ATOL:
            continue
        got.append((int(i), le))
        best_r = min(best_r, le.latency_s)
        best_a = max(best_a, float(accs[i]))
    if not got:
        return None
    thr = cm.thresholds[space.t_idx]
    keys = [(key_l[i][0], key_l[i][1], key_l[i][2], float(thr[key_l[i][3]])) for i, _ in got]
    r_arr = np.array([le.latency_s for _, le in got])
    a_arr = np.array([accs[i] for i, _ in got])
    j = select_best(r_arr, a_arr, keys, objective, None)
    if j is None:  # pragma: no cover - got is not empty
        return None
    i, le = got[j]
    n_parts, d, cuts_t, t_pos = key_l[i]
    cand = Candidate(
        latency=float(lats[i]),
        accuracy=float(accs[i]),
        threshold_index=int(space.t_idx[t_pos]),
        threshold=float(thr[t_pos]),
        cuts=cuts_t,
        tiers=tuple(int(x) for x in d),
    )
    return cand, le


def explain_infeasible(
    cm: CostModel, space: SearchSpace, estimator: str, objective: str, bound: float | None,
    arrival_rate: float, queue_capacity: int | None = None, max_loss: float | None = None,
    queue_model: str = "approx",
) -> str:  # fmt: skip
    """What today's plan (no load) does at that rate: its loss ratio and the rate it sustains.

    For the message of a plan under load that no configuration meets.

    Returns:
        One sentence (empty if the bound has no configuration even without load).
    """
    lam, k_cap, model = check_load_args(arrival_rate, queue_capacity, queue_model)
    base = search(cm, space, estimator, objective, bound)
    if not base:
        return ""
    c0 = base[0]
    le = _evaluate(cm, estimator, c0.threshold_index, c0.cuts, c0.tiers, lam, k_cap, model)
    out = (
        f"today's plan (T={c0.threshold:g}, P={list(c0.cuts)}, D={list(c0.tiers)}) loses "
        f"{le.loss_ratio:.3g} of the samples at {lam:g}/s"
    )
    if max_loss is not None and 0 < max_loss < 1:
        e, s, _ = exit_fractions(cm.profile, c0.threshold, c0.cuts, estimator)
        lat, _ = cm.latency(c0.cuts, c0.tiers, e, s)
        cap = _capacity_of(cm, c0.cuts, c0.tiers, e, s, lat, max_loss, k_cap, model)
        out += f" and sustains at most {cap:.4g}/s with loss ratio <= {max_loss:g}"
    return out


def capacity(
    cm: CostModel,
    plan: Plan,
    max_loss: float = 0.01,
    queue_capacity: int | None = None,
    queue_model: str = "approx",
    *,
    rel_tol: float = 1e-6,
) -> float:
    """The highest arrival rate at which ``plan`` keeps its loss ratio <= ``max_loss``.

    Bisection on lambda (the loss ratio of a fixed configuration grows with lambda).

    Args:
        cm: the cost model of the plan's profile and topology.
        plan: the plan (its threshold, partitions, tiers and estimator).
        max_loss: the loss-ratio bound, in (0, 1).
        queue_capacity / queue_model: the queues (as :func:`search_under_load`).
        rel_tol: relative width of the final bracket.

    Returns:
        lambda_max in samples per second (``inf`` if no station does any work).

    Raises:
        ValueError: bad arguments.
    """
    eps = float(max_loss)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"max_loss: must be in (0, 1), got {max_loss}")
    check_load_args(1.0, queue_capacity, queue_model)
    k_cap = check_load_args(1.0, queue_capacity, queue_model)[1]
    cuts, d = tuple(plan.cut_points), tuple(plan.tier_indices)
    e, s, _ = exit_fractions(cm.profile, plan.threshold, cuts, plan.estimator)
    lat, _ = cm.latency(cuts, d, e, s)
    return _capacity_of(cm, cuts, d, e, s, lat, eps, k_cap, queue_model, rel_tol)


def _capacity_of(
    cm: CostModel, cuts: tuple[int, ...], d: tuple[int, ...], e: list[float], s: list[float],
    lat: float, eps: float, k_cap: int, queue_model: str, rel_tol: float = 1e-6,
) -> float:  # fmt: skip
    """:func:`capacity` of one configuration given its fractions and Lat."""

    def loss(lam: float) -> float:
        return load_of_configuration(cm, cuts, d, e, s, lat, lam, k_cap, queue_model).loss_ratio

    probe = load_of_configuration(cm, cuts, d, e, s, lat, 1.0, k_cap, queue_model)
    busiest = max((st.service_mean_s * st.arrival_rate for st in probe.stations), default=0.0)
    if busiest <= 0:
        return math.inf
    lo, hi = 0.0, 1.0 / busiest  # utilization 1 at the busiest station
    while loss(hi) <= eps:
        lo, hi = hi, hi * 2.0
        if hi > 1e15:  # pragma: no cover - losses grow without bound with lambda
            return math.inf
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if loss(mid) <= eps:
            lo = mid
        else:
            hi = mid
    return lo
