"""earlyexit.plotting.pareto: the plotted frontier, baselines and what-if rows."""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit import plotting
from earlyexit.planner import baselines, pareto, plan
from earlyexit.planner.whatif import whatif

from ._artists import points

pytest.importorskip("matplotlib")


def test_pareto_plots_the_frontier_baselines_and_chosen_plan(prof, tmp_path):
    front = pareto(prof, "portend-aws", estimator="exact")
    base = baselines(prof, "portend-aws", estimator="exact")
    best = plan(prof, "portend-aws", min_accuracy=0.0, estimator="exact")
    fig = plotting.plot_pareto(front, tmp_path / "p.png", baselines=base, chosen=best)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    pts = points(ax)
    frontier = next(v for k, v in pts.items() if k.startswith("Pareto frontier"))
    np.testing.assert_allclose(frontier[:, 0], [1e3 * p.estimate.latency_s for p in front])
    np.testing.assert_allclose(frontier[:, 1], [100 * p.estimate.accuracy for p in front])
    for name, label in (
        ("edge_only", "edge-only"),
        ("cloud_only", "cloud-only"),
        ("neurosurgeon", "Neurosurgeon"),
    ):
        (xy,) = [v for k, v in pts.items() if k.startswith(label + ":")]
        np.testing.assert_allclose(
            xy[0], [1e3 * base[name].estimate.latency_s, 100 * base[name].estimate.accuracy]
        )
        # labelled on the plot, not only in the legend (coinciding baselines share a label)
        assert any(label in t.get_text().split(" = ") for t in ax.texts)
    (star,) = [v for k, v in pts.items() if k.startswith("chosen:")]
    np.testing.assert_allclose(
        star[0], [1e3 * best.estimate.latency_s, 100 * best.estimate.accuracy]
    )
    assert ax.get_xscale() == "log"
    assert "chosen" in [t.get_text() for t in ax.texts]


def test_pareto_latency_axis_can_be_forced(prof, tmp_path):
    front = pareto(prof, "portend-aws")
    assert (
        plotting.plot_pareto(front, tmp_path / "a.svg", log_latency=True).axes[0].get_xscale()
        == "log"
    )
    assert (
        plotting.plot_pareto(front, tmp_path / "b.png", log_latency=False).axes[0].get_xscale()
        == "linear"
    )
    assert (tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")


def test_whatif_lines_are_the_rows(prof, tmp_path):
    values = [1.0, 10.0, 100.0]
    rows = whatif(prof, "portend-aws", "links[0].bandwidth_mbps", values)
    fig = plotting.plot_whatif(rows, "links[0].bandwidth_mbps", tmp_path / "w.png")
    lines = {ln.get_label(): ln for ln in fig.axes[0].lines}
    assert set(lines) == {"optimal (PORTEND)", "edge-only", "cloud-only", "Neurosurgeon"}
    np.testing.assert_allclose(lines["optimal (PORTEND)"].get_xdata(), values)
    np.testing.assert_allclose(
        lines["optimal (PORTEND)"].get_ydata(), [1e3 * r["latency_s"] for r in rows]
    )
    np.testing.assert_allclose(
        lines["cloud-only"].get_ydata(), [1e3 * r["cloud_only_s"] for r in rows]
    )
    assert fig.axes[0].get_xscale() == "log"  # values spanning more than a factor of 50
