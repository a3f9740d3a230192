"""The multi-exit LightningModule: the sum of the exits' losses, per-exit accuracy.

PORTEND trains a *full configuration* (an exit after every block) by minimizing
the sum of the exits' cross-entropy losses, then, once a plan has picked the
exits, fine-tunes a model that keeps only those exits. :class:`MultiExitModule`
does both: it trains whatever exits the :class:`~earlyexit.MultiExitModel` it
receives has. :class:`RecipeModule` builds that model from plain arguments (a
backbone name, or a checkpoint plus a plan) so that LightningCLI recipes can
describe it; that building (:func:`build_model`, :func:`select_exits`,
:func:`exits_from_plan`) is in ``training/_build.py`` and exported from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from earlyexit.surgery.multi_exit import MultiExitModel
from earlyexit.training._build import build_model, exits_from_plan, select_exits

__all__ = [
    "SCHEDULES",
    "MultiExitModule",
    "RecipeModule",
    "build_model",
    "default_optimizer",
    "exits_from_plan",
    "select_exits",
]

SCHEDULES: tuple[str, ...] = ("cosine", "onecycle", "constant")
STAGES: tuple[str, ...] = ("train", "val", "test")
CHECKPOINT_KEY = "earlyexit"


def default_optimizer(params: Iterable[nn.Parameter]) -> Optimizer:
    """SGD, lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4 (the CIFAR ResNet recipe)."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


class MultiExitModule(L.LightningModule):
    """Trains a :class:`~earlyexit.MultiExitModel` on the sum of its exits' losses.

    Logs ``<stage>/loss`` and, per exit, ``<stage>/acc_exit_<block>`` (stages:
    train, val, test) through torchmetrics, so the values are synchronized across
    processes under DDP; ``val/acc`` is the last exit's accuracy (a handy
    ``ModelCheckpoint`` monitor).

    Args:
        model: the built multi-exit model; its active exits are the ones trained.
        exit_weights: one weight per active exit (default all 1).
        optimizer: ``factory(params) -> Optimizer``; default :func:`default_optimizer`.
        lr_scheduler: ``factory(optimizer) -> scheduler`` stepped every epoch; when
            ``None``, ``schedule`` picks a built-in per-step schedule.
        schedule: ``"cosine"`` (linear warm-up, then cosine to 0), ``"onecycle"``
            (OneCycleLR peaking at the optimizer's lr) or ``"constant"``.
        warmup_epochs: warm-up length of ``"cosine"``, in epochs (may be fractional).
        freeze_backbone: train only the exit heads; the blocks' weights and batch
            norm statistics stay fixed.
        label_smoothing: of the cross-entropy losses.

    Raises:
        TypeError: if ``model`` is not a ``MultiExitModel``.
        ValueError: for weights that do not match the exits, or an unknown schedule.

    Example:
        >>> from earlyexit import MultiExitModel, backbones, decompose
        >>> net = MultiExitModel(decompose(backbones.create("resnet20", in_chans=1)))
        >>> module = MultiExitModule(net, exit_weights=[0.5] * 9 + [1.0])
        >>> module.exits
        (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    """

    def __init__(
        self,
        model: MultiExitModel,
        exit_weights: Sequence[float] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        schedule: str = "cosine",
        warmup_epochs: float = 1.0,
        freeze_backbone: bool = False,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(model, MultiExitModel):
            raise TypeError(
                f"model must be an earlyexit.MultiExitModel, got {type(model).__name__}"
            )
        exits = tuple(model.exits)
        if exit_weights is None:
            weights = [1.0] * len(exits)
        else:
            weights = [float(w) for w in exit_weights]
            if len(weights) != len(exits):
                raise ValueError(
                    f"exit_weights has {len(weights)} entries but the model has {len(exits)} "
                    f"exits {list(exits)}; give one weight per exit"
                )
            if any(w < 0 or not math.isfinite(w) for w in weights) or not any(weights):
                raise ValueError(f"exit_weights must be finite, >= 0 and not all 0, got {weights}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"])
        self.model = model
        self.register_buffer("exit_weights", torch.tensor(weights), persistent=False)
        self.optimizer_factory = optimizer or default_optimizer
        self.scheduler_factory = lr_scheduler
        self.schedule = schedule
        self.warmup_epochs = float(warmup_epochs)
        self.freeze_backbone = bool(freeze_backbone)
        self.label_smoothing = float(label_smoothing)
        self.data_metadata: dict[str, Any] = dict(getattr(model, "metadata", None) or {})
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{block}": MulticlassAccuracy(model.num_classes, average="micro")
                for stage in STAGES
                for block in exits
            }
        )
        if self.freeze_backbone:
            for p in self.model.blocks.parameters():
                p.requires_grad_(False)
            self.model.blocks.eval()

    @property
    def exits(self) -> tuple[int, ...]:
        """1-based block numbers of the trained exits."""
        return tuple(self.model.exits)

    # ------------------------------------------------------------------ steps

    @override
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)

    @override
    def train(self, mode: bool = True) -> MultiExitModule:
        super().train(mode)
        if self.freeze_backbone:
            self.model.blocks.eval()  # frozen batch-norm statistics
        return self

    @override
    def on_train_epoch_start(self) -> None:
        if self.freeze_backbone:  # Lightning restores modes per module; make sure
            self.model.blocks.eval()

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        outputs = self.model(x)
        losses = torch.stack(
            [
                nn.functional.cross_entropy(o, y, label_smoothing=self.label_smoothing)
                for o in outputs
            ]
        )
        loss = (losses * self.exit_weights.to(losses.dtype)).sum()
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            sync_dist=not on_step,
            batch_size=len(y),
        )
        for block, logits in zip(self.exits, outputs, strict=True):
            metric = self.metrics[f"{stage}_{block}"]
            metric(logits.detach(), y)
            self.log(
                f"{stage}/acc_exit_{block}",
                metric,
                on_step=False,
                on_epoch=True,
                batch_size=len(y),
            )
        if stage != "train":
            last = self.metrics[f"{stage}_{self.exits[-1]}"]
            self.log(
                f"{stage}/acc", last, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y)
            )
        return loss

    @override
    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._step(batch, "train")

    @override
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    @override
    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    # ------------------------------------------------------------------ optim

    @override
    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen")
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is not None:
            return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
        if self.schedule == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler: LRScheduler
        if self.schedule == "onecycle":
            max_lr = [g["lr"] for g in optimizer.param_groups]
            scheduler = OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=0.25)
        else:
            epochs = max(1, self.trainer.max_epochs or 1)
            warmup = min(total // 2, int(round(self.warmup_epochs * total / epochs)))
            scheduler = LambdaLR(optimizer, _WarmupCosine(warmup, total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ checkpoints

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        metadata = getattr(datamodule, "metadata", None)
        if isinstance(metadata, dict):
            self.data_metadata = {**self.data_metadata, **metadata}
            self.model.metadata = dict(self.data_metadata)
            self.model.normalization = self.data_metadata.get("normalization")
        if self.data_metadata.get("class_names") and len(self.data_metadata["class_names"]) != (
            self.model.num_classes
        ):
            raise ValueError(
                f"the data has {len(self.data_metadata['class_names'])} classes but the model "
                f"{self.model.num_classes}"
            )

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from earlyexit.checkpoint import make_weights_only_safe

        checkpoint[CHECKPOINT_KEY] = {
            "config": self.model.config,
            "metadata": make_weights_only_safe(self.data_metadata),
        }
        # keep the whole .ckpt loadable with torch.load(weights_only=True)
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = make_weights_only_safe(dict(checkpoint[key]))

    def save_model(self, path: str | Path, **extra: Any) -> Path:
        """Write the model as an earlyexit checkpoint (see :func:`earlyexit.checkpoint.save`)."""
        from earlyexit.checkpoint import save

        return save(self.model, path, metadata={**self.data_metadata, **extra})


class _WarmupCosine:
    """Multiplier of a linear warm-up followed by a cosine decay to 0 (picklable)."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup = warmup
        self.total = total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class RecipeModule(MultiExitModule):
    """A :class:`MultiExitModule` described by plain arguments, for recipes.

    Either builds a fresh model (``backbone``) or loads a checkpoint
    (``init_from``) and keeps the exits of ``plan`` or ``exits`` (fine-tuning).

    Args:
        backbone: registry name, e.g. ``"resnet20"``, ``"timm:efficientnet_b0"``.
        num_classes: classes (linked from the data in ``earlyexit train``).
        input_shape: (C, H, W) of one sample (linked from the data).
        exits: exits to build (default: after every block), or, with ``init_from``,
            the exits to keep.
        head: exit head kind, ``"copy"`` or ``"linear"``.
        init_from: an earlyexit checkpoint to start from (``.pt`` or ``.ckpt``).
        plan: with ``init_from``, a plan JSON whose partitions give the exits.
        backbone_weights: a local state dict of the backbone (``.pth``, ``.pt``,
            ``.safetensors``; see :func:`earlyexit.backbones.create`), e.g. your
            own trained model; with ``freeze_backbone: true`` only the exits train.
        adapt_weights: ``backbone_weights`` were trained for another class or
            input channel count (e.g. ImageNet weights on Fashion-MNIST): the
            classifier starts fresh and the first convolution is adapted.
        **kwargs: the :class:`MultiExitModule` arguments.

    Raises:
        ValueError: for inconsistent arguments.
    """

    def __init__(
        self,
        backbone: str = "resnet20",
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        exits: list[int] | None = None,
        head: str = "copy",
        init_from: str | None = None,
        plan: str | None = None,
        backbone_weights: str | None = None,
        adapt_weights: bool = False,
        **kwargs: Any,
    ) -> None:
        model = build_model(
            backbone, num_classes, input_shape, exits, head, init_from, plan, backbone_weights,
            adapt_weights,
        )  # fmt: skip
        super().__init__(model, **kwargs)
