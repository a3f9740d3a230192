"""Regression lines, per-configuration latency errors per cluster, and the summary."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.planner.topology import resolve_topology
from earlyexit.validation import (
    CLUSTERS,
    ConfigResult,
    Measured,
    MeasuredSummary,
    binomial_se,
    choose_configs,
    estimates,
    latency_errors,
    regression,
    stratified_indices,
    stratified_mean,
    summarize,
)

from ._records import LINES, cluster_records


def test_regression_and_measured_helpers():
    r = regression([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0])
    assert r.beta == pytest.approx(2.0) and r.r2 == pytest.approx(1.0) and r.n == 4
    assert np.isnan(regression([1.0, 1.0], [1.0, 2.0]).beta)  # no spread: undefined
    assert np.isnan(regression([1.0], [1.0]).r2)
    m = Measured([0.1, 0.3], [0, 2], [True, False])
    assert m.exit_fractions(3) == [0.5, 0.0, 0.5] and m.accuracy == 0.5
    assert m.mean_latency_s == pytest.approx(0.2)


@pytest.mark.parametrize("source", [0, 1])
def test_latency_errors_against_numpy(source):
    records = cluster_records(source)
    got = latency_errors(records, "portend", source)
    m = np.array([r.measured.latency_s for r in records])
    e = np.array([r.estimated["portend"].latency_s for r in records])
    rel = e / m - 1.0
    assert got.relative_error == pytest.approx(rel.tolist(), rel=1e-12, abs=1e-15)
    assert got.median_abs_relative_error == pytest.approx(np.percentile(np.abs(rel), 50))
    assert got.max_abs_relative_error == pytest.approx(np.abs(rel).max())
    assert got.mean_relative_error == pytest.approx(rel.mean())
    assert set(got.clusters) == set(CLUSTERS)
    for name, (beta, _) in LINES.items():
        idx = [i for i, c in enumerate(got.cluster) if c == name]
        assert len(idx) == 6
        slope, icpt = np.polyfit(m[idx], e[idx], 1)
        r2 = np.corrcoef(m[idx], e[idx])[0, 1] ** 2
        c = got.clusters[name]
        assert (c.beta, c.intercept, c.r2) == pytest.approx((slope, icpt, r2), rel=1e-9)
        # the slope's standard error, as numpy's covariance of the fit gives it
        _, cov = np.polyfit(m[idx], e[idx], 1, cov="unscaled")
        res = e[idx] - np.polyval([slope, icpt], m[idx])
        assert c.beta_se == pytest.approx(np.sqrt(cov[0, 0] * (res**2).sum() / 4), rel=1e-9)
        assert c.beta == pytest.approx(beta, abs=0.02)  # the constructed line is recovered
        assert c.n == 6 and c.max_abs_relative_error == pytest.approx(np.abs(rel[idx]).max())
    exact = latency_errors(records, "exact", source)
    assert exact.relative_error == pytest.approx(((e * 1.01) / m - 1).tolist(), rel=1e-12)
    assert [r.relative_error("portend") for r in records] == pytest.approx(rel.tolist())


def test_latency_errors_rejects_non_positive_measurements():
    records = cluster_records()
    records[3] = replace(records[3], measured=replace(records[3].measured, latency_s=0.0))
    with pytest.raises(ValueError, match="measured latencies must be positive"):
        latency_errors(records, "portend")


def test_summary_recovers_a_known_relation_and_serializes():
    profile = synthetic_profile(6, num_samples=200)
    topo = resolve_topology("portend-aws")
    rng = np.random.default_rng(0)
    records = []
    for c in choose_configs(profile, topo, 10, seed=2):
        est = estimates(profile, topo, c)
        e = est["exact"]
        # the deployment "measured" the exact estimate up to 2 % noise, accuracy 0.2 points up
        meas = MeasuredSummary(e.latency_s * (1 + 0.02 * rng.standard_normal()),
                               e.accuracy + 0.002, e.exit_fractions, accuracy_se=0.005)  # fmt: skip
        records.append(ConfigResult(c, meas, est))
    s = summarize(records)
    assert set(s.by_estimator) == {"portend", "exact"} and s.headline is s.by_estimator["exact"]
    assert 0.9 < s.headline.latency.beta < 1.1 and s.headline.latency.r2 > 0.95
    assert s.headline.exit_rate.r2 == pytest.approx(1.0)
    acc = s.headline.accuracy
    assert acc.mean_abs_error == pytest.approx(0.002) and acc.mean_error == pytest.approx(-0.002)
    assert acc.sampling_se == pytest.approx(0.005)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["latency"]["beta"] == s.headline.latency.beta
    assert d["latency_error"] == d["by_estimator"]["exact"]["latency_error"]
    assert d["by_estimator"]["portend"]["latency_error"]["relative_error"] == pytest.approx(
        [r.relative_error("portend") for r in records]
    )
    entry = records[0].to_dict()
    assert entry["cluster"] in CLUSTERS and entry["config"]["cuts"] == list(records[0].config.cuts)
    assert entry["latency_relative_error"]["exact"] == pytest.approx(
        records[0].relative_error("exact")
    )


def test_binomial_error():
    # 2000 measured and 1000 profiled samples at 50 %: each proportion is off by ~1-1.6 points
    assert binomial_se(0.5, 2000, 1000) == pytest.approx(np.sqrt(0.25 / 2000 + 0.25 / 1000))
    assert binomial_se(0.5, 2000, None) == pytest.approx(np.sqrt(0.25 / 2000))
    assert np.isnan(binomial_se(0.5, 0, 10))


def test_stratified_sampling_times_every_exit_and_weights_it():
    rng = np.random.default_rng(3)
    exits = (rng.random(1000) < 0.03).astype(int) + (rng.random(1000) < 0.01).astype(int)
    idx = stratified_indices(exits, 100, 10)
    assert idx[:100] == list(range(100)) or set(range(100)) <= set(idx)
    counts = np.bincount(exits[idx], minlength=3)
    assert (counts >= np.minimum(10, np.bincount(exits, minlength=3))).all()
    assert stratified_indices(exits, 100, 0) == list(range(100))
    # each exit's latency is constant: the weighted mean is the exact mean over all 1000
    lat_of = np.array([0.002, 0.050, 0.120])
    frac = np.bincount(exits, minlength=3) / exits.size
    got = stratified_mean(lat_of[exits[idx]], exits[idx], frac)
    assert got == pytest.approx(float(lat_of[exits].mean()), rel=1e-12)
    plain = float(lat_of[exits[idx]].mean())
    assert abs(plain - lat_of[exits].mean()) > abs(got - lat_of[exits].mean())  # oversampled
    with pytest.raises(ValueError, match="no timed sample left at partition 2"):
        stratified_mean([0.1, 0.2], [0, 1], [0.5, 0.4, 0.1])
