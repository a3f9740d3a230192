"""Fashion-MNIST: the embedded subset, or the full set from its IDX files."""

from __future__ import annotations

import gzip
import io
from importlib import resources
from pathlib import Path

import numpy as np

from earlyexit.data.spec import DatasetNotFoundError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_NORM",
    "embedded_fashion_mnist_path",
    "load_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Per-channel statistics of the official training split (pixels scaled to [0, 1]).
FASHION_MNIST_NORM = {"mean": [0.2860], "std": [0.3530]}

_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _open_maybe_gz(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST/Fashion-MNIST format), gzipped or not.

    Args:
        path: the file; a ``.gz`` suffix means gzip.

    Returns:
        The array, with the dtype and shape the header gives.

    Raises:
        ValueError: if the header or the payload size is wrong.
    """
    path = Path(path)
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    with _open_maybe_gz(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated (IDX header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX payload has {len(raw) - header} bytes, header says {expected}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw", root / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def embedded_fashion_mnist_path() -> Path:
    """Path of the Fashion-MNIST subset shipped with the package."""
    return Path(str(resources.files("earlyexit") / "data" / "fashion_mnist_subset.npz"))


def load_fashion_mnist(root: str | Path | None = None) -> dict[str, np.ndarray]:
    """Load Fashion-MNIST: the embedded subset, or the full set from IDX files.

    Args:
        root: directory of the IDX files; ``None`` for the embedded subset.

    Returns:
        ``{"x_train", "y_train", "x_test", "y_test"}``: uint8 images (N, 28, 28)
        and int64 labels.

    Raises:
        DatasetNotFoundError: if files are missing.
        ValueError: if the files are inconsistent.
    """
    if root is None:
        path = embedded_fashion_mnist_path()
        if not path.is_file():
            raise DatasetNotFoundError(
                f"the embedded Fashion-MNIST subset is missing ({path}); regenerate it "
                "with `python tools/make_fashion_subset.py` from the IDX files of "
                "Debian's dataset-fashion-mnist package"
            )
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    else:
        root = Path(root)
        found = {key: _find_idx(root, stem) for key, stem in _FASHION_FILES.items()}
        missing = [_FASHION_FILES[k] for k, p in found.items() if p is None]
        if missing:
            raise DatasetNotFoundError(
                f"Fashion-MNIST not found in {root}: missing {', '.join(missing)} "
                "(each may be gzipped, '.gz'). Put the four IDX files of "
                "https://github.com/zalandoresearch/fashion-mnist in that directory, or "
                "install Debian's dataset-fashion-mnist package and pass "
                "'fashion-mnist:/usr/share/datasets/fashion-mnist'. Nothing is downloaded."
            )
        out = {k: read_idx(p) for k, p in found.items() if p is not None}
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise ValueError(
                f"Fashion-MNIST {split} images must be uint8 (N, 28, 28), got {x.dtype} {x.shape}"
            )
        if y.shape != (len(x),):
            raise ValueError(
                f"Fashion-MNIST {split}: {len(x)} images but labels of shape {y.shape}"
            )
        out[f"y_{split}"] = y.astype(np.int64)
    return out
