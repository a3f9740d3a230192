"""Validate the performance model: deploy configurations for real, compare with the estimates.

PORTEND §III-B (Fig. 4): deploy a mix of Pareto-optimal and other
configurations, run held-out samples through each one at a time, measure the
end-to-end latency, the exit fraction of every partition and the accuracy, and
regress the estimates on the measurements (slope β, R²). Here both estimators
(``portend`` and ``exact``) are compared, and the deployments are real: one
process per tier, ZeroMQ, emulated links (:mod:`earlyexit.runtime.link`) and
emulated slowdowns, never the planner's own formulas.

What makes the comparison fair (each one measured on this 2-core machine):

* The profile must time what the workers run. Workers run ONNX Runtime, which is
  3-7x faster than eager PyTorch on ResNet-20's small partitions, and a lone
  sample runs up to 2-3x slower than back-to-back repetitions (cold caches).
  Profile with ``earlyexit.profile(..., engine="onnx", gap_s=0.05)``; a profile
  timed otherwise is reported in ``notes``.
* Latency goes over S samples one at a time through the emulated links;
  accuracy and exit fractions over more samples (the accuracy pass), because a
  few hundred measure an accuracy only to a few points. ``accuracy_se`` is the
  binomial error of measured minus profiled accuracy that no estimator can beat.
* The deployment and the client run at a raised priority during the latency
  pass (``niceness``): on a shared machine their wake-ups otherwise wait behind
  other processes, which the emulated dedicated devices would not.

Each hand-off between processes costs the runtime a little (0.2-0.3 ms here,
docs/spec.md "Runtime overhead"): the model charges it when the profile records
it (``hop_s``: ``profile(..., measure_hops=True)``); a profile without it leaves
that cost out, and it shows as an intercept and as underestimated fast
configurations. Beyond the fit over all configurations, each configuration's
relative latency error is reported, with the median, the maximum and the fit
inside each cluster (:func:`latency_errors`): a fit over all of them is carried
by the slow, link-dominated configurations.

The pieces are separate so that each can be reused or tested alone:
:func:`choose_configs`, :func:`estimate`, :func:`measure` (one deployed
configuration), :func:`summarize` (β, R², accuracy error, per-configuration
latency errors by cluster) and :func:`plot`.
:func:`validate` chains them from a checkpoint, and ``earlyexit validate`` is
its command line.

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> cfgs = choose_configs(synthetic_profile(6), "portend-aws", 6, seed=0)
    >>> len(cfgs), sum(c.pareto for c in cfgs) >= 1
    (6, True)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit._checks import (
    atomic_output,
    check_output_dir,
    input_file,
    int_range,
    output_dir,
    removed_on_failure,
)
from earlyexit.formats import Profile, Topology, atomic_write_text

__all__ = [
    "Config",
    "Measured",
    "choose_configs",
    "estimate",
    "measure",
    "summarize",
    "regression",
    "CLUSTERS",
    "cluster_of",
    "latency_errors",
    "plot",
    "validate",
    "register",
]

ESTIMATORS = ("portend", "exact")
MAX_CONFIGS = 1000
"""The most configurations one validation deploys."""
MAX_SAMPLES = 100_000
"""The most test samples per configuration run one at a time over the emulated links."""
MAX_ACCURACY_SAMPLES = 1_000_000
"""The most test samples per configuration in the accuracy pass."""


@dataclass(frozen=True)
class Config:
    """One configuration (T, P, D) and whether it is on the estimated Pareto frontier."""

    threshold: float
    cuts: tuple[int, ...]
    tiers: tuple[int, ...]
    pareto: bool = False


@dataclass
class Measured:
    """What a deployed configuration did on the test samples.

    Attributes:
        latency_s: per-sample end-to-end latency.
        exit_partition: per-sample 0-based partition of the exit taken.
        correct: per-sample correctness.
        degraded: samples that finished degraded (should be 0).
        prediction: per-sample predicted class (-1: none).
    """

    latency_s: list[float]
    exit_partition: list[int]
    correct: list[bool]
    degraded: int = 0
    prediction: list[int] = field(default_factory=list)

    def exit_fractions(self, num_partitions: int) -> list[float]:
        """Fraction of samples that left at each partition."""
        counts = np.bincount(np.asarray(self.exit_partition, int), minlength=num_partitions)
        return (counts[:num_partitions] / max(1, len(self.exit_partition))).tolist()

    @property
    def accuracy(self) -> float:
        """Fraction of correct predictions."""
        return float(np.mean(self.correct)) if self.correct else float("nan")

    @property
    def mean_latency_s(self) -> float:
        """Mean end-to-end latency."""
        return float(np.mean(self.latency_s))


def _resolve(
    profile: Profile | str | os.PathLike[str], topology: Topology | str | os.PathLike[str]
) -> tuple[Profile, Topology]:
    from earlyexit.planner.topology import resolve_profile, resolve_topology

    return resolve_profile(profile), resolve_topology(topology)


def choose_configs(
    profile: Profile | str | os.PathLike[str],
    topology: Topology | str | os.PathLike[str],
    k: int,
    *,
    seed: int = 0,
    estimator: str = "portend",
    pareto_share: float = 0.5,
) -> list[Config]:
    """Pick ``k`` distinct configurations: Pareto-optimal ones and random others.

    Args:
        profile, topology: as for the planner.
        k: how many.
        seed: for the random ones.
        estimator: the estimator whose Pareto frontier is sampled.
        pareto_share: at most this fraction comes from the frontier (evenly spread).

    Returns:
        The configurations (Pareto ones first).

    Raises:
        ValueError: ``k < 1``.
    """
    from earlyexit.planner import pareto

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    prof, topo = _resolve(profile, topology)
    rng = np.random.default_rng(seed)
    front = pareto(prof, topo, estimator=estimator)
    n_front = min(len(front), max(1, round(k * pareto_share)))
    picks = np.unique(np.linspace(0, len(front) - 1, n_front).round().astype(int)) if front else []
    out: list[Config] = []
    seen: set[tuple] = set()
    for i in picks:
        p = front[int(i)]
        c = Config(float(p.threshold), tuple(p.cut_points), tuple(p.tier_indices), True)
        out.append(c)
        seen.add((c.threshold, c.cuts, c.tiers))
    n, m = prof.num_blocks, topo.num_tiers
    thresholds = [float(t) for t in prof.thresholds]
    for _ in range(1000 * k):
        if len(out) >= k:
            break
        length = int(rng.integers(1, min(m, n) + 1))
        cuts = (
            tuple(sorted(rng.choice(np.arange(1, n), size=length - 1, replace=False).tolist()))
            + (n,)
            if length > 1
            else (int(rng.integers(1, n + 1)),)
        )
        cuts = tuple(int(c) for c in cuts)
        tiers = tuple(int(t) for t in rng.choice(m, size=length, replace=False))
        key = (float(rng.choice(thresholds)), cuts, tiers)
        if key not in seen:
            seen.add(key)
            out.append(Config(*key))
    return out


def estimate(profile: Profile, topology: Topology, config: Config) -> dict[str, dict[str, Any]]:
    """Both estimators' latency, accuracy and exit fractions of ``config``.

    Returns:
        ``{"portend": {...}, "exact": {...}}`` (``exact`` only if the profile
        has per-sample records), each with ``latency_s``, ``accuracy``,
        ``exit_fractions`` and ``breakdown_s``.
    """
    from earlyexit.planner import evaluate

    out = {}
    for name in ESTIMATORS:
        if name == "exact" and profile.samples is None:
            continue
        est = evaluate(
            profile, topology, config.threshold, list(config.cuts), list(config.tiers), name
        )
        out[name] = {
            "latency_s": est.latency_s,
            "accuracy": est.accuracy,
            "exit_fractions": list(est.exit_fractions),
            "breakdown_s": dict(est.breakdown_s),
        }
    return out


def measure(
    bundle: str | os.PathLike[str],
    config: Config,
    topology: Topology,
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    warmup: int = 10,
    timeout_s: float = 60.0,
    one_at_a_time: bool = True,
    **deploy_kwargs: Any,
) -> Measured:
    """Deploy ``bundle`` as ``config`` says and run ``x`` through it one sample at a time.

    With ``one_at_a_time=False`` the samples are submitted all at once, in
    messages of up to 64 samples (the accuracy pass: which exit a sample takes
    and what it predicts do not depend on timing; only latencies would be
    blurred by queueing).

    Args:
        bundle: a bundle whose partitions end at ``config.cuts``.
        config: threshold and tiers (the bundle's own are overridden).
        topology: links, MTU and slowdowns to emulate.
        x, y: test inputs and labels (labels None: correctness is all False).
        warmup: samples run first and not measured (the first few of a fresh
            deployment are slower: caches, lazy allocations, connections).
        timeout_s: per-sample bound (the whole run's bound when not one at a time).
        one_at_a_time: wait for each result before the next input.
        **deploy_kwargs: passed to :func:`earlyexit.runtime.deployment.deploy`.

    Returns:
        The per-sample measurements.
    """
    from earlyexit.runtime.deployment import deploy

    niceness = deploy_kwargs.get("niceness")
    # the client (this thread and its ZeroMQ threads) at the deployment's niceness, and no
    # pause of this process's garbage collector (whose heap holds the model) in the timings
    gc_was_enabled = gc.isenabled()
    gc.disable()
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: gc.enable() if gc_was_enabled else None)
        stack.enter_context(_thread_niceness(niceness))
        with deploy(
            bundle,
            tiers=config.tiers,
            threshold=config.threshold,
            topology=topology,
            **deploy_kwargs,
        ) as d:
            d.run(x[:warmup], one_at_a_time=True, timeout_s=timeout_s)
            if one_at_a_time:
                results = d.run(x, one_at_a_time=True, timeout_s=timeout_s)
            else:
                ids = [
                    i
                    for j in range(0, len(x), 64)
                    for i in d.client.submit(x[j : j + 64], batch=True)
                ]
                results = d.client.gather(ids, timeout_s=timeout_s)
    return Measured(
        latency_s=[r.latency_s for r in results],
        exit_partition=[r.partition for r in results],
        correct=[bool(y is not None and r.prediction == int(y[i])) for i, r in enumerate(results)],
        degraded=sum(r.degraded for r in results),
        prediction=[-1 if r.prediction is None else r.prediction for r in results],
    )


def _chosen_config(prof: Profile, topo: Topology, accuracy_drop: float | None) -> Config | None:
    """P_lat's plan (exact estimator) with accuracy at least the final exit's minus ``accuracy_drop``."""
    from earlyexit.planner import plan

    if accuracy_drop is None:
        return None
    p = plan(
        prof,
        topo,
        min_accuracy=float(prof.branch_accuracy[-1]) - accuracy_drop,
        estimator="exact" if prof.samples is not None else "portend",
    )
    return Config(float(p.threshold), tuple(p.cut_points), tuple(p.tier_indices), True)


def _accuracy_pass(
    bundle: str | os.PathLike[str], config: Config, x: np.ndarray, y: np.ndarray | None
) -> Measured:
    """Exits and predictions of many samples: the bundle's files, chained in one process.

    Which exit a sample takes and what it predicts depend only on the partition
    files and the threshold, not on where the partitions run or how long links
    take; :class:`~earlyexit.runtime.session.BundleSession` runs the very files
    the workers run, with the same exit rule. The deployed latency pass checks
    that it agrees with this on every sample they share.
    """
    from earlyexit.runtime.session import BundleSession

    session = BundleSession(bundle, intra_op_threads=1)
    parts, preds = [], []
    for j in range(0, len(x), 256):
        out = session.predict(x[j : j + 256], config.threshold)
        parts += out["exit_partition"].tolist()
        preds += out["prediction"].tolist()
    return Measured(
        latency_s=[],
        exit_partition=parts,
        correct=[bool(y is not None and p == int(y[i])) for i, p in enumerate(preds)],
        prediction=preds,
    )


def _binomial_se(p: float, n: int, n_profile: int | None) -> float:
    """Standard error of a measured accuracy ``p`` (n samples) minus a profiled one.

    The profile's accuracy comes from ``n_profile`` other samples; both are binomial
    proportions, so even a perfect estimator misses by about this much.
    """
    if not n or not np.isfinite(p):
        return float("nan")
    var = p * (1 - p) / n + (p * (1 - p) / n_profile if n_profile else 0.0)
    return float(np.sqrt(var))


@contextlib.contextmanager
def _thread_niceness(niceness: int | None) -> Iterator[bool]:
    """Run the block at ``niceness`` (this thread, and threads it starts), then restore.

    Yields whether it was applied (lowering it needs ``CAP_SYS_NICE``).
    """
    if niceness is None:
        yield False
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)  # Linux: the calling thread's
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
        applied = True
    except OSError:
        applied = False
    try:
        yield applied
    finally:
        if applied:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, before)
            except OSError:  # raising it back needs the same capability; keep going
                pass


def niceness_allowed(niceness: int) -> bool:
    """Whether this process may run at ``niceness`` (checked by trying, then restored)."""
    with _thread_niceness(niceness) as ok:
        return ok


def regression(measured: Sequence[float], estimated: Sequence[float]) -> dict[str, float]:
    """Least-squares line ``estimated = beta * measured + intercept`` and its R².

    Example:
        >>> r = regression([1, 2, 3], [1.1, 2.0, 3.1])
        >>> round(r["beta"], 2), r["r2"] > 0.99
        (1.0, True)
    """
    xm, ye = np.asarray(measured, float), np.asarray(estimated, float)
    if xm.size < 2 or np.ptp(xm) == 0:
        return {
            "beta": float("nan"),
            "intercept": float("nan"),
            "r2": float("nan"),
            "n": int(xm.size),
        }
    beta, intercept = np.polyfit(xm, ye, 1)
    pred = beta * xm + intercept
    ss_res, ss_tot = float(((ye - pred) ** 2).sum()), float(((ye - ye.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return {"beta": float(beta), "intercept": float(intercept), "r2": r2, "n": int(xm.size)}


CLUSTERS: tuple[str, ...] = ("edge-only", "multi-tier", "cloud")
"""Clusters of configurations: one partition on the source tier, two or more
partitions, one partition on another tier (``cloud``: whatever that tier is)."""


def cluster_of(config: Config | Mapping[str, Any], source: int = 0) -> str:
    """The cluster of a configuration: ``edge-only``, ``multi-tier`` or ``cloud``.

    Args:
        config: a :class:`Config` or its mapping (as in ``validation.json``).
        source: the topology's source tier.

    Example:
        >>> cluster_of(Config(0.5, (3, 9), (0, 2))), cluster_of(Config(0.0, (9,), (2,)))
        ('multi-tier', 'cloud')
    """
    tiers = config["tiers"] if isinstance(config, Mapping) else config.tiers
    if len(tiers) > 1:
        return "multi-tier"
    return "edge-only" if int(tiers[0]) == int(source) else "cloud"


def _error_stats(measured: np.ndarray, estimated: np.ndarray) -> dict[str, float]:
    rel = (estimated - measured) / measured
    return {
        "median_abs_relative_error": float(np.median(np.abs(rel))) if rel.size else float("nan"),
        "max_abs_relative_error": float(np.max(np.abs(rel))) if rel.size else float("nan"),
        "mean_relative_error": float(np.mean(rel)) if rel.size else float("nan"),
    }


def latency_errors(
    records: Sequence[Mapping[str, Any]], estimator: str, source: int = 0
) -> dict[str, Any]:
    """Relative latency error of every configuration, and its statistics overall and per cluster.

    The relative error of a configuration is ``(estimated - measured) / measured``
    of its mean latency. Inside each cluster (:data:`CLUSTERS`) the line
    ``estimated = beta * measured + intercept`` is fitted as in :func:`regression`.

    Args:
        records: as for :func:`summarize`.
        estimator: ``"portend"`` or ``"exact"``.
        source: the topology's source tier (it defines the clusters).

    Returns:
        ``{"relative_error": [per configuration], "cluster": [per configuration],
        "median_abs_relative_error", "max_abs_relative_error", "mean_relative_error",
        "clusters": {name: {"beta", "intercept", "r2", "n", "median_abs_relative_error",
        "max_abs_relative_error", "mean_relative_error"}}}`` (clusters without
        configurations are left out; a line needs two configurations of different
        measured latencies, else its ``beta`` is NaN).

    Raises:
        ValueError: a measured latency that is not positive.
    """
    m = np.array([r["measured"]["latency_s"] for r in records], float)
    e = np.array([r["estimated"][estimator]["latency_s"] for r in records], float)
    if (m <= 0).any() or not np.isfinite(m).all():
        raise ValueError(
            f"measured latencies must be positive, got {m[(m <= 0) | ~np.isfinite(m)][:3].tolist()}"
        )
    clusters = [cluster_of(r["config"], source) for r in records]
    out: dict[str, Any] = {
        "relative_error": ((e - m) / m).tolist(),
        "cluster": clusters,
        **_error_stats(m, e),
        "clusters": {},
    }
    for name in CLUSTERS:
        idx = [i for i, c in enumerate(clusters) if c == name]
        if idx:
            out["clusters"][name] = {**regression(m[idx], e[idx]), **_error_stats(m[idx], e[idx])}
    return out


def summarize(records: Sequence[Mapping[str, Any]], source: int = 0) -> dict[str, Any]:
    """β and R² of latency, exit rate and accuracy, and latency errors, per estimator.

    Args:
        records: one per configuration: ``{"config": Config or its mapping,
            "measured": {"latency_s", "accuracy", "exit_fractions"},
            "estimated": {estimator: {...}}}``.
        source: the topology's source tier (it defines the clusters of
            :func:`latency_errors`).

    Returns:
        ``{"latency": {"beta", "r2", ...}, "exit_rate": {...}, "accuracy": {...,
        "mean_abs_error"}, "latency_error": {...} (see :func:`latency_errors`),
        "by_estimator": {name: {...}}}``; the top-level
        figures are the ``exact`` estimator's when available, else ``portend``'s.
    """
    by: dict[str, Any] = {}
    names = [n for n in ESTIMATORS if all(n in r["estimated"] for r in records)]
    for name in names:
        lat_m = [r["measured"]["latency_s"] for r in records]
        lat_e = [r["estimated"][name]["latency_s"] for r in records]
        er_m = [e for r in records for e in r["measured"]["exit_fractions"]]
        er_e = [e for r in records for e in r["estimated"][name]["exit_fractions"]]
        acc_m = [r["measured"]["accuracy"] for r in records]
        acc_e = [r["estimated"][name]["accuracy"] for r in records]
        by[name] = {
            "latency": regression(lat_m, lat_e),
            "exit_rate": regression(er_m, er_e),
            "accuracy": {
                **regression(acc_m, acc_e),
                "mean_abs_error": float(np.mean(np.abs(np.subtract(acc_m, acc_e)))),
                "mean_error": float(np.mean(np.subtract(acc_e, acc_m))),
                "sampling_se": float(
                    np.nanmean([r["measured"].get("accuracy_se", np.nan) for r in records])
                )
                if any("accuracy_se" in r["measured"] for r in records)
                else float("nan"),
            },
            "latency_error": latency_errors(records, name, source),
        }
    main = by.get("exact") or by.get("portend") or {}
    return {**main, "by_estimator": by}


def plot(
    records: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    cdf_latencies_s: Sequence[float] | None = None,
    source: int = 0,
) -> list[str]:
    """Estimated against measured scatter plots (one PNG per metric) and a latency CDF.

    The latency plot colours each configuration by its cluster (:data:`CLUSTERS`,
    which ``source`` defines) and uses log axes when latencies span more than
    a decade.

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    metrics = {
        "latency": lambda r, e: ([r["measured"]["latency_s"] * 1e3], [e["latency_s"] * 1e3]),
        "exit_rate": lambda r, e: (r["measured"]["exit_fractions"], e["exit_fractions"]),
        "accuracy": lambda r, e: ([r["measured"]["accuracy"]], [e["accuracy"]]),
    }
    for metric, get in metrics.items():
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        lo, hi = np.inf, -np.inf
        groups = CLUSTERS if metric == "latency" else (None,)
        colors = dict(zip(CLUSTERS, ("tab:green", "tab:blue", "tab:red"), strict=True))
        for name, marker in (("portend", "o"), ("exact", "x")):
            for group in groups:
                xs, ys = [], []
                for r in records:
                    if name in r["estimated"] and group in (None, cluster_of(r["config"], source)):
                        a, b = get(r, r["estimated"][name])
                        xs += list(a)
                        ys += list(b)
                if xs:
                    label = name if group is None else f"{name}, {group}"
                    ax.scatter(xs, ys, marker=marker, label=label, alpha=0.7,
                               color=None if group is None else colors[group])  # fmt: skip
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
        fig.tight_layout()
        path = out / f"validate_{metric}.png"
        try:
            with atomic_output(path) as tmp:
                fig.savefig(tmp, dpi=120, format="png")
        finally:
            plt.close(fig)
        paths.append(str(path))
    if cdf_latencies_s:
        lat = np.sort(np.asarray(cdf_latencies_s)) * 1e3
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.step(lat, np.arange(1, lat.size + 1) / lat.size, where="post")
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("CDF")
        fig.tight_layout()
        path = out / "validate_latency_cdf.png"
        try:
            with atomic_output(path) as tmp:
                fig.savefig(tmp, dpi=120, format="png")
        finally:
            plt.close(fig)
        paths.append(str(path))
    return paths


def validate(
    checkpoint: str | os.PathLike[str],
    profile: Profile | str | os.PathLike[str],
    topology: Topology | str | os.PathLike[str],
    data: Any = None,
    *,
    configs: int = 30,
    samples: int = 100,
    accuracy_samples: int = 2000,
    out_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    devices: Mapping[str, str] | None = None,
    emulate_links: bool = True,
    progress: Callable[[str], None] | None = None,
    exporter: str = "torchscript",
    accuracy_drop: float | None = 0.01,
    niceness: int | None = -15,
    force: bool = False,
    keep_logs: bool = False,
) -> dict[str, Any]:
    """Deploy ``configs`` configurations of a checkpoint and compare them with the estimates.

    Every argument is checked, and the checkpoint compared with the profile,
    before anything is written; if the run fails, what it wrote is removed.

    Args:
        checkpoint: the trained multi-exit model (``earlyexit.load``).
        profile: its profile (JSON path or Profile).
        topology: the topology to emulate (built-in name, YAML path or Topology).
        data: the held-out data (a data spec; default: the model's dataset), test split.
        configs: K, the number of configurations (1 .. :data:`MAX_CONFIGS`).
        samples: S, test samples per configuration, one at a time over the
            emulated links: the latency pass (1 .. :data:`MAX_SAMPLES`).
        accuracy_samples: test samples per configuration for accuracy and exit
            fractions (the accuracy pass; ``samples`` .. :data:`MAX_ACCURACY_SAMPLES`):
            when more than ``samples``, the bundle's
            partition files are run chained in this process with the workers' exit
            rule (links and placement do not change which exit a sample takes or
            what it predicts; the deployed pass must agree on the samples they
            share, recorded per configuration). A few hundred samples measure an
            accuracy only to a few points (binomial error), too coarse for the
            1-point goal.
        out_dir: where bundles, plots and ``validation.json`` go.
        seed: for the random configurations.
        devices: rebind tiers to profile devices (``{tier name or device: device}``).
        emulate_links: emulate the topology's links (else loopback only).
        progress: called with a line of text after each configuration.
        exporter: the ONNX exporter of the bundles (``"torchscript"``, the legacy
            one, exports in a fraction of the time of ``"dynamo"``; ONNX Runtime
            runs both the same; a profile made with ``engine="onnx"`` times
            partitions exported the same way).
        accuracy_drop: the first configuration is the plan a user would deploy,
            P_lat with accuracy at least the final exit's minus this (as the demo
            plans); its latency CDF is plotted. None: only :func:`choose_configs`.
        niceness: scheduling niceness of the deployment's processes and of the
            client during the latency pass (None: unchanged). The emulated tiers
            stand for dedicated machines: on a machine shared with other work,
            their wake-ups otherwise wait behind other processes for milliseconds
            (measured here: a 3 ms edge-only configuration took 24 ms at load 10,
            4 ms at niceness -15). Needs ``CAP_SYS_NICE`` (root); without it the
            run goes on at the normal priority and says so in ``notes``.
        force: go on with a profile made from other weights than the checkpoint's
            (its ``model_digest`` differs), with a warning in ``notes``; refused otherwise.
        keep_logs: keep every process's log under ``out_dir/logs/`` (else each
            deployment's temporary log folder is removed when it closes).

    Returns:
        ``{"latency": {"beta", "r2"}, "exit_rate": {...}, "accuracy": {...},
        "by_estimator": {...}, "configs": [...], "plots": [...]}``.

    Raises:
        ValueError: a topology device missing from the profile, counts out of
            range, a profile of another model (block or class count, or weights
            without ``force``), too little test data, an output directory that is a file.
    """
    import earlyexit
    from earlyexit.export.bundle import resolve_data
    from earlyexit.planner.latency import CostModel
    from earlyexit.planner.topology import bind_devices
    from earlyexit.surgery.digest import model_digest

    _check_count("configs", configs, 1, MAX_CONFIGS)
    _check_count("samples", samples, 1, MAX_SAMPLES)
    _check_count("accuracy_samples", accuracy_samples, samples, MAX_ACCURACY_SAMPLES)
    if niceness is not None:
        _check_count("niceness", niceness, -20, 19)
    if out_dir is not None:
        check_output_dir(out_dir, "out_dir")
    prof, topo = _resolve(profile, topology)
    if devices:
        topo = bind_devices(topo, devices)
    cm = CostModel(prof, topo)  # checks that every tier's device is profiled
    t_start = time.perf_counter()
    notes = []
    model = earlyexit.load(checkpoint)
    if prof.num_blocks != model.num_blocks or prof.num_classes != model.num_classes:
        raise ValueError(
            f"the profile is of another model: {prof.num_blocks} blocks and {prof.num_classes} "
            f"classes, the checkpoint {checkpoint} has {model.num_blocks} blocks and "
            f"{model.num_classes} classes; profile this checkpoint (earlyexit profile)"
        )
    want = prof.extra.get("model_digest")
    if want is not None and want != model_digest(model):
        text = (
            f"the profile was made with other weights than {checkpoint} (its model_digest "
            "differs): its exit rates and accuracies do not describe this model"
        )
        if not force:
            raise ValueError(text + "; profile this checkpoint, or pass --force (force=True)")
        notes.append(text)
        warnings.warn(text, stacklevel=2)
    got = resolve_data(data, "test", model, limit=max(samples, accuracy_samples))
    if got is None:
        raise ValueError("no test data: give data= (a data spec) or a checkpoint that records one")
    if len(got[0]) < samples:
        raise ValueError(
            f"samples: the test data holds {len(got[0])} samples, fewer than the {samples} asked"
        )
    if len(got[0]) < accuracy_samples:
        notes.append(
            f"accuracy pass over {len(got[0])} samples, all the test data "
            f"({accuracy_samples} asked)"
        )
    if niceness is not None and not niceness_allowed(niceness):
        notes.append(
            f"could not run the deployment at niceness {niceness} (needs CAP_SYS_NICE): "
            "latencies include waiting behind this machine's other processes"
        )
        niceness = None
    for dev in sorted({t.device for t in topo.tiers}):
        engine = prof.devices[dev].meta.get("engine", "torch")
        if engine != "onnxruntime":
            notes.append(
                f"device {dev!r} was profiled with engine {engine!r}, but the tier workers run "
                "ONNX Runtime (several times faster on small partitions): profile with "
                "engine='onnx' (earlyexit profile --engine onnx) to predict this deployment"
            )
            warnings.warn(notes[-1], stacklevel=2)
    run = dict(
        samples=samples, seed=seed, configs=configs, emulate_links=emulate_links,
        progress=progress, exporter=exporter, accuracy_drop=accuracy_drop,
        niceness=niceness, keep_logs=keep_logs,
    )  # fmt: skip

    def into(out: Path) -> dict[str, Any]:
        summary = _validate_into(out, model, prof, topo, cm, got, notes, **run)
        summary["wall_time_s"] = time.perf_counter() - t_start
        atomic_write_text(out / "validation.json", json.dumps(summary, indent=2, default=float))
        return summary

    if out_dir is not None:
        with removed_on_failure(out_dir) as out:
            return into(out)
    out = Path(tempfile.mkdtemp(prefix="earlyexit-validate-"))
    try:
        return into(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def _check_count(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value}")


def _validate_into(
    out: Path,
    model: Any,
    prof: Profile,
    topo: Topology,
    cm: Any,
    got: tuple[Any, Any, Any],
    notes: list[str],
    *,
    samples: int,
    seed: int,
    configs: int,
    emulate_links: bool,
    progress: Callable[[str], None] | None,
    exporter: str,
    accuracy_drop: float | None,
    niceness: int | None,
    keep_logs: bool,
) -> dict[str, Any]:
    """:func:`validate` after its checks: export, deploy and measure into ``out``."""
    from earlyexit.export import export_bundle
    from earlyexit.planner import make_plan

    x_all = got[0].numpy().astype(np.float32)
    y_all = None if got[1] is None else got[1].numpy()
    x, y = x_all[:samples], None if y_all is None else y_all[:samples]
    accuracy_pass = len(x_all) > len(x)
    n_profile = int(prof.samples.entropy.shape[1]) if prof.samples is not None else None
    chosen = choose_configs(prof, topo, configs, seed=seed)
    best = _chosen_config(prof, topo, accuracy_drop)
    if best is not None:  # the plan a user would deploy goes first: its latency CDF is plotted
        rest = [
            c
            for c in chosen
            if (c.threshold, c.cuts, c.tiers) != (best.threshold, best.cuts, best.tiers)
        ]
        chosen = [best, *rest][: max(configs, 1)]
    bundles: dict[tuple[int, ...], Path] = {}
    records: list[dict[str, Any]] = []
    for i, cfg in enumerate(chosen):
        if cfg.cuts not in bundles:
            plan = make_plan(cm, cfg.threshold, cfg.cuts, cfg.tiers)
            path = out / "bundles" / ("cuts-" + "-".join(map(str, cfg.cuts)))
            verify = (got[0][:64], got[1][:64]) if got[1] is not None else got[0][:64]
            export_bundle(
                model,
                plan,
                path,
                formats="onnx",
                verify_data=verify,
                overwrite=True,
                exporter=exporter,
            )
            bundles[cfg.cuts] = path
        meas = measure(
            bundles[cfg.cuts],
            cfg,
            topo,
            x,
            y,
            emulate_links=emulate_links,
            niceness=niceness,
            log_dir=out / "logs" / f"config-{i + 1}" if keep_logs else None,
        )
        acc_meas = _accuracy_pass(bundles[cfg.cuts], cfg, x_all, y_all) if accuracy_pass else meas
        n_parts = len(cfg.cuts)
        same = (np.asarray(acc_meas.exit_partition[: len(x)]) == meas.exit_partition) & (
            np.asarray(acc_meas.prediction[: len(x)]) == meas.prediction
        )
        rec = {
            "config": asdict(cfg),
            "measured": {
                "latency_s": meas.mean_latency_s,
                "latency_p50_s": float(np.median(meas.latency_s)),
                "latency_samples": len(meas.latency_s),
                "accuracy": acc_meas.accuracy,
                "exit_fractions": acc_meas.exit_fractions(n_parts),
                "accuracy_samples": len(acc_meas.correct),
                "accuracy_se": _binomial_se(acc_meas.accuracy, len(acc_meas.correct), n_profile),
                "latency_pass": {
                    "accuracy": meas.accuracy,
                    "exit_fractions": meas.exit_fractions(n_parts),
                    "same_exit_and_prediction_as_accuracy_pass": float(same.mean()),
                },
                "degraded": meas.degraded,
            },
            "estimated": estimate(prof, topo, cfg),
        }
        records.append(rec)
        if i == 0:
            cdf = meas.latency_s
        if progress:
            e = rec["estimated"].get("exact", rec["estimated"]["portend"])
            progress(
                f"[{i + 1}/{len(chosen)}] T={cfg.threshold:g} P={list(cfg.cuts)} "
                f"D={list(cfg.tiers)}: measured {meas.mean_latency_s * 1e3:.1f} ms, "
                f"acc {rec['measured']['accuracy']:.3f}; estimated {e['latency_s'] * 1e3:.1f} ms, "
                f"acc {e['accuracy']:.3f}"
            )
    summary = summarize(records, topo.source)
    for i, rec in enumerate(records):  # each configuration's own error and cluster
        rec["cluster"] = cluster_of(rec["config"], topo.source)
        rec["latency_relative_error"] = {
            name: fig["latency_error"]["relative_error"][i]
            for name, fig in summary["by_estimator"].items()
        }
    summary["configs"] = records
    summary["plots"] = plot(records, out, cdf, topo.source)
    summary["out_dir"] = str(out)
    summary["notes"] = notes
    summary["chosen"] = records[0]["config"] if best is not None else None
    return summary


# --------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> None:
    """Add ``earlyexit validate`` to the command line."""
    p = subparsers.add_parser(
        "validate",
        help="deploy configurations for real and compare with the estimates",
        description="PORTEND-style validation: deploy K configurations (Pareto-optimal and "
        "others) over emulated links, run S test samples one at a time, and report beta and "
        "R^2 of estimated against measured latency, exit rate and accuracy.",
    )
    p.add_argument("--checkpoint", required=True, type=input_file)
    p.add_argument("--profile", required=True, type=input_file, help="its profile (JSON)")
    p.add_argument("--topology", required=True, help="built-in name or YAML file")
    p.add_argument("--data", default=None, help="data spec (default: the checkpoint's dataset)")
    p.add_argument(
        "--configs",
        type=int_range(1, MAX_CONFIGS),
        default=30,
        help=f"K configurations (1 to {MAX_CONFIGS})",
    )
    p.add_argument(
        "--samples",
        type=int_range(1, MAX_SAMPLES),
        default=100,
        help="S test samples per configuration, one at a time over the emulated links "
        f"(1 to {MAX_SAMPLES})",
    )
    p.add_argument(
        "--accuracy-samples",
        type=int_range(1, MAX_ACCURACY_SAMPLES),
        default=2000,
        help="test samples per configuration for accuracy and exit fractions (the bundle's "
        "files chained in one process when more than --samples; at least --samples, at most "
        f"{MAX_ACCURACY_SAMPLES})",
    )
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="TIER=DEVICE",
        help="bind a tier (name, index or device) to a profile device; repeatable",
    )
    p.add_argument(
        "--out",
        type=output_dir,
        default="validation",
        help="output directory (plots, JSON, bundles); removed again if the run fails",
    )
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    p.add_argument("--no-links", action="store_true", help="do not emulate links")
    p.add_argument(
        "--nice",
        type=int_range(-20, 19),
        default=-15,
        help="scheduling niceness of the deployment and client during the latency pass "
        "(isolates the emulated tiers from other load; needs root); use 0 to leave it",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="go on (with a warning) when the profile was made with other weights",
    )
    p.add_argument(
        "--keep-logs", action="store_true", help="keep every process's log under OUT/logs/"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_validate_command)


def _validate_command(args: argparse.Namespace) -> int:
    devices = {}
    for item in args.device:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--device expects TIER=DEVICE, got {item!r}")
        devices[key] = value
    if args.accuracy_samples < args.samples:
        raise ValueError(
            f"--accuracy-samples must be >= --samples ({args.samples}) and <= "
            f"{MAX_ACCURACY_SAMPLES}, got {args.accuracy_samples}"
        )
    with warnings.catch_warnings():
        # the CLI prints the notes these warnings repeat, once, after the run
        warnings.filterwarnings("ignore", category=UserWarning, module="earlyexit.validation")
        result = _validate_for_cli(args, devices)
    if args.json:
        keep = (
            "latency",
            "latency_error",
            "exit_rate",
            "accuracy",
            "by_estimator",
            "configs",
            "plots",
            "notes",
            "wall_time_s",
            "chosen",
        )
        print(json.dumps({k: result[k] for k in keep if k in result}, indent=2, default=float))
        return 0
    for name, fig in result["by_estimator"].items():
        print(
            f"{name:8s} latency beta {fig['latency']['beta']:.3f} R2 {fig['latency']['r2']:.3f} | "
            f"exit rate beta {fig['exit_rate']['beta']:.3f} R2 {fig['exit_rate']['r2']:.3f} | "
            f"accuracy mean |error| {fig['accuracy']['mean_abs_error'] * 100:.2f} points "
            f"(sampling s.e. {fig['accuracy']['sampling_se'] * 100:.2f})"
        )
        err = fig["latency_error"]
        clusters = ", ".join(
            f"{c} beta {v['beta']:.2f} R2 {v['r2']:.2f} (n={v['n']})"
            for c, v in err["clusters"].items()
        )
        print(
            f"{'':8s} latency relative error median {100 * err['median_abs_relative_error']:.1f}% "
            f"max {100 * err['max_abs_relative_error']:.1f}% | {clusters}"
        )
    for note in result.get("notes", []):
        print("note: " + note)
    print(f"wall time {result['wall_time_s']:.0f} s")
    print("plots: " + ", ".join(result["plots"]))
    return 0


def _validate_for_cli(args: argparse.Namespace, devices: dict[str, str]) -> dict[str, Any]:
    return validate(
        args.checkpoint,
        args.profile,
        args.topology,
        args.data,
        configs=args.configs,
        samples=args.samples,
        accuracy_samples=args.accuracy_samples,
        out_dir=args.out,
        seed=args.seed,
        devices=devices,
        emulate_links=not args.no_links,
        progress=None if args.json else print,
        niceness=None if args.nice == 0 else args.nice,
        force=args.force,
        keep_logs=args.keep_logs,
    )
