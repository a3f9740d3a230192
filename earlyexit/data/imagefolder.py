"""ImageFolder data: ``<dir>/train/<class>/*`` and ``<dir>/val/<class>/*`` (val is the test split)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset

from earlyexit.data.datasets import Splits
from earlyexit.data.spec import DatasetNotFoundError, stratified_split

__all__ = ["IMAGENET_NORM", "imagefolder_splits"]

IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def imagefolder_splits(
    root: Path,
    norm: dict[str, list[float]],
    *,
    size: int,
    augment: bool,
    profile_fraction: float,
    seed: int,
) -> Splits:
    """Read an ImageFolder tree: train and profile from ``train/``, test from ``val/``.

    Args:
        root: the dataset directory.
        norm: per-channel normalization (3 channels).
        size: side of the square input.
        augment: random resized crop and flip on the training split (else resize + crop).
        profile_fraction: share of each class of ``train/`` carved out for profiling.
        seed: seed of the stratified split.

    Returns:
        The splits.

    Raises:
        DatasetNotFoundError: if ``train/`` or ``val/`` is missing.
        ValueError: for a normalization that is not RGB, or classes that differ.
    """
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise DatasetNotFoundError(
                f"ImageFolder dataset not found: {root / sub} is missing. Lay the images "
                f"out as {root}/train/<class>/<image> and {root}/val/<class>/<image> "
                "(val/ is the test split). Nothing is downloaded."
            )
    if len(norm["mean"]) != 3:
        raise ValueError(
            f"normalization has {len(norm['mean'])} channel(s) but ImageFolder images are RGB (3)"
        )
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    normalize = v2.Normalize(norm["mean"], norm["std"])
    if augment:
        train_tf = v2.Compose(
            [*to_float, v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
             normalize]
        )  # fmt: skip
    else:
        train_tf = v2.Compose(
            [*to_float, v2.Resize(size, antialias=True), v2.CenterCrop(size), normalize]
        )
    eval_tf = v2.Compose(
        [*to_float, v2.Resize(int(round(size / 0.875)), antialias=True), v2.CenterCrop(size),
         normalize]
    )  # fmt: skip
    train_aug = ImageFolder(str(root / "train"), transform=train_tf)
    train_eval = ImageFolder(str(root / "train"), transform=eval_tf)
    test = ImageFolder(str(root / "val"), transform=eval_tf)
    if train_aug.classes != test.classes:
        raise ValueError(
            f"{root}: train/ and val/ have different classes "
            f"({train_aug.classes} vs {test.classes})"
        )
    keep, prof = stratified_split(train_aug.targets, profile_fraction, seed)
    return Splits(
        train=Subset(train_aug, keep.tolist()),
        profile=Subset(train_eval, prof.tolist()),
        test=test,
        class_names=list(train_aug.classes),
        input_shape=(3, size, size),
        normalization=norm,
    )
