"""earlyexit checkpoints: a multi-exit model's config, its data's metadata, its weights.

A checkpoint is a ``torch.save`` file holding only plain data (no pickled
classes), so it loads with ``torch.load(..., weights_only=True)``::

    {"format": "earlyexit.checkpoint/1",
     "config":   MultiExitModel.config  (backbone, num_classes, in_chans, input_shape, exits, head),
     "metadata": {"normalization": {"mean": [...], "std": [...]}, "class_names": [...],
                  "input_shape": [C, H, W], "dataset": "fashion-mnist:...", ...},
     "state_dict": {name: tensor}}

:func:`load` also reads the Lightning ``.ckpt`` files that
:class:`~earlyexit.training.MultiExitModule` writes (they carry the same config
and metadata under the ``"earlyexit"`` key).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from earlyexit import backbones
from earlyexit.surgery.multi_exit import MultiExitModel

__all__ = ["CHECKPOINT_FORMAT", "load", "load_checkpoint_dict", "make_weights_only_safe", "save"]

CHECKPOINT_FORMAT = "earlyexit.checkpoint/1"
_LIGHTNING_KEY = "earlyexit"


def make_weights_only_safe(value: Any) -> Any:
    """Turn ``value`` into plain data that ``torch.load(weights_only=True)`` accepts.

    Dicts, lists, tuples, strings, numbers, booleans, ``None`` and tensors are
    kept; anything else (callables, namespaces, paths) becomes its ``str``.
    """
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, Mapping):
        return {
            str(k): make_weights_only_safe(v)
            for k, v in value.items()
            if not str(k).startswith("_")
        }
    if isinstance(value, (list, tuple)):
        return [make_weights_only_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return value.item()
    return str(value)


def save(
    model: MultiExitModel,
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an earlyexit checkpoint, atomically (temporary file + rename).

    Args:
        model: the multi-exit model; it must come from a registry backbone, so that
            :func:`load` can rebuild it from its ``config``.
        path: the file to write (conventionally ``.pt``).
        metadata: the data's ``normalization``, ``class_names``, ``input_shape``,
            ``dataset`` and anything else worth recording; defaults to
            ``model.metadata`` when the model has it.

    Returns:
        The path written.

    Raises:
        TypeError: if ``model`` is not a ``MultiExitModel``.
        ValueError: if its config names no registry backbone.
    """
    if not isinstance(model, MultiExitModel):
        raise TypeError(f"save expects an earlyexit.MultiExitModel, got {type(model).__name__}")
    config = model.config
    if not config.get("backbone"):
        raise ValueError(
            "this model was not built from a registry backbone, so a checkpoint could not rebuild "
            "it; build it with earlyexit.backbones.create"
        )
    meta = dict(getattr(model, "metadata", None) or {})
    meta.update(metadata or {})
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": make_weights_only_safe(config),
        "metadata": make_weights_only_safe(meta),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint's ``config``, ``metadata`` and ``state_dict`` (no model built).

    Accepts earlyexit ``.pt`` checkpoints and the Lightning ``.ckpt`` files
    :class:`~earlyexit.training.MultiExitModule` writes.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is corrupted or not an earlyexit checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # foreign bytes make torch.load raise almost any type
        text = str(err).strip()
        if "Weights only load failed" in text:  # a pickle that names code: never unpickled
            why = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln.upper()), "")
            raise ValueError(
                f"{path} is not a readable earlyexit checkpoint and is refused: it holds pickled "
                f"Python objects that loading would run as code ({why or 'not plain data'}); "
                "an earlyexit checkpoint holds only tensors and plain data"
            ) from err
        first = text.splitlines()[0] if text else type(err).__name__
        raise ValueError(
            f"{path} is not a readable earlyexit checkpoint (corrupted, truncated, or a file that "
            f"needs unsafe unpickling): {first}"
        ) from err
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        config, metadata, state = obj.get("config"), obj.get("metadata", {}), obj.get("state_dict")
    elif (
        isinstance(obj, dict) and isinstance(obj.get(_LIGHTNING_KEY), dict) and "state_dict" in obj
    ):
        block = obj[_LIGHTNING_KEY]
        config, metadata = block.get("config"), block.get("metadata", {})
        state = {
            k[len("model.") :]: v for k, v in obj["state_dict"].items() if k.startswith("model.")
        }
    elif (
        isinstance(obj, dict)
        and isinstance(obj.get("format"), str)
        and obj["format"].startswith("earlyexit.checkpoint/")
    ):
        raise ValueError(
            f"{path}: checkpoint format {obj['format']!r} is not supported; this version reads "
            f"{CHECKPOINT_FORMAT!r}"
        )
    else:
        raise ValueError(
            f"{path} is not an earlyexit checkpoint (no {CHECKPOINT_FORMAT!r} format tag and no "
            f"'{_LIGHTNING_KEY}' block of a Lightning checkpoint written by earlyexit train)"
        )
    if (
        not isinstance(config, dict)
        or not isinstance(state, dict)
        or not isinstance(metadata, dict)
    ):
        raise ValueError(f"{path}: malformed earlyexit checkpoint (config/state_dict/metadata)")
    return {"config": config, "metadata": metadata, "state_dict": state}


def load(path: str | os.PathLike[str]) -> MultiExitModel:
    """Rebuild a multi-exit model from a checkpoint, in eval mode.

    The model is rebuilt from the checkpoint's own config (backbone, classes,
    input shape, exits, head), then its weights are loaded. The data's metadata
    rides along: ``model.metadata`` (a dict) and ``model.normalization``
    (``{"mean": [...], "std": [...]}`` or ``None``).

    Args:
        path: an earlyexit ``.pt`` checkpoint or a Lightning ``.ckpt`` written by
            ``earlyexit train``.

    Returns:
        The model.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is corrupted, foreign, or its weights do not fit its config.

    Example:
        ```python
        import earlyexit
        model = earlyexit.load("checkpoints/resnet20_fashionmnist.pt")
        model.exits, model.normalization  # ((1, 2, 3, 4, 5, 6, 7, 8, 9, 10), {'mean': [0.286], 'std': [0.353]})
        ```
    """
    data = load_checkpoint_dict(path)
    try:
        model = MultiExitModel.from_config(data["config"], backbones.create)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: cannot rebuild the model from its config: {err}") from err
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit the model config: {err}") from err
    model.metadata = dict(data["metadata"])
    model.normalization = data["metadata"].get("normalization")
    return model.eval()
