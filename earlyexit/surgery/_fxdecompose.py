"""The ``torch.fx`` path of :func:`~earlyexit.surgery.decompose.decompose`.

A model without a registered decomposer is traced (:mod:`earlyexit.surgery.tracing`)
and cut into graph segments (``surgery/_fxcut.py``): at user-named cut points,
checked one by one, or where its own blocks end (:mod:`earlyexit.surgery.defaults`).
A cut that crosses a skip connection is refused with the tensor that crosses it
and the blocks it would join, so that the message says where to cut instead.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch.fx as fx
from torch import nn

from earlyexit.surgery._fxcut import CutGraph
from earlyexit.surgery.defaults import default_cuts
from earlyexit.surgery.tracing import trace

__all__ = ["cut_graph", "fx_decompose"]


def cut_graph(
    model: nn.Module, input_shape: tuple[int, ...] | None, leaf_modules: Sequence[type] = ()
) -> CutGraph:
    """The cut graph of a private traced copy of ``model`` (the model is not touched).

    Raises:
        ValueError: if the model cannot be traced.
    """
    private = copy.deepcopy(model)
    gm = trace(private, leaf_modules=tuple(leaf_modules), copy_model=False, input_shape=input_shape)
    return CutGraph(gm, input_shape, private)


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


def fx_decompose(
    model: nn.Module,
    input_shape: tuple[int, ...],
    cut_points: Sequence[str] | None,
    granularity: str,
    max_blocks: int | None,
    leaf_modules: Sequence[type],
) -> tuple[list[tuple[str, nn.Module]], nn.Module]:
    """Cut a traced copy of ``model`` at ``cut_points``, or where its own blocks end.

    Args:
        model: the model (not touched).
        input_shape: shape of one sample.
        cut_points: node names in graph order, or ``None`` for the default cuts.
        granularity: ``"block"`` or ``"stage"``, for the default cuts.
        max_blocks: at most this many blocks.
        leaf_modules: extra module types to trace as single calls.

    Returns:
        ``(named blocks, classifier)``: graph segments in the model's train/eval mode.

    Raises:
        ValueError: if no boundary can be cut, or a cut point is unknown, out of
            order, crosses a skip connection or gives more than ``max_blocks`` blocks.
    """
    cg = cut_graph(model, input_shape, leaf_modules)
    if cut_points is None:
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
    return list(zip(names, segments[:-1], strict=True)), segments[-1]


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
