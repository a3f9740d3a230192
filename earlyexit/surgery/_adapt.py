"""Adapted copies of a backbone's classifier, for exits after earlier blocks.

Two ways, both pure (the classifier is deep-copied, never changed):

- :func:`copy_classifier_head`, for an ``nn.Sequential`` classifier: its first
  layer holding weights gets the block's channel count, after an adaptive pool
  to the final spatial size when the classifier flattens maps without pooling
  (VGGish).
- :func:`adapt_classifier`, for any classifier (``GraphModule`` included): the
  copy is run on the block's shape and every submodule that rejects its input
  width (``Linear``, convolutions, batch/layer/group/RMS norms) is rebuilt for
  that width, freshly initialized, until the copy runs.

The public names are exported by :mod:`earlyexit.surgery.heads`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from earlyexit.surgery._probe import ADAPTIVE_POOLS, WEIGHTED, eval_mode, quiet

__all__ = ["adapt_classifier", "copy_classifier_head"]


def _flattens_map(in_features: int, final_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Does a Linear of ``in_features`` take a whole flattened ``[C, *spatial]`` map?

    Not when it takes the channel or token width (``[1, C]`` tokens flatten to C too).
    """
    return (
        len(final_shape) > 1
        and len(shape) == len(final_shape)
        and tuple(shape[1:]) != tuple(final_shape[1:])
        and in_features == math.prod(final_shape)
        and in_features not in (final_shape[0], final_shape[-1])
    )


def _final_size_pool(
    first_weighted: nn.Module | None, final_shape: tuple[int, ...], shape: tuple[int, ...]
) -> nn.Module | None:
    """An adaptive pool to the final spatial size, when the first weighted layer needs one.

    That is when it is a ``Linear`` that takes a whole flattened map (VGGish)
    and the block's map has another spatial size.
    """
    if not isinstance(first_weighted, nn.Linear) or not _flattens_map(
        first_weighted.in_features, final_shape, shape
    ):
        return None
    if len(final_shape) not in ADAPTIVE_POOLS:
        raise ValueError(
            f"cannot pool a block output of rank {len(shape)} to the classifier's "
            f"{tuple(final_shape)}: adaptive pooling takes ranks "
            f"{', '.join(map(str, ADAPTIVE_POOLS))}; pass head_factory"
        )
    return ADAPTIVE_POOLS[len(final_shape)](tuple(final_shape[1:]))


# ------------------------------------------------------------------ the Sequential path


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
    """Copy a sequential ``classifier`` (which takes ``final_shape``) so that it takes ``shape``.

    The first layer holding weights gets the block's width; see
    :func:`adapt_classifier` for classifiers of any kind.

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
            f"copy_classifier_head adapts nn.Sequential classifiers, got a {type(head).__name__}; "
            "use adapt_classifier or default_head"
        )
    layers = _flat_layers(head)
    first = next((i for i, m in enumerate(layers) if isinstance(m, WEIGHTED)), None)
    if first is None:
        raise ValueError("the classifier has no Linear or Conv layer to adapt; pass head_factory")
    prefix = layers[:first]
    pool = _final_size_pool(layers[first], tuple(final_shape), tuple(shape))
    if pool is not None:  # flatten without pooling: pool to the final spatial size first
        prefix = [pool, *prefix]
    probe = nn.Sequential(*prefix)
    with quiet(), eval_mode(probe):
        in_size = probe(torch.zeros(1, *shape)).shape[1]
    return nn.Sequential(*prefix, _adapted_layer(layers[first], in_size), *layers[first + 1 :])


# ------------------------------------------------------------------ the generic path


def _param_like(old: torch.Tensor | None, *size: int, fill: float | None = None) -> torch.Tensor:
    kw = {"dtype": old.dtype, "device": old.device} if old is not None else {}
    t = torch.empty(*size, **kw)
    if fill is not None:
        t.fill_(fill)
    return t


def _resized_copy(module: nn.Module, width: int) -> nn.Module | None:
    """A copy of ``module`` taking inputs of ``width`` channels/features, or None.

    Resized parameters are freshly initialized (norms: weight 1, bias 0).
    """
    new = copy.deepcopy(module)
    weight = getattr(new, "weight", None)
    bias = getattr(new, "bias", None)
    if isinstance(new, nn.Linear):
        new.in_features = width
        new.weight = nn.Parameter(_param_like(weight, new.out_features, width))
        new.reset_parameters()
    elif isinstance(new, nn.modules.conv._ConvNd) and not new.transposed:
        k = tuple(new.kernel_size)
        if new.groups == 1:
            new.weight = nn.Parameter(_param_like(weight, new.out_channels, width, *k))
        elif new.groups == new.in_channels and new.out_channels % new.in_channels == 0:
            # depthwise: the output width follows the input width
            mult = new.out_channels // new.in_channels
            new.groups, new.out_channels = width, width * mult
            new.weight = nn.Parameter(_param_like(weight, width * mult, 1, *k))
            if bias is not None:
                new.bias = nn.Parameter(_param_like(bias, width * mult))
        else:
            return None
        new.in_channels = width
        new.reset_parameters()
    elif isinstance(new, nn.modules.batchnorm._NormBase):  # batch and instance norms
        new.num_features = width
        if new.affine:
            new.weight = nn.Parameter(_param_like(weight, width, fill=1.0))
            new.bias = nn.Parameter(_param_like(bias, width, fill=0.0))
        if new.track_running_stats:
            new.running_mean = _param_like(new.running_mean, width, fill=0.0)
            new.running_var = _param_like(new.running_var, width, fill=1.0)
            new.num_batches_tracked.zero_()
    elif isinstance(new, nn.GroupNorm):
        if width % new.num_groups:
            return None
        new.num_channels = width
        if new.affine:
            new.weight = nn.Parameter(_param_like(weight, width, fill=1.0))
            new.bias = nn.Parameter(_param_like(bias, width, fill=0.0))
    elif hasattr(new, "normalized_shape"):  # LayerNorm, RMSNorm and timm's variants
        if len(tuple(new.normalized_shape)) != 1:
            return None
        new.normalized_shape = (width,)
        if isinstance(weight, nn.Parameter):
            new.weight = nn.Parameter(_param_like(weight, width, fill=1.0))
        if isinstance(bias, nn.Parameter):
            new.bias = nn.Parameter(_param_like(bias, width, fill=0.0))
    else:
        return None
    return new


def _refit(module: nn.Module, x: torch.Tensor) -> nn.Module | None:
    """``module`` rebuilt so that it accepts ``x`` (trying its channel axes), or None.

    The rebuilt copy keeps ``module``'s train/eval modes.
    """
    widths = [x.shape[-1], x.shape[1]] if x.dim() >= 2 else [x.shape[-1]]
    for width in dict.fromkeys(int(w) for w in widths):
        new = _resized_copy(module, width)
        if new is None:
            continue
        try:
            with quiet(), eval_mode(new):
                new(x)
        except Exception:  # noqa: BLE001 - any failure means this width does not fit
            continue
        return new
    return None


def _run_until_failure(
    head: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor | None, nn.Module | None, torch.Tensor | None]:
    """Run ``head`` on ``x``; on failure, the innermost open submodule and its input."""
    stack: list[tuple[nn.Module, torch.Tensor | None]] = []

    def pre(module: nn.Module, args: tuple) -> None:
        stack.append((module, args[0] if args and isinstance(args[0], torch.Tensor) else None))

    def post(module: nn.Module, args: tuple, out: object) -> None:
        stack.pop()

    handles = []
    for m in head.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        with quiet():
            return head(x), None, None
    except Exception:  # noqa: BLE001 - torch raises many kinds for a shape mismatch
        if not stack:
            return None, None, None
        module, inp = stack[-1]
        return None, module, inp
    finally:
        for h in handles:
            h.remove()


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> bool:
    """Replace every occurrence of ``old`` below ``root`` with ``new``."""
    found = False
    for parent in root.modules():
        for name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, name, new)
                found = True
    return found


def adapt_classifier(
    classifier: nn.Module,
    final_shape: tuple[int, ...],
    shape: tuple[int, ...],
    num_classes: int | None = None,
    max_steps: int = 64,
) -> nn.Module | None:
    """An adapted copy of any ``classifier`` that takes one sample of ``shape``.

    The copy is run on ``shape``; each submodule that rejects its input's width
    is rebuilt for it (freshly initialized), until the copy runs. Works on
    ``nn.Sequential``, plain modules and ``torch.fx`` ``GraphModule`` classifiers
    alike. The classifier itself is not changed.

    Args:
        classifier: the backbone's final classifying layers.
        final_shape: the last block's output shape for one sample.
        shape: the shape this head receives (same rank as ``final_shape``).
        num_classes: the output width to insist on (``[B, num_classes]``).
        max_steps: how many submodules may be rebuilt.

    Returns:
        The adapted copy, or ``None`` when no such copy exists (a failure outside
        any resizable submodule, a rank change, a wrong output shape).

    Example:
        >>> import torch.fx
        >>> from torch import nn
        >>> clf = torch.fx.symbolic_trace(nn.Sequential(
        ...     nn.AdaptiveAvgPool1d(1), nn.Flatten(1), nn.BatchNorm1d(64), nn.Linear(64, 10)))
        >>> head = adapt_classifier(clf, (64, 5), (32, 9))
        >>> head.get_submodule("2").num_features, tuple(head(torch.zeros(2, 32, 9)).shape)
        (32, (2, 10))
    """
    shape, final_shape = tuple(shape), tuple(final_shape)
    if len(shape) != len(final_shape):
        return None
    head = copy.deepcopy(classifier)
    if shape == final_shape:
        return head
    first = next((m for m in classifier.modules() if isinstance(m, WEIGHTED)), None)
    try:
        pool = _final_size_pool(first, final_shape, shape)
    except ValueError:  # no adaptive pool of that rank: the refits below may still fit
        pool = None
    if pool is not None:
        head = nn.Sequential(pool, head)
    head.eval()
    x = torch.zeros(1, *shape)
    try:
        for _ in range(max_steps + 1):
            out, culprit, inp = _run_until_failure(head, x)
            if out is not None:
                break
            if culprit is None or inp is None:
                return None
            new = _refit(culprit, inp)
            if new is None:
                return None
            if culprit is head:  # the classifier is a single layer
                head = new
                head.eval()
            elif not _replace_module(head, culprit, new):
                return None
        else:
            return None
    finally:
        head.train(classifier.training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return None
    if num_classes is not None and out.shape[1] != num_classes:
        return None
    return head
