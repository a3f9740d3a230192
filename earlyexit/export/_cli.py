"""``earlyexit export``: checkpoint + plan -> verified bundle. A thin wrapper of ``export_bundle``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "summarize"]

_FORMATS = ("onnx", "torchscript", "pt2")


def _formats(text: str) -> list[str]:
    out = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in out if f not in _FORMATS]
    if bad or not out:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {bad or text!r}; choose from {', '.join(_FORMATS)} (comma-separated)"
        )
    return out


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint's partitions per a plan as a verified bundle",
        description=(
            "Slice a trained multi-exit model per a plan, export every partition (ONNX, "
            "TorchScript, torch.export), check each file and the chained early exit against "
            "the eager model, then write the bundle with its manifest.json."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="earlyexit checkpoint (.pt or .ckpt)")
    p.add_argument("--plan", required=True, help="plan JSON (earlyexit.plan/1)")
    p.add_argument(
        "--format",
        type=_formats,
        default=list(_FORMATS),
        dest="formats",
        help="comma-separated formats (default: onnx,torchscript,pt2)",
    )
    p.add_argument(
        "--target",
        choices=("cpu", "arm", "gpu"),
        default="cpu",
        help="arm adds int8 ONNX (calibrated on the profiling split); gpu adds fp16 ONNX",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument(
        "--data",
        default=None,
        metavar="SPEC",
        help="data spec for calibration (profile split) and verification (test split); "
        "default: the dataset recorded in the checkpoint",
    )
    p.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript"),
        default="dynamo",
        help="ONNX exporter (default dynamo; torchscript is the legacy one)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="max abs difference from eager allowed for fp32 files (default 1e-4)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    p.add_argument("-o", "--output", required=True, help="bundle directory to create")
    p.set_defaults(func=_cmd_export)  # fmt: skip


def summarize(manifest: Any, out_dir: str) -> str:
    """A human-readable summary of an exported bundle's manifest."""
    extra = manifest.extra
    ver = extra.get("verification", {})
    lines = [f"bundle {out_dir}: {len(manifest.partitions)} partition(s), threshold "
             f"{manifest.threshold:g}, exits {extra.get('exits')}, target {extra.get('target')}"]  # fmt: skip
    for mp in manifest.partitions:
        files = ", ".join(
            f"{name} ({mp.extra.get('bytes', {}).get(fmt, 0) / 1024:.0f} KiB)"
            for fmt, name in mp.files.items()
        )
        diffs = mp.extra.get("max_abs_diff", {})
        fp32 = max((max(d.values()) for f, d in diffs.items() if f in _FORMATS), default=0.0)
        lines.append(f"  partition {mp.index}: blocks {mp.extra.get('first_block')}.."
                     f"{mp.extra.get('last_block')} on {mp.extra.get('tier_name') or mp.extra.get('tier')}: "
                     f"{files}; fp32 max abs diff {fp32:.2g}")  # fmt: skip
    chained = ver.get("chained", {})
    for fmt, c in chained.items():
        lines.append(f"  verified {fmt}: {c['same']}/{c['samples']} samples with the same exit and "
                     f"class as MultiExitModel.predict ({c['borderline']} borderline) on {ver.get('data')}")  # fmt: skip
    if "accuracy" in ver:
        lines.append(f"  early-exit accuracy (eager): {ver['accuracy']:.4f}")
    for prec, q in extra.get("quantization", {}).items():
        if "exit_accuracy_change" in q:
            change = ", ".join(
                f"exit {e}: {a0:.4f} -> {a1:.4f} ({d:+.4f})"
                for e, a0, a1, d in zip(q["exits"], q["exit_accuracy_fp32"], q["exit_accuracy"],
                                        q["exit_accuracy_change"], strict=True)
            )  # fmt: skip
            lines.append(f"  {prec} accuracy per exit (fp32 -> {prec}): {change}")
            lines.append(f"  {prec} early-exit accuracy: {q['accuracy_fp32']:.4f} -> "
                         f"{q['accuracy']:.4f} ({q['accuracy_change']:+.4f})")  # fmt: skip
    lines.append(f"  export time {extra.get('export', {}).get('time_s', 0):.1f} s")
    return "\n".join(lines)


def _cmd_export(args: argparse.Namespace) -> int:
    from earlyexit.export.bundle import export_bundle
    from earlyexit.training.checkpoint import load

    model = load(args.checkpoint)
    try:
        manifest = export_bundle(
            model,
            args.plan,
            args.output,
            formats=args.formats,
            target=args.target,
            opset=args.opset,
            calibration_data=args.data,
            verify_data=args.data,
            overwrite=args.overwrite,
            exporter=args.exporter,
        )
    except FileExistsError as err:
        print(f"earlyexit export: error: {err}", file=sys.stderr)
        return 2
    print(summarize(manifest, args.output))
    return 0
