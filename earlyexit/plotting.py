"""Every plot of earlyexit, in one module that owns matplotlib.

matplotlib is imported on the first plot, with the Agg backend (files only, no
display), so that importing this module costs nothing and the torch-free
packages (``planner``) can use it. Each function saves one figure and returns
it (closed, so nothing accumulates in pyplot): its axes hold the plotted data,
which is what the tests check.

- :func:`plot_pareto`: the Pareto frontier with the baselines (PORTEND Fig. 1, 7);
- :func:`plot_whatif`: a what-if sweep (Fig. 9);
- :func:`plot_profile`: exit rates, accuracy per exit and partition times of a profile;
- :func:`plot_deployment`: a measured deployment against the estimates;
- :func:`plot_final_accuracy`: final models' accuracy against the estimators;
- :func:`plot_adaptive`: latency over time on a link trace, adaptive against static and oracle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from earlyexit._checks import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from earlyexit.formats import Plan, Profile

__all__ = [
    "pyplot",
    "plan_label",
    "plot_pareto",
    "plot_whatif",
    "plot_profile",
    "plot_deployment",
    "plot_final_accuracy",
    "plot_adaptive",
    "plot_load",
]

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


def _save(fig: Figure, path: str | os.PathLike[str], dpi: int = 130) -> Figure:
    """Write ``fig`` atomically (format from the suffix, png by default), close and return it."""
    plt = pyplot()
    try:
        fig.tight_layout()
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return fig


def _log_x(ax: Any) -> None:
    """A log x axis with plain tick labels (4, 6, 10 rather than 4x10^0)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)


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
        ax.annotate("chosen", (x, y), textcoords="offset points", xytext=(8, 6), fontsize=9,
                    color="tab:red", weight="bold")  # fmt: skip
    if log_latency and every and min(every) > 0:
        _log_x(ax)
    ax.set_xlabel("estimated end-to-end latency (ms)")
    ax.set_ylabel("estimated accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


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
    return _save(fig, path)


def plot_profile(profile: Profile, path: str | os.PathLike[str]) -> Figure:
    """Save exit rate against threshold per exit, accuracy per exit and partition times.

    Args:
        profile: a profile (its first device's partition times are drawn).
        path: output image.

    Returns:
        The (closed) figure: exit-rate lines, accuracy bars, the time matrix.
    """
    import numpy as np

    plt = pyplot()
    n = profile.num_blocks
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    cmap = plt.get_cmap("viridis")
    for i in range(n):
        axes[0].plot(profile.thresholds, profile.exit_rate[:, i], color=cmap(i / max(1, n - 1)),
                     label=f"exit {i + 1}")  # fmt: skip
    axes[0].set(xlabel="threshold T", ylabel="exit rate ER_i^T", title="Exit rate per exit")
    if n <= 12:
        axes[0].legend(fontsize=7)
    axes[1].bar(np.arange(1, n + 1), 100 * profile.branch_accuracy, color="tab:blue")
    axes[1].set(xlabel="exit (block)", ylabel="accuracy (%)", title="Accuracy per exit (A_i)")
    name, dev = next(iter(profile.devices.items()))
    im = axes[2].imshow(1e3 * dev.partition_time_s, origin="upper", cmap="magma")
    axes[2].set(
        xlabel="last block b", ylabel="first block a", title=f"Partition time on {name} (ms)"
    )
    ticks = np.arange(0, n, max(1, n // 10))
    axes[2].set_xticks(ticks, ticks + 1)
    axes[2].set_yticks(ticks, ticks + 1)
    fig.colorbar(im, ax=axes[2])
    return _save(fig, path, dpi=110)


def plot_deployment(
    latency_s: Sequence[float],
    exit_fractions: Sequence[float],
    estimates: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str],
    baselines: Mapping[str, float] | None = None,
) -> Figure:
    """Save a deployment's measured latency CDF and exit fractions against the estimates.

    Args:
        latency_s: measured end-to-end latency of every sample.
        exit_fractions: measured fraction of samples leaving at each partition.
        estimates: estimator name -> ``{latency_s, exit_fractions}``.
        path: output image.
        baselines: name -> measured mean latency (s) of the baselines' own deployments,
            drawn as vertical lines.

    Returns:
        The (closed) figure: the CDF with its lines, then the exit-fraction bars.
    """
    import numpy as np

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    lat = np.sort(1e3 * np.asarray(latency_s, dtype=float))
    ax1.plot(lat, np.arange(1, lat.size + 1) / lat.size, label="measured (CDF)", color="tab:blue")
    ax1.axvline(lat.mean(), color="k", linestyle=":", label=f"measured mean {lat.mean():.1f} ms")
    for (name, e), color in zip(estimates.items(), ("tab:olive", "tab:red"), strict=False):
        ms = 1e3 * float(e["latency_s"])
        ax1.axvline(ms, color=color, linestyle="--", label=f"{name} estimate {ms:.1f} ms")
    for name, value in (baselines or {}).items():
        _, col, label = BASELINE_STYLE.get(name, ("x", "k", name))
        ax1.axvline(
            1e3 * value, color=col, linestyle="-.", label=f"{label}, measured {1e3 * value:.1f} ms"
        )
    if baselines:
        _log_x(ax1)
    ax1.set(xlabel="end-to-end latency (ms)", ylabel="fraction of samples", title="Latency")
    ax1.legend(fontsize=7)
    parts = len(exit_fractions)
    xs = np.arange(parts)
    width = 0.8 / (1 + len(estimates))
    ax2.bar(xs, exit_fractions, width, label="measured")
    for k, (name, e) in enumerate(estimates.items(), 1):
        ax2.bar(xs + k * width, e["exit_fractions"], width, label=name)
    ax2.set(xlabel="partition", ylabel="exit fraction", title="Exit fractions")
    ax2.set_xticks(xs + width * len(estimates) / 2, [str(k + 1) for k in xs])
    ax2.legend(fontsize=8)
    return _save(fig, path, dpi=110)


def plot_final_accuracy(
    records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]
) -> Figure:
    """Save predicted against measured accuracy of final (fine-tuned) models, one point per plan.

    Args:
        records: per plan, ``finetuned.accuracy`` (measured) and, per estimator,
            ``predicted[e]`` (full-configuration profile) and ``corrected[e]``
            (profile of the fine-tuned exits), all in [0, 1].
        path: output image.

    Returns:
        The (closed) figure: one collection per (source, estimator), then the y = x line.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 5.2))
    meas = [100 * r["finetuned"]["accuracy"] for r in records]
    styles = {"portend": ("o", "tab:orange"), "exact": ("s", "tab:blue")}
    everything = list(meas)
    for source, filled in (("predicted", True), ("corrected", False)):
        for est, (mk, col) in styles.items():
            ys = [100 * r[source][est] for r in records if est in r.get(source, {})]
            if len(ys) != len(meas):
                continue
            everything += ys
            what = (
                "full-configuration profile"
                if source == "predicted"
                else "fine-tuned exits' profile"
            )
            ax.scatter(meas, ys, marker=mk, s=36, label=f"{est}, {what}", zorder=3,
                       color=col if filled else "none", edgecolors=col)  # fmt: skip
    if everything:
        lo, hi = min(everything) - 0.5, max(everything) + 0.5
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, linestyle="--", label="predicted = measured")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set(xlabel="measured test accuracy, final model (%)", ylabel="predicted accuracy (%)",
           title=f"Final models of {len(records)} plans")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_adaptive(
    result: Mapping[str, Any], path: str | os.PathLike[str], window: int = 25
) -> Figure:
    """Save latency over time of each run on a link trace, the adaptive run's switches marked.

    Args:
        result: :func:`earlyexit.runtime.adaptive.compare_on_trace`'s output.
        path: output image.
        window: samples per rolling mean (each sample is also drawn, faint).

    Returns:
        The (closed) figure: latency (ms, log scale) over trace time, and the
        link's bandwidth on a second axis.
    """
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    colors = {"adaptive": "tab:blue", "static": "tab:red", "oracle": "tab:green"}
    for mode, run in result["runs"].items():
        t = np.array([s["t"] for s in run["samples"]], dtype=float)
        lat = 1e3 * np.array([s["latency_s"] for s in run["samples"]], dtype=float)
        if not len(t):
            continue
        c = colors.get(mode, "k")
        ax.plot(t, lat, ".", color=c, alpha=0.15, markersize=2)
        k = max(1, min(window, len(lat)))
        cum = np.concatenate([[0.0], np.cumsum(lat)])
        idx = np.arange(len(lat))
        mean = (cum[idx + 1] - cum[np.maximum(idx + 1 - k, 0)]) / np.minimum(idx + 1, k)
        ax.plot(t, mean, "-", color=c, label=f"{mode} (mean of the last {k})")
    for i, sw in enumerate(result["runs"].get("adaptive", {}).get("switches", [])):
        ax.axvline(sw["t"], color="tab:blue", linestyle="--", linewidth=0.8,
                   label="adaptive switch" if i == 0 else None)  # fmt: skip
    ax.set_yscale("log")
    ax.set(xlabel="trace time (s)", ylabel="end-to-end latency (ms)",
           title=f"{result['trace'].get('name', 'trace')}: adaptive, static and oracle")  # fmt: skip
    steps = result["trace"]["steps"]
    end = max((s["t"] for r in result["runs"].values() for s in r["samples"]), default=1.0)
    ts = [s[0] for s in steps] + [end]
    bw = [s[1] for s in steps] + [steps[-1][1]]
    ax2 = ax.twinx()
    ax2.step(ts, bw, where="post", color="0.5", linewidth=1.0, label="link bandwidth")
    ax2.set_ylabel("bandwidth (Mb/s)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    return _save(fig, path, dpi=110)


def plot_load(res: Mapping[str, Any], path: str | os.PathLike[str]) -> Figure:
    """Save latency and loss ratio against the arrival rate: model lines, measured points.

    Args:
        res: what ``tools/load_study.py`` writes: ``rows`` (per rate ``rate``,
            ``model`` and ``measured`` latency and loss, optionally
            ``model_measured_service``), ``capacity_model``, ``capacity_measured``,
            ``topology``, ``queue_capacity``, ``queue_model``.
        path: output image.

    Returns:
        The (closed) figure.
    """
    import math

    plt = pyplot()
    rows = res["rows"]
    rate = [r["rate"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    a1.plot(rate, [r["model"]["latency_s"] * 1e3 for r in rows], "-", color="tab:blue",
            label="model: mean")  # fmt: skip
    q = [r.get("model_measured_service") for r in rows]
    if all(q):
        a1.plot(rate, [v["latency_s"] * 1e3 for v in q], "--", color="tab:blue", alpha=0.6,
                label="model, measured E[S0]: mean")  # fmt: skip
        a2.plot(rate, [v["loss_ratio"] for v in q], "--", color="tab:red", alpha=0.6,
                label="model, measured E[S0]")  # fmt: skip
    a1.plot(rate, [r["measured"]["latency_s"]["mean"] * 1e3 for r in rows], "o", color="tab:blue",
            label="measured: mean")  # fmt: skip
    a1.plot(rate, [r["measured"]["latency_s"]["p95"] * 1e3 for r in rows], "^", color="tab:orange",
            label="measured: p95")  # fmt: skip
    a2.plot(rate, [r["model"]["loss_ratio"] for r in rows], "-", color="tab:red", label="model")
    a2.plot(rate, [r["measured"]["loss_ratio"] for r in rows], "o", color="tab:red",
            label="measured")  # fmt: skip
    for ax in (a1, a2):
        ax.axvline(res["capacity_model"], color="0.4", lw=1, ls=":", label="model capacity")
        if math.isfinite(res["capacity_measured"]):
            ax.axvline(res["capacity_measured"], color="k", lw=1, ls="-.", label="measured knee")
        ax.grid(alpha=0.3)
        ax.set_xlabel("arrival rate (samples/s)")
    a1.set(ylabel="latency (ms)", title=f"{res['topology']}, K = {res['queue_capacity']}")
    a2.set(ylabel="loss ratio", title=f"loss ratio ({res['queue_model']} M/GI/1/K)")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    return _save(fig, path)
