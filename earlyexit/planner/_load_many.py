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

import numpy as np

from earlyexit.planner._mg1k import approx_many
from earlyexit.planner._mg1k_exact import mg1k_exact
from earlyexit.planner.latency import CostModel, path_links

__all__ = ["ManyLoads", "load_many", "scv_of", "wait_in_queue"]

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
    lam = np.asarray(arrival_rate, dtype=np.float64)
    k_cap = int(queue_capacity)
    cuts = np.asarray(cuts, dtype=np.int64).reshape(-1, len(tiers))
    n_rows, n_parts = cuts.shape
    e_c = np.maximum(np.asarray(e, dtype=np.float64).reshape(n_rows, n_parts), 0.0)
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

    # the route: chain steps (key, weight (R,), times (R,) or (exit, forward) at a tier)
    chain: list[tuple[Key, np.ndarray, tuple]] = []
    one = np.ones(n_rows)
    for j, dr, bw in _links(cm, src, tiers[0]):
        chain.append((("link", j, dr), one, (float(cm.bits[0]) / bw,)))
    branch: list[tuple[int, int, list[tuple[Key, float]]]] = []  # (chain pos, k, steps)
    prev = np.zeros(n_rows, dtype=np.int64)
    for k in range(n_parts):
        w, c = int(tiers[k]), cuts[:, k]
        base = cm.dt[w, prev] + cm.ct[w, prev, c] + float(h[w])
        chain.append((("tier", w), reach[:, k], (k, base + cm.rst[w], base + cm.st[w, c])))
        if on[k]:
            steps = [(("link", j, dr), rbits / bw) for j, dr, bw in _links(cm, w, dst)]
            branch.append((len(chain), k, steps))
        if k < n_parts - 1:
            for j, dr, bw in _links(cm, w, int(tiers[k + 1])):
                chain.append((("link", j, dr), s_c[:, k], (cm.bits[c] / bw,)))
        prev = c
    keys = list(dict.fromkeys([st[0] for st in chain] + [kk for b in branch for kk, _ in b[2]]))
    sidx = {kk: i for i, kk in enumerate(keys)}
    n_st = len(keys)

    # every flow: (station, weight (R,), time (R,)), in the order the route offers them
    f_st: list[int] = []
    f_w: list[np.ndarray] = []
    f_t: list[np.ndarray] = []
    for kk, w_, t in chain:
        if kk[0] == "tier":
            f_st += [sidx[kk], sidx[kk]]
            f_w += [e_c[:, t[0]], s_c[:, t[0]]]
            f_t += [t[1], t[2]]
        else:
            f_st.append(sidx[kk])
            f_w.append(w_)
            f_t.append(t[0])
    for _at, k, steps in branch:
        for kk, t in steps:
            f_st.append(sidx[kk])
            f_w.append(e_c[:, k])
            f_t.append(t)
    n_fl = len(f_st)
    agg = np.zeros((n_st, n_fl))
    agg[f_st, np.arange(n_fl)] = 1.0
    times = np.empty((n_fl, n_rows))
    for i, t in enumerate(f_t):
        times[i] = t
    weights = np.stack(f_w) * lam  # lam: one rate, or one per row
    chain_st = [sidx[kk] for kk, _w, _t in chain]

    loss = np.zeros((n_st, n_rows))
    met = np.zeros((6, n_st, n_rows))  # rate, mean, scv, rho, loss, wait
    damp = np.ones(n_rows)
    last_resid = np.full(n_rows, np.inf)
    d_prev = np.zeros((n_st, n_rows))
    act = np.arange(n_rows)  # the rows still iterating
    for _ in range(_FIX_ITERS):
        x = loss[:, act]
        keep = 1.0 - x
        surv_at = [np.ones(act.size)]
        for i in chain_st:
            surv_at.append(surv_at[-1] * keep[i])
        sv_fl = []
        for pos, (kk, _w, _t) in enumerate(chain):
            sv_fl += [surv_at[pos]] * (2 if kk[0] == "tier" else 1)
        for at, _k, steps in branch:
            sv = surv_at[at]
            for kk, _t in steps:
                sv_fl.append(sv)
                sv = sv * keep[sidx[kk]]
        vals = _stations(weights[:, act] * np.stack(sv_fl), times[:, act], agg, k_cap, queue_model)
        met[:, :, act] = vals
        d = vals[4] - x
        resid = np.abs(d).max(axis=0)
        settled = resid < _SETTLED
        # a row whose losses swing without shrinking (a link that carries several
        # hand-offs: more loss upstream, less traffic, less loss) takes relaxed steps
        # x + a (F(x) - x), a from the ratio c of successive steps (secant: a / (1 - c))
        a = damp[act]
        dp = d_prev[:, act]
        den = (dp * dp).sum(axis=0)
        c = np.minimum(
            np.where(den > 0, (d * dp).sum(axis=0) / np.where(den > 0, den, 1.0), 0.0), 0.9
        )
        relax = ~settled & ((resid >= last_resid[act]) | (a < 1.0) | (c < -0.3))
        damp[act] = np.where(relax, np.clip(a / (1.0 - c), 1.0 / 64.0, 1.0), a)
        last_resid[act] = resid
        d_prev[:, act] = d
        loss[:, act] = x + np.where(settled, 1.0, damp[act]) * d
        act = act[~settled]
        if act.size == 0:
            break

    # completed: exits at k survive the chain up to and including tier k, then their route
    keep = 1.0 - loss
    surv = one
    after_tier: dict[int, np.ndarray] = {}
    for kk, _w, t in chain:
        surv = surv * keep[sidx[kk]]
        if kk[0] == "tier":
            after_tier[t[0]] = surv
    completed = np.zeros(n_rows)
    for _at, k, steps in branch:
        sv = after_tier[k]
        for kk, _t in steps:
            sv = sv * keep[sidx[kk]]
        completed = completed + np.where(e_c[:, k] > 0, e_c[:, k] * sv, 0.0)
    visits = agg @ np.stack(f_w)
    delay = (visits * met[5]).sum(axis=0)
    per = {
        name: {kk: met[i, sidx[kk]] for kk in keys}
        for i, name in enumerate(("rate", "mean", "scv", "rho", "lossr", "wait"))
    }
    return ManyLoads(
        keys=keys,
        delay=delay,
        loss=np.clip(1.0 - completed, 0.0, 1.0),
        visits={kk: visits[sidx[kk]] for kk in keys},
        **per,
    )


def _stations(
    rates: np.ndarray, times: np.ndarray, agg: np.ndarray, k_cap: int, model: str
) -> np.ndarray:
    """(6, S, R): rate, mean, scv, rho, loss, wait of every station from its flows (F, R)."""
    live = rates > 0
    rates = np.where(live, rates, 0.0)
    rate = agg @ rates
    busy = rate > 0
    den = np.where(busy, rate, 1.0)
    mean = np.where(busy, (agg @ (rates * times)) / den, 0.0)
    m2 = np.where(busy, (agg @ (rates * times**2)) / den, 0.0)
    scv = scv_of(mean, m2)
    rho = rate * mean
    if model == "exact":
        lo, num = np.zeros(rho.shape), np.zeros(rho.shape)
        for si, r in zip(*np.nonzero(rho > 0), strict=True):
            sel = live[:, r] & (agg[si] > 0)
            lo[si, r], num[si, r] = mg1k_exact(
                rate[si, r], times[sel, r], rates[sel, r] / rate[si, r], k_cap
            )
    else:
        lo, num = approx_many(rho, scv, k_cap)
    wq = wait_in_queue(rate, mean, lo, num)
    pos = rho > 0
    return np.stack([rate, mean, scv, np.where(pos, rho, 0.0), np.where(pos, lo, 0.0), wq])


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
