"""Adapters: any torchvision classification model (``tv:``) and any timm model (``timm:``).

Weights are random (nothing is downloaded); ``create(..., weights=PATH)`` loads
a local state dict. ``tv:<name>`` accepts every name of
``torchvision.models.list_models(module=torchvision.models)`` and builds it
with ``get_model(name, weights=None, num_classes=...)``; another input channel
count replaces the first convolution (freshly initialized). ``timm:<name>``
accepts every ``timm.list_models()`` name (a pretrained tag such as
``.augreg_in21k`` is allowed and ignored) and passes ``in_chans`` and any extra
keyword (``img_size=...``) to ``timm.create_model(name, pretrained=False)``.

Declared input sizes: timm's ``pretrained_cfg["input_size"]`` (or ``img_size``
when given), torchvision's evaluation crop size of the model's default weights
(224 for the ViTs, which are built at 224 without weights).

Their decompositions live in :mod:`earlyexit.surgery.known` (torchvision
ResNet and MobileNetV3, timm EfficientNet) and the generic paths of
:func:`earlyexit.decompose`: surgery looks them up by the model's class, so
a model built without this registry decomposes the same way.

"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import nn

from earlyexit.backbones._registry import BackboneEntry, register_backbone

__all__ = ["adapter_entry", "adapter_names", "replace_first_conv"]

_LISTED_TV = ("resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large")
_LISTED_TIMM = ("efficientnet_b0",)
# torchvision builders whose auxiliary classifiers would make forward return a tuple
_TV_NO_AUX = ("googlenet", "inception_v3")


def _replace_conv_in(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
    )  # fmt: skip


def replace_first_conv(model: nn.Module, in_chans: int) -> nn.Module:
    """Give ``model``'s first 2-D convolution ``in_chans`` input channels, in place.

    The first ``nn.Conv2d`` in module order whose groups are 1 is replaced by a
    freshly initialized one (torchvision defines every classification model's
    stem first).

    Args:
        model: a freshly built model (this is used by ``create``, never on a
            user's model).
        in_chans: input channels, >= 1.

    Returns:
        ``model``.

    Raises:
        ValueError: if the model has no such convolution.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            if module.in_channels == in_chans:
                return model
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, _replace_conv_in(module, in_chans))
            return model
    raise ValueError(f"{type(model).__name__} has no Conv2d to take {in_chans} input channels")


@functools.cache
def _tv_names() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


@functools.cache
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def _tv_input_size(name: str) -> tuple[int, int]:
    from torchvision.models import get_model_weights

    if name.startswith("vit_"):
        return (224, 224)  # built at 224 without weights (vit_h_14's weights use 518)
    try:
        crop = get_model_weights(name).DEFAULT.transforms.keywords.get("crop_size", 224)
    except (ValueError, AttributeError, KeyError):  # pragma: no cover - every tv model has them
        crop = 224
    crop = crop[0] if isinstance(crop, Sequence) else crop
    return (int(crop), int(crop))


def _timm_input_size(name: str) -> tuple[int, int]:
    import timm

    cfg = timm.get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) or (3, 224, 224)
    return (int(size[-2]), int(size[-1]))


def _tv_model(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    import torchvision

    if name in _TV_NO_AUX:
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_chans != 3:
        replace_first_conv(model, in_chans)
    if name.startswith("vit_"):
        model.earlyexit_input_size = (int(model.image_size),) * 2
    return model


def _timm_model(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    import timm

    model = timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    img_size = kwargs.get("img_size")
    if img_size is not None:
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        model.earlyexit_input_size = (int(size[0]), int(size[1]))
    return model


def adapter_names(prefix: str) -> list[str]:
    """Every name the ``tv:`` or ``timm:`` adapter accepts (without pretrained tags).

    Args:
        prefix: ``"tv"`` or ``"timm"``.

    Returns:
        ``["tv:alexnet", ...]``, sorted.

    Raises:
        ValueError: for another prefix.
    """
    if prefix == "tv":
        return sorted(f"tv:{n}" for n in _tv_names())
    if prefix == "timm":
        return sorted(f"timm:{n}" for n in _timm_names())
    raise ValueError(f"unknown adapter prefix {prefix!r}; valid: 'tv', 'timm'")


def adapter_entry(name: str) -> BackboneEntry | None:
    """Return a registry entry for an adapter name, else None.

    Raises:
        ValueError: for a ``tv:``/``timm:`` name that the library does not know,
            naming where the valid ones are listed.
    """
    prefix, sep, model_name = name.partition(":")
    if not sep or prefix not in ("tv", "timm"):
        return None
    if prefix == "tv":
        if model_name not in _tv_names():
            raise ValueError(
                f"unknown torchvision classification model {model_name!r}; valid: "
                "earlyexit.backbones.list_backbones('tv:*') "
                f"(e.g. {', '.join(_tv_names()[:4])}, ...)"
            )
        return BackboneEntry(
            name,
            functools.partial(_tv_model, model_name),
            _tv_input_size(model_name),
            f"torchvision {model_name}",
        )
    import timm

    if not model_name or not timm.is_model(model_name):
        raise ValueError(
            f"unknown timm model {model_name!r}; valid: earlyexit.backbones.list_backbones("
            "'timm:*') or timm.list_models()"
        )
    return BackboneEntry(
        name,
        functools.partial(_timm_model, model_name),
        _timm_input_size(model_name),
        f"timm {model_name}",
    )


for _name in _LISTED_TV:
    _entry = adapter_entry(f"tv:{_name}")
    register_backbone(_entry.name, _entry.input_size, f"torchvision {_name}")(_entry.fn)
for _name in _LISTED_TIMM:
    _entry = adapter_entry(f"timm:{_name}")
    register_backbone(_entry.name, _entry.input_size, f"timm {_name}")(_entry.fn)
