"""Training: the multi-exit LightningModule, the DataModules, checkpoints, evaluation.

Names are loaded lazily (PEP 562), so ``earlyexit.load`` does not import Lightning.
"""

from __future__ import annotations

from earlyexit._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
