"""What one deployed configuration measured and what the estimators said: typed records.

A :class:`ConfigResult` passes from the measurement (:mod:`.run`) to the
statistics and the plots; ``to_dict`` gives the ``configs`` entries of
``validation.json`` (docs/spec.md#validation-results).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from earlyexit.formats import Estimate, Profile, Topology
from earlyexit.validation.configs import Config, cluster_of, estimates
from earlyexit.validation.measurement import LatencySplit

__all__ = ["LatencyPass", "MeasuredSummary", "ConfigResult", "estimated_split"]


@dataclass(frozen=True)
class LatencyPass:
    """The deployed (latency) pass's own accuracy and exits, and its agreement with the accuracy pass.

    Attributes:
        accuracy: over the latency pass's samples.
        exit_fractions: per partition, over those samples.
        agreement: fraction of the shared samples with the same exit and prediction
            in both passes (1.0 expected).
        mean_latency_s: the plain mean latency of the timed samples (not weighted
            by the accuracy pass's exit fractions).
    """

    accuracy: float
    exit_fractions: tuple[float, ...]
    agreement: float
    mean_latency_s: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The mapping of ``validation.json``."""
        return {"accuracy": self.accuracy, "exit_fractions": list(self.exit_fractions),
                "same_exit_and_prediction_as_accuracy_pass": self.agreement,
                "mean_latency_s": self.mean_latency_s}  # fmt: skip


@dataclass(frozen=True)
class MeasuredSummary:
    """What a configuration measured, summarized.

    Attributes:
        latency_s: mean end-to-end latency: each exit's mean over the timed samples
            that took it, weighted by its fraction in ``exit_fractions``.
        accuracy: accuracy of the accuracy pass (the latency pass's when there is none).
        exit_fractions: per partition, from the same pass as ``accuracy``.
        latency_p50_s: median latency.
        latency_samples: samples in the latency pass.
        accuracy_samples: samples behind ``accuracy``.
        accuracy_se: binomial standard error of measured minus profiled accuracy.
        latency_pass: the latency pass's own figures (None: not recorded).
        degraded: samples that finished degraded (0 expected).
        split: the latency deployed without links and without slowdowns (None: not measured).
    """

    latency_s: float
    accuracy: float
    exit_fractions: tuple[float, ...]
    latency_p50_s: float = float("nan")
    latency_samples: int = 0
    accuracy_samples: int = 0
    accuracy_se: float = float("nan")
    latency_pass: LatencyPass | None = None
    degraded: int = 0
    split: LatencySplit | None = None

    def to_dict(self) -> dict[str, Any]:
        """The mapping of ``validation.json``'s ``measured``."""
        out: dict[str, Any] = {
            "latency_s": self.latency_s, "latency_p50_s": self.latency_p50_s,
            "latency_samples": self.latency_samples, "accuracy": self.accuracy,
            "exit_fractions": list(self.exit_fractions),
            "accuracy_samples": self.accuracy_samples, "accuracy_se": self.accuracy_se,
            "degraded": self.degraded,
        }  # fmt: skip
        if self.latency_pass is not None:
            out["latency_pass"] = self.latency_pass.to_dict()
        if self.split is not None:
            out["split_s"] = self.split.to_dict()
        return out


@dataclass(frozen=True)
class ConfigResult:
    """One configuration, what it measured and what each estimator said.

    Attributes:
        config: the configuration.
        measured: its measurement.
        estimated: estimator name -> estimate.
        estimated_split: estimator name -> the estimate split as the measurement
            is with ``split`` (None: not split).
    """

    config: Config
    measured: MeasuredSummary
    estimated: Mapping[str, Estimate]
    estimated_split: Mapping[str, LatencySplit] | None = None

    def relative_error(self, estimator: str) -> float:
        """``(estimated - measured) / measured`` of the mean latency."""
        return (
            self.estimated[estimator].latency_s - self.measured.latency_s
        ) / self.measured.latency_s

    def to_dict(self, source: int = 0) -> dict[str, Any]:
        """The ``configs`` entry of ``validation.json`` (``source``: the topology's, for the cluster)."""
        out = {
            "config": self.config.to_dict(),
            "cluster": cluster_of(self.config, source),
            "measured": self.measured.to_dict(),
            "estimated": {name: e.to_dict() for name, e in self.estimated.items()},
            "latency_relative_error": {name: self.relative_error(name) for name in self.estimated},
        }
        if self.estimated_split is not None:
            out["estimated_split_s"] = {k: v.to_dict() for k, v in self.estimated_split.items()}
        return out


def estimated_split(prof: Profile, topo: Topology, config: Config) -> dict[str, LatencySplit]:
    """Each estimate split as :func:`~earlyexit.validation.measurement.latency_split` splits a measurement.

    ``full`` is the estimate, ``no_links`` without its ``transmit`` and
    ``propagate`` terms, ``bare`` the same on the topology with every slowdown 1.

    Returns:
        estimator name -> :class:`~earlyexit.validation.measurement.LatencySplit`.
    """
    unit = topo.to_dict()
    for tier in unit["tiers"]:
        tier["slowdown"] = 1.0
    plain = estimates(prof, Topology.from_dict(unit), config)

    def no_links(e: Estimate) -> float:
        return e.latency_s - e.breakdown_s["transmit"] - e.breakdown_s["propagate"]

    return {name: LatencySplit(e.latency_s, no_links(e), no_links(plain[name]))
            for name, e in estimates(prof, topo, config).items()}  # fmt: skip
