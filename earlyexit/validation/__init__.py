"""Validate the performance model: deploy configurations for real, compare with the estimates.

PORTEND §III-B (Fig. 4): deploy a mix of Pareto-optimal and other
configurations, run held-out samples through each one at a time, measure the
end-to-end latency, the exit fraction of every partition and the accuracy, and
regress the estimates on the measurements (slope β, R²). Here both estimators
(``portend`` and ``exact``) are compared, and the deployments are real: one
process per tier, ZeroMQ, emulated links (:mod:`earlyexit.runtime.link`) and
emulated slowdowns, never the planner's own formulas.

What makes the comparison fair (each one measured on this 2-core machine):

* The profile must time what the workers run. Workers run ONNX Runtime, which is
  3-7x faster than eager PyTorch on ResNet-20's small partitions. Profile with
  ``earlyexit.profile(..., engine="onnx", measure_hops=True)``, back to back
  (``gap_s=0``) as the latency pass sends samples; a profile timed otherwise,
  or without the runtime's per-hand-off cost (``hop_s``, ``hop_cpu_s``,
  docs/spec.md#runtime-overhead), is reported in ``notes``.
* Latency goes over S samples one at a time through the emulated links;
  accuracy and exit fractions over more samples (the accuracy pass), because a
  few hundred measure an accuracy only to a few points.
* The deployment and the client run at a raised priority during the latency
  pass (``niceness``): on a shared machine their wake-ups otherwise wait behind
  other processes, which the emulated dedicated devices would not.

Beyond the fit over all configurations, each configuration's relative latency
error is reported, with the median, the maximum and the fit inside each
cluster (edge-only, multi-tier, cloud): a fit over all of them is carried by
the slow, link-dominated configurations. ``split=True`` (``--split``) deploys
each configuration again without links and without slowdowns, so that the
measured latency splits as the estimate's breakdown does.

The package, by concern:

- :mod:`.configs`: :class:`Config`, :func:`choose_configs`, clusters, :func:`estimate`;
- :mod:`.measurement`: :func:`measure` (one deployed configuration), :func:`measure_passes`
  (several, side by side), the accuracy pass;
- :mod:`.results`: :class:`ConfigResult`, the typed record of one configuration;
- :mod:`.statistics`: :func:`regression`, :func:`latency_errors`, :func:`summarize`;
- :mod:`.plots`: :func:`plot`;
- :mod:`.hostcheck`: :class:`HostCheck`, whether this host still runs as profiled;
- :mod:`.run`: :func:`validate` chains them from a checkpoint; ``earlyexit
  validate`` (:mod:`._cli`) is its command line.

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> cfgs = choose_configs(synthetic_profile(6), "portend-aws", 6, seed=0)
    >>> [cluster_of(c) for c in cfgs][:1]
    ['edge-only']
"""

from __future__ import annotations

from earlyexit.validation._cli import register
from earlyexit.validation.configs import (
    CLUSTERS,
    ESTIMATORS,
    Config,
    choose_configs,
    cluster_of,
    estimate,
    estimates,
)
from earlyexit.validation.hostcheck import HostCheck
from earlyexit.validation.measurement import (
    LatencySplit,
    Measured,
    accuracy_pass,
    latency_split,
    measure,
    measure_passes,
    niceness_allowed,
    realtime_allowed,
)
from earlyexit.validation.plots import figures, plot
from earlyexit.validation.results import ConfigResult, LatencyPass, MeasuredSummary
from earlyexit.validation.run import (
    MAX_ACCURACY_SAMPLES,
    MAX_CONFIGS,
    MAX_PASSES,
    MAX_SAMPLES,
    ValidationResult,
    validate,
)
from earlyexit.validation.statistics import (
    AccuracyFit,
    ClusterFit,
    EstimatorSummary,
    Fit,
    LatencyErrors,
    Summary,
    binomial_se,
    latency_errors,
    regression,
    stratified_indices,
    stratified_mean,
    summarize,
)

__all__ = [
    "CLUSTERS",
    "ESTIMATORS",
    "MAX_CONFIGS",
    "MAX_SAMPLES",
    "MAX_ACCURACY_SAMPLES",
    "MAX_PASSES",
    "Config",
    "cluster_of",
    "choose_configs",
    "estimate",
    "estimates",
    "Measured",
    "LatencySplit",
    "measure",
    "measure_passes",
    "accuracy_pass",
    "latency_split",
    "niceness_allowed",
    "realtime_allowed",
    "LatencyPass",
    "MeasuredSummary",
    "ConfigResult",
    "HostCheck",
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
    "figures",
    "plot",
    "ValidationResult",
    "validate",
    "register",
]
