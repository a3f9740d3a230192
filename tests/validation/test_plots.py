"""The validation plots draw the records' data, clusters apart."""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit.validation import CLUSTERS, cluster_of, figures, plot
from earlyexit.validation.plots import CLUSTER_COLORS

from ._records import cluster_records


def _series(ax):
    return {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections}


def test_latency_plot_draws_each_cluster_in_ms():
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_rgba

    records = cluster_records()
    figs = figures(records, cdf_latencies_s=[0.003, 0.001, 0.002])
    assert set(figs) == {"latency", "exit_rate", "accuracy", "latency_cdf"}
    ax = figs["latency"].axes[0]
    got = _series(ax)
    assert set(got) == {f"{e}, {c}" for e in ("portend", "exact") for c in CLUSTERS}
    for name in CLUSTERS:
        mine = [r for r in records if cluster_of(r.config) == name]
        for est in ("portend", "exact"):
            pts = got[f"{est}, {name}"]
            want = [[1e3 * r.measured.latency_s, 1e3 * r.estimated[est].latency_s] for r in mine]
            np.testing.assert_allclose(pts, want, rtol=1e-12)
        coll = next(c for c in ax.collections if c.get_label() == f"portend, {name}")
        assert tuple(coll.get_facecolor()[0][:3]) == pytest.approx(
            to_rgba(CLUSTER_COLORS[name])[:3]
        )
    assert ax.get_xscale() == "log"  # 3 to 120 ms: more than a decade
    ex = _series(figs["exit_rate"].axes[0])["portend"]
    assert ex[:, 0].tolist() == pytest.approx(
        [f for r in records for f in r.measured.exit_fractions]
    )
    cdf = figs["latency_cdf"].axes[0].lines[0]
    assert cdf.get_xdata().tolist() == pytest.approx([1.0, 2.0, 3.0])


def test_plot_writes_every_figure(tmp_path):
    pytest.importorskip("matplotlib")
    paths = plot(cluster_records(), tmp_path, source=0)
    assert sorted(p.split("/")[-1] for p in paths) == [
        "validate_accuracy.png", "validate_exit_rate.png", "validate_latency.png"]  # fmt: skip
    assert all(
        (tmp_path / p.split("/")[-1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths
    )
