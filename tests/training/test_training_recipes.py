"""Every recipe runs (``fast_dev_run``, CPU) on small real data, through ``earlyexit train``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import earlyexit
from earlyexit.checkpoint import save
from earlyexit.cli import main as earlyexit_main
from earlyexit.formats import Estimate, PartitionPlan, Plan
from earlyexit.training.cli import _expand_data_shorthand, train_main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _run(recipe: str, tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "model.pt"
    code = train_main(
        [
            "--config",
            str(RECIPES / recipe),
            "--trainer.fast_dev_run=true",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.num_workers=0",
            f"--output={out}",
            *extra,
        ]
    )
    assert code == 0
    assert out.is_file()
    return out


def test_all_recipes_are_tested() -> None:
    tested = {
        "resnet20_fashionmnist.yaml",
        "resnet56_fashionmnist.yaml",
        "resnet20_cifar10.yaml",
        "resnet110_cifar10.yaml",
        "efficientnet_b0_imagenet.yaml",
        "vggish_audioset.yaml",
        "finetune.yaml",
        "exits_only.yaml",
    }
    assert {p.name for p in RECIPES.glob("*.yaml")} == tested


def test_recipe_resnet20_fashionmnist(tmp_path: Path) -> None:
    out = _run("resnet20_fashionmnist.yaml", tmp_path, "--data.batch_size=32")
    model = earlyexit.load(out)
    assert model.exits == tuple(range(1, 11))
    assert model.config["backbone"] == "resnet20" and model.config["in_chans"] == 1
    assert model.metadata["dataset"] == "fashion-mnist"
    assert model.normalization == {"mean": [0.2860], "std": [0.3530]}
    assert model.metadata["input_shape"] == [1, 28, 28]
    assert model.metadata["training"]["global_step"] == 1


def test_recipe_resnet20_cifar10(tmp_path: Path, cifar_dir: Path) -> None:
    out = _run(
        "resnet20_cifar10.yaml", tmp_path, "--data", f"cifar10:{cifar_dir}", "--data.batch_size=16"
    )
    model = earlyexit.load(out)
    assert model.config["in_chans"] == 3 and len(model.exits) == 10
    assert model.metadata["class_names"] == [f"fashion_{c}" for c in range(10)]


def test_recipe_resnet56_fashionmnist(tmp_path: Path) -> None:
    out = _run("resnet56_fashionmnist.yaml", tmp_path, "--data.batch_size=8")
    model = earlyexit.load(out)
    assert model.exits == tuple(range(1, 29))
    assert model.config["backbone"] == "resnet56"


def test_recipe_resnet110_cifar10(tmp_path: Path, cifar_dir: Path) -> None:
    out = _run(
        "resnet110_cifar10.yaml",
        tmp_path,
        f"--data.spec=cifar10:{cifar_dir}",
        "--data.batch_size=4",
    )
    model = earlyexit.load(out)
    assert model.exits == tuple(range(1, 56))


def test_recipe_efficientnet_b0_imagefolder(tmp_path: Path, imagefolder_dir: Path) -> None:
    out = _run(
        "efficientnet_b0_imagenet.yaml",
        tmp_path,
        f"--data=imagefolder:{imagefolder_dir}",
        "--data.image_size=64",
        "--data.batch_size=4",
        "--trainer.precision=32-true",
    )
    model = earlyexit.load(out)
    assert model.config["backbone"] == "timm:efficientnet_b0"
    assert model.num_classes == 4 and tuple(model.input_shape) == (3, 64, 64)
    assert model.normalization["mean"] == [0.485, 0.456, 0.406]


def test_recipe_vggish_audio(tmp_path: Path, audio_dir: Path) -> None:
    out = _run(
        "vggish_audioset.yaml", tmp_path, "--data", f"audio:{audio_dir}", "--data.batch_size=4"
    )
    model = earlyexit.load(out)
    assert model.config["backbone"] == "vggish" and model.exits == (1, 2, 3, 4)
    assert model.metadata["class_names"] == ["ambi", "bass", "drum", "elec"]
    assert tuple(model.input_shape) == (1, 96, 64)


def _plan(cut_points: list[int]) -> Plan:
    first = 1
    parts = []
    for tier, last in enumerate(cut_points):
        parts.append(PartitionPlan(first, last, tier, f"tier{tier}"))
        first = last + 1
    fractions = tuple([1.0 / len(cut_points)] * len(cut_points))
    zero = {"compute": 0.0, "serialize": 0.0, "transmit": 0.0, "propagate": 0.0}
    return Plan(
        threshold=0.3, partitions=tuple(parts), estimate=Estimate(0.01, 0.9, fractions, zero)
    )


@pytest.fixture
def full_checkpoint(tmp_path: Path) -> Path:
    from earlyexit import MultiExitModel, backbones, decompose

    torch.manual_seed(0)
    net = backbones.create("resnet20", num_classes=10, in_chans=1)
    model = MultiExitModel(decompose(net, input_shape=(1, 28, 28)), num_classes=10)
    meta = {"normalization": {"mean": [0.2860], "std": [0.3530]}, "dataset": "fashion-mnist"}
    return save(model, tmp_path / "full.pt", metadata=meta)


def test_recipe_finetune_with_plan(tmp_path: Path, full_checkpoint: Path) -> None:
    plan_path = tmp_path / "plan.json"
    _plan([3, 7]).save(plan_path)
    out = _run(
        "finetune.yaml",
        tmp_path,
        f"--model.init_from={full_checkpoint}",
        f"--model.plan={plan_path}",
        "--data.batch_size=16",
    )
    tuned = earlyexit.load(out)
    full = earlyexit.load(full_checkpoint)
    assert tuned.exits == (3, 7) and tuned.num_blocks == 7
    # it trained: the kept weights moved, the model is no longer the checkpoint's
    moved = [
        not torch.equal(tuned.state_dict()[k], full.state_dict()[k])
        for k in tuned.state_dict()
        if k.endswith("weight") and k in full.state_dict()
    ]
    assert any(moved)


def test_recipe_finetune_exits_frozen_backbone(tmp_path: Path, full_checkpoint: Path) -> None:
    out = _run(
        "finetune.yaml",
        tmp_path,
        f"--model.init_from={full_checkpoint}",
        "--model.exits=[2, 5, 10]",
        "--model.freeze_backbone=true",
        "--data.batch_size=16",
    )
    tuned = earlyexit.load(out)
    full = earlyexit.load(full_checkpoint)
    assert tuned.exits == (2, 5, 10)
    sd, full_sd = tuned.state_dict(), full.state_dict()
    blocks = [k for k in sd if k.startswith("blocks.")]
    heads = [k for k in sd if k.startswith("heads.") and k.endswith("weight")]
    assert blocks and heads
    assert all(torch.equal(sd[k], full_sd[k]) for k in blocks)  # weights and BN statistics
    assert any(not torch.equal(sd[k], full_sd[k]) for k in heads)


def test_recipe_exits_only_on_own_frozen_backbone(tmp_path: Path) -> None:
    """A user's trained backbone (a local state dict) stays fixed; only the exits learn."""
    from earlyexit import backbones, decompose

    torch.manual_seed(3)
    own = backbones.create("resnet20", num_classes=10, in_chans=1)
    with torch.no_grad():  # "trained": weights and BN statistics that are not the init
        for t in own.state_dict().values():
            if t.is_floating_point():
                t.add_(0.1 * torch.randn_like(t))
    weights = tmp_path / "own.safetensors"
    from safetensors.torch import save_file

    save_file(own.state_dict(), str(weights))
    out = _run(
        "exits_only.yaml",
        tmp_path,
        f"--model.backbone_weights={weights}",
        "--model.exits=[3, 6, 10]",
        "--data.batch_size=16",
    )
    tuned = earlyexit.load(out)
    assert tuned.exits == (3, 6, 10)
    start = decompose(own, input_shape=(1, 28, 28))
    kept, ref = tuned.blocks.state_dict(), start.blocks.state_dict()
    assert kept.keys() == ref.keys() and kept
    assert all(torch.equal(kept[k], ref[k]) for k in ref)  # weights and BN statistics
    # the last exit started as the backbone's own classifier and was trained
    assert not torch.equal(tuned.heads["10"][-1].weight, own.fc.weight)
    assert not torch.equal(tuned.heads["10"][-1].bias, own.fc.bias)


def test_backbone_weights_and_init_from_conflict(tmp_path: Path, full_checkpoint: Path) -> None:
    from earlyexit.training.module import build_model

    with pytest.raises(ValueError, match="not both"):
        build_model(init_from=full_checkpoint, backbone_weights=str(tmp_path / "w.pth"))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_model("resnet20", 10, (1, 28, 28), backbone_weights=str(tmp_path / "w.pth"))


def test_finetune_plan_and_exits_conflict(
    tmp_path: Path, full_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_path = tmp_path / "plan.json"
    _plan([4]).save(plan_path)
    code = train_main(
        [
            "--config",
            str(RECIPES / "finetune.yaml"),
            f"--model.init_from={full_checkpoint}",
            f"--model.plan={plan_path}",
            "--model.exits=[4]",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert code == 2 and "either exits or plan" in capsys.readouterr().err


def test_data_shorthand() -> None:
    assert _expand_data_shorthand(["--data", "cifar10:/x", "--trainer.max_epochs=1"]) == [
        "--data.spec=cifar10:/x",
        "--trainer.max_epochs=1",
    ]
    assert _expand_data_shorthand(["--data=fashion-mnist"]) == ["--data.spec=fashion-mnist"]
    # a config file for the data group is left to LightningCLI
    assert _expand_data_shorthand(["--data", "data.yaml"]) == ["--data", "data.yaml"]


def test_train_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        earlyexit_main(["train", "--help"])
    assert err.value.code == 0
    assert "--model.backbone" in capsys.readouterr().out


def test_train_rejects_missing_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = train_main(
        [
            "--config",
            str(RECIPES / "resnet20_cifar10.yaml"),
            "--data",
            f"cifar10:{tmp_path / 'nope'}",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Nothing is downloaded" in err
    assert err.startswith("earlyexit train: error:") and err.count("\n") == 1


def test_evaluate_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run("resnet20_fashionmnist.yaml", tmp_path, "--data.batch_size=32")
    capsys.readouterr()
    code = earlyexit_main(
        [
            "evaluate",
            "--checkpoint",
            str(out),
            "--data",
            "fashion-mnist",
            "--split",
            "test",
            "--json",
            "--limit",
            "200",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_samples"] == 200 and result["split"] == "test"
    assert len(result["exit_accuracy"]) == 10 and result["threshold"] is None


def test_build_model_adapts_another_tasks_weights(tmp_path: Path) -> None:
    """RGB, 100-class weights start a 1-channel, 10-class full configuration."""
    from earlyexit import backbones
    from earlyexit.training.module import RecipeModule, build_model

    src = backbones.create("resnet20", num_classes=100, in_chans=3)
    weights = tmp_path / "rgb100.pth"
    torch.save(src.state_dict(), weights)
    with pytest.raises(ValueError, match="mis-shaped"):
        build_model("resnet20", 10, (1, 28, 28), backbone_weights=str(weights))
    with pytest.raises(ValueError, match="needs backbone_weights"):
        build_model("resnet20", 10, (1, 28, 28), adapt_weights=True)
    module = RecipeModule("resnet20", 10, (1, 28, 28), backbone_weights=str(weights),
                          adapt_weights=True)  # fmt: skip
    def sig(t: torch.Tensor) -> tuple:
        return tuple(t.shape), round(float(t.double().sum()), 6)

    theirs = {sig(v) for v in src.state_dict().values() if v.is_floating_point()}
    mine = [k for k, v in module.model.blocks.state_dict().items() if v.is_floating_point()]
    changed = [k for k in mine if sig(module.model.blocks.state_dict()[k]) not in theirs]
    assert len(mine) > 50 and len(changed) == 1, changed  # only the stem conv: adapted to 1 channel
    assert module.model.num_classes == 10
