"""Estimated against measured: regression lines, relative latency errors per cluster, accuracy error.

Example:
    >>> f = regression([1, 2, 3], [1.1, 2.0, 3.1])
    >>> round(f.beta, 2), f.r2 > 0.99
    (1.0, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from earlyexit.validation.configs import CLUSTERS, ESTIMATORS, cluster_of
from earlyexit.validation.results import ConfigResult

__all__ = [
    "Fit",
    "AccuracyFit",
    "ClusterFit",
    "LatencyErrors",
    "EstimatorSummary",
    "Summary",
    "regression",
    "latency_errors",
    "summarize",
    "binomial_se",
    "stratified_indices",
    "stratified_mean",
]

_NAN = float("nan")


@dataclass(frozen=True)
class Fit:
    """The least-squares line ``estimated = beta * measured + intercept`` and its R².

    ``beta``, ``intercept`` and ``r2`` are NaN with fewer than two points or no spread.
    """

    beta: float
    intercept: float
    r2: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """``{beta, intercept, r2, n}``."""
        return asdict(self)


@dataclass(frozen=True)
class AccuracyFit(Fit):
    """The accuracy's line, and its mean (absolute) error against the sampling error.

    Attributes:
        mean_abs_error: mean |estimated - measured|.
        mean_error: mean (estimated - measured).
        sampling_se: mean binomial error of measured minus profiled accuracy
            (what no estimator can beat; NaN when not measured).
    """

    mean_abs_error: float = _NAN
    mean_error: float = _NAN
    sampling_se: float = _NAN


@dataclass(frozen=True)
class ClusterFit(Fit):
    """One cluster's line, the standard error of its slope, and its relative latency errors.

    ``beta_se`` is the least-squares standard error of ``beta``,
    sqrt(SS_res / (n - 2) / S_xx) (NaN with fewer than three configurations): a
    cluster whose measured latencies span little has a slope that a tenth of a
    millisecond moves, and its ``beta_se`` says so.
    """

    beta_se: float = _NAN
    median_abs_relative_error: float = _NAN
    max_abs_relative_error: float = _NAN
    mean_relative_error: float = _NAN


@dataclass(frozen=True)
class LatencyErrors:
    """Every configuration's relative latency error, its statistics, and the fit per cluster.

    Attributes:
        relative_error: ``(estimated - measured) / measured`` per configuration.
        cluster: the cluster of each configuration.
        median_abs_relative_error: over all configurations.
        max_abs_relative_error: over all configurations.
        mean_relative_error: over all configurations (its sign: the bias).
        clusters: cluster name -> its :class:`ClusterFit` (clusters without
            configurations are left out).
    """

    relative_error: tuple[float, ...]
    cluster: tuple[str, ...]
    median_abs_relative_error: float
    max_abs_relative_error: float
    mean_relative_error: float
    clusters: dict[str, ClusterFit] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``latency_error`` mapping of ``validation.json``."""
        out = asdict(self)
        out["relative_error"], out["cluster"] = list(self.relative_error), list(self.cluster)
        return out


@dataclass(frozen=True)
class EstimatorSummary:
    """One estimator against the measurements: latency, exit rate and accuracy."""

    latency: Fit
    exit_rate: Fit
    accuracy: AccuracyFit
    latency_error: LatencyErrors

    def to_dict(self) -> dict[str, Any]:
        """``{latency, exit_rate, accuracy, latency_error}``."""
        return {"latency": self.latency.to_dict(), "exit_rate": self.exit_rate.to_dict(),
                "accuracy": self.accuracy.to_dict(), "latency_error": self.latency_error.to_dict()}  # fmt: skip


@dataclass(frozen=True)
class Summary:
    """Every estimator's figures; the headline is ``exact``'s when present, else ``portend``'s."""

    by_estimator: dict[str, EstimatorSummary]

    @property
    def headline(self) -> EstimatorSummary | None:
        """The ``exact`` estimator's summary, else ``portend``'s (None: no estimator)."""
        return self.by_estimator.get("exact") or self.by_estimator.get("portend")

    def to_dict(self) -> dict[str, Any]:
        """The headline's fields at the top level, and ``by_estimator``."""
        main = self.headline
        return {**(main.to_dict() if main else {}),
                "by_estimator": {k: v.to_dict() for k, v in self.by_estimator.items()}}  # fmt: skip


def regression(measured: Sequence[float], estimated: Sequence[float]) -> Fit:
    """Least-squares line ``estimated = beta * measured + intercept`` and its R².

    Args:
        measured: the x values.
        estimated: the y values.

    Returns:
        The :class:`Fit` (NaN figures with fewer than two points or no spread).

    Example:
        >>> round(regression([1, 2, 3], [2, 4, 6]).beta, 9)
        2.0
    """
    xm, ye = np.asarray(measured, float), np.asarray(estimated, float)
    if xm.size < 2 or np.ptp(xm) == 0:
        return Fit(_NAN, _NAN, _NAN, int(xm.size))
    beta, intercept = np.polyfit(xm, ye, 1)
    pred = beta * xm + intercept
    ss_res, ss_tot = float(((ye - pred) ** 2).sum()), float(((ye - ye.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else _NAN
    return Fit(float(beta), float(intercept), r2, int(xm.size))


def _slope_se(x: np.ndarray, y: np.ndarray, fit: Fit) -> float:
    """The least-squares standard error of ``fit.beta`` (NaN below three points)."""
    if x.size < 3 or not np.isfinite(fit.beta):
        return _NAN
    res = y - (fit.beta * x + fit.intercept)
    return float(np.sqrt((res**2).sum() / (x.size - 2) / ((x - x.mean()) ** 2).sum()))


def _error_stats(measured: np.ndarray, estimated: np.ndarray) -> dict[str, float]:
    rel = (estimated - measured) / measured
    if not rel.size:
        return dict.fromkeys(("median_abs_relative_error", "max_abs_relative_error",
                              "mean_relative_error"), _NAN)  # fmt: skip
    return {
        "median_abs_relative_error": float(np.median(np.abs(rel))),
        "max_abs_relative_error": float(np.max(np.abs(rel))),
        "mean_relative_error": float(np.mean(rel)),
    }


def latency_errors(
    records: Sequence[ConfigResult], estimator: str, source: int = 0
) -> LatencyErrors:
    """Relative latency error of every configuration, and its statistics overall and per cluster.

    The relative error of a configuration is ``(estimated - measured) / measured``
    of its mean latency. Inside each cluster (:data:`~earlyexit.validation.configs.CLUSTERS`)
    the line ``estimated = beta * measured + intercept`` is fitted as in :func:`regression`.

    Args:
        records: the configurations' results.
        estimator: ``"portend"`` or ``"exact"``.
        source: the topology's source tier (it defines the clusters).

    Returns:
        The :class:`LatencyErrors`.

    Raises:
        ValueError: a measured latency that is not positive and finite.
    """
    m = np.array([r.measured.latency_s for r in records], float)
    e = np.array([r.estimated[estimator].latency_s for r in records], float)
    if (m <= 0).any() or not np.isfinite(m).all():
        raise ValueError(
            f"measured latencies must be positive, got {m[(m <= 0) | ~np.isfinite(m)][:3].tolist()}"
        )
    clusters = tuple(cluster_of(r.config, source) for r in records)
    per: dict[str, ClusterFit] = {}
    for name in CLUSTERS:
        idx = [i for i, c in enumerate(clusters) if c == name]
        if idx:
            fit = regression(m[idx], e[idx])
            per[name] = ClusterFit(**asdict(fit), beta_se=_slope_se(m[idx], e[idx], fit),
                                   **_error_stats(m[idx], e[idx]))  # fmt: skip
    return LatencyErrors(
        tuple(((e - m) / m).tolist()), clusters, clusters=per, **_error_stats(m, e)
    )


def binomial_se(p: float, n: int, n_profile: int | None) -> float:
    """Standard error of a measured accuracy ``p`` (n samples) minus a profiled one.

    The profile's accuracy comes from ``n_profile`` other samples; both are binomial
    proportions, so even a perfect estimator misses by about this much.

    Args:
        p: the measured accuracy.
        n: samples behind it.
        n_profile: samples behind the profile's accuracy (None: not counted).

    Returns:
        The standard error (NaN when ``n`` is 0 or ``p`` is not finite).

    Example:
        >>> round(binomial_se(0.5, 100, None), 3)
        0.05
    """
    if not n or not np.isfinite(p):
        return _NAN
    var = p * (1 - p) / n + (p * (1 - p) / n_profile if n_profile else 0.0)
    return float(np.sqrt(var))


def summarize(records: Sequence[ConfigResult], source: int = 0) -> Summary:
    """β and R² of latency, exit rate and accuracy, and latency errors, per estimator.

    Args:
        records: one per configuration.
        source: the topology's source tier (it defines the clusters of
            :func:`latency_errors`).

    Returns:
        The :class:`Summary` of every estimator that estimated all configurations.
    """
    by: dict[str, EstimatorSummary] = {}
    names = [n for n in ESTIMATORS if all(n in r.estimated for r in records)]
    acc_m = [r.measured.accuracy for r in records]
    ses = [r.measured.accuracy_se for r in records]
    sampling_se = float(np.nanmean(ses)) if np.isfinite(ses).any() else _NAN
    for name in names:
        acc_e = [r.estimated[name].accuracy for r in records]
        by[name] = EstimatorSummary(
            latency=regression([r.measured.latency_s for r in records],
                               [r.estimated[name].latency_s for r in records]),
            exit_rate=regression([f for r in records for f in r.measured.exit_fractions],
                                 [f for r in records for f in r.estimated[name].exit_fractions]),
            accuracy=AccuracyFit(
                **asdict(regression(acc_m, acc_e)),
                mean_abs_error=float(np.mean(np.abs(np.subtract(acc_m, acc_e)))),
                mean_error=float(np.mean(np.subtract(acc_e, acc_m))),
                sampling_se=sampling_se,
            ),
            latency_error=latency_errors(records, name, source),
        )  # fmt: skip
    return Summary(by)


def stratified_indices(exits: Sequence[int], n: int, min_per_exit: int) -> list[int]:
    """Which samples to time: the first ``n``, topped up so that every exit has ``min_per_exit``.

    A latency pass of a few hundred samples sees a rare exit (a far tier that 3 %
    of samples reach over a slow link) only a handful of times, and its mean
    latency then swings with how many happened to be among them. Timing at
    least ``min_per_exit`` samples of every exit (when the test data has them)
    and weighting each exit's mean by its fraction over all the test data
    (:func:`stratified_mean`) measures the same mean with far less of that noise.

    Args:
        exits: the exit partition every test sample takes (from the accuracy pass).
        n: the samples to time at least (the first ``n``).
        min_per_exit: the fewest samples of each exit to time.

    Returns:
        Sorted sample indices (``n`` or more).

    Example:
        >>> stratified_indices([0, 0, 0, 0, 1, 0, 1], 3, 2)
        [0, 1, 2, 4, 6]
    """
    ex = np.asarray(exits, int)
    chosen = set(range(min(n, ex.size)))
    for k in np.unique(ex):
        have = sum(1 for i in chosen if ex[i] == k)
        if have < min_per_exit:
            more = [int(i) for i in np.flatnonzero(ex == k) if int(i) not in chosen]
            chosen.update(more[: min_per_exit - have])
    return sorted(chosen)


def stratified_mean(
    latency_s: Sequence[float], exits: Sequence[int], fractions: Sequence[float]
) -> float:
    """Mean latency with each exit's samples weighted by that exit's fraction.

    Args:
        latency_s: the timed samples' latencies.
        exits: the exit partition of each timed sample.
        fractions: the fraction of all test samples leaving at each partition.

    Returns:
        ``sum_k fractions[k] * mean(latency of timed samples leaving at k)``.

    Raises:
        ValueError: an exit with a positive fraction that no timed sample took.

    Example:
        >>> round(stratified_mean([1.0, 3.0, 10.0], [0, 0, 1], [0.9, 0.1]), 9)
        2.8
    """
    lat, ex = np.asarray(latency_s, float), np.asarray(exits, int)
    total = 0.0
    for k, f in enumerate(fractions):
        if f <= 0:
            continue
        mine = lat[ex == k]
        if not mine.size:
            raise ValueError(
                f"no timed sample left at partition {k}, which {f:.1%} of samples take"
            )
        total += float(f) * float(mine.mean())
    return total
