"""What every plot shares: pyplot with the Agg backend, the baselines' style, saving.

matplotlib is imported on the first plot, with the Agg backend (files only, no
display), so that importing :mod:`earlyexit.plotting` costs nothing and the
torch-free packages (``planner``) can use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from earlyexit._checks import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["BASELINE_STYLE", "pyplot", "save_figure", "log_x"]

BASELINE_STYLE: dict[str, tuple[str, str, str]] = {
    "edge_only": ("s", "tab:green", "edge-only"),
    "cloud_only": ("^", "tab:purple", "cloud-only"),
    "neurosurgeon": ("D", "tab:orange", "Neurosurgeon"),
}
"""name -> (marker, colour, label) of PORTEND's baselines in every plot."""

_PLT: Any = None


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the Agg backend, selected once on first use."""
    global _PLT
    if _PLT is None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        _PLT = plt
    return _PLT


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 130) -> Figure:
    """Write ``fig`` atomically (format from the suffix, png by default), close and return it.

    Args:
        fig: the figure (laid out tightly before saving).
        path: the image file; nothing is left there if writing fails.
        dpi: resolution.

    Returns:
        ``fig``, closed (its axes still hold the plotted data).
    """
    plt = pyplot()
    try:
        fig.tight_layout()
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return fig


def log_x(ax: Any) -> None:
    """A log x axis with plain tick labels (4, 6, 10 rather than 4x10^0)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
