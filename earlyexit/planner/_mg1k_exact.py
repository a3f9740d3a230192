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


_TINY_RHO = 1e-4
"""Below this load the chain's solve loses N to rounding (N ~ rho, divided by lambda for
the wait); there M/G/1's closed forms are used, relatively O(rho^(K-1)) off."""


def _light(
    lam: float, t: np.ndarray, w: np.ndarray, t0: np.ndarray, exponential: bool
) -> tuple[float, float]:
    """(loss 0, mean number) of M/G/1 with exceptional first service ``t0`` (Welch 1964;
    Pollaczek-Khinchine when ``t0`` is ``t``): the limit of the chain at a light load."""
    m_b, m_c = float(np.dot(t, w)), float(np.dot(t0, w))
    s2_b, s2_c = float(np.dot(t**2, w)), float(np.dot(t0**2, w))
    if exponential:
        m_b = m_c = float(t[0])
        s2_b = s2_c = 2.0 * m_b**2
    rho = lam * m_b
    p0 = (1.0 - rho) / (1.0 - rho + lam * m_c)
    wq = lam * s2_b / (2.0 * (1.0 - rho)) + lam * (s2_c - s2_b) / (2.0 * (1.0 - rho + lam * m_c))
    return 0.0, lam * (wq + p0 * m_c + (1.0 - p0) * m_b)


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


def _embedded(
    a: np.ndarray, rho: float, k: int, a0: np.ndarray | None = None, rho0: float | None = None
) -> tuple[float, float]:
    """Solve M/G/1/K's departure-epoch chain; (loss, mean number) by PASTA and the standard map.

    With ``a0`` and ``rho0``: a message that finds the server empty is served with
    another law (exceptional first service, Welch 1964): P(j arrivals) ``a0`` and load
    ``rho0`` = lambda times its mean. The accepted arrivals see the departures' law
    pi, so 1 - L = 1 / (pi_0 + lambda E[S served]), E[S served] mixing the two laws
    with pi_0.
    """
    if a0 is None or rho0 is None:
        a0, rho0 = a, rho
    if k == 1:  # every accepted message finds the server empty
        return rho0 / (1 + rho0), rho0 / (1 + rho0)
    n = k  # departure states 0..K-1
    tails = [np.maximum(0.0, 1.0 - np.cumsum(x)) for x in (a0, a)]  # P(more than j arrivals)
    p = np.zeros((n, n))
    for i in range(n):
        ai, tail = (a0, tails[0]) if i == 0 else (a, tails[1])
        base = max(i - 1, 0)
        width = n - 1 - base  # targets base .. n-2 exactly, n-1 takes the rest
        if width > 0:
            p[i, base : n - 1] = ai[:width]
        p[i, n - 1] = tail[width - 1] if width > 0 else 1.0
    m = p.T - np.eye(n)
    m[-1, :] = 1.0
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    pi = np.linalg.solve(m, rhs)
    pi = np.maximum(pi, 0.0)
    pi /= pi.sum()
    den = pi[0] + pi[0] * rho0 + (1.0 - pi[0]) * rho
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
    first_times: Sequence[float] | None = None,
) -> tuple[float, float]:
    """M/G/1/K exactly, by its embedded Markov chain: (loss ratio, mean number in system).

    Args:
        arrival_rate: lambda (> = 0).
        times: service times of the mixture's point masses (s, >= 0).
        probs: their probabilities (default: equal); normalized.
        capacity: K >= 1 (at most :data:`MAX_EXACT_CAPACITY`).
        exponential: the service is exponential with mean ``times[0]`` instead
            (then this is M/M/1/K; used to check the chain).
        first_times: the service times of a message that finds the server empty,
            one per point mass, with the same probabilities (exceptional first
            service; docs/spec.md#load); default ``times``.

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
    t0 = None
    if first_times is not None:
        t0 = np.asarray(first_times, dtype=np.float64).ravel()
        if exponential or t0.shape != t.shape or np.any(~np.isfinite(t0)) or np.any(t0 < 0):
            raise ValueError(
                f"first_times: expected {t.size} service times >= 0 (not with exponential), "
                f"got {list(first_times)}"
            )
    rho0 = rho if t0 is None else lam * float(np.dot(t0, w))
    if rho == 0 and rho0 == 0:
        return 0.0, 0.0
    if k >= 2 and max(rho, rho0) < _TINY_RHO:
        return _light(lam, t, w, t if t0 is None else t0, exponential)
    if exponential:
        q = rho / (1 + rho)
        a = (1 - q) * q ** np.arange(k, dtype=np.float64)
    else:
        a = _poisson_mixture(lam, t, w, k)
    a0 = None if t0 is None else _poisson_mixture(lam, t0, w, k)
    return _embedded(a, rho, k, a0, rho0)
