"""Data specs, readers, stratified splits and the DataModule, on real data."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from earlyexit.data import (
    FASHION_MNIST_CLASSES,
    DatasetNotFoundError,
    DataSpec,
    EarlyExitDataModule,
    embedded_fashion_mnist_path,
    load_cifar10,
    load_fashion_mnist,
    parse_data_spec,
    read_audio_labels,
    read_idx,
    stratified_split,
)
from tests._scripts import load_script

FASHION_FULL = Path("/usr/share/datasets/fashion-mnist")

# ----------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    ("spec", "kind", "root"),
    [
        ("fashion-mnist", "fashion-mnist", None),
        ("FashionMNIST", "fashion-mnist", None),
        ("fashion-mnist:/data/fm", "fashion-mnist", Path("/data/fm")),
        ("cifar10:/x/cifar-10-batches-py", "cifar10", Path("/x/cifar-10-batches-py")),
        ("cifar-10:rel/dir", "cifar10", Path("rel/dir")),
        ("imagefolder:/in", "imagefolder", Path("/in")),
        ("audio:C:/clips", "audio", Path("C:/clips")),
    ],
)
def test_parse_data_spec(spec: str, kind: str, root: Path | None) -> None:
    parsed = parse_data_spec(spec)
    assert parsed == DataSpec(kind, root)
    assert parse_data_spec(str(parsed)) == parsed


@pytest.mark.parametrize("spec", ["mnist", "cifar100:/x", "", "imagenet:/a"])
def test_parse_data_spec_unknown_kind(spec: str) -> None:
    with pytest.raises(ValueError, match="valid kinds"):
        parse_data_spec(spec)


@pytest.mark.parametrize("spec", ["cifar10", "imagefolder:", "audio: "])
def test_parse_data_spec_needs_dir(spec: str) -> None:
    with pytest.raises(ValueError, match="needs a directory"):
        parse_data_spec(spec)


def test_parse_data_spec_type() -> None:
    with pytest.raises(TypeError):
        parse_data_spec(3)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- splits


def test_stratified_split_is_stratified_disjoint_and_deterministic() -> None:
    labels = np.repeat(np.arange(5), [100, 50, 20, 7, 2])
    keep, carved = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(keep, carved)) == 0
    assert np.array_equal(np.sort(np.concatenate([keep, carved])), np.arange(len(labels)))
    assert np.bincount(labels[carved]).tolist() == [20, 10, 4, 1, 1]
    keep2, carved2 = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(carved, carved2) and np.array_equal(keep, keep2)
    _, carved3 = stratified_split(labels, 0.2, seed=4)
    assert not np.array_equal(carved, carved3)


def test_stratified_split_zero_and_bad_fraction() -> None:
    keep, carved = stratified_split([0, 1, 1, 0], 0.0)
    assert keep.tolist() == [0, 1, 2, 3] and carved.size == 0
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            stratified_split([0, 1], bad)


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_embedded_subset_is_stratified_and_small() -> None:
    path = embedded_fashion_mnist_path()
    assert path.stat().st_size < 7_000_000
    data = load_fashion_mnist()
    assert data["x_train"].shape == (10_000, 28, 28) and data["x_train"].dtype == np.uint8
    assert data["x_test"].shape == (2_000, 28, 28)
    assert np.bincount(data["y_train"]).tolist() == [1000] * 10
    assert np.bincount(data["y_test"]).tolist() == [200] * 10
    assert data["x_train"].std() > 50  # real images, not blanks


@pytest.mark.skipif(not FASHION_FULL.is_dir(), reason="dataset-fashion-mnist not installed")
def test_embedded_subset_matches_full_set() -> None:
    full = load_fashion_mnist(FASHION_FULL)
    assert full["x_train"].shape == (60_000, 28, 28) and full["x_test"].shape == (10_000, 28, 28)
    with np.load(embedded_fashion_mnist_path()) as z:
        idx = z["train_index"]
        assert np.array_equal(full["x_train"][idx], z["x_train"])
        assert np.array_equal(full["y_train"][idx], z["y_train"])
        assert np.array_equal(full["x_test"][z["test_index"]], z["x_test"])
        assert [str(c) for c in z["class_names"]] == list(FASHION_MNIST_CLASSES)


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_idx_dir_roundtrip(
    tmp_path: Path, fashion: dict[str, np.ndarray], gz: bool
) -> None:
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", fashion["x_train"][:300], gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", fashion["y_train"][:300], gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", fashion["x_test"][:50], gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", fashion["y_test"][:50], gz)
    data = load_fashion_mnist(tmp_path)
    assert np.array_equal(data["x_train"], fashion["x_train"][:300])
    assert np.array_equal(data["y_test"], fashion["y_test"][:50].astype(np.int64))


def test_read_idx_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"not an idx file at all")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="payload"):
        read_idx(short)


def test_missing_fashion_dir_says_where_and_what(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetNotFoundError, match="train-images-idx3-ubyte.*dataset-fashion-mnist"
    ):
        load_fashion_mnist(tmp_path)
    dm = EarlyExitDataModule(f"fashion-mnist:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):
        dm.setup()


def test_fashion_datamodule_splits_and_metadata() -> None:
    dm = EarlyExitDataModule("fashion-mnist", batch_size=64, profile_fraction=0.1)
    dm.setup()
    assert dm.split_sizes() == {"train": 9000, "profile": 1000, "test": 2000}
    assert dm.num_classes == 10 and dm.class_names == list(FASHION_MNIST_CLASSES)
    assert dm.input_shape == (1, 28, 28) and dm.in_chans == 1
    assert dm.normalization == {"mean": [0.2860], "std": [0.3530]}
    assert dm.metadata["dataset"] == "fashion-mnist"
    prof_labels = dm.dataset("profile").labels.numpy()
    assert np.bincount(prof_labels).tolist() == [100] * 10
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    # normalized: the profiling split's statistics are close to 0 / 1
    xs = torch.cat([b[0] for b in dm.profile_dataloader()])
    assert abs(xs.mean().item()) < 0.1 and abs(xs.std().item() - 1) < 0.1
    # the profile split is a fixed function of the seed, not of the call
    again = EarlyExitDataModule("fashion-mnist", batch_size=64)
    again.setup()
    assert torch.equal(again.dataset("profile").images, dm.dataset("profile").images)


def test_profile_split_disjoint_from_test_and_train(fashion: dict[str, np.ndarray]) -> None:
    dm = EarlyExitDataModule("fashion-mnist")
    dm.setup()

    def keys(split: str) -> set[bytes]:
        return {img.numpy().tobytes() for img in dm.dataset(split).images}

    prof, train = keys("profile"), keys("train")
    assert not prof & train
    # profiling comes out of the official training split; test is the official test split
    official_test = {img.tobytes() for img in fashion["x_test"]}
    assert keys("test") == official_test
    assert prof <= {img.tobytes() for img in fashion["x_train"]}


def test_train_augmentation_is_random_eval_is_not() -> None:
    dm = EarlyExitDataModule("fashion-mnist", augment=True)
    dm.setup()
    train = dm.dataset("train")
    torch.manual_seed(0)
    views = torch.stack([train[0][0] for _ in range(8)])
    assert (views - views[0]).abs().amax() > 0
    assert torch.equal(dm.dataset("test")[5][0], dm.dataset("test")[5][0])
    plain = EarlyExitDataModule("fashion-mnist", augment=False)
    plain.setup()
    assert torch.equal(plain.dataset("train")[0][0], plain.dataset("train")[0][0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"profile_fraction": 1.0}, "profile_fraction"),
        ({"normalization": {"mean": [0.1]}}, "normalization"),
        ({"normalization": {"mean": [0.1], "std": [0.0]}}, "positive"),
        ({"image_size": 2}, "image_size"),
    ],
)
def test_datamodule_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EarlyExitDataModule("fashion-mnist", **kwargs)


def test_datamodule_unknown_split() -> None:
    dm = EarlyExitDataModule("fashion-mnist")
    with pytest.raises(ValueError, match="valid splits"):
        dm.dataset("validation")


# ----------------------------------------------------------------------------- CIFAR-10


def test_cifar10_reads_python_batches(cifar_dir: Path) -> None:
    data = load_cifar10(cifar_dir)
    assert data["x_train"].shape == (300, 32, 32, 3) and data["x_train"].dtype == np.uint8
    assert data["x_test"].shape == (50, 32, 32, 3)
    assert data["class_names"] == [f"fashion_{c}" for c in range(10)]
    assert np.bincount(data["y_train"]).tolist() == [30] * 10
    dm = EarlyExitDataModule(f"cifar10:{cifar_dir}", batch_size=16)
    dm.setup()
    assert dm.input_shape == (3, 32, 32) and dm.num_classes == 10
    assert dm.split_sizes() == {"train": 270, "profile": 30, "test": 50}
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32)


def test_cifar10_refuses_malicious_pickle(tmp_path: Path, cifar_dir: Path) -> None:
    for f in cifar_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(ValueError, match="not allowed"):
        load_cifar10(tmp_path)


def test_cifar10_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="data_batch_1.*cifar-10-python"):
        load_cifar10(tmp_path)


# ----------------------------------------------------------------------------- ImageFolder


def test_imagefolder_datamodule(imagefolder_dir: Path) -> None:
    dm = EarlyExitDataModule(f"imagefolder:{imagefolder_dir}", batch_size=8, image_size=32)
    dm.setup()
    assert dm.class_names == [f"class_{c}" for c in range(4)]
    assert dm.input_shape == (3, 32, 32)
    assert dm.split_sizes() == {"train": 36, "profile": 4, "test": 16}
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_imagefolder_missing_val(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    dm = EarlyExitDataModule(f"imagefolder:{tmp_path}")
    with pytest.raises(DatasetNotFoundError, match="val"):
        dm.setup()


# ----------------------------------------------------------------------------- audio CSV


def test_read_audio_labels(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label\na.flac,x\n\nb.flac, y ,test\n")
    assert read_audio_labels(csv) == [("a.flac", "x", None), ("b.flac", "y", "test")]
    csv.write_text("a.flac\n")
    with pytest.raises(ValueError, match="filename,label"):
        read_audio_labels(csv)
    csv.write_text("a.flac,x,holdout\n")
    with pytest.raises(ValueError, match="split"):
        read_audio_labels(csv)
    with pytest.raises(DatasetNotFoundError, match="filename,label"):
        read_audio_labels(tmp_path / "nope.csv")


def test_audio_datamodule_on_sonic_pi(audio_dir: Path) -> None:
    dm = EarlyExitDataModule(f"audio:{audio_dir}", batch_size=4, test_fraction=0.2)
    dm.setup()
    assert dm.class_names == ["ambi", "bass", "drum", "elec"]
    assert dm.input_shape == (1, 96, 64) and dm.in_chans == 1
    sizes = dm.split_sizes()
    assert all(n > 0 for n in sizes.values()), sizes
    # one clip per class goes to test, one to profiling: every class is in every split
    for split in ("train", "profile", "test"):
        assert set(dm.dataset(split).tensors[1].tolist()) == {0, 1, 2, 3}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (1, 96, 64) and torch.isfinite(x).all() and x.std() > 0.1


def test_audio_split_column_and_missing_file(tmp_path: Path, audio_dir: Path) -> None:
    rows = (audio_dir / "labels.csv").read_text().splitlines()[1:]
    csv = tmp_path / "split.csv"
    csv.write_text(
        "\n".join(f"{r},{'test' if i % 5 == 0 else 'train'}" for i, r in enumerate(rows))
    )
    dm = EarlyExitDataModule(f"audio:{audio_dir}", labels_csv=str(csv), profile_fraction=0.0)
    dm.setup()
    assert dm.split_sizes()["profile"] == 0
    assert set(dm.dataset("test").tensors[1].tolist()) == {0, 1, 2, 3}
    csv.write_text("missing.flac,ambi\n")
    with pytest.raises(DatasetNotFoundError, match="missing.flac"):
        EarlyExitDataModule(f"audio:{audio_dir}", labels_csv=str(csv)).setup()


@pytest.mark.skipif(not FASHION_FULL.is_dir(), reason="dataset-fashion-mnist not installed")
def test_subset_tool_regenerates_the_shipped_file(tmp_path: Path) -> None:
    module = load_script("tools/make_fashion_subset.py")
    out = tmp_path / "subset.npz"
    assert module.make_subset(FASHION_FULL, out) == {"train": 10_000, "test": 2_000}
    with np.load(out) as new, np.load(embedded_fashion_mnist_path()) as shipped:
        assert sorted(new.files) == sorted(shipped.files)
        for key in new.files:
            assert np.array_equal(new[key], shipped[key]), key


def test_training_package_exports() -> None:
    import importlib

    import earlyexit.training as training

    for name in training.__all__:
        home = importlib.import_module(training._LAZY[name])
        assert getattr(training, name) is getattr(home, name), name
    with pytest.raises(AttributeError):
        training.no_such_name  # noqa: B018


def test_for_model_takes_normalization_and_size(imagefolder_dir: Path) -> None:
    class Model:  # anything with input_shape and normalization
        input_shape = (3, 48, 48)
        normalization = {"mean": [0.1, 0.2, 0.3], "std": [1.0, 2.0, 3.0]}

    dm = EarlyExitDataModule.for_model(f"imagefolder:{imagefolder_dir}", Model(), batch_size=4)
    assert dm.input_shape == (3, 48, 48) and dm.batch_size == 4 and dm.augment is False
    assert dm.normalization == Model.normalization
