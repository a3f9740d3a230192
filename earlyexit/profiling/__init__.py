"""Profiling: accuracy, exit rates and calibration; partition timing; (de)serialization timing.

Example:
    ```python
    import earlyexit
    p = earlyexit.profile("checkpoints/resnet20_fashionmnist.pt", "fashion-mnist")
    ```
"""

from earlyexit._lazy import lazy_exports

# loaded on first use, so that `earlyexit --help` (which imports ._cli) pulls in no torch
_LAZY: dict[str, str] = {
    "DEFAULT_THRESHOLDS": "earlyexit.profiling.api",
    "merge_profiles": "earlyexit.profiling.api",
    "model_digest": "earlyexit.profiling.api",
    "profile": "earlyexit.profiling.api",
    "collect_exit_outputs": "earlyexit.profiling.exits",
    "exit_statistics": "earlyexit.profiling.exits",
    "fit_temperatures": "earlyexit.profiling.exits",
    "compare_granularity": "earlyexit.profiling.timing",
    "time_partitions": "earlyexit.profiling.timing",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
