"""The write step of ``export_bundle``: files per partition, the manifest, the directory.

Everything here writes; nothing checks what it wrote (that is
:mod:`earlyexit.export.verify`'s step) or measures accuracy (that is
:mod:`earlyexit.export.report`'s). The bundle is written into a temporary
sibling directory (:func:`make_temp_dir`) and renamed into place at the end
(:func:`move_into_place`), so a failed export leaves nothing half-written.

Files per partition ``k`` (1-based, as in the manifest's ``index``):
``partition_k.onnx``, ``partition_k.pt`` (TorchScript), ``partition_k.pt2``
(torch.export), plus ``partition_k.int8.onnx`` for ``target="arm"`` and
``partition_k.fp16.onnx`` for ``target="gpu"``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from earlyexit.export import verify as _verify
from earlyexit.export import writers as _writers
from earlyexit.export.constants import FILE_SUFFIX
from earlyexit.formats import Manifest, ManifestPartition, Plan
from earlyexit.runtime._files import sha256_file
from earlyexit.surgery.multi_exit import MultiExitModel
from earlyexit.surgery.slicing import Partition

__all__ = [
    "PROVIDERS",
    "Written",
    "build_manifest",
    "check_replaceable",
    "finish_manifest",
    "make_temp_dir",
    "missing_parents",
    "move_into_place",
    "write_partitions",
    "write_precisions",
]

PROVIDERS: dict[str, dict[str, list[str]]] = {
    "cpu": {"fp32": ["CPUExecutionProvider"]},
    "arm": {"fp32": ["CPUExecutionProvider"], "int8": ["CPUExecutionProvider"]},
    "gpu": {
        "fp32": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "fp16": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    },
}
"""The execution providers a bundle of each target prefers, per precision."""
_CHECK_BATCH = 32


@dataclass
class Written:
    """What the write step produced.

    Attributes:
        entries: per partition, ``{format key: file name}`` (int8 / fp16 added later).
        timings: seconds spent writing, per format key.
        exporters: the ONNX exporter each partition's file was written with.
        precisions: ``{precision: format key}``, fp32 first.
    """

    entries: list[dict[str, str]]
    timings: dict[str, float] = field(default_factory=dict)
    exporters: list[str] = field(default_factory=list)
    precisions: dict[str, str] = field(default_factory=lambda: {"fp32": "onnx"})


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
            stacklevel=4,
        )
        path.unlink(missing_ok=True)
        return _writers.write_onnx(part, path, example, opset, "torchscript")


def write_partitions(
    parts: Sequence[Partition],
    examples: Sequence[torch.Tensor],
    tmp: Path,
    formats: Sequence[str],
    opset: int | None,
    exporter: str,
) -> Written:
    """Write every partition in every format (fp32).

    Args:
        parts: the eager partitions (eval mode).
        examples: per partition, an example input of at least 2 samples.
        tmp: the directory to write into.
        formats: ``onnx``, ``torchscript``, ``pt2``.
        opset, exporter: for ONNX.

    Returns:
        The :class:`Written` record.
    """
    out = Written(entries=[])
    for p, example in zip(parts, examples, strict=True):
        k = p.index + 1
        # clone: a view would drag its whole storage into the saved sample inputs
        example = example[:2].clone()
        files: dict[str, str] = {}
        for fmt in formats:
            name = f"partition_{k}{FILE_SUFFIX[fmt]}"
            t0 = time.perf_counter()
            if fmt == "onnx":
                out.exporters.append(_write_onnx(p, tmp / name, example, opset, exporter))
            elif fmt == "torchscript":
                _writers.write_torchscript(p, tmp / name, example)
            else:
                _writers.write_pt2(p, tmp / name, example)
            out.timings[fmt] = out.timings.get(fmt, 0.0) + time.perf_counter() - t0
            files[fmt] = name
        out.entries.append(files)
    return out


def write_precisions(
    written: Written,
    parts: Sequence[Partition],
    tmp: Path,
    target: str,
    calibration: torch.Tensor | None,
) -> None:
    """Add the int8 (``target="arm"``) or fp16 (``"gpu"``) ONNX file of every partition.

    Args:
        written: the write step's record; its entries and precisions are updated.
        parts: the eager partitions.
        tmp: the bundle's temporary directory (holding the fp32 ONNX files).
        target: ``cpu`` (nothing to add), ``arm`` or ``gpu``.
        calibration: int8 calibration inputs (the model's input), for ``arm``.
    """
    if target == "arm":
        assert calibration is not None  # internal: export_bundle resolves it for arm
        written.precisions["int8"] = "onnx_int8"
        t0 = time.perf_counter()
        chained = [
            _verify.eager_chain_inputs(parts, calibration[i : i + _CHECK_BATCH])
            for i in range(0, len(calibration), _CHECK_BATCH)
        ]
        for p, files in zip(parts, written.entries, strict=True):
            batches = [c[p.index].numpy() for c in chained]
            name = f"partition_{p.index + 1}{FILE_SUFFIX['onnx_int8']}"
            _writers.write_onnx_int8(tmp / files["onnx"], tmp / name, batches)
            files["onnx_int8"] = name
        written.timings["onnx_int8"] = time.perf_counter() - t0
    if target == "gpu":
        written.precisions["fp16"] = "onnx_fp16"
        t0 = time.perf_counter()
        for p, files in zip(parts, written.entries, strict=True):
            name = f"partition_{p.index + 1}{FILE_SUFFIX['onnx_fp16']}"
            _writers.write_onnx_fp16(tmp / files["onnx"], tmp / name)
            files["onnx_fp16"] = name
        written.timings["onnx_fp16"] = time.perf_counter() - t0


def build_manifest(
    model: MultiExitModel,
    plan: Plan,
    parts: Sequence[Partition],
    entries: Sequence[Mapping[str, str]],
    target: str,
    opset: int | None,
    exporter: str | None,
) -> Manifest:
    """The manifest of the written files, before verification adds its figures."""
    meta = dict(getattr(model, "metadata", None) or {})
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    norm = getattr(model, "normalization", None) or meta.get("normalization") or {}
    c = model.num_classes
    mparts = []
    for p, files, pp in zip(parts, entries, plan.partitions, strict=True):
        shapes: dict[str, tuple[int | None, ...]] = {"logits": (None, c), "entropy": (None,)}
        dtypes = {"input": "float32", "logits": "float32", "entropy": "float32"}
        if not p.is_last:
            shapes["features"] = (None, *p.output_shape)
            dtypes["features"] = "float32"
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
                    "dtypes": dtypes,
                },
            )
        )
    import onnxruntime

    extra = {
        "num_classes": c,
        "exits": list(plan.cut_points),
        "model": dict(model.config),
        "dataset": meta.get("dataset"),
        "target": target,
        "providers": PROVIDERS[target],
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


def finish_manifest(
    manifest: Manifest,
    tmp: Path,
    file_checks: Mapping[str, Mapping[str, Mapping[str, float]]],
    output_scales: Mapping[str, Mapping[str, float]],
    extra: Mapping[str, Any],
) -> Manifest:
    """The final manifest: every file's size and SHA-256, the checks' figures and ``extra``.

    Args:
        manifest: from :func:`build_manifest`.
        tmp: the directory holding the files.
        file_checks: per partition (1-based, as a string), per format, the
            maximum difference of each output from eager PyTorch.
        output_scales: per partition, the largest magnitude of each eager output.
        extra: entries added to (or replacing) the manifest's ``extra``.
    """
    parts = []
    for mp in manifest.partitions:
        k = str(mp.index)
        sizes = {fmt: (tmp / name).stat().st_size for fmt, name in mp.files.items()}
        hashes = {fmt: sha256_file(tmp / name) for fmt, name in mp.files.items()}
        parts.append(
            ManifestPartition(
                index=mp.index, files=mp.files, input_name=mp.input_name,
                output_names=mp.output_names, input_shape=mp.input_shape,
                output_shapes=mp.output_shapes,
                extra={**mp.extra, "bytes": sizes, "sha256": hashes,
                       "max_abs_diff": dict(file_checks[k]),
                       "max_abs_output": dict(output_scales[k])},
            )
        )  # fmt: skip
    return Manifest(
        plan=manifest.plan, class_names=manifest.class_names, input_shape=manifest.input_shape,
        partitions=tuple(parts), input_dtype=manifest.input_dtype,
        normalization=manifest.normalization, temperatures=manifest.temperatures,
        extra={**manifest.extra, **extra},
    )  # fmt: skip


# --------------------------------------------------------------------------- the directory


def missing_parents(path: Path) -> list[Path]:
    """The folders of ``path`` that do not exist yet, deepest first."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def make_temp_dir(parent: Path, name: str) -> Path:
    """A new temporary directory ``parent/.NAME.tmp-*``, readable as the umask allows."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is shared
    return tmp


def check_replaceable(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an empty directory or, with ``overwrite``, a bundle.

    A bundle is recognised by its ``manifest.json``; a file, a symlink or a folder
    that is not a bundle is never deleted, whatever ``overwrite`` says.

    Raises:
        FileExistsError: ``out_dir`` may not be replaced.
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


def move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished temporary directory to ``out_dir`` (replacing it if allowed)."""
    if out_dir.exists() or out_dir.is_symlink():
        check_replaceable(out_dir, overwrite)
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
