"""The sweep of :func:`~earlyexit.validation.run.validate`: every configuration exported, deployed, measured.

For each configuration (the plan a user would deploy first), the bundle is
exported once per cut points, the accuracy pass runs the partition files
chained in this process, the latency pass times samples one at a time over
the emulated links, and the measured and estimated figures become a
:class:`~earlyexit.validation.results.ConfigResult`; the records are then
summarized and plotted into a :class:`ValidationResult`. The checks of the
arguments, the data and the profile come first, in :mod:`earlyexit.validation.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit.formats import Profile, Topology
from earlyexit.validation.configs import Config, choose_configs, chosen_config, estimates
from earlyexit.validation.hostcheck import HostCheck
from earlyexit.validation.measurement import (
    Measured,
    accuracy_pass,
    latency_split,
    measure_passes,
)
from earlyexit.validation.plots import plot
from earlyexit.validation.results import (
    ConfigResult,
    LatencyPass,
    MeasuredSummary,
    estimated_split,
)
from earlyexit.validation.statistics import (
    Summary,
    binomial_se,
    stratified_indices,
    stratified_mean,
    summarize,
)

__all__ = ["ValidationResult", "deploy_configs"]


@dataclass
class ValidationResult:
    """What :func:`validate` found (``to_dict``: ``validation.json``, docs/spec.md#validation-results).

    Attributes:
        summary: the fits and errors of every estimator.
        configs: every configuration's result, the chosen one first.
        plots: the PNG files written.
        out_dir: where bundles, plots and ``validation.json`` are.
        notes: what the reader should know about the run (profile engine, niceness, ...).
        chosen: the configuration a user would deploy (None: not asked).
        source: the topology's source tier (it defines the clusters).
        wall_time_s: the whole run.
        host_check: the whole network timed on this host before and after the
            measurements, against each device's profile (:mod:`.hostcheck`).
    """

    summary: Summary
    configs: list[ConfigResult]
    plots: list[str] = field(default_factory=list)
    out_dir: str = ""
    notes: list[str] = field(default_factory=list)
    chosen: Config | None = None
    source: int = 0
    wall_time_s: float = float("nan")
    host_check: list[HostCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The mapping of ``validation.json``."""
        return {**self.summary.to_dict(),
                "configs": [r.to_dict(self.source) for r in self.configs],
                "plots": list(self.plots), "out_dir": self.out_dir, "notes": list(self.notes),
                "chosen": None if self.chosen is None else self.chosen.to_dict(),
                "wall_time_s": self.wall_time_s,
                "host_check": {d: {c.statistic: c.to_dict() for c in self.host_check if c.device == d}
                               for d in dict.fromkeys(c.device for c in self.host_check)}}  # fmt: skip


def _progress_line(i: int, total: int, rec: ConfigResult) -> str:
    cfg, m = rec.config, rec.measured
    name = "exact" if "exact" in rec.estimated else "portend"
    e = rec.estimated[name]
    line = (f"[{i + 1}/{total}] T={cfg.threshold:g} P={list(cfg.cuts)} D={list(cfg.tiers)}: "
            f"measured {m.latency_s * 1e3:.1f} ms, acc {m.accuracy:.3f}; "
            f"estimated {e.latency_s * 1e3:.1f} ms, acc {e.accuracy:.3f}")  # fmt: skip
    if m.split is not None and rec.estimated_split is not None:
        es = rec.estimated_split[name]
        for what, sp in (("measured", m.split), ("estimated", es)):
            line += (f"\n      {what:9s}: links {sp.links_s * 1e3:6.2f}, slowdown {sp.slowdown_s * 1e3:5.2f},"
                     f" compute+runtime at slowdown 1 {sp.bare_s * 1e3:5.2f} ms")  # fmt: skip
        line += f" (of which overhead {e.breakdown_s.get('overhead', 0.0) * 1e3:.2f} ms)"
    return line


def deploy_configs(
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
    split: bool,
    rounds: int,
    min_per_exit: int,
    realtime: int | None,
    gap_s: float,
    cpu_latency_us: int | None = None,
    cpu_affinity: str | None = None,
    passes: int = 1,
) -> ValidationResult:
    """Export, deploy and measure the configurations into ``out``: :func:`validate` after its checks.

    Args:
        out: where the bundles (``bundles/``), logs and plots go.
        model: the checkpoint's multi-exit model.
        prof: the profile, checked against the model.
        topo: the topology, its devices profiled.
        cm: the latency model of ``prof`` on ``topo`` (the configurations' plans).
        got: the test data, ``(x, y or None, ...)`` tensors; more samples than
            ``samples`` adds the accuracy pass.
        notes: what the checks found, carried into the result.

    The keyword arguments are :func:`~earlyexit.validation.run.validate`'s,
    checked (``niceness`` and ``realtime`` None where not allowed).

    Returns:
        The result, without ``wall_time_s`` (the caller times the whole run).
    """
    from earlyexit.export import export_bundle
    from earlyexit.planner import make_plan

    x_all = got[0].numpy().astype(np.float32)
    y_all = None if got[1] is None else got[1].numpy()
    with_accuracy_pass = len(x_all) > samples
    n_profile = int(prof.samples.entropy.shape[1]) if prof.samples is not None else None
    chosen = choose_configs(prof, topo, configs, seed=seed)
    best = chosen_config(prof, topo, accuracy_drop)
    if best is not None:  # the plan a user would deploy goes first: its latency CDF is plotted
        chosen = [best, *[c for c in chosen if c.key != best.key]][: max(configs, 1)]
    bundles: dict[tuple[int, ...], Path] = {}
    records: list[ConfigResult] = []
    cdf: list[float] = []
    ready = []  # (cfg, accuracy pass or None, timed sample indices)
    for cfg in chosen:
        if cfg.cuts not in bundles:
            path = out / "bundles" / ("cuts-" + "-".join(map(str, cfg.cuts)))
            verify = (got[0][:64], got[1][:64]) if got[1] is not None else got[0][:64]
            export_bundle(model, make_plan(cm, cfg.threshold, cfg.cuts, cfg.tiers), path,
                          formats="onnx", verify_data=verify, overwrite=True, exporter=exporter)  # fmt: skip
            bundles[cfg.cuts] = path
        if with_accuracy_pass:  # first: it tells which samples to time (every exit's share)
            acc = accuracy_pass(bundles[cfg.cuts], cfg, x_all, y_all)
            idx = stratified_indices(acc.exit_partition, samples, min(min_per_exit, samples))
            ready.append((cfg, acc, idx))
        else:
            ready.append((cfg, None, list(range(samples))))
    deploy_kw: dict[str, Any] = {"niceness": niceness, "rounds": rounds, "realtime": realtime,
                                 "gap_s": gap_s, "cpu_latency_us": cpu_latency_us,
                                 "cpu_affinity": cpu_affinity}  # fmt: skip
    runs = [
        (f"config-{i + 1}", bundles[cfg.cuts], cfg, idx) for i, (cfg, _, idx) in enumerate(ready)
    ]
    timed = measure_passes(runs, topo, x_all, y_all, passes,
                           log_dir=out / "logs" if keep_logs else None, progress=progress,
                           emulate_links=emulate_links, **deploy_kw)  # fmt: skip
    for i, ((cfg, acc, idx), meas) in enumerate(zip(ready, timed, strict=True)):
        n_parts = len(cfg.cuts)
        x = x_all[idx]
        if not with_accuracy_pass:
            acc = meas
        fractions = acc.exit_fractions(n_parts)
        exits = np.asarray(acc.exit_partition)[idx]
        same = (exits == meas.exit_partition) & (np.asarray(acc.prediction)[idx] == meas.prediction)

        def mean_of(m: Measured, exits: Any = exits, fractions: Any = fractions) -> float:
            return stratified_mean(m.latency_s, exits, fractions)  # over the test data's exits

        lat_split = None
        if split and emulate_links:
            lat_split = latency_split(bundles[cfg.cuts], cfg, topo, x, meas, mean=mean_of,
                                      **deploy_kw)  # fmt: skip
        rec = ConfigResult(
            config=cfg,
            measured=MeasuredSummary(
                latency_s=mean_of(meas),
                accuracy=acc.accuracy,
                exit_fractions=tuple(fractions),
                latency_p50_s=float(np.median(meas.latency_s)),
                latency_samples=len(meas.latency_s),
                accuracy_samples=len(acc.correct),
                accuracy_se=binomial_se(acc.accuracy, len(acc.correct), n_profile),
                latency_pass=LatencyPass(
                    meas.accuracy,
                    tuple(meas.exit_fractions(n_parts)),
                    float(same.mean()),
                    meas.mean_latency_s,
                ),  # fmt: skip
                degraded=meas.degraded,
                split=lat_split,
            ),
            estimated=estimates(prof, topo, cfg),
            estimated_split=estimated_split(prof, topo, cfg) if lat_split is not None else None,
        )
        records.append(rec)
        if i == 0:
            cdf = meas.latency_s
        if progress:
            progress(_progress_line(i, len(chosen), rec))
    return ValidationResult(
        summary=summarize(records, topo.source),
        configs=records,
        plots=plot(records, out, cdf, topo.source),
        out_dir=str(out),
        notes=notes,
        chosen=best,
        source=topo.source,
    )
