"""Build the embedded Fashion-MNIST subset, ``earlyexit/data/fashion_mnist_subset.npz``.

A stratified, deterministic subset of Fashion-MNIST (Zalando SE, MIT licence):
``--train-per-class`` images of each class from the official training split and
``--test-per-class`` from the official test split, in their original order. The
same IDX files always give the same bytes of image data.

Usage:
    python tools/make_fashion_subset.py [--source /usr/share/datasets/fashion-mnist]
        [--out earlyexit/data/fashion_mnist_subset.npz]
        [--train-per-class 1000] [--test-per-class 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from earlyexit.data import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = ["main", "make_subset"]

DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"
DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "earlyexit" / "data" / "fashion_mnist_subset.npz"
)


def _pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picked = []
    for cls in range(len(FASHION_MNIST_CLASSES)):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise ValueError(f"class {cls} has {len(members)} images, fewer than {per_class}")
        picked.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(picked))


def make_subset(
    source: str | Path,
    out: str | Path,
    train_per_class: int = 1000,
    test_per_class: int = 200,
    seed: int = 0,
) -> dict[str, int]:
    """Write the subset; returns the number of images per split.

    Args:
        source: directory of the four Fashion-MNIST IDX files.
        out: the ``.npz`` to write (compressed).
        train_per_class: images per class from the training split.
        test_per_class: images per class from the test split.
        seed: seed of the selection.

    Raises:
        FileNotFoundError: if the IDX files are missing.
        ValueError: if a class has too few images.
    """
    full = load_fashion_mnist(source)
    rng = np.random.default_rng(seed)
    train_idx = _pick(full["y_train"], train_per_class, rng)
    test_idx = _pick(full["y_test"], test_per_class, rng)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        x_train=full["x_train"][train_idx],
        y_train=full["y_train"][train_idx].astype(np.uint8),
        x_test=full["x_test"][test_idx],
        y_test=full["y_test"][test_idx].astype(np.uint8),
        train_index=train_idx.astype(np.int32),
        test_index=test_idx.astype(np.int32),
        class_names=np.array(FASHION_MNIST_CLASSES),
    )
    tmp.replace(out)
    return {"train": len(train_idx), "test": len(test_idx)}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="directory of the IDX files")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output .npz")
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = make_subset(args.source, args.out, args.train_per_class, args.test_per_class, args.seed)
    size_mb = Path(args.out).stat().st_size / 1e6
    print(
        f"wrote {args.out}: {sizes['train']} train + {sizes['test']} test images, {size_mb:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
