"""One M/G/1/K station exactly (docs/spec.md#load): the embedded Markov chain at departures.

Gross & Harris, with the service time distribution exactly the profile's
mixture of point masses (so P(j arrivals in one service) is a mixture of
Poisson laws); exact for this model, O(K^3) per station. Re-exported by
:mod:`earlyexit.planner.queueing`.

Example:
    >>> loss, n = mg1k_exact(1.0, [1.0], capacity=3, exponential=True)
    >>> round(loss, 9), round(n, 9)
    (0.25, 1.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from earlyexit.planner._mg1k import DEFAULT_QUEUE_CAPACITY, _capacity

__all__ = ["MAX_EXACT_CAPACITY", "mg1k_exact"]

MAX_EXACT_CAPACITY = 2000
"""The exact method solves a K x K linear system per station; larger K: use ``approx``."""


def _poisson_mixture(lam: float, times: np.ndarray, probs: np.ndarray, jmax: int) -> np.ndarray:
    """a_j = P(j Poisson(lam) arrivals during a service), j = 0..jmax-1, service a point-mass mixture."""
    j = np.arange(jmax, dtype=np.float64)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, jmax, dtype=np.float64)))])
    out = np.zeros(jmax)
    for t, p in zip(times, probs, strict=True):
        if p <= 0:
            continue
        x = lam * t
        if x <= 0:
            out[0] += p
            continue
        out += p * np.exp(-x + j * math.log(x) - logfact)
    return out


def _embedded(a: np.ndarray, rho: float, k: int) -> tuple[float, float]:
    """Solve M/G/1/K's departure-epoch chain; (loss, mean number) by PASTA and the standard map."""
    if k == 1:
        return rho / (1 + rho), rho / (1 + rho)
    n = k  # departure states 0..K-1
    tail = np.maximum(0.0, 1.0 - np.cumsum(a))  # tail[j] = P(more than j arrivals)
    p = np.zeros((n, n))
    for i in range(n):
        base = max(i - 1, 0)
        width = n - 1 - base  # targets base .. n-2 exactly, n-1 takes the rest
        if width > 0:
            p[i, base : n - 1] = a[:width]
        p[i, n - 1] = tail[width - 1] if width > 0 else 1.0
    m = p.T - np.eye(n)
    m[-1, :] = 1.0
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    pi = np.linalg.solve(m, rhs)
    pi = np.maximum(pi, 0.0)
    pi /= pi.sum()
    den = pi[0] + rho
    pt = np.concatenate([pi / den, [1.0 - 1.0 / den]])
    pt = np.maximum(pt, 0.0)
    return float(pt[-1]), float(np.dot(np.arange(k + 1), pt))


def mg1k_exact(
    arrival_rate: float,
    times: Sequence[float],
    probs: Sequence[float] | None = None,
    capacity: int = DEFAULT_QUEUE_CAPACITY,
    *,
    exponential: bool = False,
) -> tuple[float, float]:
    """M/G/1/K exactly, by its embedded Markov chain: (loss ratio, mean number in system).

    Args:
        arrival_rate: lambda (> = 0).
        times: service times of the mixture's point masses (s, >= 0).
        probs: their probabilities (default: equal); normalized.
        capacity: K >= 1 (at most :data:`MAX_EXACT_CAPACITY`).
        exponential: the service is exponential with mean ``times[0]`` instead
            (then this is M/M/1/K; used to check the chain).

    Returns:
        (loss ratio, mean number in system).

    Raises:
        ValueError: negative values, empty or mismatched lists, K too large.

    Example:
        >>> loss, n = mg1k_exact(1.0, [1.0], capacity=3, exponential=True)
        >>> round(loss, 9), round(n, 9)
        (0.25, 1.5)
    """
    k = _capacity(capacity)
    if k > MAX_EXACT_CAPACITY:
        raise ValueError(
            f"queue_capacity: the exact method solves a K x K system; K <= {MAX_EXACT_CAPACITY}, "
            f"got {k} (use the 'approx' method)"
        )
    lam = float(arrival_rate)
    t = np.asarray(times, dtype=np.float64).ravel()
    if t.size == 0 or np.any(~np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"times: expected service times >= 0, got {list(times)}")
    w = (
        np.full(t.size, 1.0 / t.size)
        if probs is None
        else np.asarray(probs, dtype=np.float64).ravel()
    )
    if w.shape != t.shape or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"probs: expected {t.size} probabilities >= 0 with a positive sum")
    w = w / w.sum()
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"arrival_rate: must be finite and >= 0, got {arrival_rate}")
    mean = float(t[0]) if exponential else float(np.dot(t, w))
    rho = lam * mean
    if rho == 0:
        return 0.0, 0.0
    if exponential:
        q = rho / (1 + rho)
        a = (1 - q) * q ** np.arange(k, dtype=np.float64)
    else:
        a = _poisson_mixture(lam, t, w, k)
    return _embedded(a, rho, k)
