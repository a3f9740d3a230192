"""Benchmark of exported bundles: early exit in ONNX Runtime against the plain ONNX graph.

The baseline to beat is the plain backbone (every block and its classifier)
exported as one ONNX graph and run by ONNX Runtime, with the same threading.
The bundle runs in one process through :class:`earlyexit.runtime.session.BundleSession`
with per-sample early exit (only the samples that stay go on); the threshold
is picked from the data so that about half the test samples leave at the first
exit. Printed side by side, from one run:

* throughput (samples/s) of the plain graph and of the bundle at batch 64 and
  batch 1, and their ratio (goals: >= 1.2x at batch 64, >= 0.9x at batch 1);
* per-partition latency, ONNX Runtime against eager PyTorch;
* file sizes per format and precision (fp32, int8, fp16), and export times.

Usage::

    python benchmarks/bench_export.py [--checkpoint checkpoints/resnet20_fashionmnist.pt]
        [--exits 3,10] [--threads 1] [--rounds 5]

Without a checkpoint, ResNet-20 (1x28x28) with batch-norm statistics estimated
on the training split stands in (timing does not depend on the weights; the
threshold is still taken from the data).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import earlyexit
from earlyexit.data import EarlyExitDataModule
from earlyexit.export import export_bundle
from earlyexit.formats import Estimate, PartitionPlan, Plan
from earlyexit.runtime.session import BundleSession, session_options
from earlyexit.surgery.slicing import slice

DEFAULT_CHECKPOINT = (
    Path(__file__).resolve().parents[1] / "checkpoints" / "resnet20_fashionmnist.pt"
)


def _model(checkpoint: str | None) -> tuple[earlyexit.MultiExitModel, str]:
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if path.is_file():
        return earlyexit.load(path).eval(), str(path)
    if checkpoint:
        sys.exit(f"checkpoint {checkpoint} not found")
    torch.manual_seed(0)
    dm = EarlyExitDataModule("fashion-mnist", batch_size=128, augment=False)
    backbone = earlyexit.backbones.create("resnet20", num_classes=10, in_chans=1)
    model = earlyexit.MultiExitModel(earlyexit.decompose(backbone, input_shape=(1, 28, 28)))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(dm.dataloader("train", shuffle=False)):
            model(x)
            if i == 3:
                break
    model.eval()
    model.metadata, model.normalization = dm.metadata, dm.normalization
    return model, "ResNet-20 with batch-norm statistics from data (no checkpoint found)"


def _time_loop(fn, x: np.ndarray, batch: int) -> float:
    """Seconds to push every sample of ``x`` through ``fn`` in batches of ``batch``."""
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        fn(x[i : i + batch])
    return time.perf_counter() - t0


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--exits", default="3,10", help="last block of each partition")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads, every engine")
    ap.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    ap.add_argument("--samples", type=int, default=2000, help="test samples timed per round")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, source = _model(args.checkpoint)
    exits = tuple(int(e) for e in args.exits.split(","))
    dm = EarlyExitDataModule(
        (getattr(model, "metadata", None) or {}).get("dataset", "fashion-mnist"),
        batch_size=512, augment=False, normalization=getattr(model, "normalization", None),
    )  # fmt: skip
    batches = list(dm.dataloader("test", shuffle=False))
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    x_np = xs.numpy()[: args.samples]

    # threshold: about half of the test samples leave at the first exit
    with torch.no_grad():
        first = model.select_exits([exits[0]])(xs)[0]
    t = model.temperatures[model.exits.index(exits[0])]
    ent = earlyexit.normalized_entropy(first, t).sort().values
    mid = len(ent) // 2
    threshold = float(ent[mid - 1] + ent[mid]) / 2
    parts_plan, prev = [], 0
    for tier, e in enumerate(exits):
        parts_plan.append(PartitionPlan(prev + 1, e, tier, f"tier{tier}"))
        prev = e
    breakdown = dict.fromkeys(("compute", "serialize", "transmit", "propagate"), 0.0)
    plan = Plan(threshold, tuple(parts_plan),
                Estimate(0.0, 0.0, (1 / len(exits),) * len(exits), breakdown))  # fmt: skip

    print(f"model: {source}; exits {list(exits)}; threshold {threshold:.4f}; "
          f"{args.threads} intra-op thread(s); onnxruntime {ort.__version__}, torch {torch.__version__}")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ---- exports (verification included in the time, as `earlyexit export` runs it)
        t0 = time.perf_counter()
        arm = export_bundle(model, plan, tmp / "arm", target="arm", verify_data=(xs, ys))
        t_arm = time.perf_counter() - t0
        t0 = time.perf_counter()
        export_bundle(model, plan, tmp / "gpu", formats="onnx", target="gpu", verify_data=(xs, ys))
        t_gpu = time.perf_counter() - t0

        # ---- the plain backbone as one ONNX graph
        plain = torch.nn.Sequential(*model.blocks[: exits[-1]], model.heads[str(exits[-1])]).eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            write_onnx_plain(plain, tmp / "plain.onnx", xs[:2])
        t_plain = time.perf_counter() - t0
        opts = session_options(args.threads)
        plain_sess = ort.InferenceSession(str(tmp / "plain.onnx"), opts,
                                          providers=["CPUExecutionProvider"])  # fmt: skip
        in_name = plain_sess.get_inputs()[0].name

        def run_plain(b: np.ndarray) -> None:
            plain_sess.run(None, {in_name: b})

        sessions = {
            p: BundleSession(tmp / "arm", p, intra_op_threads=args.threads)
            for p in ("fp32", "int8")
        }
        sessions["fp16"] = BundleSession(tmp / "gpu", "fp16", intra_op_threads=args.threads)
        fr = sessions["fp32"].predict(x_np)
        frac = [float((fr["exit_partition"] == k).mean()) for k in range(len(exits))]
        print(f"exit fractions (fp32 bundle, test split): "
              f"{', '.join(f'block {e}: {f:.3f}' for e, f in zip(exits, frac, strict=True))}")  # fmt: skip

        # ---- throughput, alternating plain / bundle each round
        print("\nthroughput (samples/s; median of rounds; same threads for every engine)")
        print(f"{'batch':>6} {'plain ONNX':>11} {'bundle fp32':>12} {'ratio':>7} {'goal':>6}"
              f" {'bundle int8':>12} {'ratio':>7} {'bundle fp16':>12} {'ratio':>7}")  # fmt: skip
        goals = {64: 1.2, 1: 0.9}
        ok = True
        for batch in (64, 1):
            n = len(x_np) if batch > 1 else min(len(x_np), 500)
            xb = x_np[:n]
            rates: dict[str, list[float]] = {k: [] for k in ("plain", "fp32", "int8", "fp16")}
            run_plain(xb[:batch])
            for s in sessions.values():
                s.predict(xb[:batch])
            for _ in range(args.rounds):
                rates["plain"].append(n / _time_loop(run_plain, xb, batch))
                for name, s in sessions.items():
                    rates[name].append(n / _time_loop(s.predict, xb, batch))
            med = {k: statistics.median(v) for k, v in rates.items()}
            r = {k: med[k] / med["plain"] for k in ("fp32", "int8", "fp16")}
            ok &= r["fp32"] >= goals[batch]
            print(f"{batch:>6} {med['plain']:>11.0f} {med['fp32']:>12.0f} {r['fp32']:>6.2f}x "
                  f"{goals[batch]:>5.1f}x {med['int8']:>12.0f} {r['int8']:>6.2f}x "
                  f"{med['fp16']:>12.0f} {r['fp16']:>6.2f}x")  # fmt: skip

        # ---- per-partition latency: ONNX Runtime against eager PyTorch
        print("\nper-partition latency (ms, median): ONNX Runtime fp32 vs eager PyTorch")
        print(
            f"{'partition':>10} {'blocks':>7} {'batch':>6} {'onnxruntime':>12} {'eager':>8} {'speed-up':>9}"
        )
        parts = slice(model, plan)
        sess = sessions["fp32"]
        with torch.no_grad():
            for batch in (1, 64):
                h = xs[:batch]
                for k, p in enumerate(parts):
                    hn = h.numpy()
                    t_ort = _median_time(lambda k=k, hn=hn: sess.run_partition(k, hn), 30)
                    t_eager = _median_time(lambda p=p, h=h: p(h), 30)
                    print(f"{k:>10} {p.first_block:>3}-{p.last_block:<3} {batch:>6} "
                          f"{t_ort * 1e3:>12.3f} {t_eager * 1e3:>8.3f} {t_eager / t_ort:>8.1f}x")  # fmt: skip
                    if not p.is_last:
                        h = p(h)[2]

        # ---- sizes and export times
        print("\nfile sizes (KiB)")
        print(
            f"{'partition':>10} {'onnx fp32':>10} {'onnx int8':>10} {'onnx fp16':>10} {'torchscript':>12} {'pt2':>8}"
        )
        gpu = BundleSession(tmp / "gpu", "fp16").manifest
        for mp, gp in zip(arm.partitions, gpu.partitions, strict=True):
            b, gb = mp.extra["bytes"], gp.extra["bytes"]
            print(f"{mp.index:>10} {b['onnx'] / 1024:>10.0f} {b['onnx_int8'] / 1024:>10.0f} "
                  f"{gb['onnx_fp16'] / 1024:>10.0f} {b['torchscript'] / 1024:>12.0f} {b['pt2'] / 1024:>8.0f}")  # fmt: skip
        print(f"{'plain':>10} {(tmp / 'plain.onnx').stat().st_size / 1024:>10.0f}")
        w = arm.extra["export"]["write_time_s"]
        print(f"\nexport time: --target arm, all formats, verified on {len(xs)} samples: {t_arm:.1f} s "
              f"(writing: {', '.join(f'{k} {v:.1f} s' for k, v in w.items())}); "
              f"--target gpu, onnx only: {t_gpu:.1f} s; plain ONNX graph: {t_plain:.1f} s")  # fmt: skip
        q = arm.extra["quantization"]["int8"]
        if "exit_accuracy" in q:
            print("int8 accuracy per exit (fp32 -> int8): " + ", ".join(
                f"block {e}: {a:.4f} -> {b:.4f} ({b - a:+.4f})"
                for e, a, b in zip(q["exits"], q["exit_accuracy_fp32"], q["exit_accuracy"], strict=True)
            ) + f"; early exit {q['accuracy_fp32']:.4f} -> {q['accuracy']:.4f}")  # fmt: skip
    print("\ngoals met" if ok else "\ngoals NOT met")
    return 0


def write_onnx_plain(module: torch.nn.Module, path: Path, example: torch.Tensor) -> None:
    """The plain backbone as one ONNX graph (same exporter and settings as the bundle)."""
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["input"],
                          output_names=["logits"], dynamo=True, external_data=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
