"""The runtime's own overhead: a 3-tier deployment on loopback against one process.

Runs the same model two ways and prints them side by side:

* **one process**: :meth:`BundleSession.predict` (or the synthetic model's
  in-process early exit), one sample at a time;
* **3 tiers on loopback**: one worker process per partition, ZeroMQ between
  them, no link emulation, a client in this process. Latency is measured with
  one sample in flight at a time; throughput with every sample submitted at
  once (pipelined across the tiers), with and without micro-batching.

Usage::

    python benchmarks/bench_runtime.py --bundle bundle/ [--samples 500] [--json]
    python benchmarks/bench_runtime.py --synthetic          # no bundle, numpy model

Without ``--bundle`` or ``--synthetic`` it exports an (untrained) ResNet-20 in
3 partitions to a temporary bundle first (needs torch for that step only).
The threshold is set so that about a third of the samples leave at each exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from earlyexit.runtime.deployment import deploy


def _stats(lat: list[float], total_s: float, n: int) -> dict[str, float]:
    a = np.asarray(lat) * 1e3
    return {
        "p50_ms": float(np.percentile(a, 50)) if a.size else float("nan"),
        "p99_ms": float(np.percentile(a, 99)) if a.size else float("nan"),
        "throughput_per_s": n / total_s,
    }


def _one_process(predict: Callable[[np.ndarray], object], x: np.ndarray) -> dict[str, float]:
    for xi in x[:10]:
        predict(xi[None])
    lat = []
    t_all = time.perf_counter()
    for xi in x:
        t0 = time.perf_counter()
        predict(xi[None])
        lat.append(time.perf_counter() - t0)
    return _stats(lat, time.perf_counter() - t_all, len(x))


def _deployed(x: np.ndarray, **kwargs: object) -> dict[str, dict[str, float]]:
    out = {}
    with deploy(**kwargs) as d:  # type: ignore[arg-type]
        d.run(x[:10], one_at_a_time=True)  # warm-up
        t0 = time.perf_counter()
        res = d.run(x, one_at_a_time=True, timeout_s=120)
        out["one_at_a_time"] = _stats([r.latency_s for r in res], time.perf_counter() - t0, len(x))
        t0 = time.perf_counter()
        res = d.run(x, timeout_s=300)
        out["pipelined"] = _stats([r.latency_s for r in res], time.perf_counter() - t0, len(x))
        out["exits"] = np.bincount([r.partition for r in res], minlength=d.num_partitions).tolist()
    return out


def _export_demo_bundle(out_dir: Path) -> Path:
    import torch

    from earlyexit import backbones
    from earlyexit.export import export_bundle
    from earlyexit.formats import Estimate, PartitionPlan, Plan
    from earlyexit.surgery import MultiExitModel, decompose

    torch.manual_seed(0)
    model = MultiExitModel(
        decompose(backbones.create("resnet20", num_classes=10)), num_classes=10
    ).eval()
    est = Estimate(
        0.0,
        0.0,
        (0.3, 0.3, 0.4),
        dict.fromkeys(("compute", "serialize", "transmit", "propagate"), 0.0),
    )
    plan = Plan(
        0.5,
        (
            PartitionPlan(1, 3, 0, "edge"),
            PartitionPlan(4, 6, 1, "base-station"),
            PartitionPlan(7, 10, 2, "cloud"),
        ),
        est,
    )
    export_bundle(model, plan, out_dir, formats="onnx", overwrite=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a bundle with 3 partitions")
    parser.add_argument("--synthetic", action="store_true", help="numpy model, no bundle")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    if args.synthetic:
        from earlyexit.runtime.synthetic import SyntheticModel

        model_kwargs = {"num_partitions": 3, "hidden": 256, "repeat": 4}
        model = SyntheticModel(**model_kwargs)
        x = model.inputs(args.samples)
        ent = [model.run_partition(0, x)[1], None]
        threshold = float(np.quantile(ent[0], 1 / 3))

        def predict(xi: np.ndarray) -> object:
            return model.reference(xi, threshold)

        target: dict[str, object] = {"synthetic": model_kwargs}
        name = "synthetic MLP (3 partitions)"
    else:
        from earlyexit.runtime.session import BundleSession

        bundle = (
            Path(args.bundle)
            if args.bundle
            else _export_demo_bundle(Path(tempfile.mkdtemp(prefix="bench-runtime-")) / "bundle")
        )
        session = BundleSession(bundle)
        if session.num_partitions != 3:
            raise SystemExit(f"the bundle has {session.num_partitions} partitions; 3 are needed")
        x = rng.standard_normal((args.samples, *session.manifest.input_shape)).astype(np.float32)
        threshold = float(np.quantile(session.run_partition(0, x)[1], 1 / 3))

        def predict(xi: np.ndarray) -> object:
            return session.predict(xi, threshold)

        target = {"bundle": bundle}
        name = f"bundle {bundle}"

    report = {
        "model": name,
        "samples": args.samples,
        "threshold": threshold,
        "one_process": _one_process(predict, x),
    }
    report["three_tiers"] = _deployed(x, threshold=threshold, **target)
    report["three_tiers_batch8"] = _deployed(
        x, threshold=threshold, max_batch=8, batch_timeout_s=0.002, **target
    )
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    one = report["one_process"]
    print(
        f"{name}, {args.samples} samples, threshold {threshold:.3f}, "
        f"exits per partition {report['three_tiers']['exits']}"
    )
    print(f"{'':38s}{'p50 ms':>9s}{'p99 ms':>9s}{'samples/s':>11s}")
    rows = [
        ("one process, one at a time", one),
        ("3 tiers loopback, one at a time", report["three_tiers"]["one_at_a_time"]),
        ("3 tiers loopback, pipelined", report["three_tiers"]["pipelined"]),
        ("3 tiers, micro-batch 8, pipelined", report["three_tiers_batch8"]["pipelined"]),
    ]
    for label, s in rows:
        print(f"{label:38s}{s['p50_ms']:9.2f}{s['p99_ms']:9.2f}{s['throughput_per_s']:11.0f}")
    t = report["three_tiers"]["one_at_a_time"]
    print(
        f"runtime overhead per sample (p50): {t['p50_ms'] - one['p50_ms']:.2f} ms; "
        f"pipelined throughput / one process: "
        f"{report['three_tiers']['pipelined']['throughput_per_s'] / one['throughput_per_s']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
