"""Checks of exported partitions against the eager model, before a manifest is written.

The verify step of ``export_bundle`` (:func:`verify_files`, :func:`check_chains`).
Two checks (issue 6, docs/spec.md *Bundle*):

* every file, loaded back (onnxruntime, ``torch.jit.load``, ``torch.export.load``),
  computes what the eager partition computes: at fp32 every output satisfies
  ``max|a - b| <= atol + rtol * max|b|`` (:data:`~earlyexit.export.constants.FP32_ATOL`,
  :data:`~earlyexit.export.constants.FP32_RTOL`; why the magnitude is the
  output's largest is explained in :mod:`earlyexit.export.constants`), on real
  samples, on random inputs and at batch size 1 (the batch axis is dynamic);
* the partitions chained with early exit reproduce
  ``MultiExitModel.select_exits(exits).predict(x, T)`` on every verification
  sample: the same exit and the same class. Every format is chained by
  :func:`earlyexit.runtime.chain.run_chain`, the rule the tier workers apply
  (ONNX through the runtime's own :class:`~earlyexit.runtime.session.BundleSession`).

A sample whose entropy at an exit lies within :data:`ENTROPY_TIE` of the
threshold, or whose two best logits lie within :data:`LOGIT_TIE` plus ``rtol``
of their magnitude, may go
either way by float rounding; such samples are counted as ``borderline``
rather than failures. Any other difference raises
:class:`ExportVerificationError`, naming the partition and how far off it is.

Example:
    >>> max_abs_diff([np.zeros(3)], [np.full(3, 0.5)])
    [0.5]
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earlyexit.export.constants import ENTROPY_TIE, FP32_ATOL, FP32_RTOL, FP32_TOLERANCE, LOGIT_TIE
from earlyexit.formats import Manifest
from earlyexit.runtime.chain import PartitionRunner, run_chain
from earlyexit.surgery.multi_exit import MultiExitModel
from earlyexit.surgery.slicing import Partition

__all__ = [
    "ENTROPY_TIE",
    "FP32_ATOL",
    "FP32_RTOL",
    "FP32_TOLERANCE",
    "LOGIT_TIE",
    "ExportVerificationError",
    "check_outputs",
    "compare_predictions",
    "eager_chain_inputs",
    "load_runner",
    "max_abs_diff",
    "reference_predictions",
    "chain_runner",
    "check_chains",
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


def chain_runner(run: Runner) -> PartitionRunner:
    """A loaded file's runner as the early-exit chain takes it: ``(logits, entropy, features)``.

    Args:
        run: from :func:`load_runner` (returns the list of outputs).

    Returns:
        The runner for :func:`earlyexit.runtime.chain.run_chain`.
    """

    def step(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        outs = run(x)
        return outs[0], outs[1], (outs[2] if len(outs) > 2 else None)

    return step


@torch.no_grad()
def reference_predictions(
    model: MultiExitModel, x: torch.Tensor, threshold: float, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """``(exit_block, prediction)`` of ``model.predict(x, threshold)``, batch by batch."""
    blocks, preds = [], []
    for i in range(0, len(x), batch_size):
        r = model.predict(x[i : i + batch_size], threshold)
        blocks.append(r.exit_block.numpy())
        preds.append(r.prediction.numpy())
    return np.concatenate(blocks), np.concatenate(preds)


@torch.no_grad()
def compare_predictions(
    what: str,
    got: dict[str, np.ndarray],
    want: tuple[np.ndarray, np.ndarray],
    exits: Sequence[int],
    partitions: Sequence[Partition],
    x: torch.Tensor,
    threshold: float,
    rtol: float = FP32_RTOL,
) -> dict[str, Any]:
    """Compare chained predictions with those of ``MultiExitModel.predict``.

    Args:
        what: the runner's name, for messages (e.g. ``"onnx"``).
        got: ``exit_partition`` and ``prediction`` per sample (numpy).
        want: ``(exit_block, prediction)`` from :func:`reference_predictions`.
        exits: the plan's exits (1-based last block of each partition).
        partitions: the eager partitions (to tell borderline samples apart).
        x: the samples.
        threshold: T.
        rtol: two best logits within ``LOGIT_TIE + rtol * |best|`` tie.

    Returns:
        ``{"samples", "same", "borderline"}`` counts.

    Raises:
        ExportVerificationError: if any non-borderline sample differs.
    """
    exits = np.asarray(exits)
    wb, wp = want
    gb = exits[got["exit_partition"]]
    bad = np.flatnonzero((gb != wb) | (got["prediction"] != wp))
    borderline: list[int] = []
    real: list[int] = []
    if bad.size:
        forced = [
            p(h) for p, h in zip(partitions, eager_chain_inputs(partitions, x[bad]), strict=True)
        ]
        for j, s in enumerate(bad):
            k_got = int(np.searchsorted(exits, gb[s]))
            k_want = int(np.searchsorted(exits, wb[s]))
            k_hi = min(max(k_got, k_want), len(exits) - 2)
            ents = [float(forced[k][1][j]) for k in range(0, k_hi + 1)] if len(exits) > 1 else []
            near_t = any(abs(e - threshold) <= ENTROPY_TIE for e in ents)
            top2 = torch.topk(forced[k_want][0][j], 2).values
            tie = LOGIT_TIE + rtol * float(top2[0].abs())
            near_tie = gb[s] == wb[s] and float(top2[0] - top2[1]) <= tie
            (borderline if near_t or near_tie else real).append(int(s))
    if real:
        examples = "; ".join(
            f"sample {s}: eager exit block {wb[s]} class {wp[s]}, {what} exit block {gb[s]} "
            f"class {got['prediction'][s]}" for s in real[:5]
        )  # fmt: skip
        first = int(np.searchsorted(exits, min(min(gb[s], wb[s]) for s in real)))
        raise ExportVerificationError(
            f"chaining the {what} partitions with early exit at threshold {threshold:g} differs "
            f"from MultiExitModel.predict on {len(real)} of {len(x)} samples (first diverging "
            f"at partition {first + 1}): {examples}", first + 1, what, float(len(real)),
        )  # fmt: skip
    return {"samples": int(len(x)), "same": int(len(x) - bad.size), "borderline": len(borderline)}


_EAGER_BATCH = 256


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


def check_chains(
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
    """Chain every format's partitions with early exit and compare with the eager model.

    Returns:
        Per format, :func:`compare_predictions`'s counts.

    Raises:
        ExportVerificationError: a format whose chain differs on a non-borderline sample.
    """
    from earlyexit.runtime.session import BundleSession

    exits = manifest.plan.cut_points
    chains: dict[str, Any] = {}
    for fmt in formats:
        if fmt == "onnx":  # through the runtime's own session, as a tier will run it
            sess = BundleSession(tmp, "fp32", ["CPUExecutionProvider"], manifest=manifest)
            runners = [functools.partial(sess.run_partition, k) for k in range(len(entries))]
        else:
            runners = [chain_runner(load_runner(fmt, str(tmp / e[fmt]))) for e in entries]
        got: dict[str, list[np.ndarray]] = {"exit_partition": [], "prediction": []}
        for i in range(0, len(vx), _EAGER_BATCH):
            r = run_chain(runners, vx[i : i + _EAGER_BATCH].numpy(), threshold)
            got["exit_partition"].append(r.exit_partition)
            got["prediction"].append(r.prediction)
        merged = {key: np.concatenate(val) for key, val in got.items()}
        chains[fmt] = compare_predictions(fmt, merged, want, exits, parts, vx, threshold, rtol)
    return chains
