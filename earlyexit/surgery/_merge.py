"""Coarser block sequences: neighbouring blocks joined into one.

Two reasons to join blocks after a decomposition: ``max_blocks`` (at most that
many blocks, the runs of about equal length) and a block whose output's class
token is the same for every input (a ViT's patch embedding, which would give
an exit that answers the same for every sample). Joined blocks become an
``nn.Sequential`` named after their last block; the result is a new
:class:`~earlyexit.surgery.decompose.BlockSequence` over the same modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from earlyexit.surgery._indices import even_ends
from earlyexit.surgery._probe import eval_mode

if TYPE_CHECKING:
    from earlyexit.surgery.decompose import BlockSequence

__all__ = ["join_constant_class_tokens", "merge_blocks"]


def _regroup(seq: BlockSequence, ends: Sequence[int]) -> BlockSequence:
    """``seq`` with blocks ``[previous end, end)`` joined, for each exclusive ``end``."""
    if len(ends) == len(seq):
        return seq
    blocks, start = [], 0
    for end in ends:
        group = list(seq.blocks[start:end])
        blocks.append((seq.names[end - 1], group[0] if len(group) == 1 else nn.Sequential(*group)))
        start = end
    return type(seq)(blocks, seq.classifier, seq.input_shape, seq.source)


def merge_blocks(seq: BlockSequence, max_blocks: int | None) -> BlockSequence:
    """Merge neighbouring blocks so that at most ``max_blocks`` remain.

    Args:
        seq: the block sequence (its modules are reused, not copied).
        max_blocks: the most blocks to keep; ``None`` keeps them all.

    Returns:
        ``seq`` itself when it is short enough, else a new sequence.
    """
    if max_blocks is None or len(seq) <= max_blocks:
        return seq
    return _regroup(seq, even_ends(len(seq), max_blocks))


def join_constant_class_tokens(seq: BlockSequence) -> BlockSequence:
    """Join a block to the next when its output's first token is the same for every input.

    A ViT's patch embedding prepends a learned class token that no input has
    touched yet: an exit there, reading that token as the model's head does,
    would answer the same for every sample. Such a block ends no default block.

    Args:
        seq: the block sequence (its modules are reused; their modes are kept).

    Returns:
        ``seq`` itself when no block has a constant class token, else a new sequence.
    """
    if len(seq) < 2:
        return seq
    x = torch.randn(2, *seq.input_shape, generator=torch.Generator().manual_seed(0))
    ends = []
    with torch.no_grad(), eval_mode(seq):
        h = x
        for i, block in enumerate(seq.blocks[:-1], 1):
            h = block(h)
            if not (h.ndim == 3 and torch.equal(h[0, 0], h[1, 0])):
                ends.append(i)
    ends.append(len(seq))
    return _regroup(seq, ends)
