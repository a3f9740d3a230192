"""The model a training run starts from: a backbone name, or a checkpoint cut to a plan's exits.

PORTEND trains a full configuration (an exit after every block), plans, then
fine-tunes a model that keeps only the plan's exits. :func:`build_model` makes
either model from plain arguments (what a recipe can say);
:func:`select_exits` and :func:`exits_from_plan` do the cut. The public names
are exported by :mod:`earlyexit.training.module`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from earlyexit.surgery.multi_exit import MultiExitModel

__all__ = ["build_model", "exits_from_plan", "select_exits"]


def exits_from_plan(plan: str | Path | dict[str, Any]) -> list[int]:
    """The exits a plan uses: the ``last_block`` of each of its partitions.

    Args:
        plan: a plan JSON file (docs/spec.md ``earlyexit.plan/1``) or its mapping.

    Returns:
        Strictly increasing 1-based block numbers.

    Raises:
        ValueError: if the plan is invalid or has an unknown schema.
    """
    from earlyexit.formats import Plan

    parsed = Plan.from_dict(plan) if isinstance(plan, dict) else Plan.load(plan)
    return list(parsed.cut_points)


def select_exits(
    model: MultiExitModel,
    exits: Sequence[int] | None = None,
    plan: str | Path | dict[str, Any] | None = None,
) -> MultiExitModel:
    """Keep only the exits of ``exits`` or of ``plan`` (for fine-tuning).

    Args:
        model: a (usually full-configuration) multi-exit model.
        exits: 1-based block numbers to keep.
        plan: a plan whose partitions' last blocks are the exits to keep.

    Returns:
        A new model with only those exits; blocks after the last one are dropped.
        ``model`` itself when neither is given.

    Raises:
        ValueError: if both are given, or an exit is not active in ``model``.
    """
    if exits is not None and plan is not None:
        raise ValueError("give either exits or plan, not both")
    if plan is not None:
        exits = exits_from_plan(plan)
    if exits is None:
        return model
    new = model.select_exits(list(exits))
    for attr in ("metadata", "normalization"):
        if hasattr(model, attr):
            setattr(new, attr, getattr(model, attr))
    return new


def build_model(
    backbone: str = "resnet20",
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    exits: Sequence[int] | None = None,
    head: str = "copy",
    init_from: str | Path | None = None,
    plan: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    adapt_weights: bool = False,
) -> MultiExitModel:
    """Build a multi-exit model from a backbone name, or from a checkpoint and a plan.

    Args:
        backbone: registry name, e.g. ``"resnet20"``, ``"timm:efficientnet_b0"``.
        num_classes: classes; required for a fresh model, checked against a checkpoint.
        input_shape: (C, H, W) of one sample; checked against a checkpoint.
        exits: exits to build (default: after every block), or, with ``init_from``,
            the exits to keep.
        head: exit head kind, ``"copy"`` or ``"linear"``.
        init_from: an earlyexit checkpoint to start from (``.pt`` or ``.ckpt``).
        plan: with ``init_from``, a plan JSON whose partitions give the exits.
        backbone_weights: a local state dict loaded into the backbone before it
            is decomposed (nothing is downloaded).
        adapt_weights: ``backbone_weights`` were trained for another class or
            input channel count (e.g. ImageNet): the classifier starts fresh and
            the first convolution is adapted (see :func:`earlyexit.backbones.create`).

    Returns:
        The model, in training mode.

    Raises:
        ValueError: for inconsistent arguments (e.g. a plan without a checkpoint,
            or backbone weights with a checkpoint).
        FileNotFoundError: if ``backbone_weights`` does not exist.
    """
    from earlyexit import backbones, decompose

    if init_from is not None and backbone_weights is not None:
        raise ValueError(
            "give either init_from (an earlyexit checkpoint) or backbone_weights (a backbone "
            "state dict), not both"
        )
    if init_from is not None:
        from earlyexit.checkpoint import load

        model = load(init_from)
        if num_classes is not None and num_classes != model.num_classes:
            raise ValueError(
                f"{init_from} has {model.num_classes} classes but the data has {num_classes}"
            )
        if input_shape is not None and tuple(input_shape) != tuple(model.input_shape):
            raise ValueError(
                f"{init_from} takes inputs of shape {tuple(model.input_shape)} but the data's are "
                f"{tuple(input_shape)}"
            )
        model = select_exits(model, exits=exits, plan=plan)
        rank_zero_info(f"earlyexit: fine-tuning {init_from} with exits {list(model.exits)}")
        return model.train()
    if adapt_weights and backbone_weights is None:
        raise ValueError("adapt_weights needs backbone_weights (the state dict to adapt)")
    if plan is not None:
        raise ValueError("plan needs init_from: the checkpoint of the full-configuration model")
    if num_classes is None:
        raise ValueError("num_classes is required (earlyexit train links it from the data)")
    shape = tuple(input_shape) if input_shape is not None else None
    in_chans = int(shape[0]) if shape else 3
    net = backbones.create(
        backbone, num_classes=num_classes, in_chans=in_chans, weights=backbone_weights,
        adapt=adapt_weights,
    )  # fmt: skip
    if backbone_weights is not None:
        rank_zero_info(f"earlyexit: backbone {backbone} starts from {backbone_weights}")
    return MultiExitModel(
        decompose(net, input_shape=shape), num_classes=num_classes, exits=exits, head_factory=head
    )
