"""The backbone registry: names -> constructors, plus the ``tv:`` and ``timm:`` adapters."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "BackboneEntry",
    "WEIGHT_SUFFIXES",
    "create",
    "get_entry",
    "list_backbones",
    "load_weights",
    "register_backbone",
]

WEIGHT_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".bin", ".safetensors")


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone.

    Attributes:
        name: the registry name, e.g. ``"resnet20"`` or ``"tv:resnet18"``.
        fn: ``fn(num_classes, in_chans, **kwargs) -> nn.Module``.
        input_size: the model's declared spatial size (H, W) of one input
            sample (timm: ``pretrained_cfg["input_size"]``; torchvision: the
            evaluation crop of its default weights).
        description: one line for ``earlyexit backbones``.
        in_chans: default input channels (1 for VGGish's log-mel patches).
    """

    name: str
    fn: Callable[..., nn.Module]
    input_size: tuple[int, int]
    description: str = ""
    in_chans: int = 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(in_chans, H, W)`` of one default input sample."""
        return (self.in_chans, *self.input_size)


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(
    name: str, input_size: tuple[int, int], description: str = "", in_chans: int = 3
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a backbone constructor under ``name`` (a decorator).

    Args:
        name: the registry name; must be new.
        input_size: default (H, W) of one input sample.
        description: one line shown by ``list_backbones``' CLI.
        in_chans: default input channels.

    Returns:
        The decorator, which returns the constructor unchanged.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = BackboneEntry(name, fn, tuple(input_size), description, int(in_chans))
        return fn

    return decorator


def _ensure_builtins() -> None:
    # importing the modules registers their backbones
    from earlyexit.backbones import adapters, cifar_resnet, vggish  # noqa: F401


def get_entry(name: str) -> BackboneEntry:
    """Return the registry entry of ``name``, including accepted adapter names.

    Raises:
        TypeError: if ``name`` is not a string.
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
        "(plus any torchvision classification model as 'tv:<name>' and any timm model "
        "as 'timm:<name>'; see list_backbones('tv:*') and list_backbones('timm:*'))"
    )


def create(
    name: str,
    num_classes: int = 10,
    in_chans: int | None = None,
    weights: str | Path | None = None,
    adapt: bool = False,
    **kwargs,
) -> nn.Module:
    """Create a registered backbone (nothing is ever downloaded).

    Args:
        name: a name from :func:`list_backbones`, ``tv:<any torchvision
            classification model>`` or ``timm:<any timm model>``.
        num_classes: number of output classes.
        in_chans: number of input channels; the backbone's default when ``None``
            (3, or 1 for VGGish's log-mel patches).
        weights: a local state dict to load, ``.pth``/``.pt``/``.bin``
            (``torch.load(weights_only=True)``) or ``.safetensors``; random
            weights when ``None``.
        adapt: fit ``weights`` trained for another task, as timm does with its
            pretrained weights: a classifier of another class count is left as
            created (random), and an input convolution of another channel count
            is adapted (:func:`timm.models.adapt_input_conv`: summed for one
            channel). Every other key must still fit. See :func:`load_weights`.
        **kwargs: passed to the constructor (e.g. ``img_size=`` for timm).

    Returns:
        The backbone. ``decompose`` knows how to split it into blocks; its
        registry name is kept in ``model.earlyexit_name``, its input shape in
        ``model.earlyexit_input_shape`` and its JSON-able ``kwargs`` in
        ``model.earlyexit_kwargs`` (``None`` if they are not JSON-able).

    Raises:
        TypeError: for a non-int class or channel count.
        ValueError: for an unknown name, a non-positive class/channel count, or
            weights that do not fit the model.
        FileNotFoundError: if ``weights`` does not exist.

    Example:
        >>> from earlyexit import backbones
        >>> model = backbones.create("resnet20", num_classes=10, in_chans=1)
        >>> type(model).__name__, model.earlyexit_input_shape
        ('CifarResNet', (1, 32, 32))
    """
    entry = get_entry(name)
    if in_chans is None:
        in_chans = entry.in_chans
    for arg, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{arg} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{arg} must be >= 1, got {value}")
    model = entry.fn(num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.earlyexit_num_classes = num_classes
    if weights is not None:
        load_weights(model, weights, adapt=adapt)
    elif adapt:
        raise ValueError("adapt=True needs weights (a local state dict to adapt)")
    input_size = tuple(getattr(model, "earlyexit_input_size", entry.input_size))
    model.earlyexit_name = name
    model.earlyexit_input_shape = (in_chans, *input_size)
    # constructor options, so that a checkpoint's config can rebuild the same model
    model.earlyexit_kwargs = _json_able(kwargs)
    return model


def _json_able(kwargs: dict) -> dict | None:
    """``kwargs`` with tuples as lists if it survives JSON, else None (not rebuildable)."""
    import json

    try:
        return json.loads(json.dumps(kwargs))
    except (TypeError, ValueError):
        return None


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle and zip errors come in many kinds
        raise ValueError(
            f"cannot read {path} as a weights-only state dict ({type(err).__name__}: {err})"
        ) from err
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return inner
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(
            f"{path} does not hold a state dict (a mapping of parameter names to tensors, "
            "optionally under 'state_dict' or 'model')"
        )
    return obj


def load_weights(model: nn.Module, path: str | Path, adapt: bool = False) -> nn.Module:
    """Load a local state dict into ``model`` (in place), checking every key.

    Args:
        model: the freshly created backbone.
        path: a ``.pth``/``.pt``/``.bin`` file (read with
            ``torch.load(weights_only=True)``) or a ``.safetensors`` file. A
            ``module.`` prefix (DDP) is stripped.
        adapt: accept weights trained for another class count or input
            channel count (e.g. ImageNet weights for a 10-class, 1-channel
            task). The classifier's keys are the mis-shaped ones whose only
            difference is the output size, which is the model's class count:
            they keep the model's fresh initialization. A convolution weight
            whose only difference is its input channels is adapted with
            :func:`timm.models.adapt_input_conv` (summed for one channel,
            repeated and rescaled for more); its module must be the first
            convolution. Any other missing, unexpected or mis-shaped key is
            still an error.

    Returns:
        ``model``.

    Raises:
        TypeError: if ``path`` is not a path.
        FileNotFoundError: if the file does not exist (nothing is downloaded).
        ValueError: for another suffix, an unreadable file, or missing,
            unexpected or mis-shaped keys (listed).

    Example:
        >>> import tempfile, torch
        >>> from earlyexit.backbones import create
        >>> src = create("resnet20", num_classes=100, in_chans=3)
        >>> path = tempfile.mkdtemp() + "/r20.pt"
        >>> torch.save(src.state_dict(), path)
        >>> net = create("resnet20", num_classes=10, in_chans=1, weights=path, adapt=True)
        >>> bool(torch.equal(net.layers[0].conv1.weight, src.layers[0].conv1.weight))
        True
        >>> net.fc.out_features, net.stem[0].in_channels
        (10, 1)
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"weights must be a path to a local file, got {type(path).__name__}")
    path = Path(path).expanduser()
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(
            f"weights must be a local state dict file ({', '.join(WEIGHT_SUFFIXES)}), got "
            f"{str(path)!r}; nothing is downloaded"
        )
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; nothing is downloaded")
    state = dict(_read_state_dict(path))
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = model.state_dict()
    if adapt:
        state = _adapt_state(model, own, state)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("mis-shaped", mismatched)):  # fmt: skip
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:5])}{more}")
        raise ValueError(
            f"weights {path} do not fit this {type(model).__name__}: {'; '.join(parts)}. "
            "Create the backbone with the class count (num_classes), input channels "
            "(in_chans) and constructor options the weights were trained with"
        )
    model.load_state_dict(state, strict=False)
    return model


def _adapt_state(
    model: nn.Module, own: Mapping[str, torch.Tensor], state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` with another task's classifier dropped and its input conv adapted.

    Only keys of a single module each: the classifier (output size differs, and
    the model's output size is its class count) and the first convolution (input
    channels differ). Whatever else does not fit is left for the caller to report.
    """
    from timm.models import adapt_input_conv

    num_classes = getattr(model, "earlyexit_num_classes", None) or _num_classes(model)
    first_conv = next(
        (name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None
    )
    state = dict(state)
    dropped = []
    for key, value in list(state.items()):
        mine = own.get(key)
        if mine is None or tuple(value.shape) == tuple(mine.shape) or value.ndim != mine.ndim:
            continue
        module = key.rpartition(".")[0]
        same_but_out = value.shape[1:] == mine.shape[1:] and mine.shape[0] == num_classes
        same_but_in = (
            value.ndim == 4
            and module == first_conv
            and value.shape[0] == mine.shape[0]
            and value.shape[2:] == mine.shape[2:]
        )
        if same_but_out:
            for sibling in [k for k in state if k.rpartition(".")[0] == module]:
                state.pop(sibling)
                dropped.append(sibling)
        elif same_but_in:
            state[key] = adapt_input_conv(mine.shape[1], value, base_chans=value.shape[1])
    # the classifier's fresh keys are not "missing": the model keeps its own
    for key in dropped:
        if key in own:
            state[key] = own[key]
    return state


def _num_classes(model: nn.Module) -> int | None:
    """The output size of the model's last linear layer (its class count), if any."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


def list_backbones(pattern: str | None = None) -> list[str]:
    """List backbone names, optionally filtered by a glob pattern.

    Without a pattern, or with one that does not start with ``tv:`` or
    ``timm:``, only the registered names are listed; a pattern starting with
    ``tv:`` (``timm:``) lists every torchvision classification model (every
    timm model) the adapter accepts.

    Args:
        pattern: an ``fnmatch`` pattern such as ``"resnet*"``, ``"tv:*"`` or
            ``"timm:vit_*"``.

    Returns:
        Sorted names.

    Example:
        >>> from earlyexit.backbones import list_backbones
        >>> list_backbones("resnet1*")
        ['resnet110']
    """
    _ensure_builtins()
    names = sorted(_REGISTRY)
    if pattern is not None and pattern.startswith(("tv:", "timm:")):
        from earlyexit.backbones import adapters

        names = sorted(set(names) | set(adapters.adapter_names(pattern.split(":")[0])))
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names
