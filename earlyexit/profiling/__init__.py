"""Profiling: accuracy, exit rates and calibration; partition timing; (de)serialization timing.

Example:
    >>> import earlyexit
    >>> p = earlyexit.profile("checkpoints/resnet20_fashionmnist.pt", "fashion-mnist")  # doctest: +SKIP
"""

from earlyexit._lazy import lazy_exports
from earlyexit.profiling.api import DEFAULT_THRESHOLDS, merge_profiles, model_digest, profile
from earlyexit.profiling.exits import collect_exit_outputs, exit_statistics, fit_temperatures
from earlyexit.profiling.timing import compare_granularity, time_partitions

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PlanOnFitEnd",
    "collect_exit_outputs",
    "compare_granularity",
    "exit_statistics",
    "fit_temperatures",
    "merge_profiles",
    "model_digest",
    "profile",
    "time_partitions",
]


# the Lightning callback loads lazily: importing Lightning is slow
__getattr__, __dir__ = lazy_exports(
    __name__, {"PlanOnFitEnd": "earlyexit.profiling.callback"}, __all__
)
