"""Checkpoints: save/load round trips, weights_only loading, corrupted and foreign files."""

from __future__ import annotations

import pickle
import stat
from pathlib import Path

import lightning as L
import pytest
import torch

import earlyexit
from earlyexit import MultiExitModel, backbones, decompose
from earlyexit.checkpoint import CHECKPOINT_FORMAT, load, load_checkpoint_dict, save
from earlyexit.data import EarlyExitDataModule
from earlyexit.training.module import MultiExitModule

META = {
    "normalization": {"mean": [0.2860], "std": [0.3530]},
    "class_names": [f"c{i}" for i in range(10)],
    "input_shape": [1, 28, 28],
    "dataset": "fashion-mnist",
}


def _model(exits: list[int] | None = None) -> MultiExitModel:
    torch.manual_seed(1)
    net = backbones.create("resnet20", num_classes=10, in_chans=1)
    model = MultiExitModel(decompose(net, input_shape=(1, 28, 28)), num_classes=10, exits=exits)
    # non-default state: batch-norm statistics and temperatures must survive the trip
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 1, 28, 28) * 2 + 1)
    model.set_temperatures(torch.linspace(0.8, 1.5, len(model.exits)))
    return model.eval()


@pytest.mark.parametrize("exits", [None, [3, 7], [2, 5, 10]])
def test_save_load_roundtrip(tmp_path: Path, exits: list[int] | None) -> None:
    model = _model(exits)
    path = save(model, tmp_path / "sub" / "m.pt", metadata=META)
    loaded = earlyexit.load(path)
    assert isinstance(loaded, MultiExitModel) and not loaded.training
    assert loaded.exits == model.exits and loaded.config == model.config
    x = torch.randn(4, 1, 28, 28)
    for a, b in zip(model(x), loaded(x), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(loaded.temperatures, model.temperatures)
    assert loaded.normalization == META["normalization"]
    assert loaded.metadata["class_names"] == META["class_names"]
    # plain data only: loadable with weights_only=True
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["config"]["backbone"] == "resnet20"
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others (no mkstemp 0600)
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind


def test_shipped_checkpoint_is_small_enough(tmp_path: Path) -> None:
    path = save(_model(), tmp_path / "m.pt", metadata=META)
    assert path.stat().st_size < 1_500_000


def test_save_uses_model_metadata_and_rejects_bad_models(tmp_path: Path) -> None:
    model = _model([10])
    model.metadata = dict(META)
    loaded = load(save(model, tmp_path / "m.pt"))
    assert loaded.metadata["dataset"] == "fashion-mnist"
    with pytest.raises(TypeError, match="MultiExitModel"):
        save(torch.nn.Linear(2, 2), tmp_path / "x.pt")  # type: ignore[arg-type]
    seq = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(1), torch.nn.LazyLinear(10)
    )
    custom = MultiExitModel(decompose(torch.nn.Sequential(seq[0], torch.nn.ReLU()), cut_points=["0"], input_shape=(1, 8, 8)),
                            num_classes=10, head_factory="linear")  # fmt: skip
    with pytest.raises(ValueError, match="registry backbone"):
        save(custom, tmp_path / "custom.pt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load(tmp_path / "nope.pt")


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = save(_model(), tmp_path / "m.pt", metadata=META)
    data = path.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable earlyexit checkpoint"):
        load(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(ValueError, match="not a readable earlyexit checkpoint"):
        load(garbage)


def test_foreign_files(tmp_path: Path) -> None:
    plain = tmp_path / "state.pt"
    torch.save(_model().state_dict(), plain)  # a bare state dict: no config
    with pytest.raises(ValueError, match="not an earlyexit checkpoint"):
        load(plain)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable earlyexit checkpoint"):
        load(text)


class _Payload:
    def __reduce__(self):  # noqa: ANN204
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "evil.pt"
    torch.save(
        {"format": CHECKPOINT_FORMAT, "config": _Payload()},
        evil,
        pickle_protocol=pickle.DEFAULT_PROTOCOL,
    )
    with pytest.raises(ValueError, match="unsafe unpickling|not a readable"):
        load(evil)
    assert "this must never run" not in capsys.readouterr().out


def test_unknown_format_version_and_bad_weights(tmp_path: Path) -> None:
    path = save(_model(), tmp_path / "m.pt", metadata=META)
    raw = torch.load(path, weights_only=True)
    raw["format"] = "earlyexit.checkpoint/9"
    torch.save(raw, tmp_path / "v9.pt")
    with pytest.raises(ValueError, match="not supported"):
        load(tmp_path / "v9.pt")
    raw["format"] = CHECKPOINT_FORMAT
    raw["config"]["exits"] = [1, 2]  # weights are for 10 exits
    torch.save(raw, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load(tmp_path / "mismatch.pt")
    raw["config"]["backbone"] = "no-such-net"
    torch.save(raw, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="cannot rebuild"):
        load(tmp_path / "unknown.pt")


def test_lightning_ckpt_is_accepted(tmp_path: Path) -> None:
    model = _model([4, 10]).train()
    module = MultiExitModule(
        model, optimizer=lambda p: torch.optim.SGD(p, lr=0.01), schedule="constant"
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=EarlyExitDataModule("fashion-mnist", batch_size=16))
    ckpt = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)  # the whole .ckpt is plain data
    assert raw["earlyexit"]["config"]["exits"] == [4, 10]
    loaded = load(ckpt)
    assert loaded.exits == (4, 10)
    assert loaded.normalization == {"mean": [0.2860], "std": [0.3530]}
    model.eval()
    x = torch.randn(3, 1, 28, 28)
    for a, b in zip(model(x), loaded(x), strict=True):
        assert torch.allclose(a, b)
    assert load_checkpoint_dict(ckpt)["metadata"]["dataset"] == "fashion-mnist"


SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "resnet20_fashionmnist.pt"


def test_shipped_checkpoint_loads_and_is_accurate() -> None:
    from earlyexit.training.evaluation import evaluate

    model = earlyexit.load(SHIPPED)
    assert model.exits == tuple(range(1, 11))
    assert model.config["backbone"] == "resnet20" and model.config["in_chans"] == 1
    assert model.metadata["dataset"] == "fashion-mnist:/usr/share/datasets/fashion-mnist"
    assert model.metadata["input_shape"] == [1, 28, 28]
    assert model.normalization == {"mean": [0.2860], "std": [0.3530]}
    assert SHIPPED.stat().st_size < 2_000_000
    # the embedded subset's test images come from the official test split, which
    # the checkpoint never saw: its final exit must clear the 90% goal there too
    result = evaluate(model, "fashion-mnist", "test")
    assert result.num_samples == 2000
    assert result.exit_accuracy[-1] >= 0.90
    assert result.exit_accuracy[0] < result.exit_accuracy[-1]
