"""Integrity of a bundle's files: size and SHA-256 against the manifest. Standard library only.

Used by both engines (ONNX Runtime and the TorchScript fallback) before a file
is parsed, so that a truncated, corrupted or replaced file is refused with a
clear error instead of reaching a parser.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["check_file", "sha256_file"]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB chunks).

    Raises:
        OSError: if the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(bundle_dir: str | os.PathLike[str], part: Any, fmt: str) -> bool:
    """Check one partition file against the size and SHA-256 its manifest entry records.

    Args:
        bundle_dir: the bundle directory.
        part: the partition's :class:`~earlyexit.formats.ManifestPartition`.
        fmt: the ``files`` key (``onnx``, ``onnx_int8``, ``torchscript``, ...).

    Returns:
        True if a hash was recorded and matches; False if none is recorded
        (a bundle written before hashes were).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if its size or hash differs from the manifest's (refuse to load it).
    """
    name = part.files[fmt]
    path = Path(bundle_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"partition {part.index}: {fmt} file {str(path)!r} is missing")
    hashes = part.extra.get("sha256", {}) or {}
    sizes = part.extra.get("bytes", {}) or {}
    if fmt in sizes and path.stat().st_size != int(sizes[fmt]):
        raise ValueError(
            f"partition {part.index}: {name} has {path.stat().st_size} bytes, the manifest "
            f"says {sizes[fmt]} (truncated or replaced?); refusing to load it"
        )
    if fmt not in hashes:
        return False
    if sha256_file(path) != hashes[fmt]:
        raise ValueError(
            f"partition {part.index}: {name} does not match the SHA-256 in the manifest "
            "(altered after export?); refusing to load it"
        )
    return True
