"""MultiExitModule: the summed loss, per-exit metrics, schedules, freezing, fine-tuning."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from earlyexit import MultiExitModel, backbones, decompose
from earlyexit.data import EarlyExitDataModule
from earlyexit.training.module import (
    MultiExitModule,
    RecipeModule,
    build_model,
    exits_from_plan,
    select_exits,
)


def _model(exits: list[int] | None = None, seed: int = 0) -> MultiExitModel:
    torch.manual_seed(seed)
    net = backbones.create("resnet20", num_classes=10, in_chans=1)
    return MultiExitModel(decompose(net, input_shape=(1, 28, 28)), num_classes=10, exits=exits)


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def test_loss_is_weighted_sum_of_exit_cross_entropies() -> None:
    model = _model(exits=[2, 6, 10])
    module = MultiExitModule(model, exit_weights=[0.25, 0.5, 2.0])
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        loss = module._step((x, y), "train")
    outputs = model(x)
    expected = sum(
        w * nn.functional.cross_entropy(o, y)
        for w, o in zip([0.25, 0.5, 2.0], outputs, strict=True)
    )
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)
    # default: the plain sum
    plain = MultiExitModule(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = plain._step((x, y), "train")
    assert torch.allclose(loss, sum(nn.functional.cross_entropy(o, y) for o in outputs), rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"exit_weights": [1.0, 1.0]}, ValueError, "one weight per exit"),
        ({"exit_weights": [1.0, -1.0, 1.0]}, ValueError, ">= 0"),
        ({"exit_weights": [0.0, 0.0, 0.0]}, ValueError, "not all 0"),
        ({"schedule": "step"}, ValueError, "valid: cosine, onecycle, constant"),
        ({"warmup_epochs": -1}, ValueError, "warmup_epochs"),
        ({"label_smoothing": 1.0}, ValueError, "label_smoothing"),
    ],
)
def test_module_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        MultiExitModule(_model(exits=[3, 6, 10]), **kwargs)


def test_module_rejects_plain_backbone() -> None:
    with pytest.raises(TypeError, match="MultiExitModel"):
        MultiExitModule(backbones.create("resnet20"))  # type: ignore[arg-type]


def test_hparams_exclude_the_model() -> None:
    module = MultiExitModule(_model(exits=[5, 10]), exit_weights=[0.5, 1.0])
    assert "model" not in module.hparams
    assert list(module.hparams["exit_weights"]) == [0.5, 1.0]


def test_fit_logs_every_exit_and_learns(tmp_path: Path) -> None:
    torch.manual_seed(0)
    dm = EarlyExitDataModule("fashion-mnist", batch_size=64, augment=False)
    module = MultiExitModule(
        _model(), schedule="constant", optimizer=lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9)
    )
    trainer = _trainer(tmp_path, limit_train_batches=25, limit_val_batches=6)
    trainer.fit(module, datamodule=dm)
    metrics = trainer.callback_metrics
    for block in range(1, 11):
        assert f"val/acc_exit_{block}" in metrics
        assert f"train/acc_exit_{block}" in metrics
    assert "val/loss" in metrics and "val/acc" in metrics
    assert float(metrics["val/acc"]) == float(metrics["val/acc_exit_10"])
    # 25 steps of SGD on real data: far above chance (0.1) at the last exit
    assert float(metrics["val/acc_exit_10"]) > 0.3
    # the module recorded the data's metadata for checkpoints
    assert module.model.normalization == {"mean": [0.2860], "std": [0.3530]}
    assert module.data_metadata["class_names"][0] == "T-shirt/top"


def test_metrics_match_manual_accuracy(tmp_path: Path) -> None:
    dm = EarlyExitDataModule("fashion-mnist", batch_size=100, augment=False)
    model = _model(exits=[4, 10])
    module = MultiExitModule(model)
    trainer = _trainer(tmp_path, limit_test_batches=3)
    (result,) = trainer.test(module, datamodule=dm, verbose=False)
    model.eval()
    correct = torch.zeros(2)
    with torch.no_grad():
        for i, (x, y) in enumerate(dm.test_dataloader()):
            if i == 3:
                break
            correct += torch.tensor([(o.argmax(1) == y).float().sum() for o in model(x)])
    assert result["test/acc_exit_4"] == pytest.approx(float(correct[0]) / 300, abs=1e-6)
    assert result["test/acc_exit_10"] == pytest.approx(float(correct[1]) / 300, abs=1e-6)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_schedules(tmp_path: Path, schedule: str) -> None:
    dm = EarlyExitDataModule("fashion-mnist", batch_size=32)
    module = MultiExitModule(
        _model(exits=[10]),
        schedule=schedule,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
        warmup_epochs=0.5,
    )
    seen: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = _trainer(
        tmp_path, max_epochs=2, limit_train_batches=6, limit_val_batches=0, callbacks=[Record()]
    )
    trainer.fit(module, datamodule=dm)
    assert len(seen) == 12
    if schedule == "constant":
        assert seen == [0.05] * 12
    elif schedule == "cosine":
        # linear warm-up over 3 steps (half an epoch of 6), then a cosine decay
        assert seen[:3] == pytest.approx([0.05 / 3, 0.1 / 3, 0.05])
        assert all(a >= b for a, b in zip(seen[2:], seen[3:], strict=False))
        assert seen[-1] < 0.005
    else:
        assert max(seen) == pytest.approx(0.05, rel=1e-3) and seen[0] < 0.01 and seen[-1] < 0.001


def test_freeze_backbone_trains_heads_only(tmp_path: Path) -> None:
    model = _model(exits=[3, 10])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module = MultiExitModule(model, freeze_backbone=True, schedule="constant")
    trainer = _trainer(tmp_path, limit_train_batches=3, limit_val_batches=2, num_sanity_val_steps=1)
    trainer.fit(module, datamodule=EarlyExitDataModule("fashion-mnist", batch_size=32))
    after = model.state_dict()
    for k in after:
        if k.startswith("blocks."):
            assert torch.equal(after[k], before[k]), k  # weights and batch-norm statistics
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("heads."))


def test_all_frozen_is_an_error(tmp_path: Path) -> None:
    model = _model(exits=[10])
    for p in model.heads.parameters():
        p.requires_grad_(False)
    module = MultiExitModule(model, freeze_backbone=True)
    with pytest.raises(ValueError, match="nothing to train"):
        _trainer(tmp_path, limit_train_batches=1).fit(
            module, datamodule=EarlyExitDataModule("fashion-mnist")
        )


def _plan_dict(cut_points: list[int], schema: str = "earlyexit.plan/1") -> dict:
    first, parts = 1, []
    for tier, last in enumerate(cut_points):
        parts.append(
            {"first_block": first, "last_block": last, "tier": tier, "tier_name": f"t{tier}"}
        )
        first = last + 1
    return {
        "schema": schema,
        "threshold": 0.4,
        "partitions": parts,
        "estimate": {
            "latency_s": 0.01,
            "accuracy": 0.9,
            "exit_fractions": [1.0 / len(cut_points)] * len(cut_points),
            "breakdown_s": {"compute": 0.0, "serialize": 0.0, "transmit": 0.0, "propagate": 0.0},
        },
        "estimator": "exact",
    }


def test_exits_from_plan_and_select(tmp_path: Path) -> None:
    import json

    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_plan_dict([2, 5, 8])))
    assert exits_from_plan(path) == [2, 5, 8]
    model = _model()
    model.metadata = {"dataset": "x"}
    small = select_exits(model, plan=path)
    assert small.exits == (2, 5, 8) and small.num_blocks == 8 and small.metadata == {"dataset": "x"}
    x = torch.randn(2, 1, 28, 28)
    model.eval(), small.eval()
    full_out = model(x)
    assert all(torch.allclose(a, full_out[b - 1]) for a, b in zip(small(x), (2, 5, 8), strict=True))
    with pytest.raises(ValueError, match="unknown schema"):
        exits_from_plan(_plan_dict([2], schema="earlyexit.plan/99"))
    with pytest.raises(ValueError, match="either exits or plan"):
        select_exits(model, exits=[2], plan=path)


def test_build_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes is required"):
        build_model("resnet20")
    with pytest.raises(ValueError, match="plan needs init_from"):
        build_model("resnet20", num_classes=10, plan=str(tmp_path / "p.json"))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("resnet21", num_classes=10, input_shape=(1, 28, 28))


def test_recipe_module_builds_from_arguments() -> None:
    module = RecipeModule(
        backbone="resnet20", num_classes=7, input_shape=[1, 28, 28], exits=[1, 4, 10]
    )
    assert module.exits == (1, 4, 10) and module.model.num_classes == 7
    assert module.hparams["backbone"] == "resnet20" and "model" not in module.hparams
    assert math.isclose(float(module.exit_weights.sum()), 3.0)


def test_recipe_module_passes_the_module_arguments_on_and_declares_them_once() -> None:
    """RecipeModule takes MultiExitModule's arguments through **kwargs; LightningCLI still sees them."""
    from lightning.pytorch.cli import LightningArgumentParser

    module = RecipeModule(
        backbone="resnet20", num_classes=10, input_shape=[1, 28, 28], exits=[4, 10],
        exit_weights=[0.25, 1.0], schedule="constant", label_smoothing=0.1,
    )  # fmt: skip
    assert module.exit_weights.tolist() == [0.25, 1.0] and module.schedule == "constant"
    assert module.hparams["label_smoothing"] == 0.1 and module.hparams["exits"] == [4, 10]
    with pytest.raises(TypeError, match="smoothing"):
        RecipeModule(num_classes=10, input_shape=[1, 28, 28], smoothing=0.1)
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(RecipeModule, "model")
    cfg = parser.parse_args(
        ["--model.backbone=resnet20", "--model.label_smoothing=0.2", "--model.exit_weights=[1, 2]"]
    )
    assert cfg.model.label_smoothing == 0.2 and list(cfg.model.exit_weights) == [1.0, 2.0]
    assert cfg.model.schedule == "cosine" and cfg.model.freeze_backbone is False
