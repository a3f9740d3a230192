"""The capacity of a plan under load, and what today's plan does when none meets a bound.

:func:`capacity` bisects on the arrival rate (the loss ratio of a fixed
configuration grows with lambda); :func:`explain_infeasible` words the message of
a plan under load that no configuration meets. Both are re-exported by
:mod:`earlyexit.planner.underload`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from earlyexit.formats import Plan
from earlyexit.planner._load_many import load_many
from earlyexit.planner._mg1k import largest_ok
from earlyexit.planner.estimators import exit_fractions
from earlyexit.planner.latency import CostModel
from earlyexit.planner.queueing import LoadEstimate, check_load_args, load_of_configuration
from earlyexit.planner.search import search
from earlyexit.planner.space import SearchSpace

if TYPE_CHECKING:
    from earlyexit.planner._portend import PortendSearch

__all__ = ["capacity", "explain_infeasible"]


def _unloaded(
    cm: CostModel, threshold: float, cuts: tuple[int, ...], d: tuple[int, ...], estimator: str
) -> tuple[list[float], list[float], float, float]:
    """E_k, S_k, Lat and accuracy of one configuration without load."""
    e, s, acc = exit_fractions(cm.profile, threshold, cuts, estimator)
    lat, _ = cm.latency(cuts, d, e, s)
    return e, s, lat, acc


def _evaluate(
    cm: CostModel, estimator: str, t_i: int, cuts: tuple[int, ...], d: tuple[int, ...],
    lam: float, k_cap: int, model: str,
) -> tuple[LoadEstimate, float]:  # fmt: skip
    """One configuration (threshold index ``t_i``) under load, and its accuracy."""
    e, s, lat, acc = _unloaded(cm, float(cm.thresholds[t_i]), cuts, d, estimator)
    return load_of_configuration(cm, cuts, d, e, s, lat, lam, k_cap, model), float(acc)


def explain_infeasible(
    cm: CostModel, space: SearchSpace, estimator: str, objective: str, bound: float | None,
    arrival_rate: float, queue_capacity: int | None = None, max_loss: float | None = None,
    queue_model: str = "approx", *, searcher: PortendSearch | None = None,
) -> str:  # fmt: skip
    """What today's plan (no load) does at that rate: its loss ratio and the rate it sustains.

    For the message of a plan under load that no configuration meets.

    Args:
        searcher: the label DP of the search under load (P_lat, PORTEND; from
            :func:`~earlyexit.planner.underload.search_under_load`'s ``reuse``): when it
            was built on ``cm`` itself (no busy times), today's search reuses its tables.

    Returns:
        One sentence (empty if the bound has no configuration even without load).
    """
    lam, k_cap, model = check_load_args(arrival_rate, queue_capacity, queue_model)
    same = (
        searcher is not None
        and searcher.cm is cm
        and searcher.space is space
        and estimator == "portend"
        and objective == "min_latency"
    )
    base = search(
        cm, space, estimator, objective, bound, searcher=searcher.unloaded() if same else None
    )
    if not base:
        return ""
    c0 = base[0]
    le, _ = _evaluate(cm, estimator, c0.threshold_index, c0.cuts, c0.tiers, lam, k_cap, model)
    out = (
        f"today's plan (T={c0.threshold:g}, P={list(c0.cuts)}, D={list(c0.tiers)}) loses "
        f"{le.loss_ratio:.3g} of the samples at {lam:g}/s"
    )
    if max_loss is not None and 0 < max_loss < 1:
        e, s, lat, _ = _unloaded(cm, c0.threshold, c0.cuts, c0.tiers, estimator)
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
    e, s, lat, _ = _unloaded(cm, plan.threshold, cuts, d, plan.estimator)
    return _capacity_of(cm, cuts, d, e, s, lat, eps, k_cap, queue_model, rel_tol)


def _capacity_of(
    cm: CostModel, cuts: tuple[int, ...], d: tuple[int, ...], e: list[float], s: list[float],
    lat: float, eps: float, k_cap: int, queue_model: str, rel_tol: float = 1e-6,
) -> float:  # fmt: skip
    """:func:`capacity` of one configuration given its fractions and Lat."""

    def losses(lams: np.ndarray) -> np.ndarray:  # several rates at once: load_many's rows
        rows = np.ones((lams.size, 1))
        return load_many(cm, rows * cuts, d, rows * e, lams, k_cap, queue_model).loss

    probe = load_of_configuration(cm, cuts, d, e, s, lat, 1.0, k_cap, queue_model)
    busiest = max((st.service_mean_s * st.arrival_rate for st in probe.stations), default=0.0)
    if busiest <= 0:
        return math.inf
    # from utilization 1 at the busiest station (losses grow without bound with lambda)
    if queue_model != "approx":  # the exact model solves a chain per rate: bisection
        return largest_ok(
            lambda lams: losses(lams) <= eps, 1.0 / busiest, 1e15, rel_tol=rel_tol, iters=200
        )
    return _knee(losses, eps, 1.0 / busiest, 1e15, rel_tol)


_SPREAD = (0.9, 0.6, 0.3, 0.1, 0.03, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _knee(
    losses: Callable[[np.ndarray], np.ndarray], eps: float, start: float, limit: float,
    rel_tol: float,
) -> float:  # fmt: skip
    """The largest rate whose loss is at most ``eps`` (the loss grows with the rate).

    A bracket (feasible end, infeasible end) narrowed around the rate interpolated on
    log(loss) against log(rate) (:func:`_predict`): each round asks, at once, that
    rate, rates toward either end by fractions of the gap (:data:`_SPREAD`) and half
    the tolerance either side, and the midpoint (the safeguard), so a smooth loss
    curve closes the bracket in two or three rounds.

    Returns:
        The bracket's feasible end once within ``rel_tol`` of its top; ``inf`` when the
        loss is still within the bound past ``limit``.
    """
    lo, hi = 0.0, start
    seen: list[tuple[float, float]] = []  # (rate, loss) asked so far
    while True:  # double until the bound fails, four rates a round
        xs = hi * 2.0 ** np.arange(4)
        ls = losses(xs)
        seen += zip(xs.tolist(), ls.tolist(), strict=True)
        bad = np.flatnonzero(~(ls <= eps))
        if bad.size:
            j = int(bad[0])
            if j:
                lo = float(xs[j - 1])
            hi = float(xs[j])
            break
        lo, hi = float(xs[-1]), float(xs[-1]) * 2.0
        if hi > limit:
            return math.inf
    for _ in range(200):
        if hi - lo <= rel_tol * hi:
            break
        mid = 0.5 * (lo + hi)
        xs = [mid]
        at = _predict(seen, eps, lo, hi)
        if at is not None:  # toward either end of the bracket, by fractions of the gap
            xs += [at + (end - at) * f for end in (lo, hi) for f in _SPREAD]
            xs += [at - 0.5 * rel_tol * hi, at, at + 0.5 * rel_tol * hi]
        xs_a = np.array(sorted(x for x in set(xs) if lo < x < hi))
        if xs_a.size == 0:
            break
        ls = losses(xs_a)
        seen += zip(xs_a.tolist(), ls.tolist(), strict=True)
        for x, lx in zip(xs_a.tolist(), ls.tolist(), strict=True):
            if lx <= eps:
                lo = max(lo, x)
            else:
                hi = min(hi, x)
        if lo >= hi:  # not monotone at this precision: keep the last feasible rate
            break
    return lo


def _predict(seen: list[tuple[float, float]], eps: float, lo: float, hi: float) -> float | None:
    """The rate where the loss reaches ``eps``, by inverse interpolation of log(rate) on
    log(loss) through the (up to) three points asked closest to it inside [lo, hi]
    (quadratic through three, linear through two); None without two such points."""
    pts = sorted(
        {(math.log(lx), math.log(x)) for x, lx in seen if lo <= x <= hi and lx > 0},
        key=lambda p: abs(p[0] - math.log(eps)),
    )[:3]
    if len(pts) < 2 or len({p[0] for p in pts}) < len(pts):
        return None
    y = math.log(eps)
    at = 0.0
    for i, (yi, xi) in enumerate(pts):  # Lagrange in y
        w = 1.0
        for j, (yj, _xj) in enumerate(pts):
            if j != i:
                w *= (y - yj) / (yi - yj)
        at += w * xi
    at = math.exp(at)
    return at if lo < at < hi else None
