"""Small real datasets in their standard on-disk formats, built from real images and audio.

CIFAR-10 and ImageFolder fixtures are written from real Fashion-MNIST images (the
embedded subset); the audio fixture lists real Sonic Pi samples (Debian's
``sonic-pi-samples``: CC0 clips whose label is the file name's prefix).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from earlyexit.data import load_fashion_mnist

SONIC_PI = Path("/usr/share/sonic-pi/samples")
FASHION_FULL = Path("/usr/share/datasets/fashion-mnist")
AUDIO_CLASSES = ("ambi", "bass", "drum", "elec")


def _to_rgb32(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) grey -> (N, 32, 32, 3), tinted per channel so channels differ."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.stack([padded, padded // 2 + 64, 255 - padded], axis=-1).astype(np.uint8)


def _balanced(labels: np.ndarray, per_class: int, offset: int = 0) -> np.ndarray:
    return np.sort(
        np.concatenate(
            [np.flatnonzero(labels == c)[offset : offset + per_class] for c in range(10)]
        )
    )


@pytest.fixture(scope="session")
def fashion() -> dict[str, np.ndarray]:
    """The embedded Fashion-MNIST subset."""
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory, fashion: dict[str, np.ndarray]) -> Path:
    """A tiny CIFAR-10 in the official python-batch format (pickles, protocol 2)."""
    root = tmp_path_factory.mktemp("cifar-10-batches-py")
    for b in range(1, 6):
        idx = _balanced(fashion["y_train"], 6, offset=6 * (b - 1))
        _write_cifar_batch(
            root / f"data_batch_{b}", fashion["x_train"][idx], fashion["y_train"][idx], b
        )
    idx = _balanced(fashion["y_test"], 5)
    _write_cifar_batch(root / "test_batch", fashion["x_test"][idx], fashion["y_test"][idx], 0)
    meta = {
        b"num_cases_per_batch": 60,
        b"label_names": [f"fashion_{c}".encode() for c in range(10)],
        b"num_vis": 3072,
    }
    with open(root / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root


def _write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, number: int) -> None:
    rgb = _to_rgb32(images)  # (N, 32, 32, 3)
    batch = {
        b"batch_label": f"training batch {number} of 5".encode(),
        b"labels": [int(v) for v in labels],
        b"data": np.ascontiguousarray(rgb.transpose(0, 3, 1, 2).reshape(len(rgb), 3072)),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(rgb))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.fixture(scope="session")
def imagefolder_dir(
    tmp_path_factory: pytest.TempPathFactory, fashion: dict[str, np.ndarray]
) -> Path:
    """A tiny ImageFolder (train/ and val/, 4 classes) of real Fashion-MNIST PNGs."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagefolder")
    for split, x, y, per_class in (
        ("train", fashion["x_train"], fashion["y_train"], 10),
        ("val", fashion["x_test"], fashion["y_test"], 4),
    ):
        for cls in range(4):
            folder = root / split / f"class_{cls}"
            folder.mkdir(parents=True)
            for j, i in enumerate(np.flatnonzero(y == cls)[:per_class]):
                Image.fromarray(_to_rgb32(x[i : i + 1])[0]).save(folder / f"{j}.png")
    return root


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labels CSV over real Sonic Pi clips (5 per class, 4 classes), short clips first."""
    if not SONIC_PI.is_dir():
        pytest.skip("Debian's sonic-pi-samples is not installed (/usr/share/sonic-pi/samples)")
    root = tmp_path_factory.mktemp("audio")
    lines = ["filename,label"]
    for cls in AUDIO_CLASSES:
        clips = sorted(SONIC_PI.glob(f"{cls}_*.flac"), key=lambda p: p.stat().st_size)[:5]
        for clip in clips:
            (root / clip.name).symlink_to(clip)
            lines.append(f"{clip.name},{cls}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root
