"""``earlyexit demo``: the whole pipeline on the embedded default, end to end.

1. load the shipped ResNet-20 checkpoint (or train one with ``--train``);
2. profile it on this machine (one thread per tier worker, as PORTEND limited
   its ARM tier to one core; the tiers' ``slowdown`` stands in for weaker hardware);
3. plan on the built-in ``portend-aws`` topology, against edge-only, cloud-only
   and Neurosurgeon, and draw the Pareto frontier;
4. export the plan's partitions as a verified bundle;
5. deploy the bundle over emulated links and compare measured with estimated.

Everything lands in ``DIR/`` with a ``report.md`` that links it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from earlyexit._checks import (
    atomic_output,
    check_output_dir,
    input_file,
    int_range,
    output_dir,
    removed_on_failure,
)

__all__ = ["register", "run_demo", "demo_topology", "DEFAULT_CHECKPOINT", "MAX_SAMPLES"]

DEFAULT_CHECKPOINT = (
    Path(__file__).resolve().parents[1] / "checkpoints" / "resnet20_fashionmnist.pt"
)
DEVICE = "cpu-1thread"
# emulated hardware of the PORTEND AWS tiers, relative to one core of this machine
SLOWDOWNS = {"edge": 4.0, "base-station": 2.0, "cloud": 1.0}
MAX_SAMPLES = 1000
"""Held-out test samples the demo can deploy (the odd half of the embedded test images)."""
MAX_EPOCHS = 1000


def demo_topology():
    """``portend-aws`` with every tier on this machine's profile and the demo's slowdowns.

    Example:
        >>> [t.slowdown for t in demo_topology().tiers]
        [4.0, 2.0, 1.0]
    """
    from earlyexit.formats import Topology
    from earlyexit.planner import bind_devices, load_builtin_topology

    topo = load_builtin_topology("portend-aws")
    topo = bind_devices(topo, {t.device: DEVICE for t in topo.tiers})
    data = topo.to_dict()
    for tier in data["tiers"]:
        tier["slowdown"] = SLOWDOWNS.get(tier["name"], 1.0)
    return Topology.from_dict(data)


class _Steps:
    """Prints numbered steps with their wall time."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.k, self.quiet = total, 0, quiet
        self.t0 = self.start = time.perf_counter()

    def __call__(self, text: str) -> None:
        now = time.perf_counter()
        if self.k and not self.quiet:
            print(f"    done in {now - self.t0:.1f} s", flush=True)
        self.k += 1
        self.t0 = now
        if not self.quiet:
            print(f"[{self.k}/{self.total}] {text}", flush=True)

    def finish(self) -> float:
        self("finished")
        return time.perf_counter() - self.start


def _train(out: Path, epochs: int, progress: bool):
    from earlyexit.training.cli import train_main

    ckpt = out / "model.pt"
    argv = [
        "--config", str(Path(__file__).resolve().parents[1] / "recipes" / "resnet20_fashionmnist.yaml"),
        f"--trainer.max_epochs={epochs}", f"--trainer.enable_progress_bar={str(progress).lower()}",
        f"--trainer.default_root_dir={out / 'train'}", f"--trainer.logger.init_args.save_dir={out / 'train'}",
        "--output", str(ckpt),
    ]  # fmt: skip
    if train_main(argv) != 0:
        raise RuntimeError("training failed")
    return ckpt


def run_demo(
    out: str | Path = "demo_out",
    *,
    train: bool = False,
    checkpoint: str | Path | None = None,
    epochs: int = 3,
    accuracy_drop: float = 0.0,
    samples: int = 300,
    formats: tuple[str, ...] = ("onnx", "torchscript", "pt2"),
    quiet: bool = False,
    keep_logs: bool = False,
) -> dict[str, Any]:
    """Run the demo and write its report.

    Args:
        out: output directory (created; if the demo fails, what it added is removed).
        train: train a model on the embedded data instead of loading the checkpoint.
        checkpoint: a full-configuration checkpoint (default: the shipped ResNet-20).
        epochs: training epochs with ``train``.
        accuracy_drop: the plan minimizes latency with accuracy at least the
            final exit's profiled accuracy minus this.
        samples: test samples run through the emulated deployment (1 .. :data:`MAX_SAMPLES`).
        formats: bundle formats to export.
        quiet: print nothing.
        keep_logs: keep the deployment's process logs in ``out/logs/``.

    Returns:
        The report's figures as a dict (also written to ``out/report.json``).

    Raises:
        FileNotFoundError: if the checkpoint is missing.
        ValueError: ``samples``, ``epochs`` or ``accuracy_drop`` out of range, ``out`` a file.
    """
    for name, value, hi in (("samples", samples, MAX_SAMPLES), ("epochs", epochs, MAX_EPOCHS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
            raise ValueError(f"{name} must be an integer in [1, {hi}], got {value!r}")
    if not 0.0 <= accuracy_drop <= 1.0:
        raise ValueError(f"accuracy_drop must be in [0, 1], got {accuracy_drop!r}")
    check_output_dir(out, "out")
    if train and checkpoint is not None:
        raise ValueError("give train (--train) or checkpoint (--checkpoint), not both")
    if not train:
        checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"checkpoint {checkpoint} not found; run with --train to train one"
            )
    with removed_on_failure(out) as out_path:
        return _run_demo(
            out_path, train, checkpoint, epochs, accuracy_drop, samples, formats, quiet, keep_logs
        )


def _run_demo(
    out: Path,
    train: bool,
    checkpoint: str | Path | None,
    epochs: int,
    accuracy_drop: float,
    samples: int,
    formats: tuple[str, ...],
    quiet: bool,
    keep_logs: bool,
) -> dict[str, Any]:
    """:func:`run_demo` after its checks, writing into ``out``."""
    import numpy as np

    import earlyexit
    from earlyexit.formats import atomic_write_text
    from earlyexit.planner import baselines, pareto
    from earlyexit.planner.plot import plot_pareto
    from earlyexit.profiling._cli import plot_profile

    steps = _Steps(6, quiet)
    if train:
        steps(f"training ResNet-20 on the embedded Fashion-MNIST subset ({epochs} epochs)")
        checkpoint = _train(out, epochs, not quiet)
    else:
        checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
        steps(f"loading {checkpoint}")
    model = earlyexit.load(checkpoint)

    # The shipped model never saw the embedded test images (they come from the
    # official test set): half of them profile it, the other half test the plan.
    from earlyexit.export.bundle import resolve_data

    test_x, test_y, _ = resolve_data("fashion-mnist", "test", model)
    prof_x, prof_y = test_x[0::2], test_y[0::2]
    if len(test_x[1::2]) < samples:
        raise ValueError(
            f"samples: {samples} asked, the embedded test images hold {len(test_x[1::2])} held-out ones"
        )
    eval_x, eval_y = test_x[1::2][:samples], test_y[1::2][:samples]
    batches = [(prof_x[i : i + 256], prof_y[i : i + 256]) for i in range(0, len(prof_x), 256)]

    steps("profiling exits, partition times (ONNX Runtime, 1 thread), serialization and hops")
    prof = earlyexit.profile(
        model, batches, DEVICE, threads=1, engine="onnx", gap_s=0.02, reps=8,
        dataset_name="fashion-mnist (embedded test images, even)", progress=not quiet,
        measure_hops=True,  # the runtime's own cost per hand-off (docs/spec.md#runtime-overhead)
    )  # fmt: skip
    prof.save(out / "profile.json")
    plot_profile(prof, out / "profile.png")

    steps("planning on portend-aws (P_lat) against the baselines; Pareto frontier")
    topo = demo_topology()
    topo.save(out / "topology.yaml")
    min_acc = float(prof.branch_accuracy[-1]) - accuracy_drop
    best = earlyexit.plan(prof, topo, min_accuracy=min_acc, estimator="exact")
    best.save(out / "plan.json")
    base = baselines(prof, topo, estimator="exact")
    frontier = pareto(prof, topo, estimator="exact")
    with atomic_output(out / "pareto.png") as tmp:
        plot_pareto(frontier, tmp, baselines=base, chosen=best)

    steps("exporting the plan's partitions (ONNX, TorchScript, torch.export) and verifying them")
    from earlyexit.export import export_bundle

    # verify and calibrate on the embedded data, which every install has
    manifest = export_bundle(
        model, best, out / "bundle", formats=formats, verify_data="fashion-mnist", overwrite=True
    )

    steps(f"deploying over emulated links: {len(eval_x)} held-out test samples, one at a time")
    from earlyexit.validation import Config, estimate, measure

    config = Config(best.threshold, tuple(best.cut_points), tuple(best.tier_indices), pareto=True)
    measured = measure(
        out / "bundle",
        config,
        topo,
        eval_x.numpy(),
        eval_y.numpy(),
        log_dir=out / "logs" if keep_logs else None,
    )
    estimates = estimate(prof, topo, config)
    validation = {
        "samples": len(measured.latency_s),
        "measured": {
            "mean_latency_s": measured.mean_latency_s,
            "p50_latency_s": float(np.percentile(measured.latency_s, 50)),
            "p99_latency_s": float(np.percentile(measured.latency_s, 99)),
            "accuracy": measured.accuracy,
            "exit_fractions": measured.exit_fractions(len(best.partitions)),
            "degraded": measured.degraded,
        },
        "estimated": estimates,
    }
    _plot_validation(measured, estimates, out / "validation.png")

    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "bundle": {"files": [f for p in manifest.partitions for f in p.files.values()]},
        "validation": validation,
        "profile": {
            "final_exit_accuracy": float(prof.branch_accuracy[-1]),
            "branch_accuracy": prof.branch_accuracy.tolist(),
        },
        "plan": best.to_dict(),
        "baselines": {
            k: {"latency_s": v.estimate.latency_s, "accuracy": v.estimate.accuracy}
            for k, v in base.items()
        },
        "pareto_points": len(frontier),
    }
    report["wall_time_s"] = steps.finish()
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out / "report.md", _markdown(report, best, base))
    if not quiet:
        print(_plan_text(best, base))
        print(_validation_text(validation))
        print(f"wrote {out}/report.md in {report['wall_time_s']:.0f} s")
    return report


def _plan_text(best, base) -> str:
    lines = [f"plan: threshold {best.threshold:.1f}, estimated {1e3 * best.estimate.latency_s:.1f} ms, "
             f"accuracy {100 * best.estimate.accuracy:.2f}%"]  # fmt: skip
    for part, frac in zip(best.partitions, best.estimate.exit_fractions, strict=True):
        lines.append(
            f"  {part.tier_name:>12}: blocks {part.first_block:>2}-{part.last_block:<2}  exits {100 * frac:5.1f}%"
        )
    for name, p in base.items():
        speedup = p.estimate.latency_s / best.estimate.latency_s
        lines.append(
            f"  vs {name:>12}: {1e3 * p.estimate.latency_s:7.1f} ms, {100 * p.estimate.accuracy:.2f}% "
            f"-> {speedup:.2f}x faster"
        )
    return "\n".join(lines)


def _validation_text(v: dict[str, Any]) -> str:
    m = v["measured"]
    lines = [
        f"deployment, {v['samples']} test samples one at a time (measured vs estimated):",
        f"  {'':>10} {'latency ms':>11} {'accuracy':>9}  exit fractions",
        f"  {'measured':>10} {1e3 * m['mean_latency_s']:11.2f} {100 * m['accuracy']:8.2f}%  "
        + " ".join(f"{100 * f:5.1f}%" for f in m["exit_fractions"]),
    ]
    for name, e in v["estimated"].items():
        lines.append(
            f"  {name:>10} {1e3 * e['latency_s']:11.2f} {100 * e['accuracy']:8.2f}%  "
            + " ".join(f"{100 * f:5.1f}%" for f in e["exit_fractions"])
        )
    lines.append(
        f"  p50 {1e3 * m['p50_latency_s']:.2f} ms, p99 {1e3 * m['p99_latency_s']:.2f} ms, degraded {m['degraded']}"
    )
    return "\n".join(lines)


def _plot_validation(measured, estimates: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    lat = np.sort(1e3 * np.asarray(measured.latency_s))
    ax1.plot(lat, np.arange(1, lat.size + 1) / lat.size, label="measured (CDF)")
    ax1.axvline(lat.mean(), color="k", linestyle=":", label=f"measured mean {lat.mean():.1f} ms")
    for (name, e), color in zip(estimates.items(), ("tab:orange", "tab:green"), strict=False):
        ax1.axvline(
            1e3 * e["latency_s"],
            color=color,
            linestyle="--",
            label=f"{name} estimate {1e3 * e['latency_s']:.1f} ms",
        )
    ax1.set(xlabel="end-to-end latency (ms)", ylabel="fraction of samples", title="Latency")
    ax1.legend(fontsize=8)
    parts = len(next(iter(estimates.values()))["exit_fractions"])
    xs = np.arange(parts)
    width = 0.8 / (1 + len(estimates))
    ax2.bar(xs, measured.exit_fractions(parts), width, label="measured")
    for k, (name, e) in enumerate(estimates.items(), 1):
        ax2.bar(xs + k * width, e["exit_fractions"], width, label=name)
    ax2.set(xlabel="partition", ylabel="exit fraction", title="Exit fractions")
    ax2.set_xticks(xs + width * len(estimates) / 2, [str(k + 1) for k in xs])
    ax2.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


def _markdown(report: dict[str, Any], best, base) -> str:
    return f"""# earlyexit demo report

ResNet-20 on Fashion-MNIST (`{report["checkpoint"]}`), planned for the PORTEND
AWS topology (edge device, base station, cloud; 10 Mb/s + 20 ms, then 400 Mb/s + 40 ms).

## The plan

```
{_plan_text(best, base)}
```

Files: [plan.json](plan.json), [profile.json](profile.json), [topology.yaml](topology.yaml).

## The deployment, measured against the estimates

The bundle ([bundle/](bundle/manifest.json)) ran with one process per tier,
ZeroMQ between them and emulated links (bandwidth, MTU fragments,
propagation), with the tiers' slowdowns emulated on top of real computation.

```
{_validation_text(report["validation"])}
```

![validation](validation.png)

## Pareto frontier

![Pareto frontier](pareto.png)

## Profile

![profile](profile.png)

Wall time of the demo: {report["wall_time_s"]:.0f} s.
"""


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(
        args.out,
        train=args.train,
        checkpoint=args.checkpoint,
        epochs=args.epochs,
        samples=args.samples,
        keep_logs=args.keep_logs,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser("demo", help="run the end-to-end demo on the embedded default")
    p.add_argument(
        "--out",
        type=output_dir,
        default="demo_out",
        help="output directory (what a failed run added to it is removed)",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="train the model first instead of loading the checkpoint",
    )
    p.add_argument(
        "--epochs",
        type=int_range(1, MAX_EPOCHS),
        default=3,
        help="training epochs with --train",
    )
    p.add_argument(
        "--checkpoint",
        type=input_file,
        default=None,
        help="use this full-configuration checkpoint",
    )
    p.add_argument(
        "--samples",
        type=int_range(1, MAX_SAMPLES),
        default=300,
        help=f"test samples for the deployment (1 to {MAX_SAMPLES})",
    )
    p.add_argument(
        "--keep-logs", action="store_true", help="keep the deployment's process logs in OUT/logs/"
    )
    p.set_defaults(func=_cmd_demo)
