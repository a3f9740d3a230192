"""Checks of exported partitions against the eager model, before a manifest is written.

The verify step of ``export_bundle`` (:func:`verify_files`, :func:`check_chains`).
Two checks (issue 6, docs/spec.md *Bundle*); the first, per file, lives in
:mod:`earlyexit.export.file_checks` (its names are re-exported here), the
second, the chain, here:

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earlyexit.export.constants import ENTROPY_TIE, FP32_ATOL, FP32_RTOL, FP32_TOLERANCE, LOGIT_TIE
from earlyexit.export.file_checks import (
    ExportVerificationError,
    Runner,
    check_outputs,
    eager_chain_inputs,
    load_runner,
    max_abs_diff,
    verify_files,
)
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
