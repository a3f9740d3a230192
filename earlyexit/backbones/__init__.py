"""Backbones: the registry and the built-in networks and adapters.

``create("tv:<any torchvision classifier>")`` and ``create("timm:<any timm
model>")`` build any model of those libraries with random weights;
``create(name, weights=PATH)`` loads a local state dict (nothing is downloaded).

Example:
    >>> from earlyexit import backbones
    >>> "resnet110" in backbones.list_backbones()
    True
    >>> "tv:regnet_y_400mf" in backbones.list_backbones("tv:*")
    True
"""

from earlyexit._lazy import lazy_exports

# loaded on first use, so that `earlyexit --help` (which imports ._cli) pulls in no torch
_LAZY: dict[str, str] = {
    "create": "earlyexit.backbones._registry",
    "list_backbones": "earlyexit.backbones._registry",
    "load_weights": "earlyexit.backbones._registry",
    "register_backbone": "earlyexit.backbones._registry",
}

__all__ = ["create", "list_backbones", "load_weights", "register_backbone"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
