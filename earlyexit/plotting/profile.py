"""Plots of what a profile says and predicts.

Exit rates, accuracy per exit and partition times of a profile; the accuracy it
predicted for final (fine-tuned) models against the measured one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from earlyexit.plotting._style import pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from earlyexit.formats import Profile

__all__ = ["plot_profile", "plot_final_accuracy"]


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
    return save_figure(fig, path, dpi=110)


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
    return save_figure(fig, path)
