"""The report step of ``export_bundle``: accuracy per exit and what verification found.

The manifest's ``extra["verification"]`` (samples, tolerances, chained
agreement, the eager accuracy and exit fractions) and ``extra["quantization"]``
(accuracy per exit and with early exit of int8 / fp16 against fp32) are made
here. The early-exit outcome of a sample is read off its forced entropies by
:func:`earlyexit.runtime.chain.first_exits`, the chain's own rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earlyexit.export import verify as _verify
from earlyexit.runtime.chain import first_exits

__all__ = ["accuracy_report", "precision_report", "verification_summary"]

_EAGER_BATCH = 256


def accuracy_report(
    runners: Sequence[_verify.Runner], x: torch.Tensor, y: torch.Tensor | None, threshold: float
) -> dict[str, Any]:
    """Per-exit accuracy (every sample forced through every exit) and early-exit figures.

    One pass: the early-exit outcome of a sample is read off its forced entropies
    (it leaves at the first exit below the threshold, the last exit otherwise).

    Args:
        runners: per partition, from :func:`earlyexit.export.verify.load_runner`.
        x: the samples.
        y: their labels, or None (then only the exit fractions are reported).
        threshold: T.

    Returns:
        ``exit_fractions``, and with labels ``exit_accuracy`` (per exit) and
        ``accuracy`` (with early exit).
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
    exit_k = first_exits(entropy, threshold)
    out: dict[str, Any] = {"exit_fractions": [float((exit_k == k).mean()) for k in range(num)]}
    if y is not None:
        yy = y.numpy()
        out["exit_accuracy"] = [float((pred[k] == yy).mean()) for k in range(num)]
        out["accuracy"] = float((pred[exit_k, np.arange(n)] == yy).mean())
    return out


def precision_report(
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
    """Accuracy per exit and with early exit of int8 / fp16 against fp32 (``{}`` for fp32 only).

    Args:
        tmp: the directory holding the files.
        entries: per partition, ``{format key: file name}``.
        precisions: ``{precision: format key}``, fp32 included.
        vx, vy, vdesc: the verification samples, labels and description.
        threshold: T.
        calib: the int8 calibration data ``(inputs, labels, description)``.
        exits: the plan's exits.

    Returns:
        Per precision other than fp32, its report (the manifest's ``quantization``).
    """
    if len(precisions) < 2:
        return {}
    reports = {
        prec: accuracy_report(
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


def verification_summary(
    vdesc: str,
    vx: torch.Tensor,
    vy: torch.Tensor | None,
    want: tuple[np.ndarray, np.ndarray],
    chains: Mapping[str, Any],
    exits: Sequence[int],
    threshold: float,
    tolerance: float,
    rtol: float,
) -> dict[str, Any]:
    """The manifest's ``extra["verification"]``.

    Args:
        vdesc, vx, vy: the verification samples' description, inputs and labels.
        want: ``(exit_block, prediction)`` of the eager model.
        chains: per format, the chained agreement counts.
        exits: the plan's exits.
        threshold: T.
        tolerance, rtol: the fp32 tolerances used.
    """
    out: dict[str, Any] = {
        "data": vdesc,
        "samples": int(len(vx)),
        "tolerance_fp32": {"atol": float(tolerance), "rtol": float(rtol)},
        "chained": dict(chains),
        "reference": f"MultiExitModel.select_exits({list(exits)}).predict(x, {threshold:g})",
    }
    if vy is not None:
        out["accuracy"] = float((want[1] == vy.numpy()).mean())
        out["exit_fractions"] = [float((want[0] == e).mean()) for e in exits]
    return out
