"""``export_bundle``: a plan's partitions as verified ONNX / TorchScript / torch.export files.

The bundle (docs/spec.md, *Bundle*) is written into a temporary sibling directory;
every file is loaded back and checked against the eager model, the partitions
are chained with early exit and compared with ``MultiExitModel.predict`` on the
verification samples, and only then is ``manifest.json`` written and the
directory renamed into place. Any failure removes the half-written bundle.

This module checks the arguments and runs the steps, each in a module of its own:
:mod:`~earlyexit.export.data` (the samples), :mod:`~earlyexit.export.write`
(files, manifest, directory), :mod:`~earlyexit.export.verify` (every file and
the chained early exit against eager PyTorch) and :mod:`~earlyexit.export.report`
(accuracy per exit and per precision).

Example:
    ```python
    import earlyexit
    from earlyexit.export import export_bundle
    model = earlyexit.load("checkpoints/resnet20_fashionmnist.pt")
    plan = earlyexit.Plan.load("plan.json")
    manifest = export_bundle(model, plan, "bundle/", target="arm")
    ```
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from earlyexit.export import report as _report
from earlyexit.export import verify as _verify
from earlyexit.export import write as _write
from earlyexit.export import writers as _writers  # noqa: F401  (tests replace its writers)
from earlyexit.export.constants import (
    FILE_SUFFIX,
    FORMATS,
    FP32_ATOL,
    FP32_RTOL,
    ONNX_EXPORTERS,
    TARGETS,
)
from earlyexit.export.data import DataArg, resolve_data
from earlyexit.formats import Manifest, Plan
from earlyexit.surgery.multi_exit import MultiExitModel
from earlyexit.surgery.slicing import slice

__all__ = [
    "FORMATS",
    "TARGETS",
    "FILE_SUFFIX",
    "DataArg",
    "check_plan_matches",
    "export_bundle",
    "resolve_data",
]

_CHECK_BATCH = 32
_EAGER_BATCH = 256
_check_replaceable = _write.check_replaceable  # the name ``earlyexit export`` imports


def _check_args(
    model: Any, plan: Any, formats: Any, target: str, opset: int | None
) -> tuple[Plan, tuple[str, ...]]:
    if not isinstance(model, MultiExitModel):
        raise TypeError(
            f"export_bundle expects an earlyexit.MultiExitModel, got {type(model).__name__}"
        )
    if isinstance(plan, (str, os.PathLike)):
        plan = Plan.load(plan)
    if not isinstance(plan, Plan):
        raise TypeError(
            f"plan must be an earlyexit.formats.Plan or a path to plan.json, got {type(plan).__name__}"
        )
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown format(s) {unknown or formats}; valid: {', '.join(FORMATS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    if target != "cpu" and "onnx" not in formats:
        raise ValueError(
            f"target {target!r} adds quantized ONNX files, so formats must include 'onnx'"
        )
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ValueError(f"opset must be an int >= 7, got {opset!r}")
    return plan, formats  # fmt: skip


def _check_tolerances(tolerance: Any, rtol: Any) -> None:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not number(tolerance) or not tolerance > 0:
        raise ValueError(f"tolerance (atol) must be a finite number > 0, got {tolerance!r}")
    if not number(rtol) or not 0 <= rtol < 1:
        raise ValueError(f"rtol must be a number in [0, 1), got {rtol!r}")


def _named(fn: Any, name: str, *args: Any) -> Any:
    """Call ``fn``; a ValueError or TypeError names the argument ``name`` first."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as err:
        raise (TypeError if isinstance(err, TypeError) else ValueError)(f"{name}: {err}") from err


def check_plan_matches(model: MultiExitModel, plan: Plan, *, force: bool = False) -> None:
    """Refuse a plan that was made for another model than ``model``.

    A plan made by :func:`earlyexit.plan` records the profiled model in its
    ``extra``: the backbone name (``model``; not ``"synthetic"`` or ``"custom"``),
    the block count (``num_blocks``)
    and the digest of the weights (``model_digest``,
    :func:`earlyexit.profiling.model_digest`). Each one recorded is compared
    with ``model``; a plan without them (hand-written, synthetic) is only
    checked against the model's exits when it is sliced.

    Args:
        model: the model to export.
        plan: its plan.
        force: warn (``UserWarning``) instead of raising.

    Raises:
        ValueError: if the plan records another model (and not ``force``).
    """
    if plan.cut_points[-1] > model.num_blocks:
        raise ValueError(
            f"plan: its last partition ends at block {plan.cut_points[-1]}, but the model has "
            f"{model.num_blocks} blocks (1..{model.num_blocks}); it was made for another model"
        )
    extra = dict(plan.extra)
    problems = []
    n = extra.get("num_blocks")
    if isinstance(n, int) and not isinstance(n, bool) and n != model.num_blocks:
        problems.append(f"it was made for a model of {n} blocks, this one has {model.num_blocks}")
    name, backbone = extra.get("model"), (model.config or {}).get("backbone")
    if (
        isinstance(name, str) and name not in ("", "custom", "synthetic")
        and isinstance(backbone, str) and backbone and name != backbone
    ):  # fmt: skip
        problems.append(f"it was made for model {name!r}, this one is {backbone!r}")
    want = extra.get("model_digest")
    if isinstance(want, str) and want and not problems:
        from earlyexit.surgery.digest import model_digest

        got = model_digest(model)
        if got != want:
            problems.append(
                f"its profile was made with other weights or exit temperatures (model digest "
                f"{want[:12]}..., this model's {got[:12]}...; a profile made with --calibrate "
                "fits temperatures that the checkpoint lacks)"
            )
    if not problems:
        return
    msg = f"plan: {'; '.join(problems)}"
    if force:
        warnings.warn(f"{msg}; exporting anyway (force)", UserWarning, stacklevel=3)
        return
    raise ValueError(
        f"{msg}; make the plan from this model's profile, or pass force=True (--force)"
    )


# --------------------------------------------------------------------------- export


def export_bundle(
    model: MultiExitModel,
    plan: Plan | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    formats: Sequence[str] | str = FORMATS,
    target: str = "cpu",
    opset: int | None = None,
    calibration_data: DataArg = None,
    verify_data: DataArg = None,
    *,
    overwrite: bool = False,
    exporter: str = "dynamo",
    calibration_samples: int = 1000,
    verify_samples: int | None = None,
    tolerance: float = FP32_ATOL,
    rtol: float = FP32_RTOL,
    force: bool = False,
) -> Manifest:
    """Slice ``model`` per ``plan``, export every partition, verify, write the bundle.

    Args:
        model: the trained multi-exit model (not changed); every plan partition
            must end at one of its active exits.
        plan: a :class:`~earlyexit.formats.Plan` or the path of ``plan.json``.
        out_dir: the bundle directory to create.
        formats: any of ``"onnx"``, ``"torchscript"``, ``"pt2"`` (or a comma list).
        target: ``"cpu"``; ``"arm"`` adds int8 ONNX (onnxruntime static
            quantization calibrated on ``calibration_data``) and the accuracy
            change per exit; ``"gpu"`` adds fp16 ONNX and prefers the CUDA and
            TensorRT execution providers.
        opset: ONNX opset (``None``: the exporter's default).
        calibration_data: samples for int8 calibration (default: the profiling
            split of the model's dataset); see :data:`DataArg`.
        verify_data: samples for verification (default: the test split of the
            model's dataset); with labels, the manifest records accuracies.
            Without any dataset, random inputs are used and the manifest says so.
        overwrite: replace an existing ``out_dir``.
        exporter: ONNX exporter, ``"dynamo"`` or ``"torchscript"`` (legacy).
        calibration_samples: at most this many calibration samples.
        verify_samples: verify on at most this many samples (the first ones;
            ``None``: all of ``verify_data``).
        tolerance: absolute tolerance (atol) of fp32 files against eager PyTorch.
        rtol: relative tolerance of fp32 files: an output passes when
            ``max|a - b| <= tolerance + rtol * max|b|`` (see
            :mod:`earlyexit.export.constants` for the defaults and why).
        force: export a plan that was made for another model (its recorded
            block count, backbone or model digest differs) with a warning
            instead of refusing.

    Returns:
        The manifest written to ``out_dir/manifest.json``.

    Raises:
        TypeError, ValueError: for bad arguments, a plan whose exits the model
            lacks, or a plan made for another model (unless ``force``).
        FileExistsError: if ``out_dir`` exists and ``overwrite`` is false.
        ExportVerificationError: if a file or the chained bundle does not
            reproduce the eager model (nothing is left in ``out_dir``).

    Example:
        ```python
        m = export_bundle(model, plan, "bundle", formats="onnx", target="arm")
        m.extra["quantization"]["int8"]["exit_accuracy_change"]
        ```
    """
    t_start = time.perf_counter()
    plan, formats = _check_args(model, plan, formats, target, opset)
    _check_tolerances(tolerance, rtol)
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; valid: {', '.join(ONNX_EXPORTERS)}")
    for name, value in (
        ("calibration_samples", calibration_samples),
        ("verify_samples", verify_samples),
    ):
        if value is None and name == "verify_samples":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    check_plan_matches(model, plan, force=force)
    out_dir = Path(out_dir)
    _check_replaceable(out_dir, overwrite)
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ValueError(
            f"output: the parent {str(parent)!r} of {str(out_dir)!r} is not a directory"
        )

    exits = plan.cut_points
    parts = slice(model, plan)  # validates the plan against the model's exits
    for p in parts:
        p.eval()
    reference = model.select_exits(list(exits)).eval()

    verify = _named(resolve_data, "verify_data", verify_data, "test", model, verify_samples)
    rng = torch.Generator().manual_seed(0)
    random_x = torch.randn(3, *model.input_shape, generator=rng)
    if verify is None:
        n_random = 256 if verify_samples is None else min(256, verify_samples)
        vx, vy, vdesc = (
            torch.randn(n_random, *model.input_shape, generator=rng),
            None,
            "random inputs",
        )
    else:
        vx, vy, vdesc = verify
    real = vx[:_CHECK_BATCH]
    real_in = _verify.eager_chain_inputs(parts, real)
    rand_in = _verify.eager_chain_inputs(parts, random_x)

    calib = None
    if target == "arm":
        calib = _named(
            resolve_data,
            "calibration_data",
            calibration_data,
            "profile",
            model,
            calibration_samples,
        )
        if calib is None:
            raise ValueError(
                "target 'arm' calibrates int8 quantization on real samples: pass calibration_data "
                "(or --data SPEC), or export a model whose metadata names its dataset"
            )

    made = _write.missing_parents(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _write.make_temp_dir(parent, out_dir.name)
    try:
        # ---- write: every partition in every format
        examples = [(real_in if len(real) >= 2 else rand_in)[p.index] for p in parts]
        written = _write.write_partitions(parts, examples, tmp, formats, opset, exporter)
        entries = written.entries
        actual_opset = _writers.onnx_opset(tmp / entries[0]["onnx"]) if "onnx" in formats else None

        # ---- verify: every fp32 file against eager, on real and random inputs and at batch 1
        file_checks, output_scales = _verify.verify_files(
            tmp, parts, entries, real_in, rand_in, tolerance, rtol
        )

        # ---- write and verify the quantized / half precision ONNX
        cx = None if target != "arm" else (calib[0] if calib is not None else real)
        _write.write_precisions(written, parts, tmp, target, cx)
        extra_keys = [k for k in written.precisions.values() if k != "onnx"]
        if extra_keys:
            diffs, _ = _verify.verify_files(
                tmp, parts, entries, real_in, None, None, rtol, keys=extra_keys
            )
            for k, by_fmt in diffs.items():
                file_checks[k].update(by_fmt)

        manifest = _write.build_manifest(
            model, plan, parts, entries, target, actual_opset,
            "+".join(sorted(set(written.exporters))) or None,
        )  # fmt: skip

        # ---- verify: chained early exit against MultiExitModel.predict, every sample
        threshold = float(plan.threshold)
        want = _verify.reference_predictions(reference, vx, threshold, _EAGER_BATCH)
        chains = _verify.check_chains(
            tmp, manifest, formats, entries, parts, want, vx, threshold, rtol
        )

        # ---- report: accuracy per exit, fp32 against int8 / fp16
        quant = _report.precision_report(
            tmp, entries, written.precisions, vx, vy, vdesc, threshold, calib, exits
        )
        extra: dict[str, Any] = {
            "verification": _report.verification_summary(
                vdesc, vx, vy, want, chains, exits, threshold, tolerance, rtol
            ),
            "export": {
                **manifest.extra["export"],
                "time_s": time.perf_counter() - t_start,
                "write_time_s": written.timings,
            },
        }
        if quant:
            extra["quantization"] = quant
        manifest = _write.finish_manifest(manifest, tmp, file_checks, output_scales, extra)
        manifest.save(tmp / "manifest.json")
        _write.move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in made:  # the folders this call created, deepest first, if still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return manifest
