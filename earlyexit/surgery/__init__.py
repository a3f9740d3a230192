"""Model surgery: decomposition into blocks, exit heads, multi-exit models.

Example:
    >>> from earlyexit import backbones
    >>> from earlyexit.surgery import MultiExitModel, decompose
    >>> MultiExitModel(decompose(backbones.create("resnet20"))).exits
    (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
"""

from earlyexit.surgery._indices import normalize_exits
from earlyexit.surgery.decompose import (
    BlockInfo,
    BlockSequence,
    Decomposition,
    decompose,
    list_cut_points,
    register_decomposer,
)
from earlyexit.surgery.heads import copy_classifier_head, linear_head
from earlyexit.surgery.multi_exit import EarlyExitResult, MultiExitModel, normalized_entropy
from earlyexit.surgery.tracing import register_autowrap_function, register_leaf_module, trace

__all__ = [
    "BlockInfo",
    "BlockSequence",
    "Decomposition",
    "EarlyExitResult",
    "MultiExitModel",
    "copy_classifier_head",
    "decompose",
    "linear_head",
    "list_cut_points",
    "normalize_exits",
    "normalized_entropy",
    "register_autowrap_function",
    "register_decomposer",
    "register_leaf_module",
    "trace",
]
