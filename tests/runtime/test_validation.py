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
    args = parser.parse_args(
        [
            "validate",
            "--checkpoint",
            "c.pt",
            "--profile",
            "p.json",
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
