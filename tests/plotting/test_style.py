"""earlyexit.plotting: imported for free, pyplot on Agg once, figures saved atomically and closed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from earlyexit import plotting


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


def test_save_figure_writes_the_format_of_the_suffix_and_closes_the_figure(tmp_path):
    plt = plotting.pyplot()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 1, 2])
    assert plotting.save_figure(fig, tmp_path / "f.svg") is fig
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
    assert fig.number not in plt.get_fignums()
    fig2, _ = plt.subplots()
    plotting.save_figure(fig2, tmp_path / "noext")
    assert (tmp_path / "noext").read_bytes()[:4] == b"\x89PNG"


def test_save_figure_to_a_missing_folder_leaves_nothing_and_closes(tmp_path):
    plt = plotting.pyplot()
    fig, _ = plt.subplots()
    with pytest.raises((ValueError, FileNotFoundError)):
        plotting.save_figure(fig, tmp_path / "missing" / "f.png")
    assert not (tmp_path / "missing").exists()
    assert fig.number not in plt.get_fignums()
