"""``export_bundle``: a plan's partitions as verified ONNX / TorchScript / torch.export files.

The bundle (docs/spec.md, *Bundle*) is written into a temporary sibling directory;
every file is loaded back and checked against the eager model, the partitions
are chained with early exit and compared with ``MultiExitModel.predict`` on the
verification samples, and only then is ``manifest.json`` written and the
directory renamed into place. Any failure removes the half-written bundle.

Files per partition ``k`` (1-based, as in the manifest's ``index``):
``partition_k.onnx``, ``partition_k.pt`` (TorchScript), ``partition_k.pt2``
(torch.export), plus ``partition_k.int8.onnx`` for ``target="arm"`` and
``partition_k.fp16.onnx`` for ``target="gpu"``.

Example:
    >>> import earlyexit
    >>> from earlyexit.export import export_bundle
    >>> model = earlyexit.load("checkpoints/resnet20_fashionmnist.pt")     # doctest: +SKIP
    >>> plan = earlyexit.Plan.load("plan.json")                            # doctest: +SKIP
    >>> manifest = export_bundle(model, plan, "bundle/", target="arm")     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earlyexit.export import verify as _verify
from earlyexit.export import writers as _writers
from earlyexit.export.constants import (
    FILE_SUFFIX,
    FORMATS,
    FP32_ATOL,
    FP32_RTOL,
    ONNX_EXPORTERS,
    TARGETS,
)
from earlyexit.formats import Manifest, ManifestPartition, Plan
from earlyexit.surgery.multi_exit import MultiExitModel
from earlyexit.surgery.slicing import Partition, slice

__all__ = [
    "FORMATS",
    "TARGETS",
    "FILE_SUFFIX",
    "DataArg",
    "check_plan_matches",
    "export_bundle",
    "resolve_data",
]

_PROVIDERS = {
    "cpu": {"fp32": ["CPUExecutionProvider"]},
    "arm": {"fp32": ["CPUExecutionProvider"], "int8": ["CPUExecutionProvider"]},
    "gpu": {
        "fp32": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "fp16": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    },
}
_CHECK_BATCH = 32
_EAGER_BATCH = 256

DataArg = (
    str
    | torch.Tensor
    | np.ndarray
    | tuple[Any, Any]
    | Iterable[tuple[torch.Tensor, torch.Tensor]]
    | None
)
"""Samples for calibration or verification: a data spec (``"fashion-mnist"``), a
tensor of inputs, an ``(inputs, labels)`` pair, or an iterable of such batches
(a DataLoader); ``None`` takes the dataset recorded in ``model.metadata``."""


# --------------------------------------------------------------------------- data


def resolve_data(
    data: DataArg, split: str, model: MultiExitModel, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, str] | None:
    """Turn a data argument into ``(inputs, labels or None, description)``.

    Args:
        data: see :data:`DataArg`.
        split: ``"profile"`` or ``"test"``, used for a data spec.
        model: the model (its ``metadata`` gives the default dataset and the
            normalization; its ``input_shape`` is checked).
        limit: keep at most this many samples (the first ones).

    Returns:
        The samples, or ``None`` if ``data`` is ``None`` and the model records no
        dataset.

    Raises:
        TypeError: for an unsupported data argument.
        ValueError: for samples of the wrong shape.
    """
    meta = dict(getattr(model, "metadata", None) or {})
    labels: torch.Tensor | None = None
    if data is None:
        data = meta.get("dataset")
        if not data:
            return None
    if isinstance(data, str):
        from earlyexit.training.data import EarlyExitDataModule

        dm = EarlyExitDataModule(
            data, batch_size=512, augment=False, normalization=meta.get("normalization")
        )
        xs, ys = zip(*dm.dataloader(split, shuffle=False), strict=True)
        inputs, labels, desc = torch.cat(xs), torch.cat(ys), f"{data} {split} split"
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        inputs, desc = torch.as_tensor(data), "given samples"
    elif isinstance(data, tuple) and len(data) == 2:
        inputs, labels, desc = torch.as_tensor(data[0]), torch.as_tensor(data[1]), "given samples"
    elif isinstance(data, Iterable):
        xs, ys = [], []
        for batch in data:
            if isinstance(batch, (list, tuple)):
                xs.append(torch.as_tensor(batch[0]))
                if len(batch) > 1:
                    ys.append(torch.as_tensor(batch[1]))
            else:
                xs.append(torch.as_tensor(batch))
        if not xs:
            raise ValueError("the data iterable yielded no batch")
        inputs = torch.cat(xs)
        labels = torch.cat(ys) if len(ys) == len(xs) else None
        desc = "given batches"
    else:
        raise TypeError(
            "data must be a data spec string, a tensor of inputs, an (inputs, labels) pair or "
            f"an iterable of batches, got {type(data).__name__}"
        )
    inputs = inputs.float()
    if len(inputs) == 0:
        raise ValueError(f"{desc}: no samples")
    if tuple(inputs.shape[1:]) != tuple(model.input_shape):
        raise ValueError(
            f"{desc}: samples of shape {list(inputs.shape[1:])}, but the model takes "
            f"{list(model.input_shape)}"
        )
    if labels is not None and len(labels) != len(inputs):
        raise ValueError(f"{desc}: {len(inputs)} inputs but {len(labels)} labels")
    if limit is not None:
        inputs = inputs[:limit]
        labels = None if labels is None else labels[:limit]
    return inputs, (None if labels is None else labels.long()), desc


# --------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def _missing_parents(path: Path) -> list[Path]:
    """The folders of ``path`` that do not exist yet, deepest first."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


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


def _accuracy_report(
    runners: Sequence[_verify.Runner], x: torch.Tensor, y: torch.Tensor | None, threshold: float
) -> dict[str, Any]:
    """Per-exit accuracy (every sample forced through every exit) and early-exit figures.

    One pass: the early-exit outcome of a sample is read off its forced entropies
    (it leaves at the first exit below the threshold, the last exit otherwise).
    """
    n, num = len(x), len(runners)
    entropy = np.zeros((num, n), np.float32)
    pred = np.zeros((num, n), np.int64)
    for i in range(0, n, _EAGER_BATCH):
        h = x[i : i + _EAGER_BATCH].numpy()
        for k, run in enumerate(runners):
            outs = run(h)
            pred[k, i : i + len(h)] = outs[0].argmax(-1)
            entropy[k, i : i + len(h)] = outs[1]
            if len(outs) > 2:
                h = outs[2]
    leave = entropy < np.float32(threshold)
    leave[-1] = True
    exit_k = leave.argmax(0)
    out: dict[str, Any] = {"exit_fractions": [float((exit_k == k).mean()) for k in range(num)]}
    if y is not None:
        yy = y.numpy()
        out["exit_accuracy"] = [float((pred[k] == yy).mean()) for k in range(num)]
        out["accuracy"] = float((pred[exit_k, np.arange(n)] == yy).mean())
    return out


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
        >>> m = export_bundle(model, plan, "bundle", formats="onnx", target="arm")  # doctest: +SKIP
        >>> m.extra["quantization"]["int8"]["exit_accuracy_change"]              # doctest: +SKIP
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

    made = _missing_parents(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is shared
        timings: dict[str, float] = {}
        entries = []
        file_checks: dict[str, dict[str, dict[str, float]]] = {}
        output_scales: dict[str, dict[str, float]] = {}
        used_exporters: list[str] = []
        for p in parts:
            k = p.index + 1
            # clone: a view would drag its whole storage into the saved sample inputs
            example = (real_in[p.index] if len(real) >= 2 else rand_in[p.index])[:2].clone()
            files: dict[str, str] = {}
            for fmt in formats:
                name = f"partition_{k}{FILE_SUFFIX[fmt]}"
                t0 = time.perf_counter()
                if fmt == "onnx":
                    used_exporters.append(_write_onnx(p, tmp / name, example, opset, exporter))
                elif fmt == "torchscript":
                    _writers.write_torchscript(p, tmp / name, example)
                else:
                    _writers.write_pt2(p, tmp / name, example)
                timings[fmt] = timings.get(fmt, 0.0) + time.perf_counter() - t0
                files[fmt] = name
            entries.append(files)

        actual_opset = _writers.onnx_opset(tmp / entries[0]["onnx"]) if "onnx" in formats else None

        # ---- every fp32 file against eager, on real and random inputs and at batch 1
        for p, files in zip(parts, entries, strict=True):
            inputs = [
                ("real samples", real_in[p.index]),
                ("random inputs", rand_in[p.index]),
                ("a batch of one", real_in[p.index][:1]),
            ]
            for fmt, name in files.items():
                runner = _verify.load_runner(fmt, str(tmp / name))
                diffs, scales = _verify.check_outputs(runner, p, inputs, fmt, name, tolerance, rtol)
                file_checks.setdefault(str(p.index + 1), {})[fmt] = diffs
                output_scales[str(p.index + 1)] = scales

        # ---- quantized / half precision ONNX
        precisions = {"fp32": "onnx"}
        if target == "arm":
            precisions["int8"] = "onnx_int8"
            cx = calib[0] if calib is not None else real
            t0 = time.perf_counter()
            chained = [
                _verify.eager_chain_inputs(parts, cx[i : i + _CHECK_BATCH])
                for i in range(0, len(cx), _CHECK_BATCH)
            ]
            for p, files in zip(parts, entries, strict=True):
                batches = [c[p.index].numpy() for c in chained]
                name = f"partition_{p.index + 1}{FILE_SUFFIX['onnx_int8']}"
                _writers.write_onnx_int8(tmp / files["onnx"], tmp / name, batches)
                files["onnx_int8"] = name
            timings["onnx_int8"] = time.perf_counter() - t0
        if target == "gpu":
            precisions["fp16"] = "onnx_fp16"
            t0 = time.perf_counter()
            for p, files in zip(parts, entries, strict=True):
                name = f"partition_{p.index + 1}{FILE_SUFFIX['onnx_fp16']}"
                _writers.write_onnx_fp16(tmp / files["onnx"], tmp / name)
                files["onnx_fp16"] = name
            timings["onnx_fp16"] = time.perf_counter() - t0
        for p, files in zip(parts, entries, strict=True):
            inputs = [("real samples", real_in[p.index]), ("a batch of one", real_in[p.index][:1])]
            for key in ("onnx_int8", "onnx_fp16"):
                if key in files:
                    runner = _verify.load_runner(key, str(tmp / files[key]))
                    diffs, _ = _verify.check_outputs(
                        runner, p, inputs, key, files[key], tolerance=None
                    )
                    file_checks[str(p.index + 1)][key] = diffs

        manifest = _manifest(
            model, plan, parts, entries, target, actual_opset,
            "+".join(sorted(set(used_exporters))) or None,
        )  # fmt: skip

        # ---- chained early exit against MultiExitModel.predict, every sample
        threshold = float(plan.threshold)
        want = _verify.reference_predictions(reference, vx, threshold, _EAGER_BATCH)
        chains = _check_chains(tmp, manifest, formats, entries, parts, want, vx, threshold, rtol)

        # ---- accuracy per exit, fp32 against int8 / fp16
        quant = _precision_report(tmp, entries, precisions, vx, vy, vdesc, threshold, calib, exits)

        sizes = {
            str(i + 1): {fmt: (tmp / name).stat().st_size for fmt, name in e.items()}
            for i, e in enumerate(entries)
        }
        hashes = {
            str(i + 1): {fmt: _sha256(tmp / name) for fmt, name in e.items()}
            for i, e in enumerate(entries)
        }
        new_parts = tuple(
            ManifestPartition(
                index=mp.index, files=mp.files, input_name=mp.input_name, output_names=mp.output_names,
                input_shape=mp.input_shape, output_shapes=mp.output_shapes,
                extra={**mp.extra, "bytes": sizes[str(mp.index)], "sha256": hashes[str(mp.index)],
                       "max_abs_diff": file_checks[str(mp.index)],
                       "max_abs_output": output_scales[str(mp.index)]},
            )
            for mp in manifest.partitions
        )  # fmt: skip
        extra = dict(manifest.extra)
        extra["verification"] = {
            "data": vdesc,
            "samples": int(len(vx)),
            "tolerance_fp32": {"atol": float(tolerance), "rtol": float(rtol)},
            "chained": chains,
            "reference": f"MultiExitModel.select_exits({list(exits)}).predict(x, {threshold:g})",
        }
        if vy is not None:
            extra["verification"]["accuracy"] = float((want[1] == vy.numpy()).mean())
            extra["verification"]["exit_fractions"] = [float((want[0] == e).mean()) for e in exits]
        if quant:
            extra["quantization"] = quant
        extra["export"] = {
            **extra["export"],
            "time_s": time.perf_counter() - t_start,
            "write_time_s": timings,
        }
        manifest = Manifest(
            plan=manifest.plan, class_names=manifest.class_names, input_shape=manifest.input_shape,
            partitions=new_parts, input_dtype=manifest.input_dtype,
            normalization=manifest.normalization, temperatures=manifest.temperatures, extra=extra,
        )  # fmt: skip
        manifest.save(tmp / "manifest.json")
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in made:  # the folders this call created, deepest first, if still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return manifest


def _check_chains(
    tmp: Path,
    manifest: Manifest,
    formats: Sequence[str],
    entries: Sequence[Mapping[str, str]],
    parts: Sequence[Partition],
    want: tuple[np.ndarray, np.ndarray],
    vx: torch.Tensor,
    threshold: float,
    rtol: float = FP32_RTOL,
) -> dict[str, Any]:
    """Chain every format's partitions with early exit and compare with the eager model."""
    from earlyexit.runtime.session import BundleSession

    exits = manifest.plan.cut_points
    chains: dict[str, Any] = {}
    for fmt in formats:
        if fmt == "onnx":  # through the runtime's own session, as a tier will run it
            sess = BundleSession(tmp, "fp32", ["CPUExecutionProvider"], manifest=manifest)
            chain = sess.predict
        else:
            runners = [_verify.load_runner(fmt, str(tmp / e[fmt])) for e in entries]

            def chain(xb: np.ndarray, t: float, _r: list = runners) -> dict[str, np.ndarray]:
                return _verify.torch_chain_predict(_r, xb, t)

        got: dict[str, list[np.ndarray]] = {"exit_partition": [], "prediction": []}
        for i in range(0, len(vx), _EAGER_BATCH):
            r = chain(vx[i : i + _EAGER_BATCH].numpy(), threshold)
            for key, val in got.items():
                val.append(r[key])
        merged = {key: np.concatenate(val) for key, val in got.items()}
        chains[fmt] = _verify.compare_predictions(
            fmt, merged, want, exits, parts, vx, threshold, rtol
        )
    return chains


def _precision_report(
    tmp: Path,
    entries: Sequence[Mapping[str, str]],
    precisions: Mapping[str, str],
    vx: torch.Tensor,
    vy: torch.Tensor | None,
    vdesc: str,
    threshold: float,
    calib: tuple[torch.Tensor, torch.Tensor | None, str] | None,
    exits: Sequence[int],
) -> dict[str, Any]:
    """Accuracy per exit and with early exit of int8 / fp16 against fp32 (``{}`` for fp32 only)."""
    if len(precisions) < 2:
        return {}
    reports = {
        prec: _accuracy_report(
            [_verify.load_runner(key, str(tmp / e[key])) for e in entries], vx, vy, threshold
        )
        for prec, key in precisions.items()
    }
    base = reports["fp32"]
    quant: dict[str, Any] = {}
    for prec in precisions:
        if prec == "fp32":
            continue
        rep = dict(reports[prec])
        if "exit_accuracy" in rep:
            rep["exit_accuracy_fp32"] = base["exit_accuracy"]
            rep["exit_accuracy_change"] = [
                a - b for a, b in zip(rep["exit_accuracy"], base["exit_accuracy"], strict=True)
            ]
            rep["accuracy_fp32"] = base["accuracy"]
            rep["accuracy_change"] = rep["accuracy"] - base["accuracy"]
        rep["exit_fractions_fp32"] = base["exit_fractions"]
        rep["exits"] = list(exits)
        rep["samples"] = len(vx)
        rep["data"] = vdesc
        if prec == "int8" and calib is not None:
            rep["calibration"] = {
                "data": calib[2],
                "samples": len(calib[0]),
                "method": "minmax",
                "format": "QDQ",
                "weights": "int8 per channel",
                "activations": "uint8",
            }
        quant[prec] = rep
    return quant


def _write_onnx(
    part: Partition, path: Path, example: torch.Tensor, opset: int | None, exporter: str
) -> str:
    """Write with ``exporter``; if the dynamo exporter fails, warn and use the legacy one.

    Verification then checks whichever file was written, and the manifest
    records the exporter used.
    """
    try:
        return _writers.write_onnx(part, path, example, opset, exporter)
    except Exception as err:  # noqa: BLE001 - any exporter failure
        if exporter != "dynamo":
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        warnings.warn(
            f"partition {part.index + 1}: the dynamo ONNX exporter failed ({first}); "
            "falling back to the TorchScript-based exporter",
            RuntimeWarning,
            stacklevel=3,
        )
        path.unlink(missing_ok=True)
        return _writers.write_onnx(part, path, example, opset, "torchscript")


def _manifest(
    model: MultiExitModel,
    plan: Plan,
    parts: Sequence[Partition],
    entries: Sequence[Mapping[str, str]],
    target: str,
    opset: int | None,
    exporter: str | None,
) -> Manifest:
    meta = dict(getattr(model, "metadata", None) or {})
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    norm = getattr(model, "normalization", None) or meta.get("normalization") or {}
    c = model.num_classes
    mparts = []
    for p, files, pp in zip(parts, entries, plan.partitions, strict=True):
        shapes: dict[str, tuple[int | None, ...]] = {"logits": (None, c), "entropy": (None,)}
        if not p.is_last:
            shapes["features"] = (None, *p.output_shape)
        mparts.append(
            ManifestPartition(
                index=p.index + 1,
                files=dict(files),
                input_name="input",
                output_names=p.output_names,
                input_shape=(None, *p.input_shape),
                output_shapes=shapes,
                extra={
                    "first_block": p.first_block,
                    "last_block": p.last_block,
                    "exit_block": p.last_block,
                    "tier": pp.tier,
                    "tier_name": pp.tier_name,
                    "temperature": float(p.temperature),
                    "dtypes": {"input": "float32", "logits": "float32", "entropy": "float32",
                               "features": "float32"} if not p.is_last else
                              {"input": "float32", "logits": "float32", "entropy": "float32"},
                },
            )
        )  # fmt: skip
    import onnxruntime

    extra = {
        "num_classes": c,
        "exits": list(plan.cut_points),
        "model": dict(model.config),
        "dataset": meta.get("dataset"),
        "target": target,
        "providers": _PROVIDERS[target],
        "export": {
            "onnx_exporter": exporter,
            "opset": opset,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    return Manifest(
        plan=plan,
        class_names=tuple(str(n) for n in names),
        input_shape=tuple(model.input_shape),
        partitions=tuple(mparts),
        input_dtype="float32",
        normalization={k: list(v) for k, v in dict(norm).items()},
        temperatures=tuple(float(p.temperature) for p in parts),
        extra=extra,
    )


def _check_replaceable(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an empty directory or, with ``overwrite``, a bundle.

    A bundle is recognised by its ``manifest.json``; a file, a symlink or a folder
    that is not a bundle is never deleted, whatever ``overwrite`` says.
    """
    if not (out_dir.exists() or out_dir.is_symlink()):
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise FileExistsError(
            f"{str(out_dir)!r} exists and is not a directory; choose another output path"
        )
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{str(out_dir)!r} exists and is not empty; pass overwrite=True (--overwrite) "
            "to replace a bundle"
        )
    try:
        Manifest.load(out_dir / "manifest.json")
    except (OSError, ValueError, TypeError) as err:
        raise FileExistsError(
            f"{str(out_dir)!r} is not a bundle ({err}); --overwrite only replaces a "
            "directory that holds a valid manifest.json, so nothing was deleted"
        ) from None


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished temporary directory to ``out_dir`` (replacing it if allowed)."""
    if out_dir.exists() or out_dir.is_symlink():
        _check_replaceable(out_dir, overwrite)
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            os.replace(old, out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
