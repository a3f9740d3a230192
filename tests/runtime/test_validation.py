"""The validation harness's pure parts, and the serve / validate command lines."""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit.cli import build_parser, main
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.planner.topology import resolve_topology
from earlyexit.validation import (
    Config,
    Measured,
    choose_configs,
    estimate,
    plot,
    regression,
    summarize,
)


@pytest.fixture(scope="module")
def profile():
    return synthetic_profile(6, num_samples=200)


def test_choose_configs_mixes_pareto_and_others(profile):
    cfgs = choose_configs(profile, "portend-aws", 12, seed=1)
    assert len(cfgs) == 12
    assert len({(c.threshold, c.cuts, c.tiers) for c in cfgs}) == 12
    assert 1 <= sum(c.pareto for c in cfgs) <= 6 and not all(c.pareto for c in cfgs)
    for c in cfgs:
        assert list(c.cuts) == sorted(set(c.cuts)) and 1 <= c.cuts[-1] <= 6
        assert len(c.tiers) == len(c.cuts) == len(set(c.tiers)) and max(c.tiers) < 3
    with pytest.raises(ValueError, match="k must be"):
        choose_configs(profile, "portend-aws", 0)


def test_summary_recovers_a_known_relation_and_plots(profile, tmp_path):
    topo = resolve_topology("portend-aws")
    rng = np.random.default_rng(0)
    records = []
    for c in choose_configs(profile, topo, 10, seed=2):
        est = estimate(profile, topo, c)
        e = est["exact"]
        # pretend the deployment measured the exact estimate up to 2 % noise
        meas = {
            "latency_s": e["latency_s"] * (1 + 0.02 * rng.standard_normal()),
            "accuracy": e["accuracy"] + 0.002,
            "exit_fractions": e["exit_fractions"],
        }
        records.append({"config": c, "measured": meas, "estimated": est})
    s = summarize(records)
    assert set(s["by_estimator"]) == {"portend", "exact"}
    assert 0.9 < s["latency"]["beta"] < 1.1 and s["latency"]["r2"] > 0.95
    assert s["exit_rate"]["r2"] == pytest.approx(1.0)
    assert s["accuracy"]["mean_abs_error"] == pytest.approx(0.002)
    paths = plot(records, tmp_path, cdf_latencies_s=[0.01, 0.02, 0.03])
    assert len(paths) == 4 and all(
        (tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in paths
    )


def test_regression_and_measured_helpers():
    r = regression([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0])
    assert r["beta"] == pytest.approx(2.0) and r["r2"] == pytest.approx(1.0)
    assert np.isnan(regression([1.0, 1.0], [1.0, 2.0])["beta"])  # no spread: undefined
    m = Measured([0.1, 0.3], [0, 2], [True, False])
    assert m.exit_fractions(3) == [0.5, 0.0, 0.5] and m.accuracy == 0.5
    assert m.mean_latency_s == pytest.approx(0.2)
    assert Config(0.5, (3,), (0,)).pareto is False


def test_serve_and_validate_are_commands(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(
        ["serve", "--bundle", str(tmp_path), "--tier", "1", "--results", "tcp://127.0.0.1:9"]
    )
    assert args.func.__name__ == "serve_command"
    (tmp_path / "c.pt").write_bytes(b"")  # input files are checked to exist while parsing
    (tmp_path / "p.json").write_text("{}")
    args = parser.parse_args(
        [
            "validate",
            "--checkpoint",
            str(tmp_path / "c.pt"),
            "--profile",
            str(tmp_path / "p.json"),
            "--topology",
            "portend-aws",
            "--configs",
            "3",
            "--json",
        ]
    )
    assert args.configs == 3 and args.json
    # a bundle directory without a manifest: a clear error, exit code 2
    assert (
        main(["serve", "--bundle", str(tmp_path), "--tier", "0", "--results", "tcp://127.0.0.1:9"])
        == 2
    )
    assert "manifest" in capsys.readouterr().err


def test_accuracy_sampling_error_and_summary_fields(profile):
    from earlyexit.validation import _binomial_se

    # 2000 measured and 1000 profiled samples at 50 %: each proportion is off by ~1-1.6 points
    assert _binomial_se(0.5, 2000, 1000) == pytest.approx(np.sqrt(0.25 / 2000 + 0.25 / 1000))
    assert _binomial_se(0.5, 2000, None) == pytest.approx(np.sqrt(0.25 / 2000))
    assert np.isnan(_binomial_se(0.5, 0, 10))
    topo = resolve_topology("portend-aws")
    records = []
    for c in choose_configs(profile, topo, 4, seed=3):
        est = estimate(profile, topo, c)
        meas = {
            "latency_s": est["exact"]["latency_s"],
            "accuracy": est["exact"]["accuracy"] - 0.01,
            "exit_fractions": est["exact"]["exit_fractions"],
            "accuracy_se": 0.005,
        }
        records.append({"config": c, "measured": meas, "estimated": est})
    acc = summarize(records)["accuracy"]
    assert acc["mean_error"] == pytest.approx(0.01) and acc["sampling_se"] == pytest.approx(0.005)


@pytest.mark.slow
def test_profile_times_partitions_as_the_runtime_runs_them():
    torch = pytest.importorskip("torch")
    from earlyexit import MultiExitModel, backbones, decompose
    from earlyexit.profiling.timing import time_onnx_partitions

    torch.manual_seed(0)
    model = MultiExitModel(
        decompose(backbones.create("resnet20", num_classes=10, in_chans=1), input_shape=(1, 28, 28))
    ).eval()
    t = time_onnx_partitions(model, torch.randn(1, 1, 28, 28), reps=3, budget_s=0.01)
    upper = t[np.triu_indices(10)]
    assert np.isfinite(upper).all() and (upper > 0).all()
    assert np.isnan(t[np.tril_indices(10, -1)]).all()
    with pytest.raises(ValueError, match="engine"):
        from earlyexit.profiling import profile

        profile(model, [(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))], engine="tf")


@pytest.mark.slow
def test_validate_end_to_end_on_a_small_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    import earlyexit
    from earlyexit import MultiExitModel, backbones, decompose
    from earlyexit.training.checkpoint import save
    from earlyexit.validation import validate

    torch.manual_seed(0)
    model = MultiExitModel(
        decompose(backbones.create("resnet20", num_classes=10, in_chans=1), input_shape=(1, 28, 28))
    ).eval()
    ckpt = save(model, tmp_path / "m.pt", {"dataset": "fashion-mnist"})
    prof = earlyexit.profile(
        model,
        "fashion-mnist",
        "cpu",
        threads=1,
        engine="onnx",
        reps=3,
        budget_s=0.01,
        progress=False,
    )
    topo = resolve_topology("portend-aws").to_dict()
    for t in topo["tiers"]:
        t["device"] = "cpu"
    from earlyexit.formats import Topology

    out = validate(
        ckpt,
        prof,
        Topology.from_dict(topo),
        configs=2,
        samples=4,
        accuracy_samples=40,
        out_dir=tmp_path / "v",
        accuracy_drop=None,
    )
    assert len(out["configs"]) == 2 and out["notes"] == [] and out["wall_time_s"] > 0
    for rec in out["configs"]:
        m = rec["measured"]
        assert m["latency_samples"] == 4 and m["accuracy_samples"] == 40 and m["degraded"] == 0
        assert m["latency_pass"]["same_exit_and_prediction_as_accuracy_pass"] == 1.0
        assert sum(m["exit_fractions"]) == pytest.approx(1.0)
        assert set(rec["estimated"]) == {"portend", "exact"}
    assert len(out["plots"]) == 4 and (tmp_path / "v" / "validation.json").is_file()


def test_validate_refuses_another_models_profile_and_cleans_up(tmp_path):
    torch = pytest.importorskip("torch")
    from earlyexit import MultiExitModel, backbones, decompose
    from earlyexit.training.checkpoint import save
    from earlyexit.validation import validate

    torch.manual_seed(0)
    model = MultiExitModel(
        decompose(backbones.create("resnet20", num_classes=10, in_chans=1), input_shape=(1, 28, 28))
    ).eval()
    ckpt = save(model, tmp_path / "m.pt", {"dataset": "fashion-mnist"})
    other = synthetic_profile(10, num_samples=50)
    other.extra["model_digest"] = "0" * 64  # made from other weights
    out = tmp_path / "v" / "run"
    kw = dict(configs=1, samples=2, accuracy_samples=2, out_dir=out, niceness=None)
    with pytest.raises(ValueError, match="model_digest differs"):
        validate(ckpt, other, "portend-aws", **kw)
    assert not (tmp_path / "v").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="6 blocks"):
        validate(ckpt, synthetic_profile(6), "portend-aws", force=True, **kw)
    # forced: a warning, then a failure half-way (an unknown exporter) removes what was written
    with (
        pytest.warns(UserWarning, match="other weights"),
        pytest.raises(ValueError, match="unknown ONNX exporter"),
    ):
        validate(ckpt, other, "portend-aws", force=True, exporter="nope", **kw)
    assert not (tmp_path / "v").exists()
    for bad in ({"samples": 0}, {"accuracy_samples": 1, "samples": 2}, {"configs": 10**6}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            validate(ckpt, other, "portend-aws", **{**kw, **bad})
