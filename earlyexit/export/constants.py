"""The export choices and tolerances, declared once (no torch: the command line reads them).

Both :func:`earlyexit.export.export_bundle` and ``earlyexit export`` use these
names, so a format, a target or a default tolerance is spelt in one place.

fp32 tolerance. An exported fp32 output ``a`` passes against eager PyTorch ``b``
when, on every checked batch::

    max |a - b| <= FP32_ATOL + FP32_RTOL * max |b|

This is :func:`torch.testing.assert_close`'s rule ``|a - b| <= atol + rtol * |b|``
with the reference magnitude taken over the whole output instead of element by
element: float rounding in a deep network grows with the magnitude of the sums
that produce an output, so a logit near 0 among logits that reach 268 carries
the same absolute rounding error as the largest one, and an element-wise rule
would fail it. ``FP32_RTOL = 1e-4`` passes rounding several orders of magnitude
above what deep models show (a timm EfficientNet-B0 partition: 4.5e-4 on logits
reaching 268, 1.7e-6 of their magnitude) and still fails a real error, which
changes outputs by a sizeable fraction of their magnitude (a wrong weight, a
missing op, a wrong layout). ``FP32_ATOL = 1e-4`` is the absolute floor for
outputs that are all near zero (it was the whole tolerance before).

int8 and fp16 files are not held to a tolerance: they are judged by the chained
early exit's agreement in exit and class and by accuracy per exit, which the
manifest records (``extra["quantization"]``).

Example:
    >>> "onnx" in FORMATS and "arm" in TARGETS
    True
    >>> allowed_difference(268.0)  # what an output reaching 268 may be off by
    0.0269
"""

from __future__ import annotations

__all__ = [
    "ENTROPY_TIE",
    "FILE_SUFFIX",
    "FORMATS",
    "FP32_ATOL",
    "FP32_RTOL",
    "FP32_TOLERANCE",
    "LOGIT_TIE",
    "ONNX_EXPORTERS",
    "TARGETS",
    "allowed_difference",
]

FORMATS: tuple[str, ...] = ("onnx", "torchscript", "pt2")
"""fp32 file formats, one file per partition each."""

TARGETS: tuple[str, ...] = ("cpu", "arm", "gpu")
"""``cpu``: fp32 only; ``arm`` adds int8 ONNX; ``gpu`` adds fp16 ONNX."""

ONNX_EXPORTERS: tuple[str, ...] = ("dynamo", "torchscript")
"""``torch.onnx.export(dynamo=True)`` (default) or the legacy TorchScript-based one."""

FILE_SUFFIX: dict[str, str] = {
    "onnx": ".onnx",
    "torchscript": ".pt",
    "pt2": ".pt2",
    "onnx_int8": ".int8.onnx",
    "onnx_fp16": ".fp16.onnx",
}
"""File name suffix per format and precision (``partition_k`` + suffix)."""

FP32_RTOL: float = 1e-4
"""Relative tolerance of fp32 files, relative to the output's largest magnitude."""

FP32_ATOL: float = 1e-4
"""Absolute tolerance of fp32 files (the floor for outputs near zero)."""

FP32_TOLERANCE: float = FP32_ATOL
"""Former name of :data:`FP32_ATOL`, kept for callers that imported it."""

ENTROPY_TIE: float = 1e-5
"""A sample whose entropy lies this close to the threshold may exit either way."""

LOGIT_TIE: float = 1e-4
"""Two best logits this close (plus :data:`FP32_RTOL` of their magnitude) tie."""


def allowed_difference(scale: float, rtol: float = FP32_RTOL, atol: float = FP32_ATOL) -> float:
    """The largest absolute difference allowed on an output whose magnitude reaches ``scale``.

    Args:
        scale: the largest absolute value of the eager output.
        rtol: relative tolerance.
        atol: absolute tolerance.

    Returns:
        ``atol + rtol * scale``.
    """
    return atol + rtol * abs(scale)
