"""`earlyexit demo` end to end on the shipped checkpoint (slow: about a minute)."""

import json

import pytest

from earlyexit.cli import main


@pytest.mark.slow
def test_demo_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--samples", "60"]) == 0
    for name in ("profile.json", "plan.json", "bundle/manifest.json", "pareto.png", "validation.png", "report.md"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    measured = report["validation"]["measured"]
    estimated = report["validation"]["estimated"]["exact"]
    assert measured["degraded"] == 0
    assert abs(sum(measured["exit_fractions"]) - 1) < 1e-9
    # the plan keeps the full network's accuracy and beats every baseline
    assert report["plan"]["estimate"]["accuracy"] >= report["profile"]["final_exit_accuracy"] - 1e-9
    for base in report["baselines"].values():
        assert report["plan"]["estimate"]["latency_s"] <= base["latency_s"] + 1e-12
    # measured and estimated agree to a loose factor even on a loaded machine
    assert 0.3 < measured["mean_latency_s"] / estimated["latency_s"] < 3
    md = (out / "report.md").read_text()
    assert "pareto.png" in md and "validation.png" in md and "plan.json" in md
