"""earlyexit: early-exit model surgery, profiling, planning and deployment.

The public API is loaded lazily (PEP 562), so ``import earlyexit.runtime`` and
``import earlyexit.planner`` never pull in PyTorch.

Example:
    >>> import earlyexit
    >>> model = earlyexit.MultiExitModel(earlyexit.decompose(
    ...     earlyexit.backbones.create("resnet20", num_classes=10)), num_classes=10)
    >>> len(model.exits)
    10
"""

from __future__ import annotations

from earlyexit._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "backbones": "earlyexit.backbones",
    "decompose": "earlyexit.surgery.decompose",
    "list_cut_points": "earlyexit.surgery.decompose",
    "BlockSequence": "earlyexit.surgery.decompose",
    "BlockInfo": "earlyexit.surgery.decompose",
    "MultiExitModel": "earlyexit.surgery.multi_exit",
    "EarlyExitResult": "earlyexit.surgery.multi_exit",
    "normalized_entropy": "earlyexit.surgery.multi_exit",
    "Profile": "earlyexit.formats",
    "Topology": "earlyexit.formats",
    "Plan": "earlyexit.formats",
    "plan": "earlyexit.planner",
    "pareto": "earlyexit.planner",
    "plan_capacity": "earlyexit.planner.api",
    "load": "earlyexit.checkpoint",
    "slice": "earlyexit.surgery.slicing",
    "Partition": "earlyexit.surgery.slicing",
    "export_bundle": "earlyexit.export.bundle",
    "profile": "earlyexit.profiling.api",
    "merge_profiles": "earlyexit.profiling.api",
}

__all__ = sorted([*_LAZY, "__version__"])


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
