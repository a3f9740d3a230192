"""The load model of docs/spec.md#load for many configurations of one placement at once.

:func:`load_many` is the computation behind
:func:`earlyexit.planner.queueing.load_of_configuration` (which calls it with one
row and words the result as stations), vectorized over rows that share the
placement D (hence the same stations and routes): the search under load evaluates
its candidates in batches with it. Each row runs the fixed point of the thin
traffic until its own losses settle, as if alone.

Example:
    >>> import numpy as np
    >>> from earlyexit.planner.latency import CostModel
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> from earlyexit.planner.topology import resolve_topology
    >>> cm = CostModel(synthetic_profile(6), resolve_topology("portend-aws"))
    >>> out = load_many(cm, np.array([[6]]), (0,), np.array([[1.0]]), 0.0, 50, "approx")
    >>> float(out.delay[0]), float(out.loss[0])
    (0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from earlyexit.planner._mg1k import approx_many
from earlyexit.planner._mg1k_exact import mg1k_exact
from earlyexit.planner.latency import CostModel, path_links

__all__ = [
    "ManyLoads",
    "Solved",
    "load_groups",
    "load_many",
    "mean_idle_factor",
    "scv_of",
    "wait_in_queue",
]

_FIX_ITERS = 200
_SETTLED = 1e-13  # a row stops iterating once no station's loss moves more than this

Key = tuple  # ("tier", w) or ("link", j, direction)


@dataclass
class ManyLoads:
    """Per row: the queueing delay and loss ratio; per station key: its metrics (R,).

    Attributes:
        keys: the stations in route order (the input's, then each partition's, then
            the results').
        delay: sum over stations of visits x mean wait in queue, seconds (R,).
        loss: fraction of samples dropped somewhere (R,).
        rate / mean / scv / rho / lossr / wait / visits: per key, arrays (R,).
    """

    keys: list[Key]
    delay: np.ndarray
    loss: np.ndarray
    rate: dict[Key, np.ndarray]
    mean: dict[Key, np.ndarray]
    scv: dict[Key, np.ndarray]
    rho: dict[Key, np.ndarray]
    lossr: dict[Key, np.ndarray]
    wait: dict[Key, np.ndarray]
    visits: dict[Key, np.ndarray]


def _links(cm: CostModel, a: int, b: int) -> list[tuple[int, int, float]]:
    """(link, direction, bandwidth) of the path from tier a to tier b, in travel order."""
    links = list(path_links(a, b))
    if b < a:
        links = links[::-1]
    return [(j, 1 if b > a else -1, float(cm.bw[j])) for j in links]


def load_many(
    cm: CostModel,
    cuts: np.ndarray,
    tiers: Sequence[int],
    e: np.ndarray,
    arrival_rate: float | np.ndarray,
    queue_capacity: int,
    queue_model: str = "approx",
    *,
    branches: Sequence[bool] | None = None,
) -> ManyLoads:
    """The load model of R configurations placed at ``tiers``, given their exit fractions.

    Args:
        cm: the cost model.
        cuts: (R, L) cut points; ``tiers``: D (0-based, length L), shared by the rows.
        e: (R, L) exit fractions E_k (negative ones count as 0, renormalized).
        arrival_rate / queue_capacity / queue_model: as
            :func:`~earlyexit.planner.queueing.evaluate_load` (already checked); the rate
            may also be one per row (R,).
        branches: which partitions' result routes count as stations (default all; a
            route whose E_k is 0 carries nothing either way).

    Returns:
        The :class:`ManyLoads`.
    """
    route = _route(cm, cuts, tiers, e, branches)
    keys, met, visits, delay, loss = _solve([route], arrival_rate, queue_capacity, queue_model)
    per = {
        name: {kk: met[i, j] for j, kk in enumerate(keys)}
        for i, name in enumerate(("rate", "mean", "scv", "rho", "lossr", "wait"))
    }
    return ManyLoads(
        keys=keys,
        delay=delay,
        loss=loss,
        visits={kk: visits[j] for j, kk in enumerate(keys)},
        **per,
    )


def load_groups(
    cm: CostModel,
    groups: Sequence[tuple[Sequence[int], np.ndarray, np.ndarray]],
    arrival_rate: float,
    queue_capacity: int,
    queue_model: str = "approx",
    *,
    detail: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, Solved]:
    """:func:`load_many` of configurations at several placements in one fixed point.

    Args:
        groups: (tiers D, cuts (R_i, L_i), E (R_i, L_i)) per placement.
        arrival_rate / queue_capacity / queue_model: as :func:`load_many` (one rate).

    Returns:
        The queueing delay and the loss ratio of every row, groups in order; each row's
        values are those :func:`load_many` gives it (the stations of the other
        placements carry nothing in its column); with ``detail``, also the
        :class:`Solved` stations.
    """
    routes = [_route(cm, cuts, d, e, None) for d, cuts, e in groups]
    keys, met, visits, delay, loss = _solve(routes, arrival_rate, queue_capacity, queue_model)
    if detail:
        return delay, loss, Solved(keys, met, visits)
    return delay, loss


@dataclass
class Solved:
    """The stations of a :func:`load_groups` call: keys, metrics (6, S, R) (rate, mean,
    scv, rho, loss, wait) and visits (S, R); a station outside a row's route carries 0."""

    keys: list[Key]
    met: np.ndarray
    visits: np.ndarray


@dataclass
class _Route:
    """One placement's rows: its flows (station, weight, time, the stations upstream, the
    time when the station is busy), its result routes (E_k, the stations a sample that
    exits at k passes) and, where a partition runs faster when its tier is busy, its
    compute (tier, the unloaded model's weight S_{k-1}, CT after the profile's idle gap,
    CT busy, both with the runtime's CPU per run); ``cbs``: per flow, the busy CT that a
    tier's idle curve stretches (-1 on links and tiers without one)."""

    n_rows: int
    keys: list[Key]
    flows: list[tuple[Key, np.ndarray | float, np.ndarray | float, list[Key], np.ndarray | float]]
    done: list[tuple[np.ndarray, list[Key]]]
    saves: list[tuple[Key, np.ndarray, np.ndarray, np.ndarray]]
    cbs: list[np.ndarray | float]
    curves: dict[Key, tuple[np.ndarray, np.ndarray]]


def _route(
    cm: CostModel, cuts: np.ndarray, tiers: Sequence[int], e: np.ndarray,
    branches: Sequence[bool] | None,
) -> _Route:  # fmt: skip
    """The stations and flows of R configurations placed at ``tiers`` (:func:`load_many`)."""
    cuts = np.asarray(cuts, dtype=np.int64).reshape(-1, len(tiers))
    n_rows, n_parts = cuts.shape
    e_raw = np.asarray(e, dtype=np.float64).reshape(n_rows, n_parts)
    busy = cm.has_busy
    if busy:  # the unloaded model's weight of partition k's compute: 1 - (E_1 + .. + E_k-1)
        lat_reach = 1.0 - np.cumsum(e_raw, axis=1) + e_raw
    e_c = np.maximum(e_raw, 0.0)
    tot = e_c.sum(axis=1)
    last = np.zeros(n_parts)
    last[-1] = 1.0
    pos = tot > 0
    e_c = np.where(pos[:, None], e_c / np.where(pos, tot, 1.0)[:, None], last[None, :])
    reach = np.stack([e_c[:, k:].sum(axis=1) for k in range(n_parts)], axis=1)
    s_c = reach - e_c
    h = cm.hop_tier
    src, dst = cm.source, cm.destination
    rbits = float(cm.profile.result_bits)
    on = [True] * n_parts if branches is None else list(branches)

    # the chain, in the order it offers its flows; a flow survives the stations before it
    flows: list[tuple[Key, np.ndarray | float, np.ndarray | float, list[Key], Any]] = []
    saves: list[tuple[Key, np.ndarray, np.ndarray, np.ndarray]] = []
    cbs: list[np.ndarray | float] = []  # per flow, in order
    chain: list[Key] = []  # (a weight or time the same for every row: a float)
    for j, dr, bw in _links(cm, src, tiers[0]):
        t = float(cm.bits[0]) / bw
        flows.append((("link", j, dr), 1.0, t, [*chain], t))
        cbs.append(-1.0)
        chain.append(("link", j, dr))
    branch: list[tuple[list[Key], int, list[tuple[Key, float]]]] = []  # (upstream, k, steps)
    prev = np.zeros(n_rows, dtype=np.int64)
    for k in range(n_parts):
        w, c = int(tiers[k]), cuts[:, k]
        ct = cm.ct[w, prev, c]
        base = cm.dt[w, prev] + ct + float(h[w])
        t_exit, t_fwd = base + cm.rst[w], base + cm.st[w, c]
        tb_exit, tb_fwd, cb = t_exit, t_fwd, -1.0
        if busy:
            ct_b = cm.ct_busy[w, prev, c]
            tb_exit, tb_fwd = t_exit - (ct - ct_b), t_fwd - (ct - ct_b)
            saves.append((("tier", w), lat_reach[:, k], ct, ct_b))
            if cm.idle_curves[w] is not None:  # it stretches the run's CPU: ct_busy (>= 0)
                cb = np.maximum(ct_b, 0.0)
        cbs += [cb, cb]
        flows.append((("tier", w), e_c[:, k], t_exit, [*chain], tb_exit))
        flows.append((("tier", w), s_c[:, k], t_fwd, [*chain], tb_fwd))
        chain.append(("tier", w))
        if on[k]:
            steps = [(("link", j, dr), rbits / bw) for j, dr, bw in _links(cm, w, dst)]
            branch.append(([*chain], k, steps))
        if k < n_parts - 1:
            for j, dr, bw in _links(cm, w, int(tiers[k + 1])):
                t = cm.bits[c] / bw
                flows.append((("link", j, dr), s_c[:, k], t, [*chain], t))
                cbs.append(-1.0)
                chain.append(("link", j, dr))
        prev = c
    done: list[tuple[np.ndarray, list[Key]]] = []
    for up, k, steps in branch:
        for kk, t in steps:
            flows.append((kk, e_c[:, k], t, up, t))
            cbs.append(-1.0)
            up = [*up, kk]
        done.append((e_c[:, k], up))
    keys = list(dict.fromkeys(chain + [kk for _u, _k, st in branch for kk, _t in st]))
    curves = {
        ("tier", int(w)): cm.idle_curves[int(w)]
        for w in tiers
        if busy and cm.idle_curves[int(w)] is not None
    }
    return _Route(n_rows, keys, flows, done, saves, cbs, curves)


def _solve(
    routes: Sequence[_Route], arrival_rate: float | np.ndarray, queue_capacity: int,
    queue_model: str,
) -> tuple[list[Key], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The fixed point of the thin traffic, every row as if alone (its own stations).

    Returns:
        (station keys, metrics (6, S, R), visits (S, R), delay (R,), loss ratio (R,)).
    """
    lam = np.asarray(arrival_rate, dtype=np.float64)
    k_cap = int(queue_capacity)
    keys = list(dict.fromkeys(kk for r in routes for kk in r.keys))
    sidx = {kk: i for i, kk in enumerate(keys)}
    n_st = len(keys)
    n_rows = sum(r.n_rows for r in routes)
    n_fl = sum(len(r.flows) for r in routes)
    depth = max((len(f[3]) for r in routes for f in r.flows), default=0)
    agg = np.zeros((n_st, n_fl))
    path_idx = np.full((n_fl, max(depth, 1)), n_st)  # n_st: a row of ones
    w0 = np.zeros((n_fl, n_rows))  # weights (visits per sample), 0 outside a flow's rows
    times = np.zeros((n_fl, n_rows))
    busy = any(r.saves for r in routes)  # some partition runs faster on a busy tier
    times_b = np.zeros((n_fl, n_rows)) if busy else times
    curves = {sidx[kk]: c for r in routes for kk, c in r.curves.items()}
    # busy CT an idle curve stretches, -1 on flows without a curve
    cb = np.full((n_fl, n_rows), -1.0) if curves else None
    fi, row = 0, 0
    for r in routes:
        cols = slice(row, row + r.n_rows)
        for (kk, w_, t, up, tb), c in zip(r.flows, r.cbs, strict=True):
            agg[sidx[kk], fi] = 1.0
            path_idx[fi, : len(up)] = [sidx[u] for u in up]
            w0[fi, cols] = w_
            times[fi, cols] = t
            if busy:
                times_b[fi, cols] = tb
            if cb is not None:
                cb[fi, cols] = c
            fi += 1
        row += r.n_rows
    weights = w0 * lam  # lam: one rate, or one per row
    # the stations where a busy server is faster (the others keep q = 1: no effect)
    faster = (agg @ (times - times_b) > 0) if busy else None
    idle = None
    if cb is not None:  # the idle-gap times follow each station's rate: (cb, flow -> station)
        faster = faster | (agg @ (cb >= 0) > 0)
        idle = (cb, np.argmax(agg, axis=0), curves)

    # the state: every station's loss ratio and (busy times) q, the fraction of its
    # accepted messages that find it empty and are served in the idle-gap time
    n_x = 2 * n_st if busy else n_st
    loss = np.zeros((n_x, n_rows))
    if busy:
        loss[n_st:] = 1.0
    met = np.zeros((7 if busy else 6, n_st, n_rows))  # rate, mean, scv, rho, loss, wait, q
    damp = np.ones(n_rows)
    last_resid = np.full(n_rows, np.inf)
    d_prev = np.zeros((n_x, n_rows))
    act = np.arange(n_rows)  # the rows still iterating
    for _ in range(_FIX_ITERS):
        at_: slice | np.ndarray = slice(None) if act.size == n_rows else act  # views if all
        x = loss[:, at_]
        keep = np.ones((n_st + 1, act.size))
        np.subtract(1.0, x[:n_st], out=keep[:n_st])
        sv = keep[path_idx].prod(axis=1)  # (flows, rows): the survival of each flow
        if busy:
            idle_at = None if idle is None else (idle[0][:, at_], idle[1], idle[2])
            vals = _stations(weights[:, at_] * sv, times[:, at_], agg, k_cap, queue_model,
                             times_b[:, at_], x[n_st:], faster[:, at_], idle_at)  # fmt: skip
            d = np.concatenate([vals[4], vals[6]]) - x
        else:
            vals = _stations(weights[:, at_] * sv, times[:, at_], agg, k_cap, queue_model)
            d = vals[4] - x
        met[:, :, at_] = vals
        resid = np.abs(d).max(axis=0)
        settled = resid < _SETTLED
        if settled.all():  # the last step: F(x) itself
            loss[:, at_] = x + d
            break
        # a row whose losses swing without shrinking (a link that carries several
        # hand-offs: more loss upstream, less traffic, less loss) takes relaxed steps
        # x + a (F(x) - x), a from the ratio c of successive steps (secant: a / (1 - c))
        a = damp[at_]
        dp = d_prev[:, at_]
        den = (dp * dp).sum(axis=0)
        c = np.minimum(
            np.where(den > 0, (d * dp).sum(axis=0) / np.where(den > 0, den, 1.0), 0.0), 0.9
        )
        relax = ~settled & ((resid >= last_resid[at_]) | (a < 1.0) | (c < -0.3))
        damp[at_] = np.where(relax, np.clip(a / (1.0 - c), 1.0 / 64.0, 1.0), a)
        last_resid[at_] = resid
        d_prev[:, at_] = d
        loss[:, at_] = x + np.where(settled, 1.0, damp[at_]) * d
        act = act[~settled]
        if act.size == 0:
            break

    loss, q = loss[:n_st], (loss[n_st:] if busy else None)
    # completed: exits at k survive the chain up to and including tier k, then their route
    keep = 1.0 - loss
    completed = np.zeros(n_rows)
    row = 0
    for r in routes:
        cols = slice(row, row + r.n_rows)
        for ek, path in r.done:
            sv = np.ones(r.n_rows)
            for kk in path:
                sv = sv * keep[sidx[kk], cols]
            completed[cols] = completed[cols] + np.where(ek > 0, ek * sv, 0.0)
        row += r.n_rows
    visits = agg @ w0
    delay = (visits * met[5]).sum(axis=0)
    if busy:  # each partition's compute as served, against Lat's, with Lat's weights
        row = 0
        for r in routes:
            cols = slice(row, row + r.n_rows)
            for kk, weight, lat_ct, fast in r.saves:
                si = sidx[kk]
                qs = q[si, cols]
                cold = lat_ct
                if si in curves:  # after the idle before it: the busy time x E[f], + E[h]
                    g, f, h = curves[si]
                    fac = mean_idle_factor(g, f, met[0, si, cols])
                    wake = _mean_wake(g, h, met[0, si, cols])
                    cold = fast + np.maximum(fast, 0.0) * (fac - 1.0) + wake
                delay[cols] += weight * (qs * cold + (1.0 - qs) * fast - lat_ct)
            row += r.n_rows
    return keys, met[:6], visits, delay, np.clip(1.0 - completed, 0.0, 1.0)


def _stations(
    rates: np.ndarray, times: np.ndarray, agg: np.ndarray, k_cap: int, model: str,
    times_b: np.ndarray | None = None, q: np.ndarray | None = None,
    faster: np.ndarray | None = None, idle: tuple | None = None,
) -> np.ndarray:  # fmt: skip
    """(6, S, R): rate, mean, scv, rho, loss, wait of every station from its flows (F, R).

    With ``times_b`` (each flow's time when the station is busy), ``q`` (S, R) and
    ``faster`` (S, R): a message that finds the station empty (fraction q of the
    accepted ones) is served in ``times``, the others in ``times_b``; then a seventh row,
    the q that the station's queue-length law gives (1 where not ``faster``). With
    ``idle`` (cb (F, R), -1 on flows without a curve; each flow's station; {station:
    (gaps, factors, wake times)}), a station with an idle curve serves a message that
    finds it empty in its busy time plus cb (E[f(I)] - 1) plus E[h(I)], I ~ Exp(its
    rate) the idle time before it (:func:`mean_idle_factor`).
    """
    live = rates > 0
    rates = np.where(live, rates, 0.0)
    rate = agg @ rates
    if idle is not None:
        cb, st_of, curves = idle
        fac, wake = np.ones(rate.shape), np.zeros(rate.shape)
        for si, (g, f, h) in curves.items():
            fac[si] = mean_idle_factor(g, f, rate[si])
            wake[si] = _mean_wake(g, h, rate[si])
        times = np.where(cb >= 0, times_b + cb * (fac[st_of] - 1.0) + wake[st_of], times)
    busy = rate > 0
    den = np.where(busy, rate, 1.0)
    mean = np.where(busy, (agg @ (rates * times)) / den, 0.0)
    m2 = np.where(busy, (agg @ (rates * times**2)) / den, 0.0)
    if times_b is not None:
        mean_c, m2_c = mean, m2
        mean_b = np.where(busy, (agg @ (rates * times_b)) / den, 0.0)
        m2_b = np.where(busy, (agg @ (rates * times_b**2)) / den, 0.0)
        mean = q * mean_c + (1.0 - q) * mean_b
        m2 = q * m2_c + (1.0 - q) * m2_b
    scv = scv_of(mean, m2)
    rho = rate * mean
    if model == "exact":
        lo, num = np.zeros(rho.shape), np.zeros(rho.shape)
        for si, r in zip(*np.nonzero(rho > 0), strict=True):
            sel = live[:, r] & (agg[si] > 0)
            probs = rates[sel, r] / rate[si, r]
            if times_b is None or not faster[si, r]:
                lo[si, r], num[si, r] = mg1k_exact(rate[si, r], times[sel, r], probs, k_cap)
            else:  # exactly: the chain serves a message that finds it empty in times
                lo[si, r], num[si, r] = mg1k_exact(
                    rate[si, r], times_b[sel, r], probs, k_cap, first_times=times[sel, r]
                )
    else:
        lo, num = approx_many(rho, scv, k_cap)
    if times_b is not None:
        # 1 - p_0 = rho (1 - L), the carried load, so q = p_0 / (1 - L) = 1 / (1 - L) - rho;
        # the exact chain took q from its own law: rho = rate (q mean_c + (1 - q) mean_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.maximum(1.0 - lo, 1e-300)
            if model == "exact":
                q_new = (inv - rate * mean_b) / (1.0 + rate * (mean_c - mean_b))
            else:
                q_new = inv - rho
        q_new = np.where(faster & (rate > 0), np.clip(q_new, 0.0, 1.0), 1.0)
        if model == "exact":  # the mean and SCV it served with
            mean = q_new * mean_c + (1.0 - q_new) * mean_b
            scv = scv_of(mean, q_new * m2_c + (1.0 - q_new) * m2_b)
            rho = rate * mean
    wq = wait_in_queue(rate, mean, lo, num)
    pos = rho > 0
    rows = [rate, mean, scv, np.where(pos, rho, 0.0), np.where(pos, lo, 0.0), wq]
    if times_b is not None:
        rows.append(q_new)
    return np.stack(rows)


def mean_idle_factor(gaps: np.ndarray, factors: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """E[f(I)], I ~ Exp(rate): the mean slowdown of a run after the idle time before a
    message that finds its server empty (Poisson arrivals: that idle time is exponential).

    f is piecewise linear through (gaps, factors), gaps[0] = 0, and constant beyond the
    last point; at rate 0 (an idle time without end) it is the last factor.

    Example:
        >>> g, f = np.array([0.0, 0.1]), np.array([1.0, 2.0])
        >>> [round(float(v), 4) for v in mean_idle_factor(g, f, np.array([0.0, 10.0, 1e6]))]
        [2.0, 1.6321, 1.0]
    """
    rate = np.asarray(rate, dtype=np.float64)
    out = np.full(rate.shape, float(factors[-1]))
    pos = rate > 0
    if not pos.any():
        return out
    lam = rate[pos][..., None]
    e = np.exp(-lam * gaps)  # (n, J + 1)
    dg = np.diff(gaps)
    # the integral of (f_j + s_j (x - g_j)) lam e^(-lam x) over [g_j, g_j+1]
    de = e[:, :-1] - e[:, 1:]
    de_over = e[:, :-1] * -np.expm1(-lam * dg) / lam  # (e_j - e_j+1) / lam, stably
    slope = np.diff(factors) / dg
    tot = (factors[:-1] * de + slope * (de_over - dg * e[:, 1:])).sum(axis=-1)
    out[pos] = tot + factors[-1] * e[:, -1]
    return out


def _mean_wake(gaps: np.ndarray, wake: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """E[h(I)], I ~ Exp(rate), h piecewise linear through (gaps, wake), h(0) = 0: the
    mean wake-up time of a message that finds its server empty (0 where h is)."""
    if not np.any(wake):
        return np.zeros(np.shape(rate))
    return mean_idle_factor(gaps, 1.0 + wake, rate) - 1.0


def scv_of(mean: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Squared coefficient of variation E[S^2] / E[S]^2 - 1 (>= 0; 0 where E[S] is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            mean > 0, np.maximum(m2 / np.where(mean > 0, mean, 1.0) ** 2 - 1.0, 0.0), 0.0
        )


def wait_in_queue(
    rate: np.ndarray, mean: np.ndarray, loss: np.ndarray, num: np.ndarray
) -> np.ndarray:
    """Mean wait in queue by Little's law, N / (rate (1 - L)) - E[S] (>= 0; 0 where idle)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        carried = rate * (1.0 - loss)
        wq = np.where(carried > 0, num / np.where(carried > 0, carried, 1.0), np.inf) - mean
    return np.where(rate * mean > 0, np.maximum(wq, 0.0), 0.0)
