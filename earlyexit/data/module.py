"""The LightningDataModule behind ``--data SPEC``: train, profile and test splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from earlyexit.data.audio import audio_splits
from earlyexit.data.cifar import CIFAR10_NORM, load_cifar10
from earlyexit.data.datasets import Splits, array_splits
from earlyexit.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_NORM,
    load_fashion_mnist,
)
from earlyexit.data.imagefolder import IMAGENET_NORM, imagefolder_splits
from earlyexit.data.spec import SPLITS, check_normalization, parse_data_spec

__all__ = ["EarlyExitDataModule"]

_IDENTITY_NORM = {"mean": [0.0], "std": [1.0]}


class EarlyExitDataModule(L.LightningDataModule):
    """A LightningDataModule for any ``--data`` spec, with train/profile/test splits.

    ``val_dataloader()`` and ``profile_dataloader()`` both return the profiling
    split; ``test_dataloader()`` the official test split.

    Args:
        spec: the data spec (see the module docstring).
        batch_size: samples per batch, every split.
        num_workers: DataLoader worker processes.
        profile_fraction: share of each class of the official training split
            carved out as the profiling split.
        test_fraction: for audio without a ``split`` column, share of each class's
            clips carved out as the test split.
        seed: seed of the stratified splits.
        augment: random crop (with padding) and horizontal flip on the training
            split of image datasets.
        crop_padding: padding of the random crop; ``None`` picks 2 for 28-pixel
            images and 4 for 32-pixel ones.
        image_size: side of the square input for ``imagefolder`` (default 224).
        labels_csv: audio labels CSV (default ``<dir>/labels.csv``).
        normalization: override the per-channel ``{"mean": [...], "std": [...]}``.

    Raises:
        ValueError, TypeError: for bad arguments (checked here, before any I/O).
    """

    def __init__(
        self,
        spec: str = "fashion-mnist",
        batch_size: int = 128,
        num_workers: int = 0,
        profile_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        augment: bool = True,
        crop_padding: int | None = None,
        image_size: int = 224,
        labels_csv: str | None = None,
        normalization: dict[str, list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.spec = parse_data_spec(spec)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        for name, value in (
            ("profile_fraction", profile_fraction),
            ("test_fraction", test_fraction),
        ):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if crop_padding is not None and crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
        if normalization is not None:
            check_normalization(normalization)
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.profile_fraction = float(profile_fraction)
        self.test_fraction = float(test_fraction)
        self.seed = seed
        self.augment = augment
        self.crop_padding = crop_padding
        self.image_size = image_size
        self.labels_csv = labels_csv
        self._normalization_override = normalization
        self._splits: Splits | None = None

    @classmethod
    def for_model(cls, spec: str, model: Any, **kwargs: Any) -> EarlyExitDataModule:
        """A DataModule that feeds ``model`` what it was trained on, without augmentation.

        Takes the normalization from ``model.normalization`` (as :func:`earlyexit.load`
        sets it) and, for ImageFolder data, the image size from ``model.input_shape``.

        Args:
            spec: the data spec.
            model: a multi-exit model (anything with ``input_shape``).
            **kwargs: more constructor arguments (``batch_size``, ``labels_csv``, ...).
        """
        shape = tuple(getattr(model, "input_shape", ()) or ())
        kwargs.setdefault("augment", False)
        kwargs.setdefault("normalization", getattr(model, "normalization", None))
        if len(shape) == 3:
            kwargs.setdefault("image_size", int(shape[-1]))
        return cls(spec, **kwargs)

    # -- metadata ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """The data spec as a string, recorded in checkpoints."""
        return str(self.spec)

    def _ready(self) -> Splits:
        if self._splits is None:
            self._splits = self._read()
        return self._splits

    @property
    def class_names(self) -> list[str]:
        """Names of the classes, by class index."""
        return list(self._ready().class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self._ready().class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input sample, as the model sees it."""
        return self._ready().input_shape

    @property
    def in_chans(self) -> int:
        """Input channels (``input_shape[0]``)."""
        return self.input_shape[0]

    @property
    def normalization(self) -> dict[str, list[float]]:
        """Per-channel ``{"mean": [...], "std": [...]}`` applied to the inputs."""
        norm = self._ready().normalization
        return {"mean": list(norm["mean"]), "std": list(norm["std"])}

    @property
    def metadata(self) -> dict[str, Any]:
        """What a checkpoint records about the data."""
        return {
            "dataset": self.name,
            "class_names": self.class_names,
            "input_shape": list(self.input_shape),
            "normalization": self.normalization,
        }

    def split_sizes(self) -> dict[str, int]:
        """Number of samples in each split."""
        s = self._ready()
        return {"train": len(s.train), "profile": len(s.profile), "test": len(s.test)}  # type: ignore[arg-type]

    # -- lightning hooks --------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Read the dataset and build the splits (once)."""
        if self._splits is not None:
            return
        self._splits = self._read()

    def dataset(self, split: str) -> Dataset:
        """The dataset of one split: ``"train"``, ``"profile"`` or ``"test"``.

        Raises:
            ValueError: for an unknown split.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        return getattr(self._ready(), split)

    def dataloader(self, split: str, shuffle: bool | None = None) -> DataLoader:
        """A DataLoader over one split (shuffled only for ``"train"`` by default)."""
        shuffle = (split == "train") if shuffle is None else shuffle
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        """The training split, shuffled."""
        return self.dataloader("train")

    def val_dataloader(self) -> DataLoader:
        """The profiling split (PORTEND validates and profiles on the same split)."""
        return self.dataloader("profile")

    def profile_dataloader(self) -> DataLoader:
        """The profiling split."""
        return self.dataloader("profile")

    def test_dataloader(self) -> DataLoader:
        """The official test split."""
        return self.dataloader("test")

    # -- sources ----------------------------------------------------------------

    def _norm(self, default: dict[str, list[float]]) -> dict[str, list[float]]:
        return dict(self._normalization_override or default)

    def _read(self) -> Splits:
        spec, root = self.spec, self.spec.root
        if spec.kind in ("fashion-mnist", "cifar10"):
            if spec.kind == "fashion-mnist":
                arrays = load_fashion_mnist(root)
                names, norm = list(FASHION_MNIST_CLASSES), FASHION_MNIST_NORM
            else:
                arrays = load_cifar10(root)  # type: ignore[arg-type]
                names, norm = arrays["class_names"], CIFAR10_NORM
            return array_splits(
                arrays, names, self._norm(norm), name=self.name,
                profile_fraction=self.profile_fraction, seed=self.seed,
                augment=self.augment, crop_padding=self.crop_padding,
            )  # fmt: skip
        if root is None:  # parse_data_spec gives every other kind a directory
            raise ValueError(f"data spec {self.name!r} needs a directory")
        if spec.kind == "imagefolder":
            return imagefolder_splits(
                root, self._norm(IMAGENET_NORM), size=self.image_size, augment=self.augment,
                profile_fraction=self.profile_fraction, seed=self.seed,
            )  # fmt: skip
        return audio_splits(
            root, self._norm(_IDENTITY_NORM),
            labels_csv=Path(self.labels_csv) if self.labels_csv else None,
            test_fraction=self.test_fraction, profile_fraction=self.profile_fraction,
            seed=self.seed,
        )  # fmt: skip
