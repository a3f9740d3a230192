"""Data specs (``kind`` or ``kind:<dir>``), the split names and stratified splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATA_KINDS",
    "SPLITS",
    "DataSpec",
    "DatasetNotFoundError",
    "check_normalization",
    "parse_data_spec",
    "stratified_split",
]

DATA_KINDS: tuple[str, ...] = ("fashion-mnist", "cifar10", "imagefolder", "audio")
SPLITS: tuple[str, ...] = ("train", "profile", "test")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing or incomplete; the message says where to put it."""


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` spec.

    Attributes:
        kind: one of :data:`DATA_KINDS`.
        root: the dataset directory; ``None`` only for the embedded Fashion-MNIST.
    """

    kind: str
    root: Path | None = None

    def __str__(self) -> str:
        return self.kind if self.root is None else f"{self.kind}:{self.root}"


def parse_data_spec(spec: str | DataSpec) -> DataSpec:
    """Parse ``kind`` or ``kind:<dir>`` into a :class:`DataSpec`.

    Args:
        spec: e.g. ``"fashion-mnist"``, ``"cifar10:/data/cifar-10-batches-py"``.

    Returns:
        The parsed spec (the directory is not checked here).

    Raises:
        TypeError: if ``spec`` is not a string.
        ValueError: for an unknown kind, or a kind that needs a directory without one.
    """
    if isinstance(spec, DataSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"data spec must be a string, got {type(spec).__name__}")
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if kind in ("fashionmnist", "fmnist"):
        kind = "fashion-mnist"
    if kind == "cifar-10":
        kind = "cifar10"
    if kind not in DATA_KINDS:
        raise ValueError(
            f"unknown data kind {kind!r} in spec {spec!r}; valid kinds: "
            + ", ".join(DATA_KINDS)
            + " (e.g. 'fashion-mnist', 'fashion-mnist:<dir>', 'cifar10:<dir>', "
            "'imagefolder:<dir>', 'audio:<dir>')"
        )
    root = rest.strip()
    if not sep or not root:
        if kind == "fashion-mnist":
            return DataSpec(kind)
        raise ValueError(f"data spec {spec!r} needs a directory: '{kind}:<dir>'")
    return DataSpec(kind, Path(root).expanduser())


def stratified_split(
    labels: Sequence[int] | np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, carved), carving ``fraction`` of every class.

    The same labels, fraction and seed always give the same split. A class with
    at least two members gives up at least one and keeps at least one when
    ``fraction > 0``.

    Args:
        labels: class index of every sample.
        fraction: share of each class to carve out, in [0, 1).
        seed: seed of the permutation.

    Returns:
        Two sorted int64 index arrays, disjoint, covering ``range(len(labels))``.

    Raises:
        ValueError: if ``fraction`` is outside [0, 1).
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    carved: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        n = len(members)
        k = int(round(fraction * n))
        if fraction > 0 and n >= 2:
            k = min(max(k, 1), n - 1)
        carved.append(members[:k])
        kept.append(members[k:])
    if not kept:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


def check_normalization(norm: Any) -> None:
    """Check a per-channel ``{"mean": [...], "std": [...]}`` mapping.

    Raises:
        ValueError: if it is not such a mapping, the lengths differ or a std is not positive.
    """
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise ValueError(f"normalization must be {{'mean': [...], 'std': [...]}}, got {norm!r}")
    if len(norm["mean"]) != len(norm["std"]) or not norm["mean"]:
        raise ValueError("normalization mean and std must have one entry per channel")
    if any(float(s) <= 0 for s in norm["std"]):
        raise ValueError("normalization std must be positive")
