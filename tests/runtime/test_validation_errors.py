"""Per-configuration latency errors of validation, and their statistics per cluster."""

from __future__ import annotations

import json

import numpy as np
import pytest

from earlyexit.validation import CLUSTERS, Config, cluster_of, latency_errors, plot, summarize


def _records(source: int = 0) -> tuple[list[dict], dict[str, tuple[float, float]]]:
    """Configurations in three clusters whose estimates follow a known line per cluster."""
    rng = np.random.default_rng(7)
    lines = {"edge-only": (0.73, 0.0004), "multi-tier": (0.98, 0.002), "cloud": (1.05, -0.003)}
    tiers = {"edge-only": [(source,)], "multi-tier": [(0, 1), (0, 2), (1, 2), (0, 1, 2)],
             "cloud": [(t,) for t in range(3) if t != source]}  # fmt: skip
    records = []
    for name, (beta, icpt) in lines.items():
        for j in range(6):
            d = tiers[name][j % len(tiers[name])]
            cfg = Config(0.5, tuple(range(1, len(d) + 1)), d)
            m = float(rng.uniform(0.003, 0.12))
            noise = float(rng.normal(0, 2e-4))
            e = beta * m + icpt + noise
            est = {"latency_s": e, "accuracy": 0.9, "exit_fractions": [1.0 / len(d)] * len(d)}
            records.append({
                "config": cfg if j % 2 else {"threshold": 0.5, "cuts": list(cfg.cuts), "tiers": list(d)},
                "measured": {"latency_s": m, "accuracy": 0.9, "exit_fractions": est["exit_fractions"]},
                "estimated": {"portend": est, "exact": {**est, "latency_s": e * 1.01}},
            })  # fmt: skip
    return records, lines


def test_cluster_of():
    assert cluster_of(Config(0.5, (9,), (0,))) == "edge-only"
    assert cluster_of(Config(0.5, (9,), (2,))) == "cloud"
    assert cluster_of({"tiers": [0, 2]}) == "multi-tier"
    assert cluster_of(Config(0.5, (9,), (2,)), source=2) == "edge-only"  # the source's tier


@pytest.mark.parametrize("source", [0, 1])
def test_latency_errors_against_numpy(source):
    records, lines = _records(source)
    got = latency_errors(records, "portend", source)
    m = np.array([r["measured"]["latency_s"] for r in records])
    e = np.array([r["estimated"]["portend"]["latency_s"] for r in records])
    rel = e / m - 1.0
    assert got["relative_error"] == pytest.approx(rel.tolist(), rel=1e-12, abs=1e-15)
    assert got["median_abs_relative_error"] == pytest.approx(np.percentile(np.abs(rel), 50))
    assert got["max_abs_relative_error"] == pytest.approx(max(abs(x) for x in rel.tolist()))
    assert set(got["clusters"]) == set(CLUSTERS)
    for name, (beta, _) in lines.items():
        idx = [i for i, c in enumerate(got["cluster"]) if c == name]
        assert len(idx) == 6
        slope, icpt = np.polyfit(m[idx], e[idx], 1)
        r2 = np.corrcoef(m[idx], e[idx])[0, 1] ** 2
        c = got["clusters"][name]
        assert (c["beta"], c["intercept"], c["r2"]) == pytest.approx((slope, icpt, r2), rel=1e-9)
        assert c["beta"] == pytest.approx(beta, abs=0.02)  # the constructed line is recovered
        assert c["n"] == 6
        assert c["max_abs_relative_error"] == pytest.approx(np.abs(rel[idx]).max())
    exact = latency_errors(records, "exact", source)
    assert exact["relative_error"] == pytest.approx(((e * 1.01) / m - 1).tolist(), rel=1e-12)


def test_latency_errors_rejects_non_positive_measurements():
    records, _ = _records()
    records[3]["measured"]["latency_s"] = 0.0
    with pytest.raises(ValueError, match="measured latencies must be positive"):
        latency_errors(records, "portend")


def test_summary_and_plot_carry_the_errors(tmp_path):
    records, _ = _records()
    s = summarize(records, source=0)
    for name in ("portend", "exact"):
        assert s["by_estimator"][name]["latency_error"] == latency_errors(records, name, 0)
    assert s["latency_error"] == s["by_estimator"]["exact"]["latency_error"]  # the headline one
    json.dumps(s)  # JSON-able
    paths = plot(records, tmp_path, source=0)
    assert (tmp_path / "validate_latency.png").stat().st_size > 1000 and len(paths) == 3
