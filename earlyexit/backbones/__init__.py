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

from earlyexit.backbones._registry import create, list_backbones, load_weights, register_backbone

__all__ = ["create", "list_backbones", "load_weights", "register_backbone"]
