"""Samples for an export: calibration and verification data from any form a user has.

:func:`resolve_data` turns a data argument (a dataset spec such as
``"fashion-mnist"``, a tensor of inputs, an ``(inputs, labels)`` pair, or an
iterable of batches such as a DataLoader) into one tensor of inputs, their
labels if known and a description for the manifest.

Example:
    >>> import torch
    >>> from earlyexit import MultiExitModel, backbones, decompose
    >>> m = MultiExitModel(decompose(backbones.create("resnet20")))
    >>> x, y, desc = resolve_data(torch.zeros(4, 3, 32, 32), "test", m)
    >>> x.shape[0], y, desc
    (4, None, 'given samples')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from earlyexit.surgery.multi_exit import MultiExitModel

__all__ = ["DataArg", "resolve_data"]

DataArg = (
    str
    | torch.Tensor
    | np.ndarray
    | tuple[Any, Any]
    | Iterable[tuple[torch.Tensor, torch.Tensor]]
    | None
)
"""Samples for calibration or verification: a data spec (``"fashion-mnist"``), a
tensor of inputs, an ``(inputs, labels)`` pair, or an iterable of such batches
(a DataLoader); ``None`` takes the dataset recorded in ``model.metadata``."""


def resolve_data(
    data: DataArg, split: str, model: MultiExitModel, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, str] | None:
    """Turn a data argument into ``(inputs, labels or None, description)``.

    Args:
        data: see :data:`DataArg`.
        split: ``"profile"`` or ``"test"``, used for a data spec.
        model: the model (its ``metadata`` gives the default dataset and the
            normalization; its ``input_shape`` is checked).
        limit: keep at most this many samples (the first ones).

    Returns:
        The samples, or ``None`` if ``data`` is ``None`` and the model records no
        dataset.

    Raises:
        TypeError: for an unsupported data argument.
        ValueError: for samples of the wrong shape.
    """
    meta = dict(getattr(model, "metadata", None) or {})
    labels: torch.Tensor | None = None
    if data is None:
        data = meta.get("dataset")
        if not data:
            return None
    if isinstance(data, str):
        from earlyexit.data import EarlyExitDataModule

        dm = EarlyExitDataModule(
            data, batch_size=512, augment=False, normalization=meta.get("normalization")
        )
        xs, ys = zip(*dm.dataloader(split, shuffle=False), strict=True)
        inputs, labels, desc = torch.cat(xs), torch.cat(ys), f"{data} {split} split"
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        inputs, desc = torch.as_tensor(data), "given samples"
    elif isinstance(data, tuple) and len(data) == 2:
        inputs, labels, desc = torch.as_tensor(data[0]), torch.as_tensor(data[1]), "given samples"
    elif isinstance(data, Iterable):
        xs, ys = [], []
        for batch in data:
            if isinstance(batch, (list, tuple)):
                xs.append(torch.as_tensor(batch[0]))
                if len(batch) > 1:
                    ys.append(torch.as_tensor(batch[1]))
            else:
                xs.append(torch.as_tensor(batch))
        if not xs:
            raise ValueError("the data iterable yielded no batch")
        inputs = torch.cat(xs)
        labels = torch.cat(ys) if len(ys) == len(xs) else None
        desc = "given batches"
    else:
        raise TypeError(
            "data must be a data spec string, a tensor of inputs, an (inputs, labels) pair or "
            f"an iterable of batches, got {type(data).__name__}"
        )
    inputs = inputs.float()
    if len(inputs) == 0:
        raise ValueError(f"{desc}: no samples")
    if tuple(inputs.shape[1:]) != tuple(model.input_shape):
        raise ValueError(
            f"{desc}: samples of shape {list(inputs.shape[1:])}, but the model takes "
            f"{list(model.input_shape)}"
        )
    if labels is not None and len(labels) != len(inputs):
        raise ValueError(f"{desc}: {len(inputs)} inputs but {len(labels)} labels")
    if limit is not None:
        inputs = inputs[:limit]
        labels = None if labels is None else labels[:limit]
    return inputs, (None if labels is None else labels.long()), desc
