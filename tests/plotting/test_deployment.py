"""earlyexit.plotting.deployment: a measured deployment against the estimates and the baselines."""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit import plotting

pytest.importorskip("matplotlib")


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
