"""evaluate(): per-exit accuracy and real early exit, checked against direct computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from earlyexit import MultiExitModel, backbones, decompose
from earlyexit.checkpoint import save
from earlyexit.cli import main as earlyexit_main
from earlyexit.data import EarlyExitDataModule
from earlyexit.training.evaluation import evaluate, format_result
from earlyexit.training.module import MultiExitModule

NORM = {"mean": [0.2860], "std": [0.3530]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained 3-exit ResNet-20, so that exits differ in accuracy and confidence."""
    import lightning as L

    torch.manual_seed(0)
    net = backbones.create("resnet20", num_classes=10, in_chans=1)
    model = MultiExitModel(
        decompose(net, input_shape=(1, 28, 28)), num_classes=10, exits=[2, 6, 10]
    )
    module = MultiExitModule(
        model, schedule="constant", optimizer=lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9)
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=40,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=EarlyExitDataModule("fashion-mnist", batch_size=32))
    return save(model, tmp_path_factory.mktemp("eval") / "m.pt")


def _direct(
    path: Path, limit: int, threshold: float
) -> tuple[list[float], list[float], float, torch.Tensor]:
    from earlyexit.checkpoint import load

    model = load(path)
    dm = EarlyExitDataModule("fashion-mnist", augment=False, normalization=model.normalization)
    dm.setup()
    test = dm.dataset("test")
    x = torch.stack([test[i][0] for i in range(limit)])
    y = torch.stack([test[i][1] for i in range(limit)])
    with torch.no_grad():
        outs = model(x)
        acc = [float((o.argmax(1) == y).float().mean()) for o in outs]
        res = model.predict(x, threshold)
    fractions = [float((res.exit_block == b).float().mean()) for b in model.exits]
    return acc, fractions, float((res.prediction == y).float().mean()), res.entropy


def _median_first_exit_entropy(path: Path, limit: int) -> float:
    """A threshold that sends about half the samples out at the first exit."""
    _, _, _, entropy = _direct(path, limit, 1.0)
    return round(float(entropy.median()), 4)


def test_evaluate_matches_direct_computation(trained: Path) -> None:
    t = _median_first_exit_entropy(trained, 300)
    result = evaluate(trained, "fashion-mnist", "test", threshold=t, batch_size=64, limit=300)
    acc, fractions, ee_acc, _ = _direct(trained, 300, t)
    assert result.num_samples == 300 and result.exits == [2, 6, 10]
    assert result.exit_accuracy == pytest.approx(acc, abs=1e-6)
    assert result.exit_fractions == pytest.approx(fractions, abs=1e-6)
    assert result.early_exit_accuracy == pytest.approx(ee_acc, abs=1e-6)
    assert sum(result.exit_fractions) == pytest.approx(1.0)
    assert 0.3 < result.exit_fractions[0] < 0.7  # this threshold really splits the samples
    assert f"early exit at T={t:g}" in format_result(result)


def test_threshold_extremes(trained: Path) -> None:
    none = evaluate(trained, threshold=0.0, limit=200)
    assert none.exit_fractions == [0.0, 0.0, 1.0]
    assert none.early_exit_accuracy == pytest.approx(none.exit_accuracy[-1])
    every = evaluate(trained, threshold=1.0, limit=200)
    assert every.exit_fractions[0] == pytest.approx(1.0)
    assert every.early_exit_accuracy == pytest.approx(every.exit_accuracy[0])


def test_evaluate_full_split_and_profile(trained: Path) -> None:
    result = evaluate(trained, "fashion-mnist", "profile")
    assert result.num_samples == 1000 and result.threshold is None and result.exit_fractions is None
    assert result.exit_accuracy[-1] > 0.15  # chance is 0.1; 5 sigma on 1000 samples


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"split": "val"}, ValueError, "valid splits"),
        ({"threshold": 1.5}, ValueError, r"\[0, 1\]"),
        ({"threshold": "high"}, TypeError, "threshold"),
        ({"limit": 0}, ValueError, "limit"),
    ],
)
def test_evaluate_rejects_bad_arguments(
    trained: Path, kwargs: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        evaluate(trained, **kwargs)


def test_evaluate_rejects_mismatched_data(trained: Path, cifar_dir: Path) -> None:
    with pytest.raises(ValueError, match="channel|samples are"):
        evaluate(trained, f"cifar10:{cifar_dir}")


def test_evaluate_cli(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = _median_first_exit_entropy(trained, 300)
    code = earlyexit_main(
        [
            "evaluate",
            "--checkpoint",
            str(trained),
            "--split",
            "test",
            "--threshold",
            str(t),
            "--limit",
            "300",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    direct = evaluate(trained, threshold=t, limit=300)
    assert out["exit_accuracy"] == direct.exit_accuracy
    assert out["exit_fractions"] == direct.exit_fractions
    assert out["early_exit_accuracy"] == direct.early_exit_accuracy
    assert earlyexit_main(["evaluate", "--checkpoint", str(trained), "--limit", "50"]) == 0
    text = capsys.readouterr().out
    assert "50 samples" in text and "accuracy" in text


def test_evaluate_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert earlyexit_main(["evaluate", "--checkpoint", str(bad)]) == 2
    assert "not a readable earlyexit checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # refused while parsing, before any work
        earlyexit_main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")])
    assert exited.value.code == 2
    assert "missing.pt' does not exist" in capsys.readouterr().err


def test_evaluate_imagefolder_uses_the_model_input_size(
    tmp_path: Path, imagefolder_dir: Path
) -> None:
    torch.manual_seed(0)
    net = backbones.create("resnet20", num_classes=4, in_chans=3)
    model = MultiExitModel(decompose(net, input_shape=(3, 40, 40)), num_classes=4, exits=[5, 10])
    model.normalization = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    result = evaluate(save(model, tmp_path / "m.pt"), f"imagefolder:{imagefolder_dir}")
    assert result.num_samples == 16 and result.exits == [5, 10]
    dm = EarlyExitDataModule(f"imagefolder:{imagefolder_dir}", image_size=40)
    assert dm.input_shape == (3, 40, 40)
    with pytest.raises(ValueError, match="RGB"):
        EarlyExitDataModule(f"imagefolder:{imagefolder_dir}", normalization=NORM).setup()
