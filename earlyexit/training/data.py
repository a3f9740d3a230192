"""Datasets and the LightningDataModule behind ``--data SPEC``.

Every dataset is read from its standard on-disk format; nothing is ever
downloaded. A data spec names a kind and, for all but the embedded default, a
directory:

================================  =============================================
``fashion-mnist``                 the stratified Fashion-MNIST subset shipped in
                                  ``earlyexit/data/fashion_mnist_subset.npz``
``fashion-mnist:<dir>``           the full set, as the four IDX files (gzipped
                                  or not) that Debian's ``dataset-fashion-mnist``
                                  installs in ``/usr/share/datasets/fashion-mnist``
``cifar10:<dir>``                 CIFAR-10's python batches (``data_batch_1..5``,
                                  ``test_batch``, ``batches.meta``)
``imagefolder:<dir>``             ``<dir>/train/<class>/*`` and ``<dir>/val/<class>/*``
``audio:<dir>``                   audio files plus a ``filename,label`` CSV
                                  (default ``<dir>/labels.csv``)
================================  =============================================

Splits are deterministic and stratified. *test* is the official test split
(``val/`` for an ImageFolder; carved out of the clips for audio unless the CSV
has a ``split`` column); *profile*, the split PORTEND profiles exit rates and
branch accuracies on, is carved out of the official training split, so it is
disjoint from *test*; *train* is the rest of the training split.
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = [
    "CIFAR10_CLASSES",
    "DATA_KINDS",
    "FASHION_MNIST_CLASSES",
    "SPLITS",
    "ArrayImageDataset",
    "DataSpec",
    "DatasetNotFoundError",
    "EarlyExitDataModule",
    "TensorDataset",
    "embedded_fashion_mnist_path",
    "load_cifar10",
    "load_fashion_mnist",
    "parse_data_spec",
    "read_audio_labels",
    "read_idx",
    "stratified_split",
]

DATA_KINDS: tuple[str, ...] = ("fashion-mnist", "cifar10", "imagefolder", "audio")
SPLITS: tuple[str, ...] = ("train", "profile", "test")

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
# Per-channel statistics of the official training splits (pixels scaled to [0, 1]).
_FASHION_MNIST_NORM = {"mean": [0.2860], "std": [0.3530]}
_CIFAR10_NORM = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
_IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
_IDENTITY_NORM = {"mean": [0.0], "std": [1.0]}

_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".aiff", ".aif", ".mp3")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing or incomplete; the message says where to put it."""


# --------------------------------------------------------------------------- specs


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


# --------------------------------------------------------------------------- splits


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


# --------------------------------------------------------------------------- readers


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


def read_audio_labels(csv_path: str | Path) -> list[tuple[str, str, str | None]]:
    """Read an audio labels CSV: ``filename,label[,split]``, header optional.

    Args:
        csv_path: the CSV file.

    Returns:
        ``(filename, label, split or None)`` rows, in file order.

    Raises:
        DatasetNotFoundError: if the file is missing.
        ValueError: if a row is malformed or a split is not train/test.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetNotFoundError(
            f"audio labels CSV not found: {csv_path}. Write one row per clip, "
            "'filename,label' (optionally a third column 'split' = train|test), "
            "with file names relative to the audio directory."
        )
    rows: list[tuple[str, str, str | None]] = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if lineno == 1 and row[0].lower() == "filename":
                continue
            if len(row) not in (2, 3) or not row[0] or not row[1]:
                raise ValueError(
                    f"{csv_path}:{lineno}: expected 'filename,label[,split]', got {row}"
                )
            split = row[2].lower() if len(row) == 3 and row[2] else None
            if split is not None and split not in ("train", "test"):
                raise ValueError(
                    f"{csv_path}:{lineno}: split must be 'train' or 'test', got {split!r}"
                )
            rows.append((row[0], row[1], split))
    if not rows:
        raise ValueError(f"{csv_path} lists no audio files")
    return rows


# --------------------------------------------------------------------------- datasets


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


class TensorDataset(Dataset):
    """Ready-made float inputs with labels (used for audio log-mel patches)."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if len(inputs) != len(labels):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        self.inputs = inputs
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.labels[index]


def _crop_flip(size: tuple[int, int], padding: int) -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip()])


@dataclass
class _Splits:
    """What a source yields: one dataset per split plus the metadata."""

    train: Dataset
    profile: Dataset
    test: Dataset
    class_names: list[str]
    input_shape: tuple[int, int, int]
    normalization: dict[str, list[float]]
    sizes: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- datamodule


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
            _check_normalization(normalization)
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
        self._splits: _Splits | None = None

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

    def _ready(self) -> _Splits:
        if self._splits is None:
            self.setup()
        assert self._splits is not None
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
        builders = {
            "fashion-mnist": self._setup_fashion,
            "cifar10": self._setup_cifar,
            "imagefolder": self._setup_imagefolder,
            "audio": self._setup_audio,
        }
        self._splits = builders[self.spec.kind]()

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

    def _array_splits(
        self,
        arrays: dict[str, Any],
        class_names: list[str],
        default_norm: dict[str, list[float]],
    ) -> _Splits:
        x_train, y_train = arrays["x_train"], arrays["y_train"]
        x_test, y_test = arrays["x_test"], arrays["y_test"]
        norm = self._norm(default_norm)
        shape = x_train.shape[1:3]
        channels = 1 if x_train.ndim == 3 else x_train.shape[3]
        if len(norm["mean"]) != channels:
            raise ValueError(
                f"normalization has {len(norm['mean'])} channel(s) but the images of {self.name} "
                f"have {channels}: the model and the data do not match"
            )
        keep, prof = stratified_split(y_train, self.profile_fraction, self.seed)
        padding = (
            self.crop_padding if self.crop_padding is not None else (2 if shape[0] <= 28 else 4)
        )
        augment = _crop_flip(tuple(shape), padding) if self.augment else None
        return _Splits(
            train=ArrayImageDataset(x_train[keep], y_train[keep], norm, augment),
            profile=ArrayImageDataset(x_train[prof], y_train[prof], norm),
            test=ArrayImageDataset(x_test, y_test, norm),
            class_names=class_names,
            input_shape=(channels, int(shape[0]), int(shape[1])),
            normalization=norm,
        )

    def _setup_fashion(self) -> _Splits:
        arrays = load_fashion_mnist(self.spec.root)
        return self._array_splits(arrays, list(FASHION_MNIST_CLASSES), _FASHION_MNIST_NORM)

    def _setup_cifar(self) -> _Splits:
        assert self.spec.root is not None
        arrays = load_cifar10(self.spec.root)
        return self._array_splits(arrays, arrays["class_names"], _CIFAR10_NORM)

    def _setup_imagefolder(self) -> _Splits:
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import v2

        assert self.spec.root is not None
        root = self.spec.root
        for sub in ("train", "val"):
            if not (root / sub).is_dir():
                raise DatasetNotFoundError(
                    f"ImageFolder dataset not found: {root / sub} is missing. Lay the images "
                    f"out as {root}/train/<class>/<image> and {root}/val/<class>/<image> "
                    "(val/ is the test split). Nothing is downloaded."
                )
        norm = self._norm(_IMAGENET_NORM)
        if len(norm["mean"]) != 3:
            raise ValueError(
                f"normalization has {len(norm['mean'])} channel(s) but ImageFolder images are RGB (3)"
            )
        size = self.image_size
        to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        normalize = v2.Normalize(norm["mean"], norm["std"])
        if self.augment:
            train_tf = v2.Compose(
                [
                    *to_float,
                    v2.RandomResizedCrop(size, antialias=True),
                    v2.RandomHorizontalFlip(),
                    normalize,
                ]
            )
        else:
            train_tf = v2.Compose(
                [*to_float, v2.Resize(size, antialias=True), v2.CenterCrop(size), normalize]
            )
        eval_tf = v2.Compose(
            [
                *to_float,
                v2.Resize(int(round(size / 0.875)), antialias=True),
                v2.CenterCrop(size),
                normalize,
            ]
        )
        train_aug = ImageFolder(str(root / "train"), transform=train_tf)
        train_eval = ImageFolder(str(root / "train"), transform=eval_tf)
        test = ImageFolder(str(root / "val"), transform=eval_tf)
        if train_aug.classes != test.classes:
            raise ValueError(
                f"{root}: train/ and val/ have different classes "
                f"({train_aug.classes} vs {test.classes})"
            )
        keep, prof = stratified_split(train_aug.targets, self.profile_fraction, self.seed)
        return _Splits(
            train=Subset(train_aug, keep.tolist()),
            profile=Subset(train_eval, prof.tolist()),
            test=test,
            class_names=list(train_aug.classes),
            input_shape=(3, size, size),
            normalization=norm,
        )

    def _setup_audio(self) -> _Splits:
        assert self.spec.root is not None
        root = self.spec.root
        if not root.is_dir():
            raise DatasetNotFoundError(
                f"audio dataset not found: {root} is not a directory. Put the audio files "
                f"({', '.join(_AUDIO_SUFFIXES)}) there with a labels CSV "
                "'filename,label[,split]' (default <dir>/labels.csv). Nothing is downloaded."
            )
        rows = read_audio_labels(Path(self.labels_csv) if self.labels_csv else root / "labels.csv")
        class_names = sorted({label for _, label, _ in rows})
        label_of = {name: i for i, name in enumerate(class_names)}
        clip_labels = np.array([label_of[label] for _, label, _ in rows], dtype=np.int64)
        if any(split is not None for _, _, split in rows):
            is_test = np.array([split == "test" for _, _, split in rows])
            train_pool, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        else:
            train_pool, test_idx = stratified_split(clip_labels, self.test_fraction, self.seed)
        keep, prof = stratified_split(clip_labels[train_pool], self.profile_fraction, self.seed)
        norm = self._norm(_IDENTITY_NORM)
        if len(norm["mean"]) != 1:
            raise ValueError(
                f"normalization has {len(norm['mean'])} channel(s) but log-mel patches have 1"
            )

        def build(indices: np.ndarray) -> TensorDataset:
            patches, labels = [], []
            for i in indices:
                x = _audio_examples(root / rows[i][0])
                patches.append(x)
                labels.append(torch.full((len(x),), int(clip_labels[i]), dtype=torch.long))
            if not patches:
                return TensorDataset(torch.empty(0, 1, 96, 64), torch.empty(0, dtype=torch.long))
            inputs = torch.cat(patches)
            mean = torch.tensor(norm["mean"]).view(-1, 1, 1)
            std = torch.tensor(norm["std"]).view(-1, 1, 1)
            return TensorDataset((inputs - mean) / std, torch.cat(labels))

        train = build(train_pool[keep])
        return _Splits(
            train=train,
            profile=build(train_pool[prof]),
            test=build(test_idx),
            class_names=class_names,
            input_shape=tuple(train.inputs.shape[1:]) if len(train) else (1, 96, 64),  # type: ignore[arg-type]
            normalization=norm,
        )


def _audio_examples(path: Path) -> torch.Tensor:
    """Decode one clip with soundfile and turn it into VGGish log-mel patches."""
    import soundfile as sf

    from earlyexit.backbones.vggish import waveform_to_examples

    if not path.is_file():
        raise DatasetNotFoundError(f"audio file listed in the labels CSV is missing: {path}")
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as err:  # soundfile.LibsndfileError derives from RuntimeError
        raise ValueError(f"cannot decode audio file {path}: {err}") from err
    waveform = torch.from_numpy(np.ascontiguousarray(wave.T))  # [channels, samples]
    if waveform.shape[1] < rate:  # a clip shorter than 1 s still gives one 0.96 s patch
        waveform = torch.nn.functional.pad(waveform, (0, rate - waveform.shape[1]))
    examples = waveform_to_examples(waveform, rate)
    if examples.ndim == 3:
        examples = examples.unsqueeze(1)
    return examples.float()


def _check_normalization(norm: Any) -> None:
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise ValueError(f"normalization must be {{'mean': [...], 'std': [...]}}, got {norm!r}")
    if len(norm["mean"]) != len(norm["std"]) or not norm["mean"]:
        raise ValueError("normalization mean and std must have one entry per channel")
    if any(float(s) <= 0 for s in norm["std"]):
        raise ValueError("normalization std must be positive")
