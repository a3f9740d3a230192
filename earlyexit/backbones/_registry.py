"""The backbone registry: names -> constructors, plus the ``tv:`` and ``timm:`` adapters."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = ["BackboneEntry", "register_backbone", "create", "list_backbones"]


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone.

    Attributes:
        name: the registry name, e.g. ``"resnet20"`` or ``"tv:resnet18"``.
        fn: ``fn(num_classes, in_chans, **kwargs) -> nn.Module``.
        input_size: default spatial size (H, W) of one input sample.
        description: one line for ``earlyexit backbones``.
    """

    name: str
    fn: Callable[..., nn.Module]
    input_size: tuple[int, int]
    description: str = ""


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(
    name: str, input_size: tuple[int, int], description: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a backbone constructor under ``name`` (a decorator).

    Args:
        name: the registry name; must be new.
        input_size: default (H, W) of one input sample.
        description: one line shown by ``list_backbones``' CLI.

    Returns:
        The decorator, which returns the constructor unchanged.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = BackboneEntry(name, fn, tuple(input_size), description)
        return fn

    return decorator


def _ensure_builtins() -> None:
    # importing the modules registers their backbones
    from earlyexit.backbones import adapters, cifar_resnet, vggish  # noqa: F401


def get_entry(name: str) -> BackboneEntry:
    """Return the registry entry of ``name``, including accepted adapter names.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    _ensure_builtins()
    if not isinstance(name, str):
        raise TypeError(f"backbone name must be a str, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    from earlyexit.backbones import adapters

    entry = adapters.adapter_entry(name)
    if entry is not None:
        return entry
    raise ValueError(
        f"unknown backbone {name!r}; valid names: {', '.join(list_backbones())} "
        "(plus other torchvision ResNets/MobileNetV3 as 'tv:<name>' and timm "
        "EfficientNets as 'timm:<name>')"
    )


def create(name: str, num_classes: int = 10, in_chans: int = 3, **kwargs) -> nn.Module:
    """Create a registered backbone with random weights (nothing is downloaded).

    Args:
        name: a name from :func:`list_backbones`, or ``tv:<torchvision name>`` /
            ``timm:<timm name>`` for supported adapter families.
        num_classes: number of output classes.
        in_chans: number of input channels.
        **kwargs: passed to the constructor.

    Returns:
        The backbone. ``decompose`` knows how to split it into blocks; its
        registry name is kept in ``model.earlyexit_name``.

    Raises:
        ValueError: for an unknown name or a non-positive class/channel count.

    Example:
        >>> from earlyexit import backbones
        >>> model = backbones.create("resnet20", num_classes=10, in_chans=1)
        >>> type(model).__name__
        'CifarResNet'
    """
    entry = get_entry(name)
    for arg, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{arg} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{arg} must be >= 1, got {value}")
    model = entry.fn(num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.earlyexit_name = name
    model.earlyexit_input_shape = (in_chans, *entry.input_size)
    model.earlyexit_num_classes = num_classes
    return model


def list_backbones(pattern: str | None = None) -> list[str]:
    """List registered backbone names, optionally filtered by a glob pattern.

    Args:
        pattern: an ``fnmatch`` pattern such as ``"resnet*"`` or ``"tv:*"``.

    Returns:
        Sorted names.

    Example:
        >>> from earlyexit.backbones import list_backbones
        >>> list_backbones("resnet1*")
        ['resnet110']
    """
    _ensure_builtins()
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names
