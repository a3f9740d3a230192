"""Validation plots: estimated against measured per metric, clusters marked, and a latency CDF.

Each figure is built by :func:`figures` (its axes hold the plotted data, which
the tests check) and saved by :func:`plot`. matplotlib comes from
:func:`earlyexit.plotting.pyplot`, the one place that selects its backend, and
:func:`~earlyexit.plotting.save_figure` writes them; the figures stay here
because they read validation's own records.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit.formats import Estimate
from earlyexit.plotting import pyplot, save_figure
from earlyexit.validation.configs import CLUSTERS, cluster_of
from earlyexit.validation.results import ConfigResult

__all__ = ["CLUSTER_COLORS", "figures", "plot"]

CLUSTER_COLORS: dict[str, str] = dict(
    zip(CLUSTERS, ("tab:green", "tab:blue", "tab:red"), strict=True)
)
"""The colour of each cluster in the latency plot."""

_MARKERS = {"portend": "o", "exact": "x"}
_Getter = Callable[[ConfigResult, Estimate], tuple[Sequence[float], Sequence[float]]]
_METRICS: dict[str, _Getter] = {
    "latency": lambda r, e: ([r.measured.latency_s * 1e3], [e.latency_s * 1e3]),
    "exit_rate": lambda r, e: (r.measured.exit_fractions, e.exit_fractions),
    "accuracy": lambda r, e: ([r.measured.accuracy], [e.accuracy]),
}


def figures(
    records: Sequence[ConfigResult],
    cdf_latencies_s: Sequence[float] | None = None,
    source: int = 0,
) -> dict[str, Any]:
    """Build the figures (not saved): one scatter per metric, and the latency CDF.

    The latency scatter has one collection per (estimator, cluster) with
    configurations, labelled ``"<estimator>, <cluster>"`` and coloured by
    :data:`CLUSTER_COLORS`, in ms; log axes when latencies span more than a decade.

    Args:
        records: the configurations' results.
        cdf_latencies_s: per-sample latencies of one configuration (None: no CDF).
        source: the topology's source tier (it defines the clusters).

    Returns:
        name (``latency``, ``exit_rate``, ``accuracy``, ``latency_cdf``) -> figure.
    """
    plt = pyplot()
    out = {}
    for metric, get in _METRICS.items():
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        lo, hi = np.inf, -np.inf
        groups: tuple[str | None, ...] = CLUSTERS if metric == "latency" else (None,)
        for name, marker in _MARKERS.items():
            for group in groups:
                xs: list[float] = []
                ys: list[float] = []
                for r in records:
                    if name in r.estimated and group in (None, cluster_of(r.config, source)):
                        a, b = get(r, r.estimated[name])
                        xs += list(a)
                        ys += list(b)
                if xs:
                    ax.scatter(xs, ys, marker=marker, alpha=0.7,
                               label=name if group is None else f"{name}, {group}",
                               color=None if group is None else CLUSTER_COLORS[group])  # fmt: skip
                    lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
        if np.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
            if metric == "latency" and lo > 0 and hi / lo > 10:
                ax.set_xscale("log")
                ax.set_yscale("log")
        unit = " (ms)" if metric == "latency" else ""
        ax.set_xlabel(f"measured {metric}{unit}")
        ax.set_ylabel(f"estimated {metric}{unit}")
        ax.legend(fontsize=7 if metric == "latency" else None)
        out[metric] = fig
    if cdf_latencies_s:
        lat = np.sort(np.asarray(cdf_latencies_s, float)) * 1e3
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.step(lat, np.arange(1, lat.size + 1) / lat.size, where="post")
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("CDF")
        out["latency_cdf"] = fig
    return out


def plot(
    records: Sequence[ConfigResult],
    out_dir: str | os.PathLike[str],
    cdf_latencies_s: Sequence[float] | None = None,
    source: int = 0,
) -> list[str]:
    """Save :func:`figures` as ``validate_<name>.png`` in ``out_dir``.

    Args:
        records: the configurations' results.
        out_dir: the folder (created if missing).
        cdf_latencies_s: per-sample latencies of one configuration (None: no CDF).
        source: the topology's source tier (it defines the clusters).

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures(records, cdf_latencies_s, source).items():
        path = out / f"validate_{name}.png"
        save_figure(fig, path, dpi=120)
        paths.append(str(path))
    return paths
