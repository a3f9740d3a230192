"""Decompose a backbone into a linear sequence of blocks.

Known backbones decompose by the registry of decomposers (looked up by type,
walking the MRO, so subclasses inherit their parent's). Any other model
decomposes at user-named cut points with ``torch.fx``: a cut is valid only if
nothing before it is used after it, i.e. it does not cross a skip connection.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

__all__ = [
    "BlockInfo",
    "BlockSequence",
    "Decomposition",
    "decompose",
    "list_cut_points",
    "register_decomposer",
]


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
        private copy of the model and may reuse its submodules.

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
    from earlyexit.backbones._registry import _ensure_builtins

    _ensure_builtins()
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


def decompose(
    model: nn.Module,
    cut_points: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
) -> BlockSequence:
    """Split ``model`` into a :class:`BlockSequence`; the input model is untouched.

    Args:
        model: a backbone from :func:`earlyexit.backbones.create`, any model of a
            type with a registered decomposer, or any ``torch.fx``-traceable model
            together with ``cut_points``.
        cut_points: names of graph nodes (from :func:`list_cut_points`) whose
            outputs end blocks 1..N; what follows the last one is the classifier.
        input_shape: shape of one sample; defaults to the registry's for
            registry backbones and is required otherwise.

    Returns:
        A new ``BlockSequence`` with its own copies of the parameters.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if there is no decomposition, a cut point is unknown, out of
            order or crosses a skip connection, or the input shape is missing.

    Example:
        >>> from earlyexit import backbones
        >>> blocks = decompose(backbones.create("resnet20", num_classes=10))
        >>> len(blocks), blocks.block_info[0].output_shape
        (10, (16, 32, 32))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"decompose expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, BlockSequence) and cut_points is None:
        return copy.deepcopy(model)
    if input_shape is None:
        input_shape = getattr(model, "earlyexit_input_shape", None)
        if input_shape is None:
            raise ValueError(
                f"input_shape is required for a {type(model).__name__} that does not come "
                "from earlyexit.backbones.create, e.g. input_shape=(3, 224, 224)"
            )
    source = None
    if getattr(model, "earlyexit_name", None) is not None:
        source = {
            "backbone": model.earlyexit_name,
            "num_classes": int(model.earlyexit_num_classes),
            "in_chans": int(model.earlyexit_input_shape[0]),
        }
    model = copy.deepcopy(model)
    if cut_points is None:
        decomposer = _find_decomposer(model)
        if decomposer is None:
            raise ValueError(
                f"no built-in decomposition for {type(model).__name__}; pass "
                "cut_points=[...] (valid names: earlyexit.list_cut_points(model)) or "
                "register one with earlyexit.surgery.register_decomposer"
            )
        parts = decomposer(model)
    else:
        parts = _fx_decompose(model, cut_points)
        source = None  # the registry recipe no longer describes these blocks
    return BlockSequence(parts.blocks, parts.classifier, input_shape, source)


# ---------------------------------------------------------------- torch.fx path


def _node_names(graph: fx.Graph) -> dict[fx.Node, str]:
    """The user-facing name of every cuttable node: the module path for a module
    call (``layer1.0.relu``, then ``layer1.0.relu_1`` for its second call, as
    torchvision names them), else the FX node name (``add``)."""
    calls: dict[str, int] = {}
    names: dict[fx.Node, str] = {}
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_module":
            k = calls.get(str(node.target), 0)
            calls[str(node.target)] = k + 1
            names[node] = str(node.target) if k == 0 else f"{node.target}_{k}"
        else:
            names[node] = node.name
    return names


def _name_lookup(graph: fx.Graph) -> dict[str, fx.Node]:
    """Both the preferred name and the FX node name resolve to the node."""
    lookup = {node.name: node for node in _node_names(graph)}
    lookup.update({name: node for node, name in _node_names(graph).items()})
    return lookup


def _crossing(graph: fx.Graph) -> list[tuple[fx.Node, fx.Node] | None]:
    """For each node position p, an edge (u, v) with pos(u) < p < pos(v), or None.

    ``get_attr`` nodes are constants, so they never count as crossing.
    """
    nodes = list(graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    result: list[tuple[fx.Node, fx.Node] | None] = []
    worst: tuple[int, fx.Node, fx.Node] | None = None  # (last use position, u, v)
    for p, node in enumerate(nodes):
        result.append(worst[1:] if worst is not None and worst[0] > p else None)
        if node.op != "get_attr" and node.users:
            last_user = max(node.users, key=lambda v: pos[v])
            if worst is None or pos[last_user] > worst[0]:
                worst = (pos[last_user], node, last_user)
    return result


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # torch.fx raises many kinds
        raise ValueError(
            f"{type(model).__name__} cannot be traced by torch.fx ({err}); register a "
            "decomposer for it with earlyexit.surgery.register_decomposer instead"
        ) from err


def list_cut_points(model: nn.Module) -> list[str]:
    """List the names at which ``model`` can be cut into blocks, in graph order.

    A valid cut point is a node such that nothing computed before it is used
    after it: cutting there does not cross a skip connection.

    Args:
        model: any ``torch.fx``-traceable module (it is not modified).

    Returns:
        Node names, using the module path where a module is called once.

    Raises:
        ValueError: if the model cannot be traced.

    Example:
        >>> from torch import nn
        >>> list_cut_points(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
        ['0', '1', '2']
    """
    gm = _trace(model)
    names = _node_names(gm.graph)
    return [
        names[node]
        for node, edge in zip(gm.graph.nodes, _crossing(gm.graph), strict=True)
        if edge is None and node in names
    ]


def _fx_decompose(model: nn.Module, cut_points: Sequence[str]) -> Decomposition:
    if isinstance(cut_points, str) or not cut_points:
        raise ValueError("cut_points must be a non-empty list of node names")
    gm = _trace(model)
    nodes = list(gm.graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    names = _name_lookup(gm.graph)
    crossing = _crossing(gm.graph)
    cuts: list[fx.Node] = []
    for name in cut_points:
        if name not in names:
            raise ValueError(
                f"unknown cut point {name!r}; valid cut points: "
                f"{', '.join(list_cut_points(model)) or '(none)'}"
            )
        node = names[name]
        edge = crossing[pos[node]]
        if edge is not None:
            u, v = edge
            raise ValueError(
                f"cut point {name!r} crosses a skip connection: node {u.name!r} before the "
                f"cut is used by node {v.name!r} after it; cut before {u.name!r} or after "
                f"{v.name!r} instead (see earlyexit.list_cut_points)"
            )
        if cuts and pos[node] <= pos[cuts[-1]]:
            raise ValueError(
                f"cut points must be in graph order without repeats: {name!r} does not come "
                f"after {cuts[-1].name!r}"
            )
        cuts.append(node)
    bounds = [-1] + [pos[c] for c in cuts] + [len(nodes) - 1]
    segments: list[nn.Module] = []
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        segment_nodes = nodes[lo + 1 : hi + 1]
        in_node = cuts[k - 1] if k > 0 else None
        out_node = cuts[k] if k < len(cuts) else None
        segments.append(_segment(gm, segment_nodes, in_node, out_node))
    blocks = [(name, seg) for name, seg in zip(cut_points, segments[:-1], strict=True)]
    return Decomposition(blocks, segments[-1])


def _segment(
    gm: fx.GraphModule, seg_nodes: list[fx.Node], in_node: fx.Node | None, out_node: fx.Node | None
) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    if in_node is not None:
        env[in_node] = graph.placeholder("x")

    def lookup(arg: fx.Node) -> fx.Node:
        if arg not in env:
            if arg.op != "get_attr":  # pragma: no cover - excluded by the crossing check
                raise ValueError(f"node {arg.name!r} is used across a cut")
            env[arg] = graph.node_copy(arg, lookup)
        return env[arg]

    for node in seg_nodes:
        if node.op == "output":
            graph.node_copy(node, lookup)
            break
        env[node] = graph.node_copy(node, lookup)
    if out_node is not None:
        graph.output(env[out_node])
    segment = fx.GraphModule(gm, graph)
    segment.graph.eliminate_dead_code()
    segment.graph.lint()
    segment.delete_all_unused_submodules()
    segment.recompile()
    return segment
