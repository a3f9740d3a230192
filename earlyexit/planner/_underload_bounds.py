"""Lower bounds for the search under load (:mod:`earlyexit.planner.underload`).

Under load a configuration's mean latency is at least its unloaded latency Lat
plus its tiers' own queueing delays at the least rate each can see, and its
loss ratio at least what its tiers alone drop; both bounds grow with the rate.
Here: Lat and accuracy of every configuration at once (numpy, per placement),
each tier's wait and loss bound per configuration (:func:`_tier_bounds`), and
the label DP's table of those bounds per (threshold, tier, block, block)
(:func:`_wait_table`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from earlyexit.planner._load_many import scv_of, wait_in_queue
from earlyexit.planner.latency import CostModel
from earlyexit.planner.queueing import approx_many, mg1k_exact
from earlyexit.planner.space import SearchSpace

__all__ = ["portend_e", "stays"]

_LOSS_ATOL = 1e-12


def portend_e(er: np.ndarray) -> np.ndarray:
    """PORTEND's E_k (docs/spec.md) from the exit rates ER at the cut points, (..., L)."""
    e = np.zeros(er.shape)
    if er.shape[-1] > 1:
        e[..., 0] = er[..., 0]
        e[..., 1:-1] = er[..., 1:-1] - er[..., :-2]
    e[..., -1] = 1.0 - e[..., :-1].sum(axis=-1)
    return e


def stays(e: np.ndarray) -> np.ndarray:
    """S_k = 1 - (E_1 + .. + E_k), S_L = 0, along the last axis."""
    s = 1.0 - np.cumsum(e, axis=-1)
    s[..., -1] = 0.0
    return s


def _fractions(
    cm: CostModel, space: SearchSpace, estimator: str, cuts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E, S (T, C, L) and accuracy (T, C) of every cut tuple at every searched threshold."""
    t_idx = space.t_idx
    n_t, n_c, n_parts = len(t_idx), cuts.shape[0], cuts.shape[1]
    e = np.zeros((n_t, n_c, n_parts))
    if estimator == "portend":
        e = portend_e(cm.er[t_idx][:, cuts])  # (T, C, L)
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
    return e, stays(e), acc


def _latency(
    cm: CostModel, cuts: np.ndarray, d: tuple[int, ...], e: np.ndarray, s: np.ndarray,
    busy: bool = False,
) -> np.ndarray:  # fmt: skip
    """Lat (T, C) of every cut tuple at placement d (docs/spec.md#latency, term by term,
    and the client's cooling, docs/spec.md#the-client).

    ``busy``: with every partition run at its busy time (``cm.ct_busy``), a lower
    bound of the latency under load less its queueing (docs/spec.md#load).
    """
    n_parts = len(d)
    ct = cm.ct_busy if busy else cm.ct
    lat = np.full(e.shape[:2], float(cm.x[cm.source, d[0], 0]))
    prev = np.zeros(cuts.shape[0], dtype=np.int64)
    for k in range(n_parts):
        c = cuts[:, k]
        lat = lat + (s[:, :, k] + e[:, :, k]) * ct[d[k], prev, c][None]
        if k < n_parts - 1:
            lat = lat + s[:, :, k] * cm.x[d[k], d[k + 1], c][None]
        lat = lat + e[:, :, k] * cm.r[d[k]]
        prev = c
    return lat + cm.client_cooling(lat)  # the client waited for all of it


def _moments(p: np.ndarray, t1: np.ndarray, t2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SCV of the service t1 w.p. p, else t2 (element by element)."""
    mean = p * t1 + (1.0 - p) * t2
    return mean, scv_of(mean, p * t1**2 + (1.0 - p) * t2**2)


_EXACT_BOUND_STATIONS = 6000  # the exact queue model: stations the bounds solve per search


def _tier_bounds(
    cm: CostModel, cuts: np.ndarray, d: tuple[int, ...] | np.ndarray, e: np.ndarray,
    lam: float, eps1: float, k_cap: int, model: str, cache: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Lower bounds (R,) on the loss ratio and on the queueing delay: every tier's own.

    ``cuts`` (R, L) and ``e`` (R, L) are one configuration per row, all placed at ``d``
    (or each at its own: ``d`` (R, L)).

    Tier D_k serves only partition k (a placement uses a tier once), with the service
    mixture of :func:`~earlyexit.planner.queueing.load_of_configuration` (it does not
    depend on the losses). Its arrival rate is lambda reach_k surv_k, and a configuration
    whose loss ratio is at most ``eps1`` has surv_k >= 1 - eps1 / reach_k (the samples
    dropped before partition k are lost), so the rate is at least lambda (reach_k - eps1)
    (exactly lambda at a first tier that is the source). Its wait and loss grow with the
    rate, the samples it drops are lost once: the loss ratio is at least the sum of
    (reach_k - eps1) L_k and the delay at least the sum of reach_k W_k at those rates.
    Valid for the configurations that meet the loss bound (the others are discarded).
    With busy times (``cm.has_busy``) every message is taken at its busy time and, in
    the approx formula, at SCV 0 (the mixture with the idle-gap times has a larger mean
    but maybe a smaller SCV); add the wait bound to Lat at busy times.
    """
    n_r, n_parts = e.shape
    dd = np.broadcast_to(np.asarray(d, dtype=np.int64).reshape(-1, n_parts), (n_r, n_parts))
    ec = np.clip(e, 0.0, None)
    tot = ec.sum(axis=1, keepdims=True)
    good = tot[:, 0] > 0
    ec = ec / np.where(tot > 0, tot, 1.0)
    reach_all = np.cumsum(ec[:, ::-1], axis=1)[:, ::-1]  # sum of ec[k:]
    loss_lb = np.zeros(n_r)
    wait_lb = np.zeros(n_r)
    prev = np.zeros(n_r, dtype=np.int64)
    for k in range(n_parts):
        w = dd[:, k]
        c = cuts[:, k]
        base = cm.dt[w, prev] + cm.ct_busy[w, prev, c] + cm.hop_tier[w]  # as the load model
        t_exit = base + cm.rst[w]
        t_fwd = base + cm.st[w, c]
        reach = reach_all[:, k]
        p_exit = np.where(reach > 0, ec[:, k] / np.where(reach > 0, reach, 1.0), 1.0)
        if k == n_parts - 1:
            p_exit = np.ones_like(p_exit)
        f = np.maximum(reach - eps1, 0.0)
        if k == 0:
            f = np.where(w == cm.source, reach, f)
        f = np.where(good, f, 0.0)
        rate = lam * f
        mean, scv = _moments(p_exit, t_exit, t_fwd)
        if cm.has_busy:
            scv = np.zeros_like(scv)
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
        wq = wait_in_queue(rate, mean, lo, num)
        loss_lb += f * lo
        wait_lb += np.where(reach > 0, reach * wq, 0.0)
        prev = c
    return loss_lb, wait_lb


_TABLE_MAX = 4_000_000  # (threshold, tier, block, block) entries of the DP's wait table at most
_GRID_STEP = 5e-4  # the grid's spacing in log(rho) (a wait bound at most ~elasticity x this low)
_GRID_LOW = 1e-4  # loads below the grid's first point: bound 0 (their wait is about rho / 2 E[S])


@functools.lru_cache(maxsize=8)
def _rho_grid(k_cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower bounds of the loss ratio and of wait / E[S] at the grid points (SCV 0, K).

    Row j + 1 holds the least over grid points j, j + 1, .. (point j: rho =
    :data:`_GRID_LOW` exp(j :data:`_GRID_STEP`), up to 4, past the formula's fluid limit
    at SCV 0, rho = 3.8025), a hair lower for rounding; row 0 holds 0 (below the grid).
    """
    size = int(np.ceil(np.log(4.0 / _GRID_LOW) / _GRID_STEP)) + 2
    g = _GRID_LOW * np.exp(_GRID_STEP * np.arange(size))
    lo, num = approx_many(g, np.zeros(size), k_cap)
    h = wait_in_queue(g, np.ones(size), lo, num)
    lo = np.concatenate([[0.0], np.minimum.accumulate(lo[::-1])[::-1] * (1.0 - 1e-9)])
    h = np.concatenate([[0.0], np.minimum.accumulate(h[::-1])[::-1] * (1.0 - 1e-9)])
    lo.flags.writeable = h.flags.writeable = False
    return lo, h


def _per_rho(rho: np.ndarray, k_cap: int) -> tuple[np.ndarray, np.ndarray]:
    """The loss ratio and wait / E[S] of a constant service at load ``rho`` by the formula
    itself (:func:`~earlyexit.planner.queueing.approx_many`, SCV 0): what the grid of
    :func:`_rho_grid` bounds from below."""
    lo, num = approx_many(rho, np.zeros(rho.shape), k_cap)
    return lo, wait_in_queue(rho, np.ones(rho.shape), lo, num)


def _wait_table(
    cm: CostModel, space: SearchSpace, lam: float, eps1: float, k_cap: int,
    grid: bool = True,
) -> tuple[np.ndarray, None, None] | None:  # fmt: skip
    """W (T, M, N+1, N+1): lower bounds of a tier's wait for the label DP (approx model).

    W[t, w, b, c] bounds the visits times the mean wait of tier w serving blocks
    b+1..c at threshold t, per unit of 1 - ER_b (the DP multiplies by it), at the least
    rate it can see (:func:`_tier_bounds`); inf where the samples it drops alone exceed
    the loss bound. The service is taken constant at the shorter of its two busy times (exit
    or forward): the wait and the loss grow with the mean and the SCV, so this bounds
    the mixture whatever follows the partition, at half the cost of the two mixtures
    (the DP's increments for "more partitions follow" / "the last" are 0). The queue
    formula is read off the grid of :func:`_rho_grid` at the grid point at least a
    step below each entry's rho (0 below the grid): wait and loss grow with rho (the
    bound rests on that already), so these are lower bounds at a fraction of the cost
    (a wait about elasticity x :data:`_GRID_STEP` low); ``grid`` False: the formula
    at every entry (:func:`_per_rho`).

    Exit rates that are not nested (ER falls somewhere) make negative fractions, which
    the load model clips and renormalizes by a total at most 1 + D (D: the sum of ER's
    falls at that threshold): then a tier's visits are at least (1 - ER_b) / (1 + D)
    (1 at the first tier).

    Returns:
        (W, None, None) as the DP's three tables (no increments), or None: the table
        would be too large.
    """
    n, m = cm.n, cm.m
    er = cm.er[space.t_idx]
    n_t = er.shape[0]
    if 3 * n_t * m * (n + 1) ** 2 > _TABLE_MAX:
        return None
    bi, ci = np.nonzero(np.arange(n + 1)[None, :] > np.arange(n + 1)[:, None])  # pairs b < c
    first = (bi == 0)[None, :]
    falls = np.maximum(-np.diff(er, axis=1), 0.0).sum(axis=1) + np.maximum(er.max(1) - 1.0, 0.0)
    reach = (1.0 - er)[:, bi]  # (T, P)
    vis = np.where(first, 1.0, reach / (1.0 + falls)[:, None])
    pos = reach > 0
    per = np.where(pos, vis / np.where(pos, reach, 1.0), 0.0)  # vis / (1 - ER_b)
    flat = bi * (n + 1) + ci
    bar = eps1 * (1 + 1e-9) + _LOSS_ATOL
    ws = [w for w in range(m) if space.tier_allowed[:, w].any()]
    out = np.zeros((n_t, m, (n + 1) ** 2))
    if ws:
        wa = np.array(ws)
        base = (
            cm.dt[wa][:, bi] + cm.ct_busy[wa][:, bi, ci] + cm.hop_tier[wa][:, None]
        )  # as the model
        t_min = base + np.minimum(cm.rst[wa][:, None], cm.st[wa][:, ci])  # (W, P): the shorter
        f0 = np.maximum(vis - eps1, 0.0)  # (T, P); at the source's first partition: vis
        src = ws.index(cm.source) if cm.source in ws else None
        tp = t_min[:, None, :] * per[None]  # (W, T, P): wait per unit of wait / E[S]
        if grid:
            lo_g, h_g = _rho_grid(k_cap)
            with np.errstate(divide="ignore"):  # log(rho / low) / step, factor by factor
                x = (np.log(f0) + math.log(lam / _GRID_LOW))[None] + np.log(t_min)[:, None, :]
                if src is not None:
                    x[src][:, first[0]] = (
                        np.log(vis[:, first[0]]) + math.log(lam / _GRID_LOW)
                    ) + np.log(t_min[src, first[0]])[None]
            x *= 1.0 / _GRID_STEP
            i = np.clip(x, 0.0, float(lo_g.size - 1), out=x).astype(np.int64)
            # x >= j + 1 puts grid point j (row j + 1) a full step below rho whatever the
            # rounding of the logarithms; loads 0 (log -inf) and below the grid read row 0
            lo, h = lo_g[i], h_g[i]
        else:
            f = np.broadcast_to(f0, (len(ws), *f0.shape)).copy()
            if src is not None:
                f[src] = np.where(first, vis, f0)
            lo, h = _per_rho((lam * f * t_min[:, None, :]).ravel(), k_cap)
            lo, h = lo.reshape(f.shape), h.reshape(f.shape)
        # (the loss is at least 1 - 1/rho, carried load rho (1 - L) <= 1: saturated ones too)
        lost = lo * f0[None] > bar
        if src is not None:
            lost[src][:, first[0]] = lo[src][:, first[0]] * vis[:, first[0]] > bar
        tab = np.where(lost, np.inf, h * tp)  # 0 where nobody comes (per 0)
        out[:, wa[:, None], flat[None, :]] = tab.transpose(1, 0, 2)
    tab0 = out.reshape(n_t, m, n + 1, n + 1)
    return tab0, None, None
