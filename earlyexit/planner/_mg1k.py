"""One M/GI/1/K station (docs/spec.md#load): its capacity K, the seed's approximation, M/M/1/K.

The approximation is Casale & Roveri's (IEEE TC 2023, slide 12 of the seed),
with the geometric-like queue-length distribution it is the tail of (the
diffusion form; with SCV 1 it is M/M/1/K exactly). The exact method is in
:mod:`earlyexit.planner._mg1k_exact`; both are re-exported by
:mod:`earlyexit.planner.queueing`, which assembles the stations of a configuration.

Example:
    >>> round(float(loss_ratio_approx(0.5, 1.0, 3)), 6)  # M/M/1/3
    0.066667
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_QUEUE_CAPACITY",
    "loss_ratio_approx",
    "mg1k_approx",
    "approx_many",
    "mm1k",
    "largest_ok",
]

DEFAULT_QUEUE_CAPACITY = 50
"""K when none is given: at most 50 samples waiting or in service at a station."""
_FEW = 24  # approx_many: up to this many elements, one at a time (faster than vectorized)
_RHO_ONE = 1e-7  # |rho - 1| below this: evaluated at 1 +- this (the formulas are continuous)


def _capacity(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"queue_capacity: expected an integer >= 1, got {k!r}")
    if int(k) < 1:
        raise ValueError(f"queue_capacity: must be an integer >= 1, got {k}")
    return int(k)


def _approx_parts(
    rho: np.ndarray, scv: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rho, r, valid) of the seed's formula: r = rho^(2 / (2 + sqrt(rho)(scv - 1)))."""
    rho = np.asarray(rho, dtype=np.float64)
    scv = np.asarray(scv, dtype=np.float64)
    rho, scv = np.broadcast_arrays(rho, scv)
    rho = np.where(np.abs(rho - 1.0) < _RHO_ONE, 1.0 + _RHO_ONE, rho)
    a = np.sqrt(rho) * (scv - 1.0)
    den = 2.0 + a
    valid = den > 0.05
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.where(
            valid & (rho > 0),
            np.exp(2.0 * np.log(np.maximum(rho, 1e-300)) / np.where(valid, den, 1.0)),
            0.0,
        )
    return rho, r, valid


def loss_ratio_approx(rho: Any, scv: Any, capacity: int) -> np.ndarray:
    """The M/GI/1/K loss ratio approximation of Casale & Roveri (the seed's slide 12).

    L = rho^((a + 2K) / (2 + a)) (rho - 1) / (rho^(2 (1 + a + K) / (2 + a)) - 1),
    a = sqrt(rho) (scv - 1); with scv = 1 it is M/M/1/K's blocking probability.
    Where 2 + a <= 0.05 (a nearly deterministic service far beyond saturation,
    where the formula has no meaning) the fluid limit 1 - 1/rho is used.

    Args:
        rho: offered load lambda E[S] (>= 0), array-like.
        scv: squared coefficient of variation of the service time (>= 0).
        capacity: K, messages in the system at most (waiting + in service), >= 1.

    Returns:
        The loss ratios, same shape as the broadcast inputs.

    Example:
        >>> float(loss_ratio_approx(0.0, 0.3, 10))
        0.0
    """
    return mg1k_approx(rho, scv, capacity)[0]


def mg1k_approx(rho: Any, scv: Any, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Loss ratio and mean number in system of M/GI/1/K by the seed's approximation.

    The queue-length law whose tail the approximation is: with
    r = rho^(2 / (2 + a)) and p_0 = (1 - rho) / (1 - rho^2 r^(K-1)),
    p_n = p_0 rho (1 - r) r^(n-1) / (1 - rho) for 1 <= n < K and p_K = p_0 rho r^(K-1)
    (= the seed's L; it sums to 1, and 1 - p_0 = rho (1 - L), the carried load).

    Args:
        rho, scv, capacity: as for :func:`loss_ratio_approx`.

    Returns:
        (loss ratio, mean number in system), arrays.

    Example:
        >>> loss, n = mg1k_approx(0.5, 1.0, 1)
        >>> round(float(loss), 6), round(float(n), 6)  # M/M/1/1: rho / (1 + rho)
        (0.333333, 0.333333)
    """
    k = _capacity(capacity)
    rho0 = np.asarray(rho, dtype=np.float64)
    if np.any(~np.isfinite(rho0)) or np.any(rho0 < 0):
        raise ValueError(f"rho: must be finite and >= 0, got {rho}")
    if np.any(np.asarray(scv, dtype=np.float64) < 0):
        raise ValueError(f"scv: must be >= 0, got {scv}")
    rho, r, valid = _approx_parts(rho0, scv, k)
    n = np.arange(k + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        pos = rho > 0
        lrho = np.log(np.where(pos, rho, 1.0))
        lr = np.log(np.where(pos & (r > 0), r, 1.0))
        # (1 - r) / (1 - rho) > 0 (r < 1 exactly when rho < 1)
        lmid = lrho + np.log(np.where(pos, (1.0 - r) / (1.0 - rho), 1.0))
        lw = np.where(
            n == 0,
            0.0,
            np.where(
                n < k,
                lmid[..., None] + (n - 1) * lr[..., None],
                lrho[..., None] + (k - 1) * lr[..., None],
            ),
        )
        lw = lw - lw.max(axis=-1, keepdims=True)
        w = np.exp(lw)
        p = w / w.sum(axis=-1, keepdims=True)
        loss = p[..., k]
        mean_n = (p * n).sum(axis=-1)
        fluid = np.maximum(0.0, 1.0 - 1.0 / np.maximum(rho, 1e-300))
        loss = np.where(valid, loss, fluid)
        mean_n = np.where(valid, mean_n, float(k))
        zero = rho0 == 0
        loss = np.where(zero, 0.0, np.clip(loss, 0.0, 1.0))
        mean_n = np.where(zero, 0.0, np.clip(mean_n, 0.0, k))
    return loss, mean_n


def _approx_scalar(rho: float, scv: float, k: int) -> tuple[float, float]:
    """:func:`mg1k_approx` for one station in closed form (the planner calls it many times)."""
    if rho <= 0:
        return 0.0, 0.0
    if abs(rho - 1.0) < _RHO_ONE:
        rho = 1.0 + _RHO_ONE
    den = 2.0 + math.sqrt(rho) * (scv - 1.0)
    if not den > 0.05:
        return max(0.0, 1.0 - 1.0 / rho), float(k)
    r = math.exp(2.0 * math.log(rho) / den)
    if abs(1.0 - r) * k < 1e-2:  # closed forms cancel badly here; sum the terms
        lo, n = mg1k_approx(rho, scv, k)
        return float(lo), float(n)
    c = rho * (1.0 - r) / (1.0 - rho)
    km1 = k - 1
    if r <= 1.0:
        rk = r**km1
        g0 = (1.0 - rk) / (1.0 - r)  # sum_{n=1}^{K-1} r^(n-1)
        g1 = (1.0 - k * rk + km1 * rk * r) / (1.0 - r) ** 2  # sum n r^(n-1)
        z = 1.0 + c * g0 + rho * rk
        return rho * rk / z, (c * g1 + k * rho * rk) / z
    u = 1.0 / r  # divide every weight by r^(K-1)
    uk = u**km1
    s0 = u * (1.0 - uk) / (1.0 - u)  # sum_{m=1}^{K-1} u^m
    s1 = u * (1.0 - k * uk + km1 * uk * u) / (1.0 - u) ** 2  # sum m u^m
    z = uk + c * s0 + rho
    return rho / z, (c * (k * s0 - s1) + k * rho) / z


def approx_many(rho: np.ndarray, scv: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_approx_scalar` over arrays (the same closed forms, element by element).

    The planner's bounds evaluate many stations at once; every element equals what
    the scalar form gives for it (the few near r = 1 are summed by the scalar path).

    Args:
        rho / scv: offered loads (>= 0) and SCVs, same shape.
        k: the capacity K.

    Returns:
        (loss ratio, mean number in system), arrays of that shape.
    """
    rho = np.asarray(rho, dtype=np.float64)
    scv = np.asarray(scv, dtype=np.float64)
    rho, scv = np.broadcast_arrays(rho, scv)
    shape = rho.shape
    rho, scv = rho.ravel(), scv.ravel()
    if rho.size <= _FEW:  # a few stations: the scalar form itself, without numpy's overhead
        pairs = [_approx_scalar(x, y, k) for x, y in zip(rho.tolist(), scv.tolist(), strict=True)]
        out = np.array(pairs, dtype=np.float64).reshape(-1, 2)
        return out[:, 0].reshape(shape), out[:, 1].reshape(shape)
    loss = np.zeros(rho.size)
    num = np.zeros(rho.size)
    at = np.flatnonzero(rho > 0)
    r_ = rho[at]
    r_ = np.where(np.abs(r_ - 1.0) < _RHO_ONE, 1.0 + _RHO_ONE, r_)
    den = 2.0 + np.sqrt(r_) * (scv[at] - 1.0)
    fluid = ~(den > 0.05)
    loss[at[fluid]] = np.maximum(0.0, 1.0 - 1.0 / r_[fluid])
    num[at[fluid]] = float(k)
    live = ~fluid
    at, r_, den = at[live], r_[live], den[live]
    km1 = k - 1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        r = np.exp(2.0 * np.log(r_) / den)
        slow = np.abs(1.0 - r) * k < 1e-2  # the closed forms cancel badly: sum the terms
        if slow.any():
            lo_s, n_s = mg1k_approx(rho[at[slow]], scv[at[slow]], k)
            loss[at[slow]], num[at[slow]] = lo_s, n_s
        for part in (~slow & (r <= 1.0), ~slow & (r > 1.0)):
            if not part.any():
                continue
            q, rr, i = r_[part], r[part], at[part]
            c = q * (1.0 - rr) / (1.0 - q)
            if rr[0] <= 1.0:
                rk = rr**km1
                g0 = (1.0 - rk) / (1.0 - rr)  # sum_{n=1}^{K-1} r^(n-1)
                g1 = (1.0 - k * rk + km1 * rk * rr) / (1.0 - rr) ** 2  # sum n r^(n-1)
                z = 1.0 + c * g0 + q * rk
                loss[i], num[i] = q * rk / z, (c * g1 + k * q * rk) / z
            else:  # every weight divided by r^(K-1)
                u = 1.0 / rr
                uk = u**km1
                s0 = u * (1.0 - uk) / (1.0 - u)  # sum_{m=1}^{K-1} u^m
                s1 = u * (1.0 - k * uk + km1 * uk * u) / (1.0 - u) ** 2  # sum m u^m
                z = uk + c * s0 + q
                loss[i], num[i] = q / z, (c * (k * s0 - s1) + k * q) / z
    return loss.reshape(shape), num.reshape(shape)


def mm1k(rho: float, capacity: int) -> tuple[float, float]:
    """M/M/1/K in closed form: (loss ratio, mean number in system).

    Example:
        >>> mm1k(1.0, 3)
        (0.25, 1.5)
    """
    k = _capacity(capacity)
    rho = float(rho)
    if not math.isfinite(rho) or rho < 0:
        raise ValueError(f"rho: must be finite and >= 0, got {rho}")
    p = np.array([rho**n for n in range(k + 1)], dtype=np.float64)
    p /= p.sum()
    return float(p[k]), float(np.dot(np.arange(k + 1), p))


def largest_ok(
    ok: Callable[[np.ndarray], np.ndarray], start: float, limit: float, *, rel_tol: float = 0.0,
    iters: int = 100, ways: int = 1,
) -> float:  # fmt: skip
    """The largest load x >= 0 with ``ok(x)``, for ``ok`` true up to some x and false beyond.

    Doubles from ``start`` until ``ok`` fails, then narrows the bracket (at most ``iters``
    rounds, stopping once it is within ``rel_tol`` of its top). ``ok`` takes an array of
    loads and answers for each; a round asks it ``ways`` loads at once (1: bisection).
    Used for a station's highest utilization and a plan's highest arrival rate under a
    loss bound.

    Returns:
        The bracket's feasible end, ``inf`` when ``ok`` still holds past ``limit``.

    Example:
        >>> largest_ok(lambda x: x <= 3.0, 1.0, 1e9)
        3.0
    """
    lo, hi = 0.0, start
    while True:
        xs = hi * 2.0 ** np.arange(ways)
        good = np.asarray(ok(xs), dtype=bool)
        for x, g in zip(xs.tolist(), good.tolist(), strict=True):
            if not g:
                hi = x
                break
            lo, hi = x, x * 2.0
            if hi > limit:
                return math.inf
        else:
            continue
        break
    for _ in range(iters):
        if hi - lo <= rel_tol * hi:
            break
        if ways == 1:
            xs = np.array([0.5 * (lo + hi)])
        else:
            xs = lo + (hi - lo) * np.arange(1, ways + 1) / (ways + 1)
        good = np.asarray(ok(xs), dtype=bool)
        n_good = int(np.argmin(good)) if not good.all() else good.size  # a prefix is good
        if n_good:
            lo = float(xs[n_good - 1])
        if n_good < good.size:
            hi = float(xs[n_good])
    return lo
