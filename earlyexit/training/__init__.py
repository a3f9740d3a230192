"""Training: the multi-exit LightningModule, the DataModules, checkpoints, evaluation.

Names are loaded lazily (PEP 562), so ``earlyexit.load`` does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "EarlyExitDataModule": "earlyexit.training.data",
    "DataSpec": "earlyexit.training.data",
    "parse_data_spec": "earlyexit.training.data",
    "stratified_split": "earlyexit.training.data",
    "MultiExitModule": "earlyexit.training.module",
    "RecipeModule": "earlyexit.training.module",
    "exits_from_plan": "earlyexit.training.module",
    "select_exits": "earlyexit.training.module",
    "build_model": "earlyexit.training.module",
    "SaveEarlyExitCheckpoint": "earlyexit.training.callbacks",
    "train_main": "earlyexit.training.cli",
    "save": "earlyexit.training.checkpoint",
    "load": "earlyexit.training.checkpoint",
    "evaluate": "earlyexit.training.evaluation",
    "EvaluationResult": "earlyexit.training.evaluation",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'earlyexit.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
