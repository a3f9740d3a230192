"""Exit branches (heads).

By default an exit is a copy of the backbone's final classifying layers,
adapted to the width of its block (PORTEND's choice): the first layer that
holds weights gets the block's channel count. If the classifier flattens
spatial maps without pooling (VGGish), an adaptive average pool to the final
block's spatial size comes first, so the head keeps the classifier's shape.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["HeadFactory", "copy_classifier_head", "linear_head", "resolve_head_factory"]

HeadFactory = Callable[[int, tuple[int, ...], int], nn.Module]
"""``factory(block, block_output_shape, num_classes) -> nn.Module`` builds exit ``block``'s head."""

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _adapted_layer(layer: nn.Module, in_size: int) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return nn.Linear(in_size, layer.out_features, bias=layer.bias is not None)
    conv = layer
    return type(conv)(
        in_size, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, 1 if conv.groups == 1 else in_size, conv.bias is not None,
        conv.padding_mode,
    )  # fmt: skip


def _flat_layers(seq: nn.Sequential) -> list[nn.Module]:
    """Layers of a sequential, with nested plain sequentials expanded."""
    out: list[nn.Module] = []
    for m in seq:
        if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
            out += _flat_layers(m)
        else:
            out.append(m)
    return out


def copy_classifier_head(
    classifier: nn.Module, final_shape: tuple[int, ...], shape: tuple[int, ...]
) -> nn.Module:
    """Copy ``classifier`` (which takes ``final_shape``) so that it takes ``shape``.

    Args:
        classifier: the backbone's final classifying layers, an ``nn.Sequential``.
        final_shape: the last block's output shape for one sample.
        shape: the shape this head receives.

    Returns:
        A new module; for ``shape == final_shape`` an exact copy.

    Raises:
        ValueError: if the classifier is not sequential or has no weighted layer.

    Example:
        >>> from torch import nn
        >>> head = copy_classifier_head(
        ...     nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(64, 10)),
        ...     (64, 8, 8), (16, 32, 32))
        >>> head[2].in_features
        16
    """
    head = copy.deepcopy(classifier)
    if tuple(shape) == tuple(final_shape):
        return head
    if not isinstance(head, nn.Sequential):
        raise ValueError(
            f"cannot adapt a {type(head).__name__} classifier to other block widths; "
            "pass head_factory='linear' or your own head factory"
        )
    layers = _flat_layers(head)
    first = next((i for i, m in enumerate(layers) if isinstance(m, _WEIGHTED)), None)
    if first is None:
        raise ValueError("the classifier has no Linear or Conv layer to adapt; pass head_factory")
    prefix = layers[:first]
    if (
        isinstance(layers[first], nn.Linear)
        and len(final_shape) > 1
        and layers[first].in_features == math.prod(final_shape)
        and tuple(shape[1:]) != tuple(final_shape[1:])
    ):
        # flatten without pooling: pool to the final spatial size first
        pool = {2: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool2d, 4: nn.AdaptiveAvgPool3d}
        prefix = [pool[len(final_shape)](tuple(final_shape[1:])), *prefix]
    with torch.no_grad():
        x = torch.zeros(1, *shape)
        for m in prefix:
            m_was = m.training
            m.eval()
            x = m(x)
            m.train(m_was)
    in_size = x.shape[1]
    return nn.Sequential(*prefix, _adapted_layer(layers[first], in_size), *layers[first + 1 :])


def linear_head(block: int, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A cheap head: global average pooling (for spatial maps), flatten, linear.

    Example:
        >>> linear_head(1, (16, 32, 32), 10)[-1].in_features
        16
    """
    layers: list[nn.Module] = []
    if len(shape) > 1:
        pool = {2: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool2d, 4: nn.AdaptiveAvgPool3d}
        layers.append(pool[len(shape)](1))
    layers += [nn.Flatten(1), nn.Linear(shape[0], num_classes)]
    return nn.Sequential(*layers)


def resolve_head_factory(
    head_factory: HeadFactory | str | None,
    classifier: nn.Module,
    final_shape: tuple[int, ...],
) -> tuple[HeadFactory, str]:
    """Turn ``None``/``"copy"``/``"linear"``/a callable into ``(factory, kind)``.

    Raises:
        ValueError: for an unknown name.
        TypeError: for something that is neither a name nor a callable.
    """
    if head_factory is None or head_factory == "copy":

        def factory(block: int, shape: tuple[int, ...], num_classes: int) -> nn.Module:
            return copy_classifier_head(classifier, final_shape, shape)

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
