"""The datasets the sources build, and the train/profile/test splits of image arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from earlyexit.data.spec import stratified_split

__all__ = ["ArrayImageDataset", "Splits", "array_splits"]


class ArrayImageDataset(Dataset):
    """uint8 images (N, H, W, C) or (N, H, W) with labels, as normalized float tensors.

    Args:
        images: the images.
        labels: int labels, one per image.
        normalization: ``{"mean": [...], "std": [...]}``, one entry per channel.
        augment: a callable on a [0, 1] float (C, H, W) tensor (e.g. random crop
            and flip), applied before normalization; ``None`` for none.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        normalization: dict[str, list[float]],
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"images must be (N, H, W[, C]) with N labels, got {images.shape}")
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.mean = torch.tensor(normalization["mean"], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(normalization["std"], dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index].float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x)
        return (x - self.mean) / self.std, self.labels[index]


@dataclass
class Splits:
    """What a source yields: one dataset per split plus the metadata."""

    train: Dataset
    profile: Dataset
    test: Dataset
    class_names: list[str]
    input_shape: tuple[int, ...]
    normalization: dict[str, list[float]]


def _crop_flip(size: tuple[int, int], padding: int) -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip()])


def array_splits(
    arrays: dict,
    class_names: list[str],
    norm: dict[str, list[float]],
    *,
    name: str,
    profile_fraction: float,
    seed: int,
    augment: bool,
    crop_padding: int | None,
) -> Splits:
    """Splits of in-memory uint8 images: train and profile carved from the training split.

    Args:
        arrays: ``{"x_train", "y_train", "x_test", "y_test"}``.
        class_names: the class names, by index.
        norm: per-channel normalization.
        name: the data spec, for error messages.
        profile_fraction: share of each class carved out as the profiling split.
        seed: seed of the stratified split.
        augment: random crop and flip on the training split.
        crop_padding: padding of the crop; ``None`` picks 2 up to 28 pixels, else 4.

    Returns:
        The splits.

    Raises:
        ValueError: if the normalization's channels do not match the images.
    """
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    shape = x_train.shape[1:3]
    channels = 1 if x_train.ndim == 3 else x_train.shape[3]
    if len(norm["mean"]) != channels:
        raise ValueError(
            f"normalization has {len(norm['mean'])} channel(s) but the images of {name} "
            f"have {channels}: the model and the data do not match"
        )
    keep, prof = stratified_split(y_train, profile_fraction, seed)
    padding = crop_padding if crop_padding is not None else (2 if shape[0] <= 28 else 4)
    transform = _crop_flip(tuple(shape), padding) if augment else None
    return Splits(
        train=ArrayImageDataset(x_train[keep], y_train[keep], norm, transform),
        profile=ArrayImageDataset(x_train[prof], y_train[prof], norm),
        test=ArrayImageDataset(x_test, y_test, norm),
        class_names=class_names,
        input_shape=(channels, int(shape[0]), int(shape[1])),
        normalization=norm,
    )
