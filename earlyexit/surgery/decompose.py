"""Decompose a backbone into a linear sequence of blocks.

Known backbones decompose by the registry of decomposers (looked up by type,
walking the MRO, so subclasses inherit their parent's). Any other model is
traced with ``torch.fx`` (:mod:`earlyexit.surgery.tracing`) and cut at its own
block boundaries (:mod:`earlyexit.surgery.defaults`) or at user-named cut
points. A cut is valid only if nothing computed before it is used after it
(it does not cross a skip connection); constants and shape-only values such as
the batch size are recomputed inside the block that needs them.

Here: the decomposer registry, :class:`BlockSequence` and :func:`decompose`
itself. The ``torch.fx`` path is in ``surgery/_fxdecompose.py``, the merging of
neighbouring blocks (``max_blocks``, a ViT's constant class token) in
``surgery/_merge.py``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from earlyexit.surgery._probe import eval_mode

__all__ = [
    "BlockInfo",
    "BlockSequence",
    "Decomposition",
    "decompose",
    "list_cut_points",
    "register_decomposer",
]

_Shape = Sequence[int]


@dataclass(frozen=True)
class Decomposition:
    """What a decomposer returns: named blocks in order and the final classifying layers."""

    blocks: list[tuple[str, nn.Module]]
    classifier: nn.Module


_DECOMPOSERS: dict[type, Callable[[nn.Module], Decomposition]] = {}


def register_decomposer(
    cls: type,
) -> Callable[[Callable[[nn.Module], Decomposition]], Callable[[nn.Module], Decomposition]]:
    """Register how models of type ``cls`` (and its subclasses) split into blocks.

    Args:
        cls: an ``nn.Module`` subclass.

    Returns:
        A decorator for ``fn(model) -> Decomposition``; the function receives a
        private copy of the model and may reuse its submodules. Registering a
        class again replaces its decomposer.

    Example:
        >>> from torch import nn
        >>> class Net(nn.Sequential): pass
        >>> @register_decomposer(Net)
        ... def _split(m): return Decomposition([(str(i), b) for i, b in enumerate(m[:-1])], m[-1])
        >>> len(decompose(Net(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), input_shape=(4,)))
        2
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_decomposer expects an nn.Module subclass, got {cls!r}")

    def decorator(fn: Callable[[nn.Module], Decomposition]) -> Callable[[nn.Module], Decomposition]:
        _DECOMPOSERS[cls] = fn
        return fn

    return decorator


def _find_decomposer(model: nn.Module) -> Callable[[nn.Module], Decomposition] | None:
    from earlyexit.surgery.known import ensure_known_decomposers

    ensure_known_decomposers(model)
    for klass in type(model).__mro__:
        if klass in _DECOMPOSERS:
            return _DECOMPOSERS[klass]
    return None


@dataclass(frozen=True)
class BlockInfo:
    """Metadata of one block, checked once when the sequence is built.

    Attributes:
        index: 1-based block number.
        name: a readable name (``"stage2.block1"``) or the cut point's name.
        output_shape: shape of the block's output for one sample (no batch axis).
        output_bits: size of that output as float32, in bits.
        params: parameter count of the block.
        macs: multiply-accumulates of the block for one sample.
    """

    index: int
    name: str
    output_shape: tuple[int, ...]
    output_bits: int
    params: int
    macs: int

    def to_dict(self) -> dict:
        """Return a JSON-able dict."""
        return {
            "index": self.index,
            "name": self.name,
            "output_shape": list(self.output_shape),
            "output_bits": self.output_bits,
            "params": self.params,
            "macs": self.macs,
        }


def _count_macs(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        y = module(x)
    return y, int(counter.get_total_flops() // 2)


class BlockSequence(nn.Module):
    """A backbone as N blocks followed by its final classifying layers.

    ``forward`` runs the blocks in order, then the classifier, so it computes
    exactly what the backbone computes. Indexing and iteration go over blocks.

    Args:
        blocks: ``(name, module)`` pairs in order.
        classifier: the backbone's final classifying layers.
        input_shape: shape of one input sample, e.g. ``(3, 32, 32)``.
        source: how to rebuild the backbone (``{"backbone", "num_classes",
            "in_chans"}``) when it came from the registry, else ``None``.

    Raises:
        ValueError: if there is no block, or a block does not return one tensor.
    """

    def __init__(
        self,
        blocks: Sequence[tuple[str, nn.Module]],
        classifier: nn.Module,
        input_shape: Sequence[int],
        source: dict | None = None,
    ) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("a BlockSequence needs at least one block")
        self.blocks = nn.ModuleList([m for _, m in blocks])
        self.names = [str(n) for n, _ in blocks]
        self.classifier = classifier
        self.input_shape = tuple(int(s) for s in input_shape)
        self.source = dict(source) if source else None
        self.block_info, self.output_shape = self._describe()

    def _describe(self) -> tuple[list[BlockInfo], tuple[int, ...]]:
        infos: list[BlockInfo] = []
        with torch.no_grad(), eval_mode(self):
            x = torch.zeros(1, *self.input_shape)
            for i, (name, block) in enumerate(zip(self.names, self.blocks, strict=True), 1):
                x, macs = _count_macs(block, x)
                if not isinstance(x, torch.Tensor):
                    raise ValueError(
                        f"block {i} ({name!r}) returns {type(x).__name__}; every block "
                        "must return a single tensor"
                    )
                shape = tuple(x.shape[1:])
                infos.append(
                    BlockInfo(
                        index=i,
                        name=name,
                        output_shape=shape,
                        output_bits=32 * math.prod(shape),
                        params=sum(p.numel() for p in block.parameters()),
                        macs=macs,
                    )
                )
            out = self.classifier(x)
        return infos, tuple(out.shape[1:])

    def __len__(self) -> int:
        return len(self.blocks)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.blocks)

    def __getitem__(self, index: int) -> nn.Module:
        return self.blocks[index]

    def forward_blocks(
        self, x: torch.Tensor, first: int = 1, last: int | None = None
    ) -> torch.Tensor:
        """Run blocks ``first..last`` (1-based, inclusive) on ``x``."""
        last = len(self.blocks) if last is None else last
        for block in self.blocks[first - 1 : last]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_blocks(x))

    def extra_repr(self) -> str:
        return f"num_blocks={len(self.blocks)}, input_shape={self.input_shape}"


def _declared_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The input shape a model declares: the registry's, or timm's ``pretrained_cfg``."""
    shape = getattr(model, "earlyexit_input_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    if isinstance(model, BlockSequence):
        return model.input_shape
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if not isinstance(cfg, dict) or "input_size" not in cfg:
        return None
    size = [int(s) for s in cfg["input_size"]]
    img = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(img, (tuple, list)) and len(img) == 2 and len(size) == 3:
        size[1:] = [int(s) for s in img]  # a model built with img_size=...
    in_chans = getattr(model, "in_chans", None)
    if in_chans is None:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        in_chans = conv.in_channels if conv is not None else None
    if isinstance(in_chans, int) and len(size) == 3:
        size[0] = in_chans
    return tuple(size)


def _check_shape(input_shape: _Shape) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a sequence of ints, got {input_shape!r}")
    if not input_shape or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_shape
    ):
        raise ValueError(
            f"input_shape must be positive ints for one sample, e.g. (3, 224, 224), "
            f"got {tuple(input_shape)!r}"
        )
    return tuple(input_shape)


def decompose(
    model: nn.Module,
    input_shape: _Shape | None = None,
    cut_points: Sequence[str] | None = None,
    *,
    granularity: str = "block",
    max_blocks: int | None = None,
    leaf_modules: Sequence[type] = (),
) -> BlockSequence:
    """Split ``model`` into a :class:`BlockSequence`; the input model is untouched.

    Without ``cut_points``, a registered decomposer is used when one exists for
    the model's type (or a parent type); any other ``torch.fx``-traceable model
    is cut where its own blocks end (see :mod:`earlyexit.surgery.defaults`).

    Args:
        model: any ``nn.Module`` called as ``model(x)``.
        input_shape: shape of one sample; defaults to the shape the model
            declares (the registry's, or timm's ``pretrained_cfg["input_size"]``)
            and is required otherwise.
        cut_points: names of graph nodes (from :func:`list_cut_points`) whose
            outputs end blocks 1..N; what follows the last one is the classifier.
        granularity: ``"block"`` (every residual or transformer block) or
            ``"stage"`` (timm's ``feature_info`` stages, else blocks of one
            spatial size); used when the model has no registered decomposer.
        max_blocks: at most this many blocks (neighbouring blocks are merged).
        leaf_modules: extra module types to trace as single calls.

    Returns:
        A new ``BlockSequence`` with its own copies of the parameters.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if the model cannot be traced or cut, a cut point is unknown,
            out of order or crosses a skip connection, or the input shape is missing.

    Example:
        >>> from earlyexit import backbones
        >>> blocks = decompose(backbones.create("resnet20", num_classes=10))
        >>> len(blocks), blocks.block_info[0].output_shape
        (10, (16, 32, 32))
    """
    from earlyexit.surgery._fxdecompose import fx_decompose
    from earlyexit.surgery._merge import join_constant_class_tokens, merge_blocks
    from earlyexit.surgery.defaults import check_granularity

    if not isinstance(model, nn.Module):
        raise TypeError(f"decompose expects an nn.Module, got {type(model).__name__}")
    check_granularity(granularity, max_blocks)
    if isinstance(model, BlockSequence) and cut_points is None:
        return merge_blocks(copy.deepcopy(model), max_blocks)
    if input_shape is None:
        input_shape = _declared_input_shape(model)
        if input_shape is None:
            raise ValueError(
                f"input_shape is required for a {type(model).__name__}, which declares none "
                "(neither earlyexit.backbones.create nor timm's pretrained_cfg), "
                "e.g. input_shape=(3, 224, 224)"
            )
    input_shape = _check_shape(input_shape)
    source = None
    if getattr(model, "earlyexit_name", None) is not None:
        source = {
            "backbone": model.earlyexit_name,
            "num_classes": int(model.earlyexit_num_classes),
            "in_chans": int(model.earlyexit_input_shape[0]),
        }
        if getattr(model, "earlyexit_kwargs", None):  # options such as timm's img_size
            source["backbone_kwargs"] = dict(model.earlyexit_kwargs)
        # how it was cut, when not by default: from_config cuts the rebuilt backbone alike
        options = {"cut_points": list(cut_points) if cut_points is not None else None,
                   "granularity": granularity, "max_blocks": max_blocks}  # fmt: skip
        defaults = {"cut_points": None, "granularity": "block", "max_blocks": None}
        if options != defaults:
            source["decomposition"] = options
    decomposer = _find_decomposer(model) if cut_points is None else None
    if decomposer is not None:
        parts = decomposer(copy.deepcopy(model))
        seq = BlockSequence(parts.blocks, parts.classifier, input_shape, source)
        return merge_blocks(seq, max_blocks)
    blocks, classifier = fx_decompose(
        model, input_shape, cut_points, granularity, max_blocks, leaf_modules
    )
    seq = BlockSequence(blocks, classifier, input_shape, source)
    return join_constant_class_tokens(seq) if cut_points is None else seq


def list_cut_points(
    model: nn.Module, input_shape: _Shape | None = None, leaf_modules: Sequence[type] = ()
) -> list[str]:
    """List the names at which ``model`` can be cut into blocks, in graph order.

    A valid cut point is a node such that nothing computed before it is used
    after it: cutting there does not cross a skip connection. With an input
    shape (given, or declared by the model), shape-only values such as the batch
    size do not count, since each block recomputes them.

    Args:
        model: any ``torch.fx``-traceable module (it is not modified).
        input_shape: shape of one sample; defaults to the one the model declares.
        leaf_modules: extra module types to trace as single calls.

    Returns:
        Node names, using the module path where a module is called once.

    Raises:
        ValueError: if the model cannot be traced, or fails on ``input_shape``.

    Example:
        >>> from torch import nn
        >>> list_cut_points(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
        ['0', '1', '2']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"list_cut_points expects an nn.Module, got {type(model).__name__}")
    shape = _declared_input_shape(model) if input_shape is None else _check_shape(input_shape)
    from earlyexit.surgery._fxdecompose import cut_graph

    cg = cut_graph(model, shape, leaf_modules)
    return [cg.names[node] for node in cg.valid_cuts()]
