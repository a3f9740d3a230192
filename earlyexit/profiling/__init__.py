"""Profiling: accuracy, exit rates and calibration; partition timing; (de)serialization timing.

Example:
    >>> import earlyexit
    >>> p = earlyexit.profile("checkpoints/resnet20_fashionmnist.pt", "fashion-mnist")  # doctest: +SKIP
"""

from earlyexit.profiling.api import DEFAULT_THRESHOLDS, merge_profiles, model_digest, profile
from earlyexit.profiling.exits import collect_exit_outputs, exit_statistics, fit_temperatures
from earlyexit.profiling.timing import compare_granularity, time_partitions

__all__ = [
    "DEFAULT_THRESHOLDS",
    "collect_exit_outputs",
    "compare_granularity",
    "exit_statistics",
    "fit_temperatures",
    "merge_profiles",
    "model_digest",
    "profile",
    "time_partitions",
]

