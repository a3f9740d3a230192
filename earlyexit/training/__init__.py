"""Training: the multi-exit LightningModule, its callbacks, the ``earlyexit train`` CLI, evaluation.

The data live in :mod:`earlyexit.data` and checkpoints in :mod:`earlyexit.checkpoint`.

Names are loaded lazily (PEP 562), so ``earlyexit.load`` does not import Lightning.
"""

from __future__ import annotations

from earlyexit._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "MultiExitModule": "earlyexit.training.module",
    "RecipeModule": "earlyexit.training.module",
    "exits_from_plan": "earlyexit.training.module",
    "select_exits": "earlyexit.training.module",
    "build_model": "earlyexit.training.module",
    "SaveEarlyExitCheckpoint": "earlyexit.training.callbacks",
    "PlanOnFitEnd": "earlyexit.training.callbacks",
    "train_main": "earlyexit.training.cli",
    "evaluate": "earlyexit.training.evaluation",
    "EvaluationResult": "earlyexit.training.evaluation",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
