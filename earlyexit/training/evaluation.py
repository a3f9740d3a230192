"""Accuracy of every exit, and of real early exit at a threshold, on one data split."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from earlyexit.data import SPLITS, EarlyExitDataModule
from earlyexit.surgery.multi_exit import MultiExitModel, check_threshold

__all__ = ["EvaluationResult", "evaluate", "format_result"]


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measures.

    Attributes:
        dataset, split: where it was measured.
        num_samples: number of samples.
        exits: 1-based block numbers of the model's exits.
        exit_accuracy: accuracy of every exit, every sample forced through it.
        threshold: the early-exit threshold, or ``None``.
        exit_fractions: with a threshold, the fraction of samples leaving at each exit.
        early_exit_accuracy: with a threshold, the accuracy of real early exit.
    """

    dataset: str
    split: str
    num_samples: int
    exits: list[int]
    exit_accuracy: list[float]
    threshold: float | None = None
    exit_fractions: list[float] | None = None
    early_exit_accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping."""
        out = asdict(self)
        out.pop("extra")
        out.update(self.extra)
        return out


@torch.no_grad()
def evaluate(
    model: MultiExitModel | str | os.PathLike[str],
    data: str | EarlyExitDataModule = "fashion-mnist",
    split: str = "test",
    threshold: float | None = None,
    batch_size: int = 256,
    limit: int | None = None,
) -> EvaluationResult:
    """Measure per-exit accuracy and, with a threshold, real early exit.

    Args:
        model: a multi-exit model or a checkpoint path (see :func:`earlyexit.load`).
        data: a data spec or a DataModule. A spec is read with the checkpoint's
            normalization, without augmentation.
        split: ``"train"``, ``"profile"`` or ``"test"``.
        threshold: normalized-entropy threshold in [0, 1] for
            :meth:`MultiExitModel.predict`; ``None`` skips early exit.
        batch_size: samples per forward pass.
        limit: evaluate only the first ``limit`` samples of the split.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ValueError, TypeError: for a bad split, threshold or model, or data whose
            classes or input shape do not fit the model.
    """
    if isinstance(model, (str, os.PathLike)):
        from earlyexit.checkpoint import load

        model = load(model)
    if not isinstance(model, MultiExitModel):
        raise TypeError(
            f"model must be a MultiExitModel or a checkpoint path, got {type(model).__name__}"
        )
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if threshold is not None:
        threshold = check_threshold(threshold)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if isinstance(data, EarlyExitDataModule):
        dm = data
    else:
        dm = EarlyExitDataModule.for_model(data, model, batch_size=batch_size)
    dm.setup()
    if dm.num_classes != model.num_classes:
        raise ValueError(f"the data has {dm.num_classes} classes but the model {model.num_classes}")
    if tuple(dm.input_shape)[0] != model.input_shape[0]:
        raise ValueError(
            f"the data's samples are {tuple(dm.input_shape)} but the model takes {tuple(model.input_shape)}"
        )
    was_training = model.training
    model.eval()
    exits = list(model.exits)
    correct = torch.zeros(len(exits), dtype=torch.long)
    exit_counts = torch.zeros(len(exits), dtype=torch.long)
    ee_correct = 0
    n = 0
    try:
        for x, y in dm.dataloader(split, shuffle=False):
            if limit is not None and n >= limit:
                break
            if limit is not None and n + len(y) > limit:
                x, y = x[: limit - n], y[: limit - n]
            outputs = model(x)
            correct += torch.stack([(o.argmax(-1) == y).sum() for o in outputs]).cpu()
            if threshold is not None:
                result = model.predict(x, threshold)
                ee_correct += int((result.prediction == y).sum())
                for slot, block in enumerate(exits):
                    exit_counts[slot] += int((result.exit_block == block).sum())
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError(f"the {split} split of {dm.name} is empty")
    result = EvaluationResult(
        dataset=dm.name,
        split=split,
        num_samples=n,
        exits=exits,
        exit_accuracy=[round(float(c) / n, 6) for c in correct],
    )
    if threshold is not None:
        result.threshold = threshold
        result.exit_fractions = [round(float(c) / n, 6) for c in exit_counts]
        result.early_exit_accuracy = round(ee_correct / n, 6)
    return result


def format_result(result: EvaluationResult) -> str:
    """A human-readable table of an :class:`EvaluationResult`."""
    lines = [f"{result.dataset} [{result.split}]: {result.num_samples} samples"]
    header = "exit (block)  accuracy"
    if result.threshold is not None:
        header += f"  exit fraction (T={result.threshold:g})"
    lines.append(header)
    for i, (block, acc) in enumerate(zip(result.exits, result.exit_accuracy, strict=True)):
        row = f"{block:>12}  {acc:8.4f}"
        if result.exit_fractions is not None:
            row += f"  {result.exit_fractions[i]:8.4f}"
        lines.append(row)
    if result.early_exit_accuracy is not None:
        lines.append(
            f"early exit at T={result.threshold:g}: accuracy {result.early_exit_accuracy:.4f}"
        )
    return "\n".join(lines)
