"""Read plotted data back from matplotlib artists."""

from __future__ import annotations

import numpy as np

__all__ = ["points"]


def points(ax) -> dict[str, np.ndarray]:
    """label -> the (x, y) offsets of each scatter collection of ``ax``."""
    return {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections}
