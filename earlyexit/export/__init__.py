"""Export: a plan's partitions as verified ONNX, TorchScript and torch.export bundles.

``export_bundle(model, plan, out_dir)`` slices the model per the plan
(:func:`earlyexit.surgery.slicing.slice`), writes one file per partition and
format, checks every file and the chained early exit against the eager model,
and only then writes ``manifest.json`` (docs/spec.md, *Bundle*). The command line is
``earlyexit export``. Names load lazily (PEP 562), so the command line starts
without importing torch.

Example:
    ```python
    import earlyexit
    from earlyexit.export import export_bundle
    model = earlyexit.load("checkpoints/resnet20_fashionmnist.pt")
    export_bundle(model, "plan.json", "bundle/", target="arm")
    ```
"""

from __future__ import annotations

from earlyexit._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "FILE_SUFFIX": "earlyexit.export.constants",
    "FORMATS": "earlyexit.export.constants",
    "TARGETS": "earlyexit.export.constants",
    "ONNX_EXPORTERS": "earlyexit.export.constants",
    "FP32_ATOL": "earlyexit.export.constants",
    "FP32_RTOL": "earlyexit.export.constants",
    "FP32_TOLERANCE": "earlyexit.export.constants",
    "check_plan_matches": "earlyexit.export.bundle",
    "export_bundle": "earlyexit.export.bundle",
    "resolve_data": "earlyexit.export.bundle",
    "ExportVerificationError": "earlyexit.export.verify",
    "write_onnx": "earlyexit.export.writers",
    "write_onnx_fp16": "earlyexit.export.writers",
    "write_onnx_int8": "earlyexit.export.writers",
    "write_pt2": "earlyexit.export.writers",
    "write_torchscript": "earlyexit.export.writers",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
