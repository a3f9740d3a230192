"""The identity of a multi-exit model: a digest of its config and weights.

Profiles, plans and bundles record it, so that a file made for one model is
never applied to another (``profile merge``, ``export``, ``validate`` compare it).
"""

from __future__ import annotations

import hashlib

from torch import nn

__all__ = ["model_digest"]


def model_digest(model: nn.Module) -> str:
    """SHA-256 of a model's config (if it has one) and weights.

    Args:
        model: a :class:`~earlyexit.MultiExitModel` (or any module; its
            ``config`` mapping is hashed when present).

    Returns:
        64 hex digits; equal for the same architecture and weights.

    Example:
        >>> import earlyexit
        >>> m = earlyexit.MultiExitModel(earlyexit.decompose(
        ...     earlyexit.backbones.create("resnet20", num_classes=10)), num_classes=10)
        >>> model_digest(m) == model_digest(m.select_exits(list(m.exits)))
        True
    """
    config = getattr(model, "config", None)
    h = hashlib.sha256(repr(sorted(config.items())).encode() if isinstance(config, dict) else b"")
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
