"""CIFAR-10 from its python batches, unpickled with an allow-list (no arbitrary code)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit.data.spec import DatasetNotFoundError

__all__ = ["CIFAR10_CLASSES", "CIFAR10_NORM", "load_cifar10"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Per-channel statistics of the official training split (pixels scaled to [0, 1]).
CIFAR10_NORM = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10's python batches and refuses anything else.

    The batches are pickles (the dataset's official "python version"). A pickle
    can run arbitrary code, so only the globals those files need are allowed:
    numpy's array reconstruction, and ``_codecs.encode`` that byte strings
    written by Python 3 use. Everything else raises ``pickle.UnpicklingError``.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch")


def _load_cifar_batch(path: Path) -> dict[Any, Any]:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as err:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch (not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def load_cifar10(root: str | Path) -> dict[str, Any]:
    """Load CIFAR-10 from its python batches.

    Args:
        root: the ``cifar-10-batches-py`` directory.

    Returns:
        ``{"x_train", "y_train", "x_test", "y_test", "class_names"}``; images are
        uint8 (N, 32, 32, 3), labels int64.

    Raises:
        DatasetNotFoundError: if a batch file is missing.
        ValueError: if a file is not a CIFAR-10 batch.
    """
    root = Path(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"CIFAR-10 not found in {root}: missing {', '.join(missing)}. Extract "
            "cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) and "
            "pass 'cifar10:<dir>' with the directory that holds data_batch_1..5, "
            "test_batch and batches.meta. Nothing is downloaded."
        )

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        batch = _load_cifar_batch(root / name)
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"{root / name} is not a CIFAR-10 batch (no data/labels)")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise ValueError(
                f"{root / name}: data must be (N, 3072) with N labels, got {data.shape}"
            )
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    parts = [read(n) for n in names[:5]]
    x_test, y_test = read("test_batch")
    class_names = list(CIFAR10_CLASSES)
    if (root / "batches.meta").is_file():
        meta = _load_cifar_batch(root / "batches.meta")
        raw = meta.get("label_names")
        if raw is not None:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    return {
        "x_train": np.concatenate([p[0] for p in parts]),
        "y_train": np.concatenate([p[1] for p in parts]),
        "x_test": x_test,
        "y_test": y_test,
        "class_names": class_names,
    }
