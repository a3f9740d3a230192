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
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

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

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
LAYOUTS: tuple[str, ...] = ("channels_first", "channels_last", "tokens")
POOLINGS: tuple[str, ...] = ("avg", "token")


@dataclass(frozen=True)
class HeadHint:
    """What a decomposition knows about its model, for the default exit heads.

    Attach it to a ``BlockSequence`` as ``blocks.head_hint``; every field left
    ``None`` is inferred from the classifier.

    Attributes:
        layout: ``"channels_first"`` (``[C, *spatial]``), ``"channels_last"``
            (``[*spatial, C]``, Swin) or ``"tokens"`` (``[T, C]``, ViT).
        pooling: ``"avg"`` or ``"token"`` (the class token at index 0).
        num_prefix_tokens: class/distillation tokens that average pooling skips.

    Raises:
        ValueError: for an unknown layout or pooling.
    """

    layout: str | None = None
    pooling: str | None = None
    num_prefix_tokens: int = 0

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; valid: {', '.join(POOLINGS)}")
        if (
            isinstance(self.num_prefix_tokens, bool)
            or not isinstance(self.num_prefix_tokens, int)
            or self.num_prefix_tokens < 0
        ):
            raise ValueError(
                f"num_prefix_tokens must be an int >= 0, got {self.num_prefix_tokens!r}"
            )


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
    first = next((i for i, m in enumerate(layers) if isinstance(m, _WEIGHTED)), None)
    if first is None:
        raise ValueError("the classifier has no Linear or Conv layer to adapt; pass head_factory")
    prefix = layers[:first]
    if isinstance(layers[first], nn.Linear) and _flattens_map(
        layers[first].in_features, final_shape, shape
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
    """``module`` rebuilt so that it accepts ``x`` (trying its channel axes), or None."""
    widths = [x.shape[-1], x.shape[1]] if x.dim() >= 2 else [x.shape[-1]]
    for width in dict.fromkeys(int(w) for w in widths):
        new = _resized_copy(module, width)
        if new is None:
            continue
        new.eval()
        try:
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                new(x)
        except Exception:  # noqa: BLE001 - any failure means this width does not fit
            continue
        new.train(module.training)
        return new
    return None


class _Abort(Exception):
    """Raised by a hook to stop a trial run."""


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
        # torch.fx prints the failing line of a GraphModule to stderr: keep trials quiet
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
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


def _modes(module: nn.Module) -> list[bool]:
    return [m.training for m in module.modules()]


def _restore_modes(module: nn.Module, modes: list[bool]) -> None:
    for m, mode in zip(module.modules(), modes, strict=False):
        m.training = mode


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


def _needs_spatial_prefix(
    classifier: nn.Module, final_shape: tuple[int, ...], shape: tuple[int, ...]
) -> bool:
    """Does the classifier flatten a whole ``[C, *spatial]`` map into a Linear (VGGish)?"""
    first = next((m for m in classifier.modules() if isinstance(m, _WEIGHTED)), None)
    return isinstance(first, nn.Linear) and _flattens_map(first.in_features, final_shape, shape)


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
    if _needs_spatial_prefix(classifier, final_shape, shape) and len(final_shape) <= 4:
        pool = {2: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool2d, 4: nn.AdaptiveAvgPool3d}
        head = nn.Sequential(pool[len(final_shape)](final_shape[1:]), head)
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


# ------------------------------------------------------------------ pooled heads

_NORM_FUNCTIONS: dict[object, str] = {
    torch.nn.functional.layer_norm: "layer",
    torch.nn.functional.batch_norm: "batch",
    torch.nn.functional.group_norm: "group",
}
if hasattr(torch.nn.functional, "rms_norm"):
    _NORM_FUNCTIONS[torch.nn.functional.rms_norm] = "rms"


def _norm_kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batch"
    if isinstance(module, nn.LayerNorm):
        return "layer"
    if isinstance(module, nn.GroupNorm):
        return "group"
    if "rmsnorm" in type(module).__name__.lower():
        return "rms"
    return None


def _classifier_layers(
    classifier: nn.Module, final_shape: tuple[int, ...]
) -> list[tuple[str, int]]:
    """``(kind, input width)`` of the classifier's norm and weighted layers, in call order.

    ``kind`` is ``"layer"``, ``"batch"``, ``"group"``, ``"rms"`` or ``"weighted"``.
    Norms called as functions inside a ``GraphModule`` are found from its graph.
    """
    found: list[tuple[str, int]] = []
    if isinstance(classifier, fx.GraphModule):
        for node in classifier.graph.nodes:
            if node.op == "call_function" and node.target in _NORM_FUNCTIONS:
                width = 0
                weight = node.kwargs.get("weight", node.args[2] if len(node.args) > 2 else None)
                if isinstance(weight, fx.Node) and weight.op == "get_attr":
                    try:
                        width = int(classifier.get_parameter(str(weight.target)).shape[0])
                    except AttributeError:
                        width = 0
                found.append((_NORM_FUNCTIONS[node.target], width))
            elif node.op == "call_function" and node.target is torch.nn.functional.linear:
                found.append(("weighted", 0))
            elif node.op == "call_module":
                sub = classifier.get_submodule(str(node.target))
                kind = _norm_kind(sub)
                if kind is not None:
                    found.append((kind, _in_width(sub)))
                elif isinstance(sub, _WEIGHTED):
                    found.append(("weighted", _in_width(sub)))
        return found

    def pre(module: nn.Module, args: tuple) -> None:
        kind = _norm_kind(module)
        if kind is not None:
            found.append((kind, _in_width(module)))
        elif isinstance(module, _WEIGHTED):
            found.append(("weighted", _in_width(module)))

    handles = [m.register_forward_pre_hook(pre) for m in classifier.modules()]
    modes = _modes(classifier)
    classifier.eval()
    try:
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            classifier(torch.zeros(1, *final_shape))
    except Exception:  # noqa: BLE001 - best effort: what ran before the failure counts
        pass
    finally:
        for h in handles:
            h.remove()
        _restore_modes(classifier, modes)
    return found


def _in_width(module: nn.Module) -> int:
    for attr in ("in_features", "in_channels", "num_features", "num_channels"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    if hasattr(module, "normalized_shape"):
        return int(tuple(module.normalized_shape)[-1])
    return 0


def _infer_layout(classifier: nn.Module, final_shape: tuple[int, ...]) -> str | None:
    """The block layout from the width the classifier's first layer expects."""
    if len(final_shape) < 2:
        return None
    widths = [w for _, w in _classifier_layers(classifier, final_shape) if w]
    if not widths:
        return None
    width = widths[0]
    first, last = final_shape[0], final_shape[-1]
    if last == width and first != width:
        return "tokens" if len(final_shape) == 2 else "channels_last"
    if first == width:
        return "channels_first"
    return None


def _infer_token_pooling(classifier: nn.Module, final_shape: tuple[int, ...]) -> str:
    """``"token"`` if the classifier reads only token 0 of ``[T, C]``, else ``"avg"``."""
    if len(final_shape) != 2 or final_shape[0] < 2:
        return "avg"
    modes = _modes(classifier)
    classifier.eval()
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, *final_shape, generator=gen)
        x2 = x.clone()
        x2[:, 1:] += torch.randn(x2[:, 1:].shape, generator=gen)
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            same = torch.allclose(classifier(x), classifier(x2), rtol=1e-5, atol=1e-6)
    except Exception:  # noqa: BLE001 - a classifier that cannot run says nothing
        return "avg"
    finally:
        _restore_modes(classifier, modes)
    return "token" if same else "avg"


class _Pool(nn.Module):
    """Global pooling to ``[B, C]``: a mean over ``dims``, or the token at index 0."""

    def __init__(self, mode: str, dims: tuple[int, ...], start: int = 0) -> None:
        super().__init__()
        self.mode = mode
        self.dims = dims
        self.start = start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "token":
            return x[:, 0]
        if self.mode == "tokens_avg":
            return x[:, self.start :].mean(1)
        if self.mode == "flatten":
            return x.flatten(2).mean(2) if x.dim() > 2 else x
        return x.mean(dim=self.dims)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, dims={self.dims}"


def _norm_for(kind: str, width: int) -> nn.Module | None:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "rms" and hasattr(nn, "RMSNorm"):
        return nn.RMSNorm(width)
    return None


def pooled_head(
    classifier: nn.Module,
    final_shape: tuple[int, ...],
    shape: tuple[int, ...],
    num_classes: int,
    hint: HeadHint | None = None,
) -> nn.Module:
    """Global pooling, the classifier's normalization type and a linear layer.

    ``[C, *spatial]`` maps are averaged over the spatial axes, ``[*spatial, C]``
    maps (Swin) over theirs, ``[T, C]`` tokens give their class token or their
    mean (the model's pooling), a ``[C]`` vector is taken as is; a shape whose
    layout cannot be told is flatten-pooled (averaged over every axis but the
    first). The norm is the first one the classifier applies before its first
    weighted layer (``LayerNorm``, ``BatchNorm`` or ``RMSNorm``), at the
    block's width, freshly initialized.

    Args:
        classifier: the backbone's final classifying layers (only inspected).
        final_shape: the last block's output shape for one sample.
        shape: the shape this head receives.
        num_classes: output classes.
        hint: what the decomposition knows (layout, pooling); inferred if ``None``.

    Returns:
        ``nn.Sequential(pool, [norm], Linear)``.

    Example:
        >>> from torch import nn
        >>> clf = nn.Sequential(nn.LayerNorm(8), nn.Flatten(1), nn.Linear(8 * 4, 3))
        >>> head = pooled_head(clf, (4, 8), (4, 16), 3)
        >>> [type(m).__name__ for m in head]
        ['_Pool', 'LayerNorm', 'Linear']
    """
    shape, final_shape = tuple(shape), tuple(final_shape)
    hint = hint or HeadHint()
    layout = hint.layout
    if layout is None and len(shape) == len(final_shape):
        layout = _infer_layout(classifier, final_shape)
    if len(shape) == 1:
        pool, width = nn.Identity(), shape[0]
    elif layout == "tokens" and len(shape) == 2:
        pooling = hint.pooling or _infer_token_pooling(classifier, final_shape)
        mode = "token" if pooling == "token" else "tokens_avg"
        pool, width = _Pool(mode, (1,), hint.num_prefix_tokens), shape[-1]
    elif layout in ("channels_last", "tokens"):
        pool, width = _Pool("mean", tuple(range(1, len(shape)))), shape[-1]
    elif layout == "channels_first":
        pool, width = _Pool("mean", tuple(range(2, len(shape) + 1))), shape[0]
    else:
        pool, width = _Pool("flatten", ()), shape[0]
    layers: list[nn.Module] = [pool]
    kinds = _classifier_layers(classifier, final_shape) if len(final_shape) else []
    for kind, _ in kinds:
        if kind == "weighted":
            break
        norm = _norm_for(kind, width)
        if norm is not None:
            layers.append(norm)
            break
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


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
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                was = head.training
                out = head.eval()(torch.zeros(1, *shape))
                head.train(was)
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
