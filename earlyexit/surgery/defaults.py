"""Default cut points for a traced model: where its own blocks and stages end.

Block granularity walks the module tree in call order. Containers that hold
two or more blocks (``nn.Sequential``/``ModuleList``/``ModuleDict`` of modules
that have children: ResNet's ``layer1``, timm's ``blocks`` and ``stages``,
torchvision's ``features``) and modules whose parameters mostly sit in such a
container (torchvision ViT's ``encoder``, timm's ConvNeXt and Swin stages) are
opened; every other module is a unit. A block ends after each unit that has
submodules, after a run of plain layers that comes before one (the stem), and
after each pooling layer in a long plain ``nn.Sequential`` (VGG's ``features``);
a model made only of plain layers is cut after each of them.
Nothing is cut from the first unit named like a classifier (``fc``,
``classifier``, ``head``, ...) on. Cut points that would cross a skip connection
are dropped, and blocks without parameters join their neighbour.

Stage granularity uses timm's ``feature_info`` where the model has one, else
groups blocks whose outputs have the same spatial size.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from earlyexit.surgery._fxcut import CutGraph
from earlyexit.surgery._indices import even_ends

__all__ = ["GRANULARITIES", "check_granularity", "default_cuts"]

GRANULARITIES = ("block", "stage")

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_HEAD_NAMES = frozenset(
    {"fc", "classifier", "head", "heads", "last_linear", "head_dist", "fc_norm", "pre_logits"}
)
_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)  # fmt: skip
_LONG_PLAIN = 6


def _has_children(m: nn.Module) -> bool:
    return next(iter(m.children()), None) is not None


def _kind(m: nn.Module) -> str:
    """``leaf`` for a layer or a plain container of layers, else ``block``."""
    if not _has_children(m):
        return "leaf"
    if isinstance(m, _CONTAINERS) and not any(_has_children(c) for c in m.children()):
        return "leaf"
    return "block"


def _holds_blocks(m: nn.Module) -> bool:
    return isinstance(m, _CONTAINERS) and sum(_kind(c) == "block" for c in m.children()) >= 2


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _is_trunk(m: nn.Module) -> bool:
    if isinstance(m, _CONTAINERS) or not _has_children(m):
        return False
    total = _nparams(m)
    return total > 0 and any(_holds_blocks(c) and 2 * _nparams(c) >= total for c in m.children())


class _Ranges:
    """First and last graph position of every module path that has nodes."""

    def __init__(self, cg: CutGraph) -> None:
        self.first: dict[str, int] = {}
        self.last: dict[str, fx.Node] = {}
        for node in cg.nodes:
            path = cg.paths[node]
            if not path or node.op in ("placeholder", "output"):
                continue
            parts = path.split(".")
            for k in range(1, len(parts) + 1):
                prefix = ".".join(parts[:k])
                self.first.setdefault(prefix, cg.pos[node])
                self.last[prefix] = node


def _units(model: nn.Module, ranges: _Ranges, cg: CutGraph) -> list[tuple[str, str]]:
    """``(path, kind)`` in call order; kind is ``leaf``, ``block``, ``pool`` or ``head``.

    A module that is opened but cannot be cut anywhere inside (parallel
    branches, dense connections) stays one unit.
    """

    def visit(prefix: str, module: nn.Module, plain: bool) -> list[tuple[str, str]]:
        units: list[tuple[str, str]] = []
        children = [
            (f"{prefix}{name}", child)
            for name, child in module.named_children()
            if f"{prefix}{name}" in ranges.first
        ]
        children.sort(key=lambda pc: ranges.first[pc[0]])
        for path, child in children:
            name = path.rsplit(".", 1)[-1]
            inner: list[tuple[str, str]] = []
            if name in _HEAD_NAMES:
                units.append((path, "head"))
                continue
            if _holds_blocks(child) or _is_trunk(child):
                inner = visit(path + ".", child, False)
            elif (
                isinstance(child, _CONTAINERS)
                and _kind(child) == "leaf"
                and len(child) >= _LONG_PLAIN
            ):
                inner = visit(path + ".", child, True)
            if any(cg.is_valid_cut(ranges.last[p]) for p, _ in inner[:-1]):
                units += inner
            elif plain and isinstance(child, _POOLS):
                units.append((path, "pool"))
            else:
                units.append((path, _kind(child)))
        return units

    return visit("", model, False)


def _block_cuts(
    model: nn.Module, cg: CutGraph, ranges: _Ranges, every_unit: bool = False
) -> list[tuple[str, fx.Node]]:
    units = _units(model, ranges, cg)
    cuts: list[tuple[str, fx.Node]] = []
    for i, (path, kind) in enumerate(units):
        if kind == "head":
            break
        following = units[i + 1][1] if i + 1 < len(units) else None
        if every_unit or kind in ("block", "pool") or (kind == "leaf" and following == "block"):
            cuts.append((path, ranges.last[path]))
    return cuts


def _feature_info_cuts(model: nn.Module, ranges: _Ranges) -> list[tuple[str, fx.Node]]:
    info = getattr(model, "feature_info", None)
    cuts = []
    try:
        modules = [str(f["module"]) for f in info]  # type: ignore[union-attr]
    except (TypeError, KeyError):
        return []
    for path in modules:
        if path in ranges.last:
            cuts.append((path, ranges.last[path]))
    return cuts


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:  # [B, C, H, W]
        return shape[2:]
    if len(shape) == 3:  # [B, T, C]
        return shape[1:2]
    return shape[1:]


def _clean(cg: CutGraph, cuts: list[tuple[str, fx.Node]]) -> list[tuple[str, fx.Node]]:
    """Valid cuts in graph order; blocks without parameters join a neighbour."""
    seen: set[fx.Node] = set()
    valid = []
    for name, node in sorted(cuts, key=lambda c: cg.pos[c[1]]):
        if node not in seen and cg.is_valid_cut(node):
            seen.add(node)
            valid.append((name, node))
    # layers with parameters; parameters read directly (a class token, a position
    # embedding) count only in a model that has no such layer
    with_params = [
        i for i, n in enumerate(cg.nodes) if n.op == "call_module" and cg.uses_params(n)
    ] or [i for i, n in enumerate(cg.nodes) if cg.uses_params(n)]
    if not with_params:
        return []

    def params_between(lo: int, hi: int) -> bool:
        return any(lo < i <= hi for i in with_params)

    # the classifier keeps at least one layer with parameters
    valid = [c for c in valid if cg.pos[c[1]] < with_params[-1]]
    merged: list[tuple[str, fx.Node]] = []
    for name, node in valid:
        lo = cg.pos[merged[-1][1]] if merged else -1
        if params_between(lo, cg.pos[node]):
            merged.append((name, node))
        elif merged:
            merged[-1] = (merged[-1][0], node)  # the previous block takes this piece
    return merged


def _by_stage(cg: CutGraph, cuts: list[tuple[str, fx.Node]]) -> list[tuple[str, fx.Node]]:
    """Keep the first cut and each cut after which the spatial size changes."""
    if not cg.shapes:
        return cuts
    kept = []
    for i, (name, node) in enumerate(cuts):
        nxt = cuts[i + 1][1] if i + 1 < len(cuts) else None
        if i == 0 or nxt is None:
            kept.append((name, node))
        elif _spatial(cg.shapes.get(node, ())) != _spatial(cg.shapes.get(nxt, ())):
            kept.append((name, node))
    return kept


def _thin(cuts: list[tuple[str, fx.Node]], max_blocks: int) -> list[tuple[str, fx.Node]]:
    """At most ``max_blocks`` cuts: the last of each of that many even runs."""
    if len(cuts) <= max_blocks:
        return cuts
    return [cuts[end - 1] for end in even_ends(len(cuts), max_blocks)]


def default_cuts(
    model: nn.Module, cg: CutGraph, granularity: str = "block", max_blocks: int | None = None
) -> list[tuple[str, fx.Node]]:
    """Choose ``(block name, cut node)`` pairs for ``model`` traced as ``cg``.

    Args:
        model: the traced model (its module tree gives the boundaries).
        cg: the model's cut graph.
        granularity: ``"block"`` (every block) or ``"stage"`` (coarser).
        max_blocks: at most this many blocks, spread evenly over the candidates.

    Returns:
        Pairs in graph order; possibly empty when no boundary can be cut.
    """
    ranges = _Ranges(cg)
    block = _clean(cg, _block_cuts(model, cg, ranges))
    if not block:  # a flat model of plain layers: every valid layer boundary
        block = _clean(cg, _block_cuts(model, cg, ranges, every_unit=True))
    cuts = block
    if granularity == "stage":
        stage = _clean(cg, _feature_info_cuts(model, ranges))
        cuts = stage if len(stage) >= 2 else _by_stage(cg, block)
    if max_blocks is not None:
        cuts = _thin(cuts, max_blocks)
    return cuts


def check_granularity(granularity: str, max_blocks: int | None) -> None:
    """Raise for a granularity or block count that is not valid."""
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"granularity must be one of {', '.join(map(repr, GRANULARITIES))}, got {granularity!r}"
        )
    if max_blocks is not None and (
        isinstance(max_blocks, bool) or not isinstance(max_blocks, int) or max_blocks < 1
    ):
        raise ValueError(f"max_blocks must be a positive int or None, got {max_blocks!r}")
