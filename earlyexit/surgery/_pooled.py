"""Pooled exit heads: global pooling, the classifier's norm type, a linear layer.

What a head needs to know about a block's output (its layout and the model's
token pooling) comes from a :class:`HeadHint` when the decomposition gives
one, else it is inferred from the classifier: the layout from the width its
first weighted layer expects, the token pooling by checking whether its output
depends on tokens other than the first.

The public names are exported by :mod:`earlyexit.surgery.heads`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from earlyexit.surgery._probe import WEIGHTED, eval_mode, quiet

__all__ = ["LAYOUTS", "POOLINGS", "HeadHint", "pooled_head"]

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


# ------------------------------------------------------------------ what the classifier does

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


def _in_width(module: nn.Module) -> int:
    for attr in ("in_features", "in_channels", "num_features", "num_channels"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    if hasattr(module, "normalized_shape"):
        return int(tuple(module.normalized_shape)[-1])
    return 0


def _layer_kind(module: nn.Module) -> tuple[str, int] | None:
    """``(kind, input width)`` of a norm or weighted layer, else None."""
    kind = _norm_kind(module)
    if kind is not None:
        return kind, _in_width(module)
    if isinstance(module, WEIGHTED):
        return "weighted", _in_width(module)
    return None


def _graph_layers(classifier: fx.GraphModule) -> list[tuple[str, int]]:
    """:func:`_classifier_layers` of a ``GraphModule``, read from its graph."""
    found: list[tuple[str, int]] = []
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
            layer = _layer_kind(classifier.get_submodule(str(node.target)))
            if layer is not None:
                found.append(layer)
    return found


def _classifier_layers(
    classifier: nn.Module, final_shape: tuple[int, ...]
) -> list[tuple[str, int]]:
    """``(kind, input width)`` of the classifier's norm and weighted layers, in call order.

    ``kind`` is ``"layer"``, ``"batch"``, ``"group"``, ``"rms"`` or ``"weighted"``.
    Norms called as functions inside a ``GraphModule`` are found from its graph.
    """
    if isinstance(classifier, fx.GraphModule):
        return _graph_layers(classifier)
    found: list[tuple[str, int]] = []

    def pre(module: nn.Module, args: tuple) -> None:
        layer = _layer_kind(module)
        if layer is not None:
            found.append(layer)

    handles = [m.register_forward_pre_hook(pre) for m in classifier.modules()]
    try:
        with quiet(), eval_mode(classifier):
            classifier(torch.zeros(1, *final_shape))
    except Exception:  # noqa: BLE001 - best effort: what ran before the failure counts
        pass
    finally:
        for h in handles:
            h.remove()
    return found


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
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *final_shape, generator=gen)
    x2 = x.clone()
    x2[:, 1:] += torch.randn(x2[:, 1:].shape, generator=gen)
    try:
        with quiet(), eval_mode(classifier):
            same = torch.allclose(classifier(x), classifier(x2), rtol=1e-5, atol=1e-6)
    except Exception:  # noqa: BLE001 - a classifier that cannot run says nothing
        return "avg"
    return "token" if same else "avg"


# ------------------------------------------------------------------ the head


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


def _pool_for(
    classifier: nn.Module, final_shape: tuple[int, ...], shape: tuple[int, ...], hint: HeadHint
) -> tuple[nn.Module, int]:
    """The global pooling of a block output of ``shape``, and the width it leaves."""
    layout = hint.layout
    if layout is None and len(shape) == len(final_shape):
        layout = _infer_layout(classifier, final_shape)
    if len(shape) == 1:
        return nn.Identity(), shape[0]
    if layout == "tokens" and len(shape) == 2:
        pooling = hint.pooling or _infer_token_pooling(classifier, final_shape)
        mode = "token" if pooling == "token" else "tokens_avg"
        return _Pool(mode, (1,), hint.num_prefix_tokens), shape[-1]
    if layout in ("channels_last", "tokens"):
        return _Pool("mean", tuple(range(1, len(shape)))), shape[-1]
    if layout == "channels_first":
        return _Pool("mean", tuple(range(2, len(shape) + 1))), shape[0]
    return _Pool("flatten", ()), shape[0]


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
    pool, width = _pool_for(classifier, final_shape, shape, hint or HeadHint())
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
