"""The model under load (docs/spec.md#load): an M/GI/1/K queue per tier and per link direction.

Samples arrive at the source as a Poisson stream of rate lambda. Every tier's
worker and every direction of every link on the path is one FIFO server that
holds at most K messages (waiting plus in service); a message that finds it
full is dropped, and its sample is lost. The stations are treated as
independent M/GI/1/K queues (Poisson arrivals at every station: the usual
decomposition of an open network):

- a tier's service time is the worker's busy time per sample, a mixture over
  where the samples that reach it go: deserialize the incoming tensor, run
  the partition (``CT``), serialize the result (those that exit here, E_k) or
  the features (those that go on, S_k), plus its hand-off cost ``h``;
- a link's service time is the transmission time ``bits / BW`` of each message
  that crosses it in that direction (inputs, features and results);
- thin traffic: a station sees lambda x (fraction of samples that send that
  message) x (the fraction not dropped upstream), solved as a fixed point
  when one link carries several hand-offs of a sample.

Per station, the loss ratio and the mean number in system come from either
``"approx"``, Casale & Roveri's approximation (:mod:`earlyexit.planner._mg1k`), or
``"exact"``, M/G/1/K's embedded chain (:mod:`earlyexit.planner._mg1k_exact`); this
module assembles the stations of a configuration and re-exports both.

The mean latency of a sample under load is the unloaded latency of
docs/spec.md#latency plus the mean wait in queue of every station, weighted by
the visits of the unloaded model (1 for the input, S_k, E_k), so as lambda -> 0
it equals the unloaded latency exactly.

Example:
    >>> round(float(loss_ratio_approx(0.5, 1.0, 3)), 6)  # M/M/1/3
    0.066667
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> est = evaluate_load(synthetic_profile(10), "portend-aws", 0.5, [4, 10], [0, 2], 5.0)
    >>> est.latency_s > est.unloaded_latency_s and 0 <= est.loss_ratio < 1
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from earlyexit.formats import Profile, Topology
from earlyexit.planner._load_many import _route, load_many
from earlyexit.planner._mg1k import (
    DEFAULT_QUEUE_CAPACITY,
    _approx_scalar,
    _capacity,
    approx_many,
    loss_ratio_approx,
    mg1k_approx,
    mm1k,
)
from earlyexit.planner._mg1k_exact import MAX_EXACT_CAPACITY, mg1k_exact
from earlyexit.planner.estimators import check_cuts
from earlyexit.planner.latency import CostModel, evaluate
from earlyexit.planner.topology import resolve_profile, resolve_topology, tier_index

__all__ = [
    "QUEUE_MODELS",
    "DEFAULT_QUEUE_CAPACITY",
    "MAX_EXACT_CAPACITY",
    "Station",
    "LoadEstimate",
    "loss_ratio_approx",
    "mg1k_approx",
    "approx_many",
    "mg1k_exact",
    "mm1k",
    "check_load_args",
    "evaluate_load",
    "load_of_configuration",
]

QUEUE_MODELS: tuple[str, ...] = ("approx", "exact")


# ---------------------------------------------------------------------- a configuration


@dataclass(frozen=True)
class Station:
    """One server on the path under load.

    Attributes:
        name: ``"tier 1 (cloud)"`` or ``"link 0 up"`` (up: from tier j to j + 1).
        kind: ``"tier"`` or ``"link"``.
        index: the tier or link index.
        arrival_rate: messages per second offered to it (after upstream losses).
        service_mean_s / service_scv: mean and squared coefficient of variation
            of its service time (a mixture over the messages it serves).
        utilization: offered load rho = arrival_rate x service_mean_s.
        loss_ratio: fraction of its arrivals dropped (queue full).
        wait_s: mean time an accepted message waits before service.
        response_s: wait_s + service_mean_s.
        visits: messages per sample offered to the system (unloaded weights).
    """

    name: str
    kind: str
    index: int
    arrival_rate: float
    service_mean_s: float
    service_scv: float
    utilization: float
    loss_ratio: float
    wait_s: float
    response_s: float
    visits: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class LoadEstimate:
    """A configuration under a Poisson load (docs/spec.md#load).

    Attributes:
        arrival_rate: lambda, samples per second at the source.
        queue_capacity: K of every station.
        queue_model: ``"approx"`` or ``"exact"``.
        latency_s: mean latency of a sample under load (unloaded + queueing).
        unloaded_latency_s: Lat of docs/spec.md#latency.
        loss_ratio: fraction of the samples that are dropped somewhere.
        throughput: samples per second completed, lambda (1 - loss_ratio).
        stations: every tier and link direction that serves messages.
    """

    arrival_rate: float
    queue_capacity: int
    queue_model: str
    latency_s: float
    unloaded_latency_s: float
    loss_ratio: float
    throughput: float
    stations: tuple[Station, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (what a plan records under ``load``)."""
        return {
            "arrival_rate": self.arrival_rate,
            "queue_capacity": self.queue_capacity,
            "queue_model": self.queue_model,
            "latency_s": self.latency_s,
            "unloaded_latency_s": self.unloaded_latency_s,
            "loss_ratio": self.loss_ratio,
            "throughput": self.throughput,
            "stations": [s.to_dict() for s in self.stations],
        }


def check_load_args(
    arrival_rate: Any, queue_capacity: Any, queue_model: str
) -> tuple[float, int, str]:
    """Validate (arrival_rate, queue_capacity, queue_model); returns them normalized.

    Raises:
        ValueError / TypeError: naming the argument and what is valid.
    """
    if isinstance(arrival_rate, bool) or not isinstance(
        arrival_rate, (int, float, np.floating, np.integer)
    ):
        raise TypeError(
            f"arrival_rate: expected a number of samples per second, got {arrival_rate!r}"
        )
    lam = float(arrival_rate)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(
            f"arrival_rate: must be a finite number >= 0 (samples/s), got {arrival_rate}"
        )
    k = _capacity(DEFAULT_QUEUE_CAPACITY if queue_capacity is None else queue_capacity)
    if queue_model not in QUEUE_MODELS:
        raise ValueError(f"queue_model: expected one of {list(QUEUE_MODELS)}, got {queue_model!r}")
    if queue_model == "exact" and k > MAX_EXACT_CAPACITY:
        raise ValueError(
            f"queue_capacity: the exact queue model allows K <= {MAX_EXACT_CAPACITY}, got {k}"
        )
    return lam, k, queue_model


def _station_metrics(
    lam: float, times: np.ndarray, probs: np.ndarray, k: int, model: str
) -> tuple[float, float, float, float, float]:
    """(mean, scv, rho, loss, wait) of one station."""
    mean = float(np.dot(times, probs))
    m2 = float(np.dot(times**2, probs))
    scv = m2 / mean**2 - 1.0 if mean > 0 else 0.0
    scv = max(scv, 0.0)
    rho = lam * mean
    if rho <= 0:
        return mean, scv, 0.0, 0.0, 0.0
    if model == "exact":
        loss, n = mg1k_exact(lam, times, probs, k)
    else:
        loss, n = _approx_scalar(rho, scv, k)
    carried = lam * (1.0 - loss)
    resp = n / carried if carried > 0 else math.inf
    return mean, scv, rho, loss, max(resp - mean, 0.0)


def load_of_configuration(
    cm: CostModel,
    cuts: Sequence[int],
    tiers: Sequence[int],
    e: Sequence[float],
    s: Sequence[float],
    unloaded_latency_s: float,
    arrival_rate: float,
    queue_capacity: int,
    queue_model: str = "approx",
) -> LoadEstimate:
    """The load model of one configuration, given its exit and stay fractions.

    Negative PORTEND fractions (exit rates that are not nested) count as 0 here.

    Args:
        cm: the cost model.
        cuts / tiers: P and D (0-based tiers).
        e / s: E_k and S_k.
        unloaded_latency_s: Lat of the configuration.
        arrival_rate, queue_capacity, queue_model: as :func:`evaluate_load`.

    Returns:
        The :class:`LoadEstimate`.
    """
    lam, k_cap, model = float(arrival_rate), int(queue_capacity), queue_model
    e_c = np.maximum(np.array([float(x) for x in e]), 0.0)
    on = _branches(e_c)
    # raw E: the stations clip it, the busy-time saving weighs by the unloaded model's S_k-1
    e_raw = np.array([float(x) for x in e])
    res = load_many(cm, np.array([cuts]), tiers, e_raw[None], lam, k_cap, model, branches=on)
    names = ("rate", "mean", "scv", "rho", "lossr", "wait", "visits")
    rows = {kk: [float(getattr(res, nm)[kk][0]) for nm in names] for kk in res.keys}
    return _estimate(cm, rows, float(res.delay[0]), float(res.loss[0]),
                     unloaded_latency_s, lam, k_cap, model)  # fmt: skip


def _branches(e_c: np.ndarray) -> np.ndarray:
    """A result route is a station only where samples exit (all at the end if none do)."""
    return e_c > 0 if e_c.sum() > 0 else np.arange(e_c.size) == e_c.size - 1


def estimate_of_solved(
    cm: CostModel, cuts: Sequence[int], tiers: Sequence[int], e: Sequence[float],
    solved: Any, row: int, delay: float, loss: float, unloaded_latency_s: float,
    arrival_rate: float, queue_capacity: int, queue_model: str = "approx",
) -> LoadEstimate:  # fmt: skip
    """:func:`load_of_configuration` from a row of a
    :func:`~earlyexit.planner._load_many.load_groups` call already made (``detail``):
    the same stations, in the same order, without solving again."""
    e_c = np.maximum(np.array([float(x) for x in e]), 0.0)
    keys = _route(cm, np.array([cuts]), tiers, e_c[None], _branches(e_c)).keys
    at = {kk: j for j, kk in enumerate(solved.keys)}
    rows = {
        kk: [*(float(v) for v in solved.met[:, at[kk], row]), float(solved.visits[at[kk], row])]
        for kk in keys
    }
    return _estimate(cm, rows, delay, loss, unloaded_latency_s,
                     float(arrival_rate), int(queue_capacity), queue_model)  # fmt: skip


def _estimate(
    cm: CostModel, rows: dict, delay: float, loss_total: float, unloaded_latency_s: float,
    lam: float, k_cap: int, model: str,
) -> LoadEstimate:  # fmt: skip
    """The :class:`LoadEstimate` of stations given as key: (rate, mean, scv, rho, loss,
    wait, visits), in route order."""
    stations = []
    for kk, (rate, mean, scv, rho, lossr, wq, visits) in rows.items():
        if kk[0] == "tier":
            name = f"tier {kk[1]} ({cm.topology.tiers[kk[1]].name})"
        else:
            name = f"link {kk[1]} {'up' if kk[2] > 0 else 'down'}"
        stations.append(
            Station(name, kk[0], int(kk[1]), rate, mean, scv, rho, lossr, wq, wq + mean, visits)
        )
    return LoadEstimate(
        arrival_rate=lam,
        queue_capacity=k_cap,
        queue_model=model,
        latency_s=float(unloaded_latency_s + delay),
        unloaded_latency_s=float(unloaded_latency_s),
        loss_ratio=loss_total,
        throughput=float(lam * (1.0 - loss_total)),
        stations=tuple(stations),
    )


def evaluate_load(
    profile: Profile | str | os.PathLike[str] | Mapping[str, Any],
    topology: Topology | str | os.PathLike[str] | Mapping[str, Any],
    threshold: float,
    partitions: Sequence[int],
    tiers: Sequence[int | str],
    arrival_rate: float,
    queue_capacity: int | None = None,
    estimator: str = "portend",
    queue_model: str = "approx",
    *,
    cost_model: CostModel | None = None,
) -> LoadEstimate:
    """One configuration under a Poisson load: per-station utilization, loss and wait.

    Args:
        profile, topology, threshold, partitions, tiers, estimator: as
            :func:`~earlyexit.planner.latency.evaluate`.
        arrival_rate: lambda, samples per second at the source (>= 0).
        queue_capacity: K of every station (default :data:`DEFAULT_QUEUE_CAPACITY`).
        queue_model: ``"approx"`` (the seed's formula) or ``"exact"`` (embedded chain).
        cost_model: a prebuilt cost model of the same inputs.

    Returns:
        A :class:`LoadEstimate`.

    Raises:
        ValueError / TypeError: bad inputs, named.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> est = evaluate_load(synthetic_profile(6), "portend-aws", 0.0, [6], [0], 0.0)
        >>> est.latency_s == est.unloaded_latency_s, est.loss_ratio
        (True, 0.0)
    """
    lam, k, model = check_load_args(arrival_rate, queue_capacity, queue_model)
    profile = resolve_profile(profile)
    topology = resolve_topology(topology)
    cm = cost_model if cost_model is not None else CostModel(profile, topology)
    est = evaluate(profile, topology, threshold, partitions, tiers, estimator, cost_model=cm)
    cuts = check_cuts(partitions, profile.num_blocks)
    d = [tier_index(topology, t) for t in tiers]
    e = list(est.exit_fractions)
    s = [1.0 - sum(e[: i + 1]) for i in range(len(e))]  # S_k as the estimators count it
    s[-1] = 0.0
    return load_of_configuration(cm, cuts, d, e, s, est.latency_s, lam, k, model)
