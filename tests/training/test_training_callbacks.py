"""PlanOnFitEnd: a real short Lightning fit of ResNet-20 on the embedded Fashion-MNIST subset."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

import earlyexit
from earlyexit import MultiExitModel, backbones, decompose, normalized_entropy
from earlyexit.data import EarlyExitDataModule
from earlyexit.formats import Link, Plan, Profile, Tier, Topology
from earlyexit.training.callbacks import PlanOnFitEnd
from earlyexit.training.module import MultiExitModule

TOPO = Topology(
    tiers=(Tier("edge", "dev", 6.0), Tier("base", "dev", 2.0), Tier("cloud", "dev", 1.0)),
    links=(Link(10, 20), Link(400, 40)),
    mtu_bytes=9000,
)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: a 2-core CI runner shared with other jobs otherwise spins for tens of seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(exits: list[int] | None = None) -> MultiExitModel:
    torch.manual_seed(0)
    net = backbones.create("resnet20", num_classes=10, in_chans=1)
    return MultiExitModel(decompose(net, input_shape=(1, 28, 28)), num_classes=10, exits=exits)


@pytest.fixture(scope="module")
def device_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Timings of this machine for an untrained ResNet-20 (a few samples are enough; one thread)."""
    dm = EarlyExitDataModule("fashion-mnist", batch_size=50, augment=False)
    dm.setup()
    data = [next(iter(dm.profile_dataloader()))]
    prof = earlyexit.profile(
        _model(), data, "dev", threads=1, reps=3, budget_s=0.02, progress=False
    )
    path = tmp_path_factory.mktemp("dev") / "dev.json"
    prof.save(path)
    return path


def _trainer(**kw) -> L.Trainer:
    args = {
        "accelerator": "cpu",
        "max_epochs": 1,
        "limit_train_batches": 4,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**args, **kw})


def test_fit_profiles_plans_and_writes(tmp_path: Path, device_profile: Path) -> None:
    model = _model()
    module = MultiExitModule(
        model, schedule="constant", optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)
    )
    out = tmp_path / "out" / "plan.json"
    cb = PlanOnFitEnd(
        TOPO, device_profile, output=out, max_latency=10.0, estimator="exact", max_partitions=2
    )
    dm = EarlyExitDataModule("fashion-mnist", batch_size=50, augment=False, profile_fraction=0.02)
    _trainer(callbacks=[cb]).fit(module, datamodule=dm)

    assert cb.written == [out, out.with_name("plan.profile.json")]
    plan = Plan.load(out)
    prof = Profile.load(cb.profile_path)
    assert plan == cb.plan
    # the device timings and sizes are the given profile's; accuracy and exit rates are new
    dev = Profile.load(device_profile)
    np.testing.assert_array_equal(
        prof.devices["dev"].partition_time_s, dev.devices["dev"].partition_time_s
    )
    assert prof.output_bits.tolist() == dev.output_bits.tolist()
    assert prof.extra["model_digest"] == earlyexit.profiling.model_digest(model)
    # independently: every exit on the whole validation split (the profile split, 200 samples)
    model.eval()
    correct, ents = [], []
    with torch.no_grad():
        for x, y in dm.val_dataloader():
            outs = model(x)
            correct.append(torch.stack([o.argmax(1) == y for o in outs]))
            ents.append(torch.stack([normalized_entropy(o) for o in outs]))
    correct_t, ent = torch.cat(correct, 1).numpy(), torch.cat(ents, 1).numpy()
    assert prof.samples.num_samples == 200
    np.testing.assert_allclose(prof.branch_accuracy, correct_t.mean(1))
    er = (ent[None] < prof.thresholds[:, None, None]).mean(2)
    np.testing.assert_allclose(prof.exit_rate, er, atol=1.5 / 200)  # a sample at a boundary
    assert 0.0 < prof.branch_accuracy[-1] < 1.0
    # the plan is the planner's optimum for that profile (P_acc: the most accurate within 10 s)
    assert plan == earlyexit.plan(prof, TOPO, max_latency=10.0, estimator="exact", max_partitions=2)
    assert (
        plan.estimate.accuracy >= prof.branch_accuracy.max() - 1e-12
    )  # T = 0, one partition is a candidate
    assert len(plan.partitions) <= 2 and plan.estimator == "exact"


def test_infeasible_bound_writes_profile_and_warns(tmp_path: Path, device_profile: Path) -> None:
    module = MultiExitModule(_model(), schedule="constant")
    cb = PlanOnFitEnd(TOPO, device_profile, output=tmp_path / "p.json", min_accuracy=1.0,
                      tiers=["edge"])  # fmt: skip
    with pytest.warns(UserWarning, match="no plan written"):
        _trainer(callbacks=[cb], limit_train_batches=1).fit(
            module,
            datamodule=EarlyExitDataModule("fashion-mnist", batch_size=100, profile_fraction=0.02),
        )
    assert cb.plan is None and cb.written == [tmp_path / "p.profile.json"]
    assert not (tmp_path / "p.json").exists()


def test_model_without_every_exit_fails_before_training(device_profile: Path) -> None:
    cb = PlanOnFitEnd(TOPO, device_profile)
    module = SimpleNamespace(model=_model(exits=[3, 10]))
    with pytest.raises(ValueError, match="exit after every block"):
        cb.on_fit_start(None, module)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MultiExitModel"):
        cb.on_fit_start(None, SimpleNamespace(model=torch.nn.Linear(2, 2)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"estimator": "fast"}, ValueError, "'portend', 'exact'"),
        ({"min_accuracy": 0.5, "max_latency": 0.1}, ValueError, "not both"),
        ({"min_accuracy": 1.5}, ValueError, r"min_accuracy: expected a number in \[0, 1\]"),
        ({"min_accuracy": True}, TypeError, "min_accuracy: expected a number"),
        ({"max_latency": 0}, ValueError, "max_latency"),
        ({"thresholds": [0.2, 2.0]}, ValueError, "thresholds"),
        ({"thresholds": "0.5"}, TypeError, "thresholds"),
        ({"colour": "red"}, TypeError, "valid hints: num_partitions, max_partitions, tiers"),
        ({"tiers": ["moon"]}, ValueError, "moon"),
        ({"output": 3}, TypeError, "output"),
    ],
)
def test_arguments_are_validated(device_profile: Path, kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        PlanOnFitEnd(TOPO, device_profile, **kwargs)


def test_topology_and_profile_are_checked(tmp_path: Path, device_profile: Path) -> None:
    with pytest.raises(ValueError, match="iot, mobile, pi4-wifi, portend-aws"):
        PlanOnFitEnd("no-such-topology", device_profile)
    with pytest.raises(ValueError, match=r"profile devices: \['dev'\]"):
        PlanOnFitEnd("portend-aws", device_profile)  # its tiers name AWS devices
    with pytest.raises(FileNotFoundError):
        PlanOnFitEnd(TOPO, tmp_path / "missing.json")
    with pytest.raises(TypeError, match="device_profile"):
        PlanOnFitEnd(TOPO, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="directory"):
        PlanOnFitEnd(TOPO, device_profile, output=tmp_path)


def test_device_profile_given_as_json_text(tmp_path):
    """LightningCLI passes a profile file's content rather than its path."""
    from earlyexit.planner.synthetic import synthetic_profile
    from earlyexit.training.callbacks import PlanOnFitEnd

    prof = synthetic_profile(num_blocks=10, devices=("a1.medium", "m4.large", "g4dn.xlarge"))
    cb = PlanOnFitEnd(
        "portend-aws", prof.to_json(), output=tmp_path / "plan.json", min_accuracy=0.5
    )
    assert sorted(cb.device_profile.devices) == ["a1.medium", "g4dn.xlarge", "m4.large"]
