"""Plots of deployments that ran: measured against estimated, on a link trace, under load."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from earlyexit.plotting._style import BASELINE_STYLE, log_x, pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_deployment", "plot_adaptive", "plot_load"]


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
        log_x(ax1)
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
    return save_figure(fig, path, dpi=110)


def plot_adaptive(
    result: Mapping[str, Any], path: str | os.PathLike[str], window: int = 25
) -> Figure:
    """Save latency over time of each run on a link trace, the adaptive run's switches marked.

    Args:
        result: :func:`earlyexit.runtime.adaptive.compare_on_trace`'s output.
        path: output image.
        window: samples per rolling mean (each sample is also drawn, faint).

    Returns:
        The (closed) figure: latency (ms, log scale) over trace time, the
        degraded phase shaded (a ``table`` row with ``degraded``), and the
        link's bandwidth on a second axis. With several rounds, the first
        round's runs are drawn.
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
    for row in result.get("table", []):
        if row.get("degraded"):
            gain = row.get("oracle_speedup")
            label = "degraded phase" + (f" (oracle {gain:.2f}x static)" if gain else "")
            ax.axvspan(row["start"], row["end"], color="0.85", alpha=0.5, zorder=0, label=label)
    n = len(result.get("rounds", [])) or 1
    ax.set_yscale("log")
    ax.set(xlabel="trace time (s)", ylabel="end-to-end latency (ms)",
           title=f"{result['trace'].get('name', 'trace')}: adaptive, static and oracle"
           + (f" (round 1 of {n})" if n > 1 else ""))  # fmt: skip
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
    return save_figure(fig, path, dpi=110)


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
    return save_figure(fig, path)
