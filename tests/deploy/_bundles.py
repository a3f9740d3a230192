"""A hand-made bundle for the fast tests of the generators."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from earlyexit.formats import Manifest, ManifestPartition, Plan


def make_bundle(path: Path, plan: Plan, sizes: Sequence[int]) -> None:
    """A hand-made bundle for ``plan``: its manifest and placeholder partition files of ``sizes`` bytes.

    Enough for the generators, which read manifests and file sizes and never load a model.
    """
    path.mkdir(parents=True)
    parts = []
    for k, size in enumerate(sizes, start=1):
        (path / f"partition_{k}.onnx").write_bytes(bytes(range(256)) * (size // 256))
        parts.append(ManifestPartition(k, {"onnx": f"partition_{k}.onnx"}))
    Manifest(plan=plan, class_names=tuple("abcdefghij"), input_shape=(1, 28, 28),
             partitions=tuple(parts)).save(path)  # fmt: skip
