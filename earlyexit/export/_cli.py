"""``earlyexit export``: checkpoint + plan -> verified bundle. A thin wrapper of ``export_bundle``.

Every argument is checked where it enters: a bad value ends the command with
exit code 2 and one line on stderr that names the argument and what is
accepted, before anything is loaded or written. The choices and defaults come
from :mod:`earlyexit.export.constants` (torch-free), as ``export_bundle``'s do.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from earlyexit._checks import float_range, input_file, int_range
from earlyexit._cliutil import given
from earlyexit._signatures import add_param, read_signature
from earlyexit.export import constants
from earlyexit.export.constants import FORMATS, ONNX_EXPORTERS, TARGETS

__all__ = ["register", "summarize"]

_PROG = "earlyexit export"
# export_bundle's errors start with the parameter's name; the flag that set it
_FLAG_OF = {
    "plan": "--plan",
    "verify_data": "--data",
    "calibration_data": "--data",
    "target": "--target",
    "unknown target": "--target",
    "tolerance": "--tolerance",
    "rtol": "--rtol",
    "opset": "--opset",
    "exits": "--plan",
}
_MIN_OPSET = 7
_LOADED = ("model", "plan", "out_dir")  # export_bundle's parameters the command passes itself


def _formats(text: str) -> list[str]:
    out = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {bad or text!r}; choose from {', '.join(FORMATS)} (comma-separated)"
        )
    return list(dict.fromkeys(out))


def _output_dir(text: str) -> str:
    p = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; expected a directory to create")
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        raise argparse.ArgumentTypeError(
            f"{text!r} exists and is not a directory; expected a new directory or a bundle "
            "to replace (--overwrite)"
        )
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{str(parent)!r} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(
                    f"cannot create {text!r}: {str(parent)!r} is not writable"
                )
            break
    return text


def _opset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    import onnx  # the newest opset this onnx knows (onnx is torch-free)

    top = int(onnx.defs.onnx_opset_version())
    if value is None or not _MIN_OPSET <= value <= top:
        raise argparse.ArgumentTypeError(f"expected an int in [{_MIN_OPSET}, {top}], got {text!r}")
    return value


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
    # export_bundle takes the loaded model and plan; the command takes their files
    p.add_argument("--checkpoint", required=True, type=input_file,
                   help="earlyexit checkpoint (.pt or .ckpt)")  # fmt: skip
    p.add_argument("--plan", required=True, type=input_file, help="plan JSON (earlyexit.plan/1)")
    # options of export_bundle take their defaults and help from its signature
    sig = read_signature("earlyexit.export.bundle", "export_bundle", vars(constants))
    add_param(p, sig["formats"], "--format", type=_formats, default=list(FORMATS))
    add_param(p, sig["target"], choices=TARGETS)
    add_param(p, sig["opset"], type=_opset)
    p.add_argument(
        "--data",
        default=None,
        metavar="SPEC",
        help="data spec for calibration (profile split) and verification (test split); "
        "default: the dataset recorded in the checkpoint",
    )
    add_param(p, sig["calibration_samples"], type=int_range(1))
    add_param(p, sig["verify_samples"], type=int_range(1))
    add_param(p, sig["exporter"], choices=ONNX_EXPORTERS)
    add_param(p, sig["tolerance"], "--tolerance", "--atol", type=float_range(0, lo_open=True))
    add_param(p, sig["rtol"], type=float_range(0, 1, hi_open=True))
    add_param(p, sig["force"])
    add_param(p, sig["overwrite"])
    p.add_argument(
        "-o", "--output", required=True, type=_output_dir, help="bundle directory to create"
    )
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
        fp32 = max((max(d.values()) for f, d in diffs.items() if f in FORMATS), default=0.0)
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


def _fail(message: str) -> int:
    print(f"{_PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def _cmd_export(args: argparse.Namespace) -> int:
    import pickle
    import warnings

    from earlyexit.checkpoint import load
    from earlyexit.export.bundle import _check_replaceable, export_bundle
    from earlyexit.formats import Plan

    try:
        _check_replaceable(Path(args.output), args.overwrite)
    except FileExistsError as err:
        return _fail(f"argument -o/--output: {err}")
    try:
        plan = Plan.load(args.plan)
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as err:
        return _fail(f"argument --plan: {err}")
    try:
        model = load(args.checkpoint)
    except (OSError, ValueError, TypeError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
        return _fail(f"argument --checkpoint: {err}")
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            sig = read_signature("earlyexit.export.bundle", "export_bundle", vars(constants))
            manifest = export_bundle(model, plan, args.output, **given(args, sig, _LOADED),
                                     calibration_data=args.data, verify_data=args.data)  # fmt: skip
    except FileExistsError as err:
        return _fail(f"argument -o/--output: {err}")
    except (ValueError, TypeError, FileNotFoundError) as err:
        text = str(err)
        flag = next((f for p, f in _FLAG_OF.items() if text.startswith(p)), None)
        return _fail(f"argument {flag}: {text}" if flag else text)
    finally:  # our own warnings (--force, exporter fallback) as one line each
        for w in caught:
            if f"{os.sep}earlyexit{os.sep}" in str(w.filename):
                print(f"{_PROG}: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    print(summarize(manifest, args.output))
    return 0
