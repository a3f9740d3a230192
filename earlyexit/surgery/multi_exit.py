"""Multi-exit models: a block sequence with an exit branch after chosen blocks.

Early exit is real: in :meth:`MultiExitModel.predict`, samples that exit stop,
and only the remaining ones go through later blocks.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from earlyexit.surgery._indices import normalize_exits
from earlyexit.surgery.decompose import BlockInfo, BlockSequence, decompose
from earlyexit.surgery.heads import HeadFactory, resolve_head_factory

__all__ = ["EarlyExitResult", "MultiExitModel", "normalized_entropy", "check_threshold"]


def normalized_entropy(
    logits: torch.Tensor, temperature: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Normalized entropy of ``softmax(logits / temperature)`` over the last axis.

    ``eta(x) = -sum_c x_c log x_c / log |C|``, in [0, 1] (docs/spec.md).

    Args:
        logits: ``[..., C]`` with ``C >= 2``.
        temperature: a positive scalar (calibration).

    Returns:
        ``[...]`` entropies.

    Raises:
        ValueError: if there are fewer than 2 classes.

    Example:
        >>> import torch
        >>> float(normalized_entropy(torch.zeros(1, 4)))
        1.0
    """
    num_classes = logits.shape[-1]
    if num_classes < 2:
        raise ValueError(f"normalized entropy needs at least 2 classes, got {num_classes}")
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1) / math.log(num_classes)


def check_threshold(threshold: float) -> float:
    """Validate an entropy threshold in [0, 1] and return it as a float.

    Raises:
        TypeError: if it is not a real number.
        ValueError: if it is outside [0, 1].
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


@dataclass
class EarlyExitResult:
    """What :meth:`MultiExitModel.predict` returns, one row per input sample.

    Attributes:
        logits: ``[B, C]`` logits of the exit each sample left at.
        prediction: ``[B]`` predicted class.
        exit_block: ``[B]`` 1-based block number of the exit taken.
        entropy: ``[B]`` normalized entropy at that exit (after temperature).
    """

    logits: torch.Tensor
    prediction: torch.Tensor
    exit_block: torch.Tensor
    entropy: torch.Tensor


class MultiExitModel(nn.Module):
    """A backbone's blocks with an exit branch after each chosen block.

    Args:
        blocks: the decomposed backbone (it is copied, never changed).
        num_classes: number of classes; inferred from the backbone's classifier
            when ``None``.
        exits: 1-based block numbers of the exits, strictly increasing; ``None``
            puts an exit after every block (the full configuration). Blocks after
            the last exit are dropped (a partial DNN).
        head_factory: ``None``/``"copy"`` (a copy of the backbone's classifier
            adapted to each block, PORTEND's choice, else global pooling and the
            classifier's layer types: see :mod:`earlyexit.surgery.heads`; a
            ``blocks.head_hint`` set by the decomposition guides it),
            ``"linear"`` (pool, flatten, linear), or
            ``factory(block, shape, num_classes) -> nn.Module``. Heads are built
            only for ``exits``, so a model of hundreds of blocks with a few exits
            builds a few heads. The last block's exit of ``"copy"`` is the
            backbone's own classifier (last exit == model output).

    Raises:
        TypeError: if ``blocks`` is not a ``BlockSequence`` (or an ``nn.Module``
            that :func:`decompose` knows).
        ValueError: for bad exits or a class count that does not match the copied
            classifier.

    Example:
        >>> import torch
        >>> from earlyexit import backbones, decompose
        >>> m = MultiExitModel(decompose(backbones.create("resnet20")), exits=[3, 10]).eval()
        >>> [tuple(y.shape) for y in m(torch.zeros(2, 3, 32, 32))]
        [(2, 10), (2, 10)]
        >>> m.predict(torch.zeros(2, 3, 32, 32), threshold=0.0).exit_block.tolist()
        [10, 10]
    """

    def __init__(
        self,
        blocks: BlockSequence | nn.Module,
        num_classes: int | None = None,
        exits: Sequence[int] | int | None = None,
        head_factory: HeadFactory | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(blocks, BlockSequence):
            if not isinstance(blocks, nn.Module):
                raise TypeError(
                    f"MultiExitModel expects a BlockSequence (see earlyexit.decompose), got "
                    f"{type(blocks).__name__}"
                )
            blocks = decompose(blocks)
        n = len(blocks)
        exits = normalize_exits(exits, n)
        backbone_classes = blocks.output_shape[0] if len(blocks.output_shape) == 1 else None
        if num_classes is None:
            if backbone_classes is None:
                raise ValueError("num_classes is required: the classifier's output is not [B, C]")
            num_classes = backbone_classes
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        factory, self.head_kind = resolve_head_factory(
            head_factory,
            blocks.classifier,
            blocks.block_info[-1].output_shape,
            getattr(blocks, "head_hint", None),
        )
        if self.head_kind == "copy" and num_classes != backbone_classes:
            raise ValueError(
                f"num_classes={num_classes} but the backbone's classifier has {backbone_classes} "
                "outputs; create the backbone with num_classes or pass head_factory='linear'"
            )
        last = exits[-1]
        self.blocks = nn.ModuleList(copy.deepcopy(list(blocks.blocks[:last])))
        self.block_names: list[str] = list(blocks.names[:last])
        self.block_info: list[BlockInfo] = list(blocks.block_info[:last])
        self.input_shape: tuple[int, ...] = blocks.input_shape
        self.num_classes = num_classes
        self.num_backbone_blocks = n
        self.source = copy.deepcopy(blocks.source)
        self.heads = nn.ModuleDict()
        for i in exits:
            shape = self.block_info[i - 1].output_shape
            head = (
                copy.deepcopy(blocks.classifier)
                if i == n and self.head_kind == "copy"
                else factory(i, shape, num_classes)
            )
            if not isinstance(head, nn.Module):
                raise TypeError(f"the head factory returned {type(head).__name__} for exit {i}")
            self.heads[str(i)] = head
        self.register_buffer("temperatures", torch.ones(len(exits)))
        self._set_exits(exits)

    def _set_exits(self, exits: tuple[int, ...]) -> None:
        self.exits: tuple[int, ...] = tuple(exits)
        # per block: index into self.exits, or -1
        self._exit_slot = [-1] * len(self.blocks)
        for slot, block in enumerate(exits):
            self._exit_slot[block - 1] = slot

    # ------------------------------------------------------------------ metadata

    @property
    def num_blocks(self) -> int:
        """Number of blocks this model runs (up to its last exit)."""
        return len(self.blocks)

    @property
    def config(self) -> dict:
        """A JSON-able description that :meth:`from_config` rebuilds (weights aside)."""
        return {
            **(self.source or {"backbone": None}),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "exits": list(self.exits),
            "head": self.head_kind,
        }

    @classmethod
    def from_config(cls, config: dict, create: Callable[..., nn.Module]) -> MultiExitModel:
        """Rebuild a model (random weights) from :attr:`config`.

        Args:
            config: what :attr:`config` returned.
            create: the backbone constructor, ``earlyexit.backbones.create`` (passed in,
                so that surgery does not depend on the registry that registers into it).
                ``config["backbone_kwargs"]`` (options such as timm's ``img_size``),
                when present, are passed to it.

        Returns:
            The model, with the config's exits and head kind.

        Raises:
            ValueError: if the config does not name a registry backbone or used a
                custom head factory.

        Example:
            >>> from earlyexit import backbones, decompose
            >>> m = MultiExitModel(decompose(backbones.create("resnet20"))).select_exits([3, 10])
            >>> MultiExitModel.from_config(m.config, backbones.create).exits
            (3, 10)
        """
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        missing = [k for k in ("backbone", "num_classes", "exits") if k not in config]
        if missing:
            raise ValueError(f"model config lacks {missing}")
        if not config["backbone"]:
            raise ValueError("the model config names no registry backbone, so it cannot be rebuilt")
        if config.get("head", "copy") not in ("copy", "linear"):
            raise ValueError(f"cannot rebuild a model with a {config.get('head')!r} head factory")
        in_chans = config.get("in_chans", (config.get("input_shape") or [3])[0])
        kwargs = config.get("backbone_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"backbone_kwargs must be a mapping, got {type(kwargs).__name__}")
        backbone = create(
            config["backbone"],
            num_classes=int(config["num_classes"]),
            in_chans=int(in_chans),
            **kwargs,
        )
        input_shape = config.get("input_shape")
        options = config.get("decomposition") or {}
        if not isinstance(options, dict) or not set(options) <= {
            "cut_points", "granularity", "max_blocks"
        }:  # fmt: skip
            raise ValueError(
                f"decomposition must be a mapping of decompose options, got {options!r}"
            )
        blocks = decompose(backbone, input_shape=input_shape, **options)
        return cls(
            blocks,
            num_classes=int(config["num_classes"]),
            exits=list(config["exits"]),
            head_factory=config.get("head", "copy"),
        )

    def select_exits(self, exits: Sequence[int] | int) -> MultiExitModel:
        """A new model that keeps only ``exits`` (a subset of :attr:`exits`).

        Blocks after the last kept exit are dropped. Weights are copied.

        Raises:
            ValueError: if an exit is not active in this model or exits are not
                strictly increasing.

        Example:
            >>> from earlyexit import backbones, decompose
            >>> m = MultiExitModel(decompose(backbones.create("resnet20")))
            >>> small = m.select_exits([2, 6])
            >>> small.exits, small.num_blocks, m.exits[-1]
            ((2, 6), 6, 10)
        """
        exits = normalize_exits(exits, self.num_blocks)
        unknown = [e for e in exits if e not in self.exits]
        if unknown:
            raise ValueError(
                f"exits {unknown} are not active in this model; active exits: {list(self.exits)}"
            )
        last = exits[-1]
        # copy only what the new model keeps: dropped blocks and heads map to None
        memo: dict[int, object] = {id(b): None for b in self.blocks[last:]}
        memo.update({id(h): None for k, h in self.heads.items() if int(k) not in exits})
        new = copy.deepcopy(self, memo)
        new.blocks = nn.ModuleList(list(new.blocks[:last]))
        new.block_names = new.block_names[:last]
        new.block_info = new.block_info[:last]
        slots = [self.exits.index(e) for e in exits]
        new.heads = nn.ModuleDict({str(e): new.heads[str(e)] for e in exits})
        new.temperatures = self.temperatures[slots].clone()
        new._set_exits(exits)
        return new

    def set_temperatures(self, temperatures: Sequence[float] | torch.Tensor) -> None:
        """Set the per-exit softmax temperatures used by :meth:`predict`.

        Raises:
            ValueError: for a wrong count or a non-positive value.
        """
        t = torch.as_tensor(temperatures, dtype=torch.float32).flatten()
        if t.numel() != len(self.exits):
            raise ValueError(
                f"expected {len(self.exits)} temperatures (one per exit), got {t.numel()}"
            )
        if not bool((t > 0).all()):
            raise ValueError(f"temperatures must be positive, got {t.tolist()}")
        self.temperatures.copy_(t)

    # ------------------------------------------------------------------ compute

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a tensor, got {type(x).__name__}")
        if x.dim() != len(self.input_shape) + 1 or x.shape[1] != self.input_shape[0]:
            raise ValueError(
                f"expected input of shape [B, {self.input_shape[0]}, ...] (one sample is "
                f"{tuple(self.input_shape)}), got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every active exit, in order (what training needs)."""
        self._check_input(x)
        outputs: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks, 1):
            x = block(x)
            if self._exit_slot[i - 1] >= 0:
                outputs.append(self.heads[str(i)](x))
        return outputs

    @torch.no_grad()
    def predict(self, x: torch.Tensor, threshold: float) -> EarlyExitResult:
        """Classify a batch with real early exit.

        A sample leaves at the first exit whose normalized entropy (after that
        exit's temperature) is below ``threshold``; the last exit takes every
        sample that reaches it. Samples that leave are not computed further.
        Call ``.eval()`` first: batch statistics would couple the samples.

        Args:
            x: ``[B, *input_shape]``; any batch size.
            threshold: in [0, 1]; 0 disables early exit.

        Returns:
            An :class:`EarlyExitResult` with one row per input sample.

        Raises:
            TypeError, ValueError: for a bad input or threshold.
        """
        self._check_input(x)
        threshold = check_threshold(threshold)
        if self.training:
            warnings.warn("predict() on a model in training mode; call .eval() first", stacklevel=2)
        batch = x.shape[0]
        logits_out = x.new_zeros(batch, self.num_classes, dtype=torch.float32)
        exit_block = torch.zeros(batch, dtype=torch.long, device=x.device)
        entropy_out = x.new_zeros(batch, dtype=torch.float32)
        remaining = torch.arange(batch, device=x.device)
        last = self.exits[-1]
        h = x
        for i, block in enumerate(self.blocks, 1):
            h = block(h)
            slot = self._exit_slot[i - 1]
            if slot < 0:
                continue
            logits = self.heads[str(i)](h).float()
            entropy = normalized_entropy(logits, self.temperatures[slot])
            if i == last:
                leave = None
            else:
                leave = entropy < threshold
                if not bool(leave.any()):
                    continue
            if leave is None or bool(leave.all()):
                logits_out[remaining] = logits
                entropy_out[remaining] = entropy
                exit_block[remaining] = i
                break
            idx = remaining[leave]
            logits_out[idx] = logits[leave]
            entropy_out[idx] = entropy[leave]
            exit_block[idx] = i
            stay = ~leave
            h = h[stay]
            remaining = remaining[stay]
        return EarlyExitResult(logits_out, logits_out.argmax(-1), exit_block, entropy_out)

    def extra_repr(self) -> str:
        return f"exits={list(self.exits)}, num_classes={self.num_classes}"
