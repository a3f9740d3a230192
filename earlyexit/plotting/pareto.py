"""Plots of the planner's output: the Pareto frontier with the baselines, a what-if sweep."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from earlyexit.plotting._style import BASELINE_STYLE, log_x, pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from earlyexit.formats import Plan

__all__ = ["plan_label", "plot_pareto", "plot_whatif"]


def plan_label(p: Plan) -> str:
    """A plan in one line: ``tier[first-last] ... T=threshold``.

    Example:
        >>> from earlyexit.planner import edge_only
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> plan_label(edge_only(synthetic_profile(4), "portend-aws"))
        'edge[1-4] T=0'
    """
    parts = " ".join(f"{q.tier_name}[{q.first_block}-{q.last_block}]" for q in p.partitions)
    return f"{parts} T={p.threshold:g}"


def plot_pareto(
    frontier: Sequence[Plan],
    path: str | os.PathLike[str],
    baselines: Mapping[str, Plan] | None = None,
    chosen: Plan | None = None,
    title: str = "",
    log_latency: bool = True,
) -> Figure:
    """Save the frontier (latency in ms vs accuracy) with the baselines and the chosen plan.

    Args:
        frontier: plans from :func:`earlyexit.pareto`.
        path: output image (png, pdf, svg).
        baselines: name -> plan, drawn as labelled markers (``edge_only``,
            ``cloud_only``, ``neurosurgeon`` get PORTEND's names).
        chosen: a plan to mark (e.g. the P_lat optimum), with its latency in the legend.
        title: the figure title.
        log_latency: a log latency axis (the default: a far cloud would
            otherwise squeeze the frontier against the left edge).

    Returns:
        The (closed) figure; its first axes hold one collection per series.

    Example:
        >>> import tempfile, os
        >>> from earlyexit.planner import pareto
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> out = os.path.join(tempfile.mkdtemp(), "f.png")
        >>> fig = plot_pareto(pareto(synthetic_profile(6), "portend-aws"), out)
        >>> os.path.exists(out), fig.axes[0].get_xlabel()
        (True, 'estimated end-to-end latency (ms)')
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    xs = [p.estimate.latency_s * 1e3 for p in frontier]
    ys = [100 * p.estimate.accuracy for p in frontier]
    ax.step(xs, ys, where="post", color="0.6", lw=1)
    ax.scatter(
        xs, ys, s=14, color="tab:blue", label=f"Pareto frontier ({len(frontier)} plans)", zorder=3
    )
    every = list(xs)
    # one label per point: baselines that coincide (cloud-only is often Neurosurgeon's
    # choice) share it, and the labels of nearby points are staggered
    at: dict[tuple[float, float], list[str]] = {}
    for name, p in (baselines or {}).items():
        mk, col, label = BASELINE_STYLE.get(name, ("x", "k", name))
        x, y = p.estimate.latency_s * 1e3, 100 * p.estimate.accuracy
        every.append(x)
        ax.scatter([x], [y], marker=mk, s=70, color=col, edgecolors="k", zorder=4,
                   label=f"{label}: {x:.1f} ms ({plan_label(p)})")  # fmt: skip
        at.setdefault((round(x, 9), round(y, 9)), []).append(label)
    for k, ((x, y), labels) in enumerate(sorted(at.items())):
        ax.annotate(" = ".join(labels), (x, y), textcoords="offset points", fontsize=8,
                    xytext=(-6, -14 - 12 * k), ha="right")  # fmt: skip
    if chosen is not None:
        x, y = chosen.estimate.latency_s * 1e3, 100 * chosen.estimate.accuracy
        every.append(x)
        ax.scatter([x], [y], marker="*", s=220, color="tab:red", edgecolors="k", zorder=5,
                   label=f"chosen: {x:.1f} ms ({plan_label(chosen)})")  # fmt: skip
        # below and to the right: the baselines' labels go below and to the left
        ax.annotate("chosen", (x, y), textcoords="offset points", xytext=(9, -18), fontsize=9,
                    color="tab:red", weight="bold")  # fmt: skip
    if log_latency and every and min(every) > 0:
        log_x(ax)
    ax.set_xlabel("estimated end-to-end latency (ms)")
    ax.set_ylabel("estimated accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def plot_whatif(
    rows: Sequence[Mapping[str, Any]], parameter: str, path: str | os.PathLike[str], title: str = ""
) -> Figure:
    """Save a what-if sweep: the optimum's and the baselines' latency against the parameter.

    Args:
        rows: from :func:`earlyexit.planner.whatif.whatif`.
        parameter: the varied parameter (the x label).
        path: output image.
        title: the figure title.

    Returns:
        The (closed) figure; one line per series that has values.

    Example:
        >>> import tempfile, os
        >>> from earlyexit.planner.whatif import whatif
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> rows = whatif(synthetic_profile(6), "portend-aws", "links[0].bandwidth_mbps", [1, 10])
        >>> out = os.path.join(tempfile.mkdtemp(), "w.png")
        >>> [ln.get_label() for ln in plot_whatif(rows, "links[0].bandwidth_mbps", out).axes[0].lines][:2]
        ['optimal (PORTEND)', 'edge-only']
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [r["value"] for r in rows]
    series = [("latency_s", "optimal (PORTEND)", "tab:red")] + [
        (f"{key}_s", label, col) for key, (_, col, label) in BASELINE_STYLE.items()
    ]
    for key, label, col in series:
        pts = [(x, r[key] * 1e3) for x, r in zip(xs, rows, strict=True) if r.get(key) is not None]
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
    return save_figure(fig, path)
