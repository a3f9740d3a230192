"""earlyexit.plotting.profile: a profile's exit rates, accuracies and times; final models' accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit import plotting

from ._artists import points

pytest.importorskip("matplotlib")


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


def test_final_accuracy_plot_puts_each_plan_at_measured_vs_predicted(tmp_path):
    recs = [
        {"finetuned": {"accuracy": 0.9}, "predicted": {"portend": 0.88, "exact": 0.89},
         "corrected": {"portend": 0.9, "exact": 0.905}},
        {"finetuned": {"accuracy": 0.85}, "predicted": {"portend": 0.84, "exact": 0.845},
         "corrected": {"portend": 0.85, "exact": 0.852}},
    ]  # fmt: skip
    fig = plotting.plot_final_accuracy(recs, tmp_path / "f.png")
    pts = points(fig.axes[0])
    np.testing.assert_allclose(pts["exact, full-configuration profile"], [[90, 89], [85, 84.5]])
    np.testing.assert_allclose(pts["portend, fine-tuned exits' profile"], [[90, 90], [85, 85]])
    assert len(pts) == 4


def test_a_bad_path_leaves_nothing(tmp_path):
    with pytest.raises((ValueError, FileNotFoundError)):
        plotting.plot_final_accuracy([], tmp_path / "missing" / "f.png")
    assert not (tmp_path / "missing").exists()
