"""The capacity of a plan under load, and what today's plan does when none meets a bound.

:func:`capacity` bisects on the arrival rate (the loss ratio of a fixed
configuration grows with lambda); :func:`explain_infeasible` words the message of
a plan under load that no configuration meets. Both are re-exported by
:mod:`earlyexit.planner.underload`.
"""

from __future__ import annotations

import math

import numpy as np

from earlyexit.formats import Plan
from earlyexit.planner._load_many import load_many
from earlyexit.planner._mg1k import largest_ok
from earlyexit.planner.estimators import exit_fractions
from earlyexit.planner.latency import CostModel
from earlyexit.planner.queueing import LoadEstimate, check_load_args, load_of_configuration
from earlyexit.planner.search import search
from earlyexit.planner.space import SearchSpace

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

    def ok(lams: np.ndarray) -> np.ndarray:  # several rates at once: load_many's rows
        rows = np.ones((lams.size, 1))
        res = load_many(cm, rows * cuts, d, rows * e, lams, k_cap, queue_model)
        return res.loss <= eps

    probe = load_of_configuration(cm, cuts, d, e, s, lat, 1.0, k_cap, queue_model)
    busiest = max((st.service_mean_s * st.arrival_rate for st in probe.stations), default=0.0)
    if busiest <= 0:
        return math.inf
    # from utilization 1 at the busiest station (losses grow without bound with lambda)
    ways = 16 if queue_model == "approx" else 1  # the exact model solves a chain per rate
    return largest_ok(ok, 1.0 / busiest, 1e15, rel_tol=rel_tol, iters=200, ways=ways)
