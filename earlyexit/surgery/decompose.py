"""Decompose a backbone into a linear sequence of blocks.

Known backbones decompose by the registry of decomposers (looked up by type,
walking the MRO, so subclasses inherit their parent's). Any other model is
traced with ``torch.fx`` (:mod:`earlyexit.surgery.tracing`) and cut at its own
block boundaries (:mod:`earlyexit.surgery.defaults`) or at user-named cut
points. A cut is valid only if nothing computed before it is used after it
(it does not cross a skip connection); constants and shape-only values such as
the batch size are recomputed inside the block that needs them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.fx as fx
from torch import nn

if TYPE_CHECKING:
    from earlyexit.surgery._fxcut import CutGraph

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
        was_training = [m.training for m in self.modules()]
        self.eval()
        infos: list[BlockInfo] = []
        try:
            with torch.no_grad():
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
        finally:
            for m, mode in zip(self.modules(), was_training, strict=True):
                m.training = mode
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
    from earlyexit.surgery.defaults import check_granularity

    if not isinstance(model, nn.Module):
        raise TypeError(f"decompose expects an nn.Module, got {type(model).__name__}")
    check_granularity(granularity, max_blocks)
    if isinstance(model, BlockSequence) and cut_points is None:
        return _merge(copy.deepcopy(model), max_blocks)
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
        return _merge(seq, max_blocks)
    parts = _fx_decompose(model, input_shape, cut_points, granularity, max_blocks, leaf_modules)
    seq = BlockSequence(parts.blocks, parts.classifier, input_shape, source)
    return _join_constant_class_tokens(seq) if cut_points is None else seq


def _join_constant_class_tokens(seq: BlockSequence) -> BlockSequence:
    """Join a block to the next when its output's first token is the same for every input.

    A ViT's patch embedding prepends a learned class token that no input has
    touched yet: an exit there, reading that token as the model's head does,
    would answer the same for every sample. Such a block ends no default block.
    """
    if len(seq) < 2:
        return seq
    x = torch.randn(2, *seq.input_shape, generator=torch.Generator().manual_seed(0))
    modes = [m.training for m in seq.modules()]
    seq.eval()
    ends = []
    try:
        with torch.no_grad():
            h = x
            for i, block in enumerate(seq.blocks[:-1]):
                h = block(h)
                if not (h.ndim == 3 and torch.equal(h[0, 0], h[1, 0])):
                    ends.append(i)
    finally:
        for m, mode in zip(seq.modules(), modes, strict=True):
            m.training = mode
    ends.append(len(seq) - 1)
    if len(ends) == len(seq):
        return seq
    blocks, start = [], 0
    for end in ends:
        group = list(seq.blocks[start : end + 1])
        blocks.append((seq.names[end], group[0] if len(group) == 1 else nn.Sequential(*group)))
        start = end + 1
    return BlockSequence(blocks, seq.classifier, seq.input_shape, seq.source)


def _merge(seq: BlockSequence, max_blocks: int | None) -> BlockSequence:
    """Merge neighbouring blocks so that at most ``max_blocks`` remain."""
    n = len(seq)
    if max_blocks is None or n <= max_blocks:
        return seq
    ends = sorted({round((k + 1) * n / max_blocks) for k in range(max_blocks)})
    blocks, start = [], 0
    for end in ends:
        group = list(range(start, end))
        name = seq.names[end - 1]
        module = seq.blocks[start] if len(group) == 1 else nn.Sequential(*seq.blocks[start:end])
        blocks.append((name, module))
        start = end
    return BlockSequence(blocks, seq.classifier, seq.input_shape, seq.source)


# ---------------------------------------------------------------- torch.fx path


def _cut_graph(
    model: nn.Module, input_shape: tuple[int, ...] | None, leaf_modules: Sequence[type] = ()
) -> CutGraph:
    from earlyexit.surgery._fxcut import CutGraph
    from earlyexit.surgery.tracing import trace

    private = copy.deepcopy(model)
    gm = trace(private, leaf_modules=tuple(leaf_modules), copy_model=False, input_shape=input_shape)
    return CutGraph(gm, input_shape, private)


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
    cg = _cut_graph(model, shape, leaf_modules)
    return [cg.names[node] for node in cg.valid_cuts()]


def _block_of(bounds: list[int], p: int) -> int:
    """1-based block number of graph position ``p`` (len(bounds) + 1 is the classifier)."""
    k = 0
    while k < len(bounds) and p > bounds[k]:
        k += 1
    return k + 1


def _crossing_error(cg: CutGraph, name: str, cuts: list[fx.Node], node: fx.Node) -> ValueError:
    u, v = cg.crossing[cg.pos[node]]
    bounds = sorted({cg.pos[c] for c in cuts} | {cg.pos[node]})
    bu, bv = _block_of(bounds, cg.pos[u]), _block_of(bounds, cg.pos[v])

    def label(b: int) -> str:
        return "the classifier" if b > len(bounds) else f"block {b}"

    return ValueError(
        f"cut point {name!r} crosses a skip connection: tensor {u.name!r} computed in "
        f"{label(bu)} ({cg.describe(u)}) before the cut is used by node {v.name!r} in "
        f"{label(bv)} after it, which would join {label(bu)} and {label(bv)}; cut before "
        f"{u.name!r} or after {v.name!r} instead (see earlyexit.list_cut_points)"
    )


def _fx_decompose(
    model: nn.Module,
    input_shape: tuple[int, ...],
    cut_points: Sequence[str] | None,
    granularity: str,
    max_blocks: int | None,
    leaf_modules: Sequence[type],
) -> Decomposition:
    cg = _cut_graph(model, input_shape, leaf_modules)
    if cut_points is None:
        from earlyexit.surgery.defaults import default_cuts

        chosen = default_cuts(cg.model, cg, granularity, max_blocks)
        if not chosen:
            raise ValueError(_no_cut_message(model, cg))
        names = [name for name, _ in chosen]
        cuts = [node for _, node in chosen]
    else:
        if isinstance(cut_points, str) or not cut_points:
            raise ValueError("cut_points must be a non-empty list of node names")
        lookup = cg.lookup()
        cuts = []
        for name in cut_points:
            if name not in lookup:
                valid = [cg.names[n] for n in cg.valid_cuts()]
                raise ValueError(
                    f"unknown cut point {name!r}; valid cut points: {', '.join(valid) or '(none)'}"
                )
            node = lookup[name]
            if cuts and cg.pos[node] <= cg.pos[cuts[-1]]:
                raise ValueError(
                    f"cut points must be in graph order without repeats: {name!r} does not "
                    f"come after {cuts[-1].name!r}"
                )
            cuts.append(node)
        for name, node in zip(cut_points, cuts, strict=True):
            if cg.crossing[cg.pos[node]] is not None:
                raise _crossing_error(cg, name, cuts, node)
            if not cg.is_valid_cut(node):
                raise ValueError(
                    f"cut point {name!r} is not a tensor that a block can return "
                    "(see earlyexit.list_cut_points for valid names)"
                )
        names = [str(n) for n in cut_points]
        if max_blocks is not None and len(cuts) > max_blocks:
            raise ValueError(
                f"{len(cuts)} cut points give {len(cuts)} blocks, more than max_blocks={max_blocks}"
            )
    segments = cg.segments(cuts)
    for seg in segments:
        seg.training = model.training
    return Decomposition(list(zip(names, segments[:-1], strict=True)), segments[-1])


def _no_cut_message(model: nn.Module, cg: CutGraph) -> str:
    """Why no default block boundary can be cut: the tensor that crosses the middle."""
    inner = [n for n in cg.nodes if n in cg.names and n not in cg.recomputable]
    detail = ""
    if inner:
        mid = inner[len(inner) // 2]
        edge = cg.crossing[cg.pos[mid]]
        if edge is not None:
            u, v = edge
            detail = (
                f"; e.g. a cut at {cg.names[mid]!r} would leave tensor {u.name!r} "
                f"({cg.describe(u)}) of the block before it used by {v.name!r} "
                f"({cg.describe(v)}) of the block after it"
            )
    return (
        f"no block boundary of {type(model).__name__} can be cut without crossing a skip "
        f"connection{detail}; pass cut_points=[...] from earlyexit.list_cut_points(model) or "
        "register a decomposer with earlyexit.surgery.register_decomposer"
    )
