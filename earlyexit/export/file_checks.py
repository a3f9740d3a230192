"""The first check of the verify step: every exported file against the eager partition.

Every file, loaded back (onnxruntime, ``torch.jit.load``, ``torch.export.load``),
computes what the eager partition computes: at fp32 every output satisfies
``max|a - b| <= atol + rtol * max|b|`` (:data:`~earlyexit.export.constants.FP32_ATOL`,
:data:`~earlyexit.export.constants.FP32_RTOL`; why the magnitude is the
output's largest is explained in :mod:`earlyexit.export.constants`), on real
samples, on random inputs and at batch size 1 (the batch axis is dynamic).
Any difference raises :class:`ExportVerificationError`, naming the partition
and how far off it is. The second check, the chained early exit, is in
:mod:`earlyexit.export.verify`, which re-exports every name of this module.

Example:
    >>> max_abs_diff([np.zeros(3)], [np.full(3, 0.5)])
    [0.5]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from earlyexit.export.constants import FP32_ATOL, FP32_RTOL
from earlyexit.surgery.slicing import Partition

__all__ = [
    "Runner",
    "ExportVerificationError",
    "load_runner",
    "max_abs_diff",
    "check_outputs",
    "eager_chain_inputs",
    "verify_files",
]


Runner = Callable[[np.ndarray], list[np.ndarray]]


class ExportVerificationError(ValueError):
    """An exported file or the chained bundle does not match the eager model.

    Attributes:
        partition: 1-based partition number (``None`` for a whole-bundle failure).
        fmt: the file's format (``onnx``, ``torchscript``, ``pt2``, ...).
        diff: how far off it is (max abs difference, or mismatching samples).
    """

    def __init__(
        self, message: str, partition: int | None = None, fmt: str | None = None, diff: float = 0
    ) -> None:
        super().__init__(message)
        self.partition = partition
        self.fmt = fmt
        self.diff = diff


def load_runner(fmt: str, path: str, intra_op_threads: int = 1) -> Runner:
    """Load an exported file and return ``run(x) -> [outputs as numpy]``.

    Args:
        fmt: ``onnx`` / ``onnx_int8`` / ``onnx_fp16`` (onnxruntime, CPU),
            ``torchscript`` (``torch.jit.load``) or ``pt2`` (``torch.export.load``).
        path: the file.
        intra_op_threads: onnxruntime threads.

    Returns:
        The runner.

    Raises:
        ValueError: for an unknown format.
    """
    if fmt.startswith("onnx"):
        import onnxruntime as ort

        from earlyexit.runtime.session import session_options

        sess = ort.InferenceSession(
            path, session_options(intra_op_threads), providers=["CPUExecutionProvider"]
        )
        name = sess.get_inputs()[0].name

        def run_onnx(x: np.ndarray) -> list[np.ndarray]:
            return list(sess.run(None, {name: np.ascontiguousarray(x, np.float32)}))

        return run_onnx
    if fmt == "torchscript":
        module = torch.jit.load(path, map_location="cpu")
    elif fmt == "pt2":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.export.load(path).module()
    else:
        raise ValueError(f"unknown format {fmt!r}")

    def run_torch(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in module(torch.from_numpy(np.ascontiguousarray(x)))]

    return run_torch


def max_abs_diff(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> list[float]:
    """Per-output maximum absolute difference (``inf`` for a shape mismatch)."""
    out = []
    for g, w in zip(got, want, strict=True):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            out.append(float("inf"))
        elif g.size == 0:
            out.append(0.0)
        else:
            d = np.abs(g.astype(np.float64) - w.astype(np.float64))
            out.append(float(np.nan_to_num(d, nan=np.inf).max()))
    return out


def check_outputs(
    runner: Runner,
    partition: Partition,
    inputs: Sequence[tuple[str, torch.Tensor]],
    fmt: str,
    file_name: str,
    tolerance: float | None = FP32_ATOL,
    rtol: float = FP32_RTOL,
) -> tuple[dict[str, float], dict[str, float]]:
    """Run a loaded file and the eager partition on the same inputs and compare.

    An output passes when ``max|a - b| <= tolerance + rtol * max|b|`` on each
    input batch (``a`` the file's output, ``b`` eager PyTorch's).

    Args:
        runner: from :func:`load_runner`.
        partition: the eager partition (eval mode).
        inputs: ``(description, batch)`` pairs, e.g. ``("real samples", x)``.
        fmt, file_name: for messages.
        tolerance: absolute tolerance (atol); ``None`` only checks the shapes
            and that the outputs are finite (int8, fp16).
        rtol: relative tolerance, relative to the output's largest magnitude.

    Returns:
        ``({output name: max abs difference}, {output name: max |eager output|})``
        over all inputs.

    Raises:
        ExportVerificationError: on a wrong number or shape of outputs, a
            non-finite output, or a difference above the tolerance.
    """
    names = partition.output_names
    worst = dict.fromkeys(names, 0.0)
    scales = dict.fromkeys(names, 0.0)
    where = f"partition {partition.index + 1} (blocks {partition.first_block}..{partition.last_block}), {fmt} file {file_name}"
    for desc, x in inputs:
        with torch.no_grad():
            want = [t.numpy() for t in partition(x)]
        try:
            got = runner(x.numpy())
        except Exception as err:  # noqa: BLE001 - any runtime failure is a verification failure
            raise ExportVerificationError(
                f"{where}: failed to run on {desc} (batch {x.shape[0]}): {err}",
                partition.index + 1,
                fmt,
                float("inf"),
            ) from err
        if len(got) != len(want):
            raise ExportVerificationError(
                f"{where}: returns {len(got)} outputs, expected {len(want)} ({', '.join(names)})",
                partition.index + 1, fmt, float("inf"),
            )  # fmt: skip
        for name, g, w, d in zip(names, got, want, max_abs_diff(got, want), strict=True):
            if g.shape != w.shape:
                raise ExportVerificationError(
                    f"{where}: output {name!r} has shape {list(g.shape)} on {desc}, expected "
                    f"{list(w.shape)}", partition.index + 1, fmt, float("inf"),
                )  # fmt: skip
            if not np.isfinite(g).all():
                raise ExportVerificationError(
                    f"{where}: output {name!r} is not finite on {desc}",
                    partition.index + 1,
                    fmt,
                    float("inf"),
                )
            scale = float(np.abs(w).max()) if w.size else 0.0
            allowed = None if tolerance is None else tolerance + rtol * scale
            if allowed is not None and d > allowed:
                raise ExportVerificationError(
                    f"{where}: output {name!r} is off by {d:.3g} on {desc} (max abs difference "
                    f"from eager PyTorch), above the allowed atol + rtol * max|output| = "
                    f"{tolerance:g} + {rtol:g} * {scale:.3g} = {allowed:.3g}; if that is float "
                    "rounding, pass a larger tolerance (--tolerance / --rtol)",
                    partition.index + 1, fmt, d,
                )  # fmt: skip
            worst[name] = max(worst[name], d)
            scales[name] = max(scales[name], scale)
    return worst, scales


@torch.no_grad()
def eager_chain_inputs(partitions: Sequence[Partition], x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every partition when ``x`` enters the first (no early exit)."""
    out = [x]
    for p in partitions[:-1]:
        out.append(p(out[-1])[2])
    return out


def verify_files(
    tmp: Path,
    parts: Sequence[Partition],
    entries: Sequence[Mapping[str, str]],
    real_in: Sequence[torch.Tensor],
    rand_in: Sequence[torch.Tensor] | None,
    tolerance: float | None,
    rtol: float = FP32_RTOL,
    keys: Sequence[str] | None = None,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, float]]]:
    """Check every file of every partition against the eager partition.

    fp32 files are checked on real samples, random inputs and a batch of one,
    within the tolerance; int8 / fp16 files (``tolerance=None``) on real samples
    and a batch of one, for shapes and finite outputs only.

    Args:
        tmp: the directory holding the files.
        parts: the eager partitions.
        entries: per partition, ``{format key: file name}``.
        real_in, rand_in: per partition, its input when real samples / random
            inputs enter the first (``rand_in`` None: not used).
        tolerance, rtol: see :func:`check_outputs`.
        keys: check only these format keys (default: all of each entry).

    Returns:
        ``(differences, scales)``: per partition (1-based, as a string), per format,
        the max difference of each output; per partition the eager outputs' magnitudes.

    Raises:
        ExportVerificationError: a file that does not match.
    """
    diffs: dict[str, dict[str, dict[str, float]]] = {}
    scales: dict[str, dict[str, float]] = {}
    for p, files in zip(parts, entries, strict=True):
        k = p.index
        inputs = [("real samples", real_in[k])]
        if rand_in is not None:
            inputs.append(("random inputs", rand_in[k]))
        inputs.append(("a batch of one", real_in[k][:1]))
        for fmt, name in files.items():
            if keys is not None and fmt not in keys:
                continue
            runner = load_runner(fmt, str(tmp / name))
            d, sc = check_outputs(runner, p, inputs, fmt, name, tolerance, rtol)
            diffs.setdefault(str(k + 1), {})[fmt] = d
            scales[str(k + 1)] = sc
    return diffs, scales
