"""Lightning callbacks of earlyexit training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

__all__ = ["SaveEarlyExitCheckpoint"]


class SaveEarlyExitCheckpoint(L.Callback):
    """At the end of ``fit``, write the model as an earlyexit checkpoint (rank zero only).

    The file is what :func:`earlyexit.load` reads: the model config, the data's
    normalization, class names and input shape, the weights, and a ``training``
    record (epochs, steps, the last validation accuracy of every exit).

    Args:
        path: the file to write, e.g. ``checkpoints/resnet20_fashionmnist.pt``.

    Raises:
        TypeError: if ``path`` is not a string or path.
        ValueError: if ``path`` is empty or an existing directory.
    """

    def __init__(self, path: str | Path) -> None:
        if not isinstance(path, (str, Path)):
            raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
        if not str(path).strip():
            raise ValueError("path must not be empty")
        if Path(path).is_dir():
            raise ValueError(f"path {path} is a directory; give a file name such as model.pt")
        self.path = Path(path)
        self.written: Path | None = None

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics: dict[str, Any] = {
            k: round(float(v), 6)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/")
        }
        record = {
            "epochs": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "world_size": int(trainer.world_size),
            "val_metrics": metrics,
        }
        self.written = pl_module.save_model(self.path, training=record)  # type: ignore[operator]
        rank_zero_info(f"earlyexit: wrote {self.written}")
