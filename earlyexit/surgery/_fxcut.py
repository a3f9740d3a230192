"""Graph analysis for cutting an fx graph into standalone blocks.

A node is *recomputable* when a block can rebuild it from its own input alone:
a constant (``get_attr``) or anything computed only from constants, or a
shape-only value (batch size, height, width read from a tensor) whose value is
either the same at every batch size (then a constant) or the batch size (then
``x.size(0)`` of the block's input). Recomputable nodes never count as crossing
a cut; every other value used on both sides of a cut makes the cut invalid.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx as fx
from torch import nn

__all__ = ["CutGraph"]

_BATCH_SIZES = (2, 3)


class _Batch:
    """Marks the batch size inside a shape-only value."""

    def __repr__(self) -> str:
        return "<batch>"


_BATCH = _Batch()
_TENSOR = object()
_OPAQUE = object()


def _summary(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return _TENSOR
    if v is None or isinstance(v, (bool, int, float, str, torch.dtype, torch.device)):
        return v
    if isinstance(v, (tuple, list)):  # torch.Size is a tuple
        items = [_summary(x) for x in v]
        if any(x is _TENSOR for x in items):
            return _TENSOR
        if any(x is _OPAQUE for x in items):
            return _OPAQUE
        return tuple(items) if isinstance(v, tuple) else items
    return _OPAQUE


def _shape_spec(a: Any, b: Any, batches: tuple[int, int]) -> Any:
    """The shape-only value seen as ``a`` and ``b`` at two batch sizes, else _OPAQUE."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        items = [_shape_spec(x, y, batches) for x, y in zip(a, b, strict=True)]
        if any(x is _OPAQUE for x in items):
            return _OPAQUE
        return tuple(items) if isinstance(a, tuple) else items
    if type(a) is int and type(b) is int and (a, b) == batches:
        return _BATCH
    if type(a) is type(b) and not isinstance(a, (tuple, list)) and a == b:
        return a
    return _OPAQUE


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.summary: dict[fx.Node, Any] = {}
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.summary[n] = _summary(out)
        if isinstance(out, torch.Tensor):
            self.shapes[n] = tuple(out.shape)
        return out


def _module_path(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        value = list(stack.values())[-1]
        return str(value[0] if isinstance(value, tuple) else value)
    return ""


class CutGraph:
    """A traced model with what is needed to cut it: positions, names, recomputable nodes.

    Args:
        gm: the traced model (one placeholder).
        input_shape: shape of one sample; when given, the model runs at two
            batch sizes so that shape-only values can be recomputed in blocks.
        model: the traced module (its module tree, with the original types).

    Raises:
        ValueError: if the model fails on ``input_shape``.
    """

    def __init__(
        self, gm: fx.GraphModule, input_shape: tuple[int, ...] | None, model: nn.Module
    ) -> None:
        self.gm = gm
        self.model = model
        self.nodes = list(gm.graph.nodes)
        self.pos = {n: i for i, n in enumerate(self.nodes)}
        self.paths = {n: _module_path(n) for n in self.nodes}
        self.names = self._node_names()
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}
        self.values_known = input_shape is not None
        self.shape_specs: dict[fx.Node, Any] = {}
        self.tensors: set[fx.Node] = set()
        self.batch_first: set[fx.Node] = set()
        if input_shape is not None:
            self._run(tuple(input_shape))
        self.recomputable = self._recomputable()
        self.crossing = self._crossing()

    # ------------------------------------------------------------------ analysis

    def _run(self, input_shape: tuple[int, ...]) -> None:
        runs = []
        modes = [(m, m.training) for m in self.gm.modules()]
        self.gm.eval()
        try:
            with torch.no_grad():
                for b in _BATCH_SIZES:
                    rec = _Recorder(self.gm)
                    rec.run(torch.zeros(b, *input_shape))
                    runs.append(rec)
        except Exception as err:
            raise ValueError(
                f"the traced model fails on inputs of shape {input_shape} "
                f"({type(err).__name__}: {err}); pass the input_shape it expects"
            ) from err
        finally:
            for m, mode in modes:
                m.training = mode
        first, second = runs
        self.shapes = first.shapes
        # a block's output must be batch-first: dim 0 follows the batch size
        self.batch_first = {
            n
            for n, shape in first.shapes.items()
            if shape[:1] == (_BATCH_SIZES[0],)
            and second.shapes.get(n, ())[:1] == (_BATCH_SIZES[1],)
        }
        for n in self.nodes:
            a, b = first.summary.get(n, _OPAQUE), second.summary.get(n, _OPAQUE)
            if a is _TENSOR:
                self.tensors.add(n)
            elif a is not _OPAQUE and n.op not in ("placeholder", "output"):
                spec = _shape_spec(a, b, _BATCH_SIZES)
                if spec is not _OPAQUE:
                    self.shape_specs[n] = spec

    def _recomputable(self) -> set[fx.Node]:
        rec: set[fx.Node] = set()
        for n in self.nodes:
            if n.op in ("placeholder", "output"):
                continue
            if n.op == "get_attr" or n in self.shape_specs:
                rec.add(n)
            elif all(a in rec for a in n.all_input_nodes) and not _is_random(n):
                rec.add(n)
        return rec

    def _crossing(self) -> list[tuple[fx.Node, fx.Node] | None]:
        """For each position p, an edge (u, v) with pos(u) < p < pos(v), or None."""
        result: list[tuple[fx.Node, fx.Node] | None] = []
        worst: tuple[int, fx.Node, fx.Node] | None = None
        for p, node in enumerate(self.nodes):
            result.append(worst[1:] if worst is not None and worst[0] > p else None)
            if node not in self.recomputable and node.users:
                last_user = max(node.users, key=self.pos.__getitem__)
                if worst is None or self.pos[last_user] > worst[0]:
                    worst = (self.pos[last_user], node, last_user)
        return result

    def _node_names(self) -> dict[fx.Node, str]:
        """User-facing names: the module path for a module call (``layer1.0.relu``,
        then ``layer1.0.relu_1`` for its second call), else the fx node name."""
        calls: dict[str, int] = {}
        names: dict[fx.Node, str] = {}
        for node in self.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op == "call_module":
                k = calls.get(str(node.target), 0)
                calls[str(node.target)] = k + 1
                names[node] = str(node.target) if k == 0 else f"{node.target}_{k}"
            else:
                names[node] = node.name
        return names

    # ------------------------------------------------------------------ queries

    def lookup(self) -> dict[str, fx.Node]:
        """Both the preferred name and the fx node name resolve to the node."""
        table = {node.name: node for node in self.names}
        table.update({name: node for node, name in self.names.items()})
        return table

    def is_valid_cut(self, node: fx.Node) -> bool:
        """True if the graph can be cut right after ``node``."""
        if node not in self.names or node in self.recomputable:
            return False
        if self.crossing[self.pos[node]] is not None:
            return False
        if self.values_known:
            return node in self.tensors and node in self.batch_first
        return True

    def valid_cuts(self) -> list[fx.Node]:
        return [n for n in self.nodes if self.is_valid_cut(n)]

    def uses_params(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            module = self.gm.get_submodule(str(node.target))
            return any(True for _ in module.parameters())
        if node.op == "get_attr":
            try:
                value = self.gm.get_parameter(str(node.target))
            except AttributeError:
                return False
            return isinstance(value, nn.Parameter)
        return False

    def describe(self, node: fx.Node) -> str:
        """Where a node is computed: its module path, or the model's own forward."""
        path = self.paths.get(node, "")
        return f"in {path}" if path else "in the model's forward"

    # ------------------------------------------------------------------ cutting

    def segments(self, cuts: list[fx.Node]) -> list[fx.GraphModule]:
        """The standalone modules between consecutive cuts (the last one is the rest)."""
        bounds = [-1] + [self.pos[c] for c in cuts] + [len(self.nodes) - 1]
        out = []
        for k in range(len(bounds) - 1):
            seg_nodes = self.nodes[bounds[k] + 1 : bounds[k + 1] + 1]
            in_node = cuts[k - 1] if k > 0 else None
            out_node = cuts[k] if k < len(cuts) else None
            out.append(self._segment(seg_nodes, in_node, out_node))
        return out

    def _segment(
        self, seg_nodes: list[fx.Node], in_node: fx.Node | None, out_node: fx.Node | None
    ) -> fx.GraphModule:
        graph = fx.Graph()
        env: dict[fx.Node, Any] = {}
        x = graph.placeholder("x") if in_node is not None else None
        if in_node is not None:
            env[in_node] = x
        batch: list[fx.Node] = []

        def materialize(spec: Any) -> Any:
            if spec is _BATCH:
                if not batch:
                    batch.append(graph.call_method("size", (x, 0)))
                return batch[0]
            if isinstance(spec, tuple):
                return tuple(materialize(s) for s in spec)
            if isinstance(spec, list):
                return [materialize(s) for s in spec]
            return spec

        def lookup(arg: fx.Node) -> Any:
            if arg not in env:
                if (
                    arg not in self.recomputable
                ):  # pragma: no cover - excluded by the crossing check
                    raise ValueError(f"node {arg.name!r} is used across a cut")
                if arg in self.shape_specs and x is not None:
                    env[arg] = materialize(self.shape_specs[arg])
                else:
                    env[arg] = graph.node_copy(arg, lookup)
            return env[arg]

        for node in seg_nodes:
            if node.op == "output":
                graph.node_copy(node, lookup)
                break
            if node in env:
                continue
            env[node] = graph.node_copy(node, lookup)
        if out_node is not None:
            graph.output(env[out_node])
        segment = fx.GraphModule(self.gm, graph)
        segment.graph.eliminate_dead_code()
        segment.graph.lint()
        segment.delete_all_unused_submodules()
        segment.recompile()
        return segment


_RANDOM = {torch.rand, torch.randn, torch.randint, torch.randperm, torch.bernoulli, torch.normal}


def _is_random(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _RANDOM


def prod(shape: tuple[int, ...]) -> int:
    """Product of a shape (1 for a scalar)."""
    return math.prod(shape)
