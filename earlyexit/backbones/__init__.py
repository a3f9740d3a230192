"""Backbones: the registry and the built-in networks and adapters.

Example:
    >>> from earlyexit import backbones
    >>> "resnet110" in backbones.list_backbones()
    True
"""

from earlyexit.backbones._registry import create, list_backbones, register_backbone

__all__ = ["create", "list_backbones", "register_backbone"]
