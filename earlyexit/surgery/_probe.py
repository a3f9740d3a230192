"""Trial runs of a module on a dummy input, leaving the module as it was.

Surgery runs modules to learn shapes, MACs and what a classifier accepts. Each
trial puts the module in eval mode and restores every submodule's own
train/eval mode afterwards (a copy in training mode stays so), computes no
gradients and hides what ``torch.fx`` prints to stderr when a ``GraphModule``
fails. The adaptive pooling layers by input rank are here as well, since the
heads and the sequential adaptation both pick one by rank.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["ADAPTIVE_POOLS", "WEIGHTED", "eval_mode", "quiet"]

ADAPTIVE_POOLS: dict[int, type[nn.Module]] = {
    2: nn.AdaptiveAvgPool1d,
    3: nn.AdaptiveAvgPool2d,
    4: nn.AdaptiveAvgPool3d,
}
"""Adaptive average pooling by the rank of one sample (``[C, L]``, ``[C, H, W]``, ...)."""

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""The layers whose input width is a weight's shape (the ones adaptation rebuilds)."""


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode; on exit, give every submodule its own mode back.

    Args:
        module: any module; it is the one yielded.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> m[0].eval()
        Linear(in_features=2, out_features=2, bias=True)
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m.training, m[0].training
        (True, False)
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No gradients, and nothing on stderr (``torch.fx`` prints a failing graph's line)."""
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        yield
