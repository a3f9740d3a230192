"""A small numpy early-exit model, for runtime tests, demos and benchmarks without a bundle.

Partition ``k`` computes ``h = tanh(x W_k)`` (its features) and the logits of its
exit ``h H_k``, with the normalized entropy of their softmax, exactly the
interface of :meth:`earlyexit.runtime.session.BundleSession.run_partition`.
Weights come from a seed, so every process builds the same model.

Example:
    >>> m = SyntheticModel(num_partitions=3)
    >>> x = m.inputs(5)
    >>> logits, entropy, feats = m.runner(0)(x)
    >>> logits.shape, entropy.shape, feats.shape
    ((5, 10), (5,), (5, 64))
    >>> [r["partition"] for r in m.reference(x, threshold=0.0)]
    [2, 2, 2, 2, 2]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["SyntheticModel", "normalized_entropy"]


def normalized_entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy of ``softmax(logits)`` over the last axis, divided by ``log C``.

    Example:
        >>> float(normalized_entropy(np.zeros((1, 4)))[0])
        1.0
    """
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    ent = -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=-1)
    return (ent / np.log(logits.shape[-1])).astype(np.float32)


class SyntheticModel:
    """An L-partition MLP with one exit per partition.

    Args:
        num_partitions: L.
        in_dim: input features.
        hidden: features between partitions.
        num_classes: C.
        seed: weight seed.
        repeat: extra matrix products per partition, to make compute heavier.
        scale: logit scale; larger makes exits more confident.

    Raises:
        ValueError: a non-positive size.
    """

    def __init__(
        self,
        num_partitions: int = 3,
        in_dim: int = 32,
        hidden: int = 64,
        num_classes: int = 10,
        seed: int = 0,
        repeat: int = 0,
        scale: float = 3.0,
    ) -> None:
        for name, v in (
            ("num_partitions", num_partitions),
            ("in_dim", in_dim),
            ("hidden", hidden),
            ("num_classes", num_classes),
        ):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_partitions, self.in_dim, self.hidden = num_partitions, in_dim, hidden
        self.num_classes, self.seed, self.repeat = num_classes, seed, int(repeat)
        rng = np.random.default_rng(seed)
        dims = [in_dim] + [hidden] * num_partitions
        self.w = [
            (rng.standard_normal((dims[k], dims[k + 1])) / np.sqrt(dims[k])).astype(np.float32)
            for k in range(num_partitions)
        ]
        self.h = [
            (rng.standard_normal((hidden, num_classes)) * scale * (k + 1) / np.sqrt(hidden)).astype(
                np.float32
            )
            for k in range(num_partitions)
        ]
        self.r = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)

    def inputs(self, n: int, seed: int = 1) -> np.ndarray:
        """``n`` random inputs, ``[n, in_dim]`` float32."""
        return np.random.default_rng(seed).standard_normal((n, self.in_dim)).astype(np.float32)

    def run_partition(
        self, k: int, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Run partition ``k`` (0-based): ``(logits, entropy, features or None for the last)``."""
        if not 0 <= k < self.num_partitions:
            raise ValueError(f"partition must be in 0..{self.num_partitions - 1}, got {k}")
        x = np.asarray(x, np.float32).reshape(len(x), -1)
        if x.shape[1] != self.w[k].shape[0]:
            raise ValueError(f"partition {k} takes {self.w[k].shape[0]} features, got {x.shape[1]}")
        h = np.tanh(x @ self.w[k])
        for _ in range(self.repeat):
            h = np.tanh(h @ self.r + h)
        logits = h @ self.h[k]
        last = k == self.num_partitions - 1
        return logits, normalized_entropy(logits), None if last else h

    def runner(self, k: int) -> Callable[[np.ndarray], tuple]:
        """The partition runner of partition ``k``."""
        if not 0 <= k < self.num_partitions:
            raise ValueError(f"partition must be in 0..{self.num_partitions - 1}, got {k}")
        return lambda x: self.run_partition(k, x)

    def reference(self, x: np.ndarray, threshold: float) -> list[dict]:
        """In-process early exit, one dict per sample: ``partition``, ``logits``, ``entropy``.

        The last partition takes every sample that reaches it.
        """
        from earlyexit.runtime.chain import run_chain

        runners = [self.runner(k) for k in range(self.num_partitions)]
        res = run_chain(runners, np.asarray(x, np.float32), threshold)
        return [
            {"partition": int(k), "logits": row, "entropy": float(e)}
            for k, row, e in zip(res.exit_partition, res.logits, res.entropy, strict=True)
        ]
