"""Exit branches (heads).

The default exit (``head_factory=None`` or ``"copy"``) of a block whose output
has the shape of the last block's is an exact copy of the backbone's final
classifying layers (PORTEND's choice). For other blocks it is, in this order:

1. **An adapted copy of the classifier.** For an ``nn.Sequential`` classifier
   the first layer that holds weights gets the block's channel count (after an
   adaptive pool to the final spatial size when the classifier flattens maps
   without pooling, as VGGish does). For any other classifier, including the
   ``torch.fx`` ``GraphModule`` that cut-point decomposition produces, the copy
   is run on the block's shape and every submodule that rejects its input width
   (``Linear``, convolutions, batch/layer/group/RMS norms) is rebuilt for the new
   width, until the copy returns ``[B, num_classes]``. Layers whose input does
   not change keep the classifier's weights.
2. **Global pooling and the classifier's layer types**, when no adapted copy
   works (a norm whose shape is baked into a traced graph, a rank change):
   the model's own pooling (average over the spatial axes of ``[C, H, W]`` or
   ``[H, W, C]`` maps; the class token or the mean of ``[T, C]`` token
   sequences), then the classifier's normalization type (``LayerNorm``,
   ``BatchNorm``, ``RMSNorm``) at the block's width if it has one, then a
   linear layer.
3. **Anything else** (a layout that cannot be told): flatten-pool (average
   over every axis but the first, the channel axis) + linear.

How the head factory learns about the model: a decomposer may attach a
:class:`HeadHint` (``layout``, ``pooling``, ``num_prefix_tokens``) to the
``BlockSequence`` as ``blocks.head_hint``; :class:`~earlyexit.MultiExitModel`
passes it on. Without a hint, both are inferred from the classifier: the
layout from the width its first weighted layer expects, the token pooling by
checking whether the classifier's output depends on tokens other than the first.

This module builds the default head and resolves ``head_factory``; the adapted
copies live in ``surgery/_adapt.py`` and the pooled heads with :class:`HeadHint`
in ``surgery/_pooled.py``. Every name of ``__all__`` is imported from here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.fx as fx
from torch import nn

from earlyexit.surgery._adapt import adapt_classifier, copy_classifier_head
from earlyexit.surgery._pooled import HeadHint, pooled_head
from earlyexit.surgery._probe import ADAPTIVE_POOLS, eval_mode, quiet

__all__ = [
    "HeadFactory",
    "HeadHint",
    "adapt_classifier",
    "copy_classifier_head",
    "default_head",
    "linear_head",
    "pooled_head",
    "resolve_head_factory",
]

HeadFactory = Callable[[int, tuple[int, ...], int], nn.Module]
"""``factory(block, block_output_shape, num_classes) -> nn.Module`` builds exit ``block``'s head."""


def default_head(
    classifier: nn.Module,
    final_shape: tuple[int, ...],
    shape: tuple[int, ...],
    num_classes: int,
    hint: HeadHint | None = None,
) -> nn.Module:
    """The default exit for a block output of ``shape`` (see the module docstring).

    Args:
        classifier: the backbone's final classifying layers (not changed).
        final_shape: the last block's output shape for one sample.
        shape: the shape this head receives.
        num_classes: output classes of the classifier.
        hint: what the decomposition knows about the model, if anything.

    Returns:
        An exact copy of the classifier for ``shape == final_shape``, else an
        adapted copy, else :func:`pooled_head`.

    Example:
        >>> import torch.fx
        >>> from torch import nn
        >>> clf = torch.fx.symbolic_trace(
        ...     nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(64, 10)))
        >>> default_head(clf, (64, 4, 4), (16, 8, 8), 10)(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 10])
    """
    shape, final_shape = tuple(shape), tuple(final_shape)
    if shape == final_shape:
        return copy.deepcopy(classifier)
    if isinstance(classifier, nn.Sequential) and not isinstance(classifier, fx.GraphModule):
        try:
            head = copy_classifier_head(classifier, final_shape, shape)
            with quiet(), eval_mode(head):
                out = head(torch.zeros(1, *shape))
            if out.dim() == 2 and out.shape[1] == num_classes:
                return head
        except Exception:  # noqa: BLE001 - fall through to the generic paths
            pass
    head = adapt_classifier(classifier, final_shape, shape, num_classes)
    if head is not None:
        return head
    return pooled_head(classifier, final_shape, shape, num_classes, hint)


def linear_head(block: int, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A cheap head: global average pooling (for spatial maps), flatten, linear.

    Args:
        block: the exit's block number (unused: every exit gets the same kind).
        shape: the block's output shape for one sample, ``[C]`` or ``[C, *spatial]``.
        num_classes: output classes.

    Returns:
        ``nn.Sequential([pool], Flatten, Linear(C, num_classes))``.

    Raises:
        ValueError: for a sample of more than 3 spatial axes (no adaptive pool).

    Example:
        >>> linear_head(1, (16, 32, 32), 10)[-1].in_features
        16
    """
    if len(shape) > 1 and len(shape) not in ADAPTIVE_POOLS:
        raise ValueError(
            f"linear_head pools block outputs of 1 to 3 spatial axes, got shape {tuple(shape)}; "
            "pass a head_factory callable"
        )
    layers: list[nn.Module] = []
    if len(shape) > 1:
        layers.append(ADAPTIVE_POOLS[len(shape)](1))
    layers += [nn.Flatten(1), nn.Linear(shape[0], num_classes)]
    return nn.Sequential(*layers)


def resolve_head_factory(
    head_factory: HeadFactory | str | None,
    classifier: nn.Module,
    final_shape: tuple[int, ...],
    hint: HeadHint | None = None,
) -> tuple[HeadFactory, str]:
    """Turn ``None``/``"copy"``/``"linear"``/a callable into ``(factory, kind)``.

    Args:
        head_factory: the user's choice.
        classifier: the backbone's final classifying layers.
        final_shape: the last block's output shape for one sample.
        hint: what the decomposition knows about the model (for ``"copy"``).

    Returns:
        ``(factory, kind)`` with kind ``"copy"``, ``"linear"`` or ``"custom"``.

    Raises:
        ValueError: for an unknown name.
        TypeError: for something that is neither a name nor a callable, or a
            hint that is not a :class:`HeadHint`.
    """
    if hint is not None and not isinstance(hint, HeadHint):
        raise TypeError(f"head_hint must be an earlyexit HeadHint, got {type(hint).__name__}")
    if head_factory is None or head_factory == "copy":

        def factory(block: int, shape: tuple[int, ...], num_classes: int) -> nn.Module:
            return default_head(classifier, final_shape, shape, num_classes, hint)

        return factory, "copy"
    if head_factory == "linear":
        return linear_head, "linear"
    if isinstance(head_factory, str):
        raise ValueError(
            f"unknown head_factory {head_factory!r}; valid: 'copy', 'linear', or a callable"
        )
    if not callable(head_factory):
        raise TypeError(
            f"head_factory must be a callable or a name, got {type(head_factory).__name__}"
        )
    return head_factory, "custom"
