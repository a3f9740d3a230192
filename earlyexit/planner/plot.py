"""Plots: the Pareto frontier with the baselines (PORTEND Fig. 1, 7) and what-if sweeps (Fig. 9).

matplotlib is imported inside the functions (Agg backend), so the planner
imports without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from earlyexit.formats import Plan

__all__ = ["plot_pareto", "plot_whatif"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(p: Plan) -> str:
    return (
        " ".join(f"{q.tier}[{q.first_block}-{q.last_block}]" for q in p.partitions)
        + f" T={p.threshold:g}"
    )


def plot_pareto(
    frontier: Sequence[Plan],
    path: str | os.PathLike[str],
    baselines: Mapping[str, Plan] | None = None,
    chosen: Plan | None = None,
    title: str = "",
) -> None:
    """Save the frontier (latency in ms vs accuracy) with the baselines marked.

    Args:
        frontier: plans from :func:`earlyexit.pareto`.
        path: output image (png, pdf, svg).
        baselines: name -> plan, drawn as markers.
        chosen: a plan to highlight (e.g. the P_lat optimum).
        title: the figure title.

    Example:
        >>> import tempfile, os
        >>> from earlyexit.planner import pareto
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> out = os.path.join(tempfile.mkdtemp(), "f.png")
        >>> plot_pareto(pareto(synthetic_profile(6), "portend-aws"), out); os.path.exists(out)
        True
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = [p.estimate.latency_s * 1e3 for p in frontier]
    ys = [p.estimate.accuracy for p in frontier]
    ax.step(xs, ys, where="post", color="0.6", lw=1)
    ax.scatter(xs, ys, s=14, color="tab:blue", label=f"Pareto frontier ({len(frontier)})", zorder=3)
    markers = {
        "edge_only": ("s", "tab:green"),
        "cloud_only": ("^", "tab:purple"),
        "neurosurgeon": ("D", "tab:orange"),
    }
    for name, p in (baselines or {}).items():
        mk, col = markers.get(name, ("x", "k"))
        ax.scatter(
            [p.estimate.latency_s * 1e3],
            [p.estimate.accuracy],
            marker=mk,
            s=60,
            color=col,
            label=f"{name} ({_label(p)})",
            zorder=4,
            edgecolors="k",
        )
    if chosen is not None:
        ax.scatter(
            [chosen.estimate.latency_s * 1e3],
            [chosen.estimate.accuracy],
            marker="*",
            s=160,
            color="tab:red",
            label=f"chosen ({_label(chosen)})",
            zorder=5,
            edgecolors="k",
        )
    ax.set_xlabel("estimated end-to-end latency (ms)")
    ax.set_ylabel("estimated accuracy")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_whatif(
    rows: Sequence[Mapping[str, Any]], parameter: str, path: str | os.PathLike[str], title: str = ""
) -> None:
    """Save a what-if sweep: the optimum's and the baselines' latency against the parameter.

    Example:
        >>> import tempfile, os
        >>> from earlyexit.planner.whatif import whatif
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> rows = whatif(synthetic_profile(6), "portend-aws", "links[0].bandwidth_mbps", [1, 10])
        >>> out = os.path.join(tempfile.mkdtemp(), "w.png")
        >>> plot_whatif(rows, "links[0].bandwidth_mbps", out); os.path.exists(out)
        True
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [r["value"] for r in rows]
    series = [
        ("latency_s", "optimal (PORTEND)", "tab:red"),
        ("edge_only_s", "edge-only", "tab:green"),
        ("cloud_only_s", "cloud-only", "tab:purple"),
        ("neurosurgeon_s", "Neurosurgeon", "tab:orange"),
    ]
    for key, label, col in series:
        pts = [(x, r[key] * 1e3) for x, r in zip(xs, rows, strict=False) if r.get(key) is not None]
        if pts:
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label, color=col
            )
    if xs and min(xs) > 0 and max(xs) / min(xs) > 50:
        ax.set_xscale("log")
    ax.set_xlabel(parameter)
    ax.set_ylabel("estimated latency (ms)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
