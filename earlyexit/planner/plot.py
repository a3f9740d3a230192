"""The planner's plots, kept under their old names: they live in :mod:`earlyexit.plotting`.

Example:
    >>> from earlyexit.planner.plot import plot_pareto
    >>> plot_pareto.__module__
    'earlyexit.plotting.pareto'
"""

from __future__ import annotations

from earlyexit.plotting import plot_pareto, plot_whatif

__all__ = ["plot_pareto", "plot_whatif"]
