"""earlyexit.plotting: the plotted data (read back from the matplotlib artists), not file sizes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from earlyexit import plotting
from earlyexit.planner import baselines, pareto, plan
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.planner.whatif import whatif

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def prof():
    return synthetic_profile(8, num_samples=200, seed=3)


def _points(ax) -> dict[str, np.ndarray]:
    """label -> the (x, y) offsets of each scatter collection of ``ax``."""
    return {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections}


def test_pareto_plots_the_frontier_baselines_and_chosen_plan(prof, tmp_path):
    front = pareto(prof, "portend-aws", estimator="exact")
    base = baselines(prof, "portend-aws", estimator="exact")
    best = plan(prof, "portend-aws", min_accuracy=0.0, estimator="exact")
    fig = plotting.plot_pareto(front, tmp_path / "p.png", baselines=base, chosen=best)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    pts = _points(ax)
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


def test_profile_plot_draws_the_profile(prof, tmp_path):
    fig = plotting.plot_profile(prof, tmp_path / "prof.png")
    rates, acc, times = fig.axes[:3]
    assert len(rates.lines) == prof.num_blocks
    np.testing.assert_allclose(rates.lines[2].get_ydata(), prof.exit_rate[:, 2])
    np.testing.assert_allclose([b.get_height() for b in acc.patches], 100 * prof.branch_accuracy)
    dev = next(iter(prof.devices.values()))
    np.testing.assert_allclose(
        np.ma.filled(times.images[0].get_array(), np.nan), 1e3 * dev.partition_time_s
    )


def test_deployment_plot_draws_measurements_estimates_and_baselines(tmp_path):
    lat = [0.004, 0.002, 0.003, 0.010]
    est = {"exact": {"latency_s": 0.0035, "exit_fractions": [0.75, 0.25]}}
    fig = plotting.plot_deployment(
        lat, [0.7, 0.3], est, tmp_path / "v.png", baselines={"edge_only": 0.02}
    )
    cdf, bars = fig.axes[:2]
    line = cdf.lines[0]
    np.testing.assert_allclose(line.get_xdata(), [2, 3, 4, 10])
    np.testing.assert_allclose(line.get_ydata(), [0.25, 0.5, 0.75, 1.0])
    vlines = {ln.get_label().split(" ")[0]: ln.get_xdata()[0] for ln in cdf.lines[1:]}
    assert vlines["measured"] == pytest.approx(4.75)
    assert vlines["exact"] == pytest.approx(3.5)
    assert vlines["edge-only,"] == pytest.approx(20.0)
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights, [0.7, 0.3, 0.75, 0.25])


def test_final_accuracy_plot_puts_each_plan_at_measured_vs_predicted(tmp_path):
    recs = [
        {"finetuned": {"accuracy": 0.9}, "predicted": {"portend": 0.88, "exact": 0.89},
         "corrected": {"portend": 0.9, "exact": 0.905}},
        {"finetuned": {"accuracy": 0.85}, "predicted": {"portend": 0.84, "exact": 0.845},
         "corrected": {"portend": 0.85, "exact": 0.852}},
    ]  # fmt: skip
    fig = plotting.plot_final_accuracy(recs, tmp_path / "f.png")
    pts = _points(fig.axes[0])
    np.testing.assert_allclose(pts["exact, full-configuration profile"], [[90, 89], [85, 84.5]])
    np.testing.assert_allclose(pts["portend, fine-tuned exits' profile"], [[90, 90], [85, 85]])
    assert len(pts) == 4


def test_a_bad_path_leaves_nothing(tmp_path):
    with pytest.raises((ValueError, FileNotFoundError)):
        plotting.plot_final_accuracy([], tmp_path / "missing" / "f.png")
    assert not (tmp_path / "missing").exists()


def test_importing_plotting_and_the_planner_loads_neither_matplotlib_nor_torch():
    code = (
        "import sys, earlyexit.plotting, earlyexit.planner.plot; "
        "print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_agg_is_selected_once():
    plt = plotting.pyplot()
    assert plotting.pyplot() is plt
    assert plt.get_backend().lower() == "agg"
