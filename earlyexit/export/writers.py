"""Writers for one partition: ONNX, TorchScript, ``torch.export``; int8 and fp16 ONNX.

Every writer takes a :class:`~earlyexit.surgery.slicing.Partition` in eval mode
and an example input whose batch axis is at least 2 (so that no exporter
specializes the batch size to 1), and writes one self-contained file with a
dynamic batch axis. Nothing here checks the files: that is
:mod:`earlyexit.export.verify`'s job.

ONNX goes through ``torch.onnx.export(dynamo=True)`` by default, the exporter
that ``torch.export`` and onnxscript back (the TorchScript-based one is
deprecated since torch 2.9); ``exporter="torchscript"`` selects the legacy one.
Weights are stored inside the ``.onnx`` file (no external data).

Example:
    ```python
    import torch
    from earlyexit import backbones, decompose, MultiExitModel
    from earlyexit.surgery.slicing import slice
    part = slice(MultiExitModel(decompose(backbones.create("resnet20"))).eval(), [10])[0]
    write_onnx(part, "p.onnx", torch.randn(2, 3, 32, 32))  # 'dynamo'
    ```
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from earlyexit.export.constants import ONNX_EXPORTERS
from earlyexit.surgery.slicing import Partition

__all__ = [
    "ONNX_EXPORTERS",
    "onnx_opset",
    "write_onnx",
    "write_torchscript",
    "write_pt2",
    "write_onnx_int8",
    "write_onnx_fp16",
]

_INPUT = "input"
_DYNAMO_MIN_OPSET = 18


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporters' progress prints and deprecation warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _check(partition: Partition, example: torch.Tensor) -> None:
    if not isinstance(partition, Partition):
        raise TypeError(f"expected an earlyexit Partition, got {type(partition).__name__}")
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or example.shape[0] < 2:
        raise ValueError(
            "the example input must be a tensor with a batch of at least 2 samples, so that "
            "the batch axis stays dynamic"
        )
    if partition.training:
        raise ValueError("put the partition in eval mode before exporting (partition.eval())")


def write_onnx(
    partition: Partition,
    path: str | os.PathLike[str],
    example: torch.Tensor,
    opset: int | None = None,
    exporter: str = "dynamo",
) -> str:
    """Export a partition to one ONNX file with a dynamic batch axis.

    Args:
        partition: the partition, in eval mode.
        path: the ``.onnx`` file to write.
        example: an input batch (``B >= 2``).
        opset: the ONNX opset; ``None`` takes the exporter's default. The dynamo
            exporter writes opset 18 and later; an older opset uses the legacy one.
        exporter: ``"dynamo"`` (default) or ``"torchscript"`` (legacy).

    Returns:
        The exporter used.

    Raises:
        ValueError: for an unknown exporter or a bad example.
        RuntimeError: if the exporter fails (its message is kept) or cannot
            write the requested opset.
    """
    _check(partition, example)
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; valid: {', '.join(ONNX_EXPORTERS)}")
    if exporter == "dynamo" and opset is not None and opset < _DYNAMO_MIN_OPSET:
        exporter = "torchscript"  # the dynamo exporter writes opset 18 and later only
    names = list(partition.output_names)
    kwargs: dict = {"input_names": [_INPUT], "output_names": names}
    if opset is not None:
        kwargs["opset_version"] = int(opset)
    if exporter == "dynamo":
        kwargs.update(
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
    else:
        kwargs.update(dynamo=False, dynamic_axes={n: {0: "batch"} for n in [_INPUT, *names]})
    with _quiet(), torch.no_grad():
        torch.onnx.export(partition, (example,), str(path), **kwargs)
    if opset is not None and onnx_opset(path) != opset:
        raise RuntimeError(
            f"asked for ONNX opset {opset}, but the {exporter} exporter wrote opset "
            f"{onnx_opset(path)}; pick another --opset"
        )
    return exporter


def onnx_opset(path: str | os.PathLike[str]) -> int:
    """The default-domain opset of an ONNX file.

    Example:
        ```python
        onnx_opset("partition_1.onnx")  # 18
        ```
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def write_torchscript(
    partition: Partition, path: str | os.PathLike[str], example: torch.Tensor
) -> None:
    """Trace a partition to TorchScript and save it (``partition_k.pt``).

    Tracing records the ops, not Python branches; a partition has none that
    depend on data, and shapes (the batch axis included) stay symbolic.

    Args:
        partition: the partition, in eval mode.
        path: the ``.pt`` file to write.
        example: an input batch (``B >= 2``).
    """
    _check(partition, example)
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(partition, (example,), check_trace=False)
        torch.jit.save(traced, str(path))


def write_pt2(partition: Partition, path: str | os.PathLike[str], example: torch.Tensor) -> None:
    """Export a partition with ``torch.export`` (dynamic batch) and save it (``.pt2``).

    Args:
        partition: the partition, in eval mode.
        path: the ``.pt2`` file to write.
        example: an input batch (``B >= 2``).
    """
    _check(partition, example)
    with _quiet(), torch.no_grad():
        program = torch.export.export(
            partition, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
        torch.export.save(program, str(path))


def _entropy_nodes(model: object, logits_name: str = "logits") -> list[str]:
    """Names of the nodes computed from the logits (the entropy test), named if needed."""
    graph = model.graph  # type: ignore[attr-defined]
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"node_{i}_{node.op_type}"
    tainted = {logits_name}
    out: list[str] = []
    for node in graph.node:  # nodes are topologically sorted in a valid ONNX graph
        if any(i in tainted for i in node.input):
            tainted.update(node.output)
            out.append(node.name)
    return out


def write_onnx_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: Sequence[np.ndarray],
    per_channel: bool = True,
) -> None:
    """Quantize an fp32 ONNX partition to int8 (static, QDQ), calibrated on real inputs.

    Convolutions, matrix products and residual additions are quantized (int8
    weights per channel, uint8 activations, min-max calibration); the exit's
    entropy test stays in float32, so thresholds keep their meaning.

    Args:
        src: the fp32 ``.onnx`` file.
        dst: the int8 ``.onnx`` file to write.
        calibration: input batches for this partition (the profiling split, run
            through the fp32 partitions before it).
        per_channel: per-channel weight scales.

    Raises:
        ValueError: if there is no calibration batch.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise ValueError("int8 quantization needs at least one calibration batch")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{_INPUT: b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    dst = Path(dst)
    pre = dst.with_name(f".{dst.stem}.pre.onnx")
    try:
        with _quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            model = onnx.load(str(pre))
            exclude = _entropy_nodes(model)
            onnx.save(model, str(pre))
            quantize_static(
                str(pre),
                str(dst),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv", "Gemm", "MatMul", "Add"],
                nodes_to_exclude=exclude,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    finally:
        pre.unlink(missing_ok=True)
        for extra in dst.parent.glob(f".{dst.stem}.pre*"):
            extra.unlink(missing_ok=True)


def write_onnx_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Convert an fp32 ONNX partition to fp16 for GPUs, keeping float32 inputs and outputs.

    The entropy test (every node computed from the logits) stays in float32.

    Args:
        src: the fp32 ``.onnx`` file.
        dst: the fp16 ``.onnx`` file to write.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    keep = _entropy_nodes(model)
    with _quiet():
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    onnx.save(half, str(dst))
