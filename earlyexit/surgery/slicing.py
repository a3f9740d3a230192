"""Slicing a multi-exit model into partitions, one per plan partition.

Partition ``k`` holds blocks ``P_{k-1}+1 .. P_k`` and the exit branch after
block ``P_k`` (docs/spec.md, *Indexing*). Its ``forward`` takes the tensor coming in
(the model input for the first partition, the previous partition's features
otherwise) and returns the exit's logits, the normalized entropy of
``softmax(logits / t)`` with that exit's temperature ``t``, and, for every
partition but the last, the features for the next one. The graph has no
data-dependent Python control flow, so it traces, scripts to TorchScript and
exports to ONNX and ``torch.export`` as one static graph; early exit happens
*between* partitions, where the caller compares the entropy with the threshold.

Slicing is pure: the model is deep-copied, never changed, and its train/eval
mode is kept by the partitions (export puts them in eval mode).

Example:
    >>> import torch
    >>> from earlyexit import backbones, decompose, MultiExitModel
    >>> model = MultiExitModel(decompose(backbones.create("resnet20"))).eval()
    >>> parts = slice(model, [3, 10])
    >>> [(p.first_block, p.last_block) for p in parts]
    [(1, 3), (4, 10)]
    >>> logits, entropy, features = parts[0](torch.zeros(2, 3, 32, 32))
    >>> logits.shape, entropy.shape, features.shape[0]
    (torch.Size([2, 10]), torch.Size([2]), 2)
    >>> len(parts[1](features))
    2
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from earlyexit.formats import Plan
from earlyexit.surgery._indices import normalize_exits
from earlyexit.surgery.multi_exit import MultiExitModel

__all__ = ["Partition", "slice", "partition_ranges"]

PartitionSpec = Plan | Sequence[int] | Sequence[tuple[int, int]] | Sequence[Sequence[int]]


class Partition(nn.Module):
    """Blocks ``first_block..last_block`` of a multi-exit model and the exit after them.

    Build partitions with :func:`slice` rather than directly.

    Args:
        blocks: the partition's blocks, in order (used as given, not copied).
        head: the exit branch after ``last_block``.
        temperature: that exit's softmax temperature (> 0).
        index: 0-based position of the partition in the bundle.
        first_block, last_block: 1-based block numbers, inclusive.
        is_last: whether this is the last partition (it then returns no features).
        input_shape: shape of one incoming sample (without the batch axis).
        output_shape: shape of one sample of the features after ``last_block``.
        num_classes: the exit's class count.

    Raises:
        ValueError: for a non-positive temperature or an empty block range.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> p = Partition([nn.Flatten(1)], nn.Linear(4, 3), 1.0, 0, 1, 1, True, (4,), (4,), 3)
        >>> [t.shape for t in p(torch.zeros(5, 4))]
        [torch.Size([5, 3]), torch.Size([5])]
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        head: nn.Module,
        temperature: float,
        index: int,
        first_block: int,
        last_block: int,
        is_last: bool,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        num_classes: int,
    ) -> None:
        super().__init__()
        if not 1 <= first_block <= last_block:
            raise ValueError(
                f"a partition needs 1 <= first_block <= last_block, got {first_block}..{last_block}"
            )
        if len(blocks) != last_block - first_block + 1:
            raise ValueError(
                f"blocks {first_block}..{last_block} need {last_block - first_block + 1} modules, "
                f"got {len(blocks)}"
            )
        temperature = float(temperature)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32))
        self.index = int(index)
        self.first_block = int(first_block)
        self.last_block = int(last_block)
        self.is_last = bool(is_last)
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in input_shape)
        self.output_shape: tuple[int, ...] = tuple(int(s) for s in output_shape)
        self.num_classes = int(num_classes)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        # a Python constant, so that tracing records no data-dependent branch or shape read
        self.log_num_classes = math.log(self.num_classes)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the outputs: ``logits``, ``entropy`` and, but for the last, ``features``."""
        return ("logits", "entropy") if self.is_last else ("logits", "entropy", "features")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the blocks and the exit branch.

        Args:
            x: ``[B, *input_shape]``.

        Returns:
            ``(logits [B, C] float32, entropy [B] float32, features [B, *output_shape])``;
            the last partition returns ``(logits, entropy)``.
        """
        features = self.blocks(x)
        logits = self.head(features).float()
        # normalized_entropy(logits, temperature), op for op, with the class count fixed
        logp = torch.log_softmax(logits / self.temperature, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1) / self.log_num_classes
        # ``is_last`` is fixed at construction: a constant for tracing and export
        if self.is_last:
            return logits, entropy
        return logits, entropy, features

    def extra_repr(self) -> str:
        return (
            f"index={self.index}, blocks={self.first_block}..{self.last_block}, "
            f"is_last={self.is_last}"
        )


def partition_ranges(
    model: MultiExitModel, plan_or_exits: PartitionSpec
) -> tuple[tuple[int, int], ...]:
    """Normalize a plan, an exit list or ``(first, last)`` pairs to block ranges.

    Args:
        model: the model the ranges refer to (for the block count and active exits).
        plan_or_exits: a :class:`~earlyexit.formats.Plan`; a list of exits (the
            last block of each partition, 1-based, negative from the end); or
            ``(first_block, last_block)`` pairs that tile ``1..P_L`` contiguously.

    Returns:
        ``((first_block, last_block), ...)``, 1-based and inclusive.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for ranges that do not tile from block 1, or an exit that is
            not active in ``model`` (the list names the active ones).

    Example:
        >>> from earlyexit import backbones, decompose, MultiExitModel
        >>> m = MultiExitModel(decompose(backbones.create("resnet20")))
        >>> partition_ranges(m, [2, -1]), partition_ranges(m, [(1, 4), (5, 6)])
        (((1, 2), (3, 10)), ((1, 4), (5, 6)))
    """
    if not isinstance(model, MultiExitModel):
        raise TypeError(f"expected an earlyexit.MultiExitModel, got {type(model).__name__}")
    if isinstance(plan_or_exits, Plan):
        pairs = [(p.first_block, p.last_block) for p in plan_or_exits.partitions]
        exits = tuple(last for _, last in pairs)
    elif isinstance(plan_or_exits, (str, bytes, dict)) or not isinstance(
        plan_or_exits, (Sequence, int)
    ):
        raise TypeError(
            "expected an earlyexit.formats.Plan, a list of exits or (first_block, last_block) "
            f"pairs, got {type(plan_or_exits).__name__}"
        )
    else:
        items = [plan_or_exits] if isinstance(plan_or_exits, int) else list(plan_or_exits)
        if items and all(isinstance(i, (tuple, list)) for i in items):
            pairs = []
            for i, item in enumerate(items):
                if len(item) != 2 or not all(
                    isinstance(b, int) and not isinstance(b, bool) for b in item
                ):
                    raise TypeError(
                        f"partition {i}: expected a (first_block, last_block) pair of ints, "
                        f"got {item!r}"
                    )
                pairs.append((int(item[0]), int(item[1])))
            exits = tuple(last for _, last in pairs)
        else:
            exits = normalize_exits(items, model.num_blocks, "exits")
            pairs = []
    prev = 0
    if pairs:
        for i, (first, last) in enumerate(pairs):
            if first != prev + 1 or last < first:
                raise ValueError(
                    f"partition {i}: blocks {first}..{last} do not continue the previous "
                    f"partition (expected first_block={prev + 1} and last_block >= first_block)"
                )
            prev = last
    exits = normalize_exits(exits, model.num_blocks, "exits")
    missing = [e for e in exits if e not in model.exits]
    if missing:
        raise ValueError(
            f"exit(s) {missing} are not active in this model; active exits: {list(model.exits)}"
        )
    starts = (0, *exits[:-1])
    return tuple((a + 1, b) for a, b in zip(starts, exits, strict=True))


def slice(  # noqa: A001 - the public name the issue asks for (earlyexit.slice)
    model: MultiExitModel, plan_or_exits: PartitionSpec
) -> list[Partition]:
    """Cut ``model`` into partitions per a plan (pure: ``model`` is not changed).

    Args:
        model: the trained multi-exit model; every partition's last block must be
            one of its active exits.
        plan_or_exits: a :class:`~earlyexit.formats.Plan`, a list of exits
            (1-based last block of each partition) or ``(first_block, last_block)``
            pairs; see :func:`partition_ranges`.

    Returns:
        The partitions in order; each holds deep copies of its blocks and head and
        its exit's temperature, in the model's train/eval mode.

    Raises:
        TypeError, ValueError: see :func:`partition_ranges`.

    Example:
        >>> from earlyexit import backbones, decompose, MultiExitModel
        >>> m = MultiExitModel(decompose(backbones.create("resnet20")))
        >>> [p.is_last for p in slice(m, [4, 10])]
        [False, True]
    """
    ranges = partition_ranges(model, plan_or_exits)
    temps = model.temperatures.detach().cpu().tolist()
    parts: list[Partition] = []
    for k, (first, last) in enumerate(ranges):
        blocks = [copy.deepcopy(model.blocks[i - 1]) for i in range(first, last + 1)]
        head = copy.deepcopy(model.heads[str(last)])
        in_shape = model.input_shape if first == 1 else model.block_info[first - 2].output_shape
        part = Partition(
            blocks,
            head,
            temps[model.exits.index(last)],
            index=k,
            first_block=first,
            last_block=last,
            is_last=k == len(ranges) - 1,
            input_shape=in_shape,
            output_shape=model.block_info[last - 1].output_shape,
            num_classes=model.num_classes,
        )
        part.train(model.training)
        parts.append(part)
    return parts
