"""The planner's public functions: ``plan``, ``pareto``, ``plan_capacity``, and the baselines.

``make_plan`` and the baselines (plans of configurations chosen without a search)
live in :mod:`earlyexit.planner._baselines` and are re-exported here.

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> p = plan(synthetic_profile(12), "portend-aws", min_accuracy=0.6)
    >>> p.estimate.accuracy >= 0.6, p.objective
    (True, 'min_latency')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from earlyexit.formats import Plan
from earlyexit.planner._baselines import (
    ProfileLike,
    TopologyLike,
    _from_candidate,
    baselines,
    cloud_only,
    edge_only,
    make_plan,
    neurosurgeon,
)
from earlyexit.planner._underload_capacity import capacity as _capacity
from earlyexit.planner._underload_capacity import explain_infeasible
from earlyexit.planner.estimators import check_estimator
from earlyexit.planner.latency import CostModel
from earlyexit.planner.search import search
from earlyexit.planner.space import HINTS, make_space
from earlyexit.planner.topology import resolve_profile, resolve_topology
from earlyexit.planner.underload import search_under_load

__all__ = [
    "plan",
    "pareto",
    "baselines",
    "edge_only",
    "cloud_only",
    "neurosurgeon",
    "make_plan",
    "plan_capacity",
]


def _check_hints(hints: Mapping[str, Any]) -> None:
    unknown = sorted(set(hints) - set(HINTS))
    if unknown:
        raise TypeError(f"unknown hint(s) {unknown}; valid hints: {list(HINTS)}")


def plan(
    profile: ProfileLike,
    topology: TopologyLike,
    min_accuracy: float | None = None,
    max_latency: float | None = None,
    estimator: str = "portend",
    *,
    arrival_rate: float | None = None,
    queue_capacity: int | None = None,
    max_loss: float | None = None,
    queue_model: str = "approx",
    **hints: Any,
) -> Plan:
    """The optimal plan: P_lat (``min_accuracy``) or P_acc (``max_latency``), optionally under load.

    With neither bound it minimizes latency without constraint. The optimum is
    exact for the model of docs/spec.md (see :mod:`earlyexit.planner.search`). Ties break
    toward higher accuracy (P_lat) or lower latency (P_acc), then fewer
    partitions, then lower tiers (lexicographic on the tier tuple), then
    earlier cut points, then the lower threshold.

    Args:
        profile: a Profile or the path of its JSON.
        topology: a Topology, a built-in name (``portend-aws``, ``mobile``,
            ``iot``) or the path of a YAML file.
        min_accuracy: eps_acc of P_lat (accuracy in [0, 1]).
        max_latency: eps_lat of P_acc, in seconds.
        estimator: ``"portend"`` (the paper) or ``"exact"`` (replays samples).
        arrival_rate: samples per second arriving at the source (Poisson). Given,
            the plan is the best under load (docs/spec.md#load): latency is the
            mean latency with queueing (``max_latency`` bounds it), and it
            records the load in ``plan.extra["load"]``. None: no load (today's plan).
        queue_capacity: K, messages a tier or link holds at most (default 50).
        max_loss: the bound on the fraction of samples dropped, in (0, 1].
        queue_model: ``"approx"`` (Casale & Roveri's formula) or ``"exact"``
            (M/G/1/K embedded chain).
        **hints: ``num_partitions``, ``max_partitions``, ``tiers``,
            ``placement``, ``cut_points``, ``exits``, ``thresholds``
            (see :mod:`earlyexit.planner.space`).

    Returns:
        The :class:`~earlyexit.formats.Plan`.

    Raises:
        ValueError: bad inputs, both bounds, or no configuration meets the bound
            (the message says the best reachable value).
        TypeError: an unknown hint.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> p = plan(synthetic_profile(12), "portend-aws", max_latency=0.2)
        >>> p.estimate.latency_s <= 0.2
        True
    """
    _check_hints(hints)
    prof = resolve_profile(profile)
    topo = resolve_topology(topology)
    check_estimator(estimator, prof)
    if min_accuracy is not None and max_latency is not None:
        raise ValueError(
            "give min_accuracy (P_lat: minimize latency) or max_latency (P_acc: maximize "
            "accuracy), not both"
        )
    if arrival_rate is None and (queue_capacity is not None or max_loss is not None):
        raise ValueError("queue_capacity and max_loss need arrival_rate (samples per second)")
    if max_loss is not None and not (
        isinstance(max_loss, (int, float))
        and not isinstance(max_loss, bool)
        and 0.0 < max_loss <= 1.0
    ):
        raise ValueError(f"max_loss: must be a number in (0, 1], got {max_loss!r}")
    cm = CostModel(prof, topo)
    space = make_space(cm, **hints)
    if max_latency is not None:
        objective, bound, constraint = (
            "max_accuracy",
            float(max_latency),
            {"max_latency_s": float(max_latency)},
        )
        if not bound > 0:
            raise ValueError(f"max_latency: must be > 0 seconds, got {max_latency}")
    else:
        objective = "min_latency"
        bound = None if min_accuracy is None else float(min_accuracy)
        constraint = {} if bound is None else {"min_accuracy": bound}
        if bound is not None and not 0.0 <= bound <= 1.0:
            raise ValueError(f"min_accuracy: must be in [0, 1], got {min_accuracy}")
    if arrival_rate is not None:
        return _plan_under_load(
            cm, space, estimator, objective, bound, constraint,
            arrival_rate, queue_capacity, max_loss, queue_model,
        )  # fmt: skip
    found = search(cm, space, estimator, objective, bound)
    if not found:
        if objective == "min_latency":
            best = search(cm, space, estimator, "max_accuracy", None)
            reach = (
                f"the highest estimated accuracy is {best[0].accuracy:.4f}" if best else "nothing"
            )
            raise ValueError(f"no configuration reaches min_accuracy={bound}: {reach}")
        best = search(cm, space, estimator, "min_latency", None)
        reach = f"the lowest estimated latency is {best[0].latency:.6f} s" if best else "nothing"
        raise ValueError(f"no configuration meets max_latency={bound} s: {reach}")
    return _from_candidate(cm, found[0], estimator, objective, constraint)


def _plan_under_load(
    cm: CostModel,
    space: Any,
    estimator: str,
    objective: str,
    bound: float | None,
    constraint: Mapping[str, float],
    arrival_rate: float,
    queue_capacity: int | None,
    max_loss: float | None,
    queue_model: str,
) -> Plan:
    reuse: dict = {}  # the label DP's tables, for today's search in the message below
    found = search_under_load(
        cm, space, estimator, objective, bound, arrival_rate, queue_capacity, max_loss,
        queue_model, reuse=reuse,
    )  # fmt: skip
    if found is None:
        what = "accuracy bound" if objective == "min_latency" else "latency bound"
        raise ValueError(
            f"no configuration meets the {what} with loss ratio <= {max_loss} at "
            f"arrival_rate={arrival_rate}/s (queue_capacity={found_k(queue_capacity)}); "
            "try a lower rate, a larger max_loss or queue_capacity (earlyexit capacity tells a "
            "plan's highest rate)"
            + "; "
            + explain_infeasible(
                cm,
                space,
                estimator,
                objective,
                bound,
                arrival_rate,
                queue_capacity,
                max_loss,
                queue_model,
                searcher=reuse.get("searcher"),
            )  # fmt: skip
        )
    cand, load = found
    p = _from_candidate(cm, cand, estimator, objective, constraint)
    record = {**load.to_dict(), "max_loss": None if max_loss is None else float(max_loss)}
    return dataclasses.replace(p, extra={**dict(p.extra), "load": record})


def found_k(queue_capacity: int | None) -> int:
    """K as used: the given one or the default."""
    from earlyexit.planner.queueing import DEFAULT_QUEUE_CAPACITY

    return DEFAULT_QUEUE_CAPACITY if queue_capacity is None else int(queue_capacity)


def plan_capacity(
    plan: Plan | str | os.PathLike[str],
    profile: ProfileLike,
    topology: TopologyLike,
    max_loss: float = 0.01,
    queue_capacity: int | None = None,
    queue_model: str = "approx",
) -> float:
    """The highest arrival rate (samples/s) that a plan sustains with loss ratio <= ``max_loss``.

    Args:
        plan: a Plan or the path of its JSON.
        profile, topology: the inputs of the plan (its digests are checked).
        max_loss: the loss bound, in (0, 1).
        queue_capacity: K of every station (default: the plan's recorded K, else 50).
        queue_model: ``"approx"`` or ``"exact"``.

    Returns:
        lambda_max (``inf`` if the plan does no work at all).

    Raises:
        ValueError: bad arguments, or a plan made from other inputs.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> prof = synthetic_profile(8)
        >>> p = plan(prof, "portend-aws", min_accuracy=0.6)
        >>> plan_capacity(p, prof, "portend-aws", max_loss=0.01) > 0
        True
    """
    if not isinstance(plan, Plan):
        plan = Plan.load(plan)
    prof = resolve_profile(profile)
    topo = resolve_topology(topology)
    if plan.profile_digest != prof.digest():
        raise ValueError(
            "plan: made from another profile (profile_digest differs); give its profile"
        )
    if plan.topology_digest != topo.digest():
        raise ValueError(
            "plan: made for another topology (topology_digest differs); give its topology"
        )
    if queue_capacity is None:
        recorded = plan.extra.get("load") if isinstance(plan.extra, Mapping) else None
        if isinstance(recorded, Mapping) and isinstance(recorded.get("queue_capacity"), int):
            queue_capacity = recorded["queue_capacity"]
    return _capacity(CostModel(prof, topo), plan, max_loss, queue_capacity, queue_model)


def pareto(
    profile: ProfileLike, topology: TopologyLike, estimator: str = "portend", **hints: Any
) -> list[Plan]:
    """The full (latency, accuracy) Pareto frontier, one plan per point, by increasing latency.

    Args:
        profile, topology, estimator, **hints: as for :func:`plan`.

    Returns:
        Plans with objective ``"pareto"``.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> front = pareto(synthetic_profile(8), "portend-aws")
        >>> all(a.estimate.latency_s <= b.estimate.latency_s for a, b in zip(front, front[1:]))
        True
    """
    _check_hints(hints)
    prof = resolve_profile(profile)
    topo = resolve_topology(topology)
    check_estimator(estimator, prof)
    cm = CostModel(prof, topo)
    space = make_space(cm, **hints)
    return [
        _from_candidate(cm, c, estimator, "pareto", {})
        for c in search(cm, space, estimator, "pareto", None)
    ]
