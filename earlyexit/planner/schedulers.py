"""Single-exit schedulers of Casale & Roveri (IEEE TC 2023; docs/spec.md#load): the LP and the knapsack.

Both restrict every exit's threshold to {0, 1}: a sample leaves at an exit
chosen by the scheduler, whatever its confidence. Exit *l* costs the server
``exit_times[l]`` (the time of the blocks up to it and its branch) and is
right with probability ``exit_accuracy[l]``.

- **LP (queueing) scheduler**: exit probabilities p that maximize the expected
  accuracy sum p_l A_l subject to the M/GI/1/K loss ratio at arrival rate
  lambda staying <= max_loss; the service time is the mixture sum p_l
  delta(t_l). With the loss bound written as a bound on the mean service time
  (for a fixed SCV the loss grows with rho), this is an LP with two
  constraints, whose optimum has at most two exits. So the search runs over
  every exit and every pair: for a pair, the largest weight on the more
  accurate exit whose mixture (its own SCV) meets the bound, found on a grid
  of 65 weights and refined by bisection. The result always meets the bound.
- **Knapsack scheduler**: a time budget per sample from the arrival rate,
  B = utilization / lambda minus the work already waiting (each waiting sample
  needs at least the cheapest exit); the sample leaves at the most accurate
  exit whose time fits in B (the cheapest exit if none does).

Example:
    >>> s = lp_schedule([1.0, 2.0, 4.0], [0.6, 0.8, 0.9], arrival_rate=0.3, max_loss=0.01,
    ...                 queue_capacity=10)
    >>> round(sum(s.probabilities), 12), s.loss_ratio <= 0.01
    (1.0, True)
    >>> knapsack_exit([1.0, 2.0, 4.0], [0.6, 0.8, 0.9], budget_s=2.5)
    1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from earlyexit.planner._mg1k import largest_ok
from earlyexit.planner.queueing import _approx_scalar, _station_metrics, check_load_args

__all__ = ["ExitSchedule", "lp_schedule", "knapsack_budget", "knapsack_exit", "max_utilization"]


@dataclass(frozen=True)
class ExitSchedule:
    """Exit probabilities and what they give at the arrival rate.

    Attributes:
        probabilities: p_l, the fraction of samples sent out at exit l (sums to 1).
        accuracy: sum p_l A_l.
        loss_ratio / utilization / service_mean_s / service_scv: the server's.
    """

    probabilities: tuple[float, ...]
    accuracy: float
    loss_ratio: float
    utilization: float
    service_mean_s: float
    service_scv: float


def _check_exits(times: Sequence[float], acc: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=np.float64).ravel()
    a = np.asarray(acc, dtype=np.float64).ravel()
    if t.size == 0 or t.shape != a.shape:
        raise ValueError(
            f"exit_times and exit_accuracy: expected two lists of the same length >= 1, "
            f"got {t.size} and {a.size}"
        )
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"exit_times: expected times >= 0 s, got {t.tolist()}")
    if np.any(~np.isfinite(a)) or np.any((a < 0) | (a > 1)):
        raise ValueError(f"exit_accuracy: expected accuracies in [0, 1], got {a.tolist()}")
    return t, a


def max_utilization(scv: float, max_loss: float, queue_capacity: int) -> float:
    """rho_max: the largest offered load whose approximate M/GI/1/K loss stays <= max_loss.

    Bisection (the approximation's loss grows with rho for a fixed SCV).

    Example:
        >>> round(max_utilization(1.0, 0.25, 3), 6)  # M/M/1/3 at rho = 1 loses 1/4
        1.0
    """

    def ok(rho: np.ndarray) -> np.ndarray:
        return np.array([_approx_scalar(x, scv, queue_capacity)[0] <= max_loss for x in rho])

    return largest_ok(ok, 1.0, 1e9)


def _pair_losses(t2: np.ndarray, q: np.ndarray, lam: float, k: int, model: str) -> np.ndarray:
    """Loss ratio of the mixture (1 - q) delta(t2[0]) + q delta(t2[1]) for every q."""
    if model == "approx":
        mean = (1 - q) * t2[0] + q * t2[1]
        m2 = (1 - q) * t2[0] ** 2 + q * t2[1] ** 2
        scv = np.where(mean > 0, m2 / np.where(mean > 0, mean, 1.0) ** 2 - 1.0, 0.0)
        return np.array(
            [_approx_scalar(lam * m, max(c, 0.0), k)[0] for m, c in zip(mean, scv, strict=True)]
        )
    return np.array([_station_metrics(lam, t2, np.array([1 - x, x]), k, model)[3] for x in q])


def _evaluate(
    t: np.ndarray, a: np.ndarray, p: np.ndarray, lam: float, k: int, model: str
) -> ExitSchedule:
    mean, scv, rho, loss, _w = _station_metrics(lam, t, p, k, model)
    return ExitSchedule(tuple(float(x) for x in p), float(p @ a), float(loss), float(rho),
                        float(mean), float(scv))  # fmt: skip


_GRID = 65


def lp_schedule(
    exit_times: Sequence[float],
    exit_accuracy: Sequence[float],
    arrival_rate: float,
    max_loss: float,
    queue_capacity: int | None = None,
    queue_model: str = "approx",
) -> ExitSchedule:
    """The LP scheduler: exit probabilities maximizing accuracy with loss ratio <= ``max_loss``.

    Args:
        exit_times: t_l, the server's time for a sample that leaves at exit l (s).
        exit_accuracy: A_l, its accuracy there.
        arrival_rate: lambda (samples/s, > 0).
        max_loss: the bound, in (0, 1).
        queue_capacity: K (default 50).
        queue_model: ``"approx"`` (the seed's formula) or ``"exact"`` (embedded chain).

    Returns:
        An :class:`ExitSchedule` that meets the bound.

    Raises:
        ValueError: bad inputs, or even the cheapest exit alone loses more than allowed.
    """
    t, a = _check_exits(exit_times, exit_accuracy)
    lam, k, model = check_load_args(arrival_rate, queue_capacity, queue_model)
    if not lam > 0:
        raise ValueError(f"arrival_rate: must be > 0 samples/s, got {arrival_rate}")
    if not 0.0 < float(max_loss) < 1.0:
        raise ValueError(f"max_loss: must be in (0, 1), got {max_loss}")
    eps = float(max_loss)
    n = t.size
    best_acc, best_p = -math.inf, None
    for i in range(n):  # one exit
        p = np.eye(n)[i]
        if a[i] > best_acc and _station_metrics(lam, t, p, k, model)[3] <= eps:
            best_acc, best_p = float(a[i]), p
    if best_p is None:
        raise ValueError(
            f"max_loss={max_loss}: even sending every sample out at the cheapest exit "
            f"({t.min():.6g} s) loses more at arrival_rate={lam}/s; lower the rate or raise K"
        )
    grid = np.linspace(0.0, 1.0, _GRID)
    for i in range(n):  # two exits: the largest feasible weight on the more accurate one
        for j in range(n):
            if not a[j] > a[i] or a[j] <= best_acc:
                continue
            t2 = np.array([t[i], t[j]])
            ok = _pair_losses(t2, grid, lam, k, model) <= eps
            if not ok[0]:
                continue
            last = int(np.flatnonzero(ok).max())
            q = grid[last]
            if last < _GRID - 1:
                lo, hi = grid[last], grid[last + 1]
                for _ in range(40):
                    mid = 0.5 * (lo + hi)
                    if _pair_losses(t2, np.array([mid]), lam, k, model)[0] <= eps:
                        lo = mid
                    else:
                        hi = mid
                q = lo
            # the reported loss (the whole vector's moments) decides: step q down past rounding
            p = np.zeros(n)
            for step in 1e-15 * 2.0 ** np.arange(60):
                p[i], p[j] = 1 - q, q
                if _station_metrics(lam, t, p, k, model)[3] <= eps:
                    break
                q = max(q - float(step), 0.0)
            else:
                continue
            acc = (1 - q) * a[i] + q * a[j]
            if acc > best_acc:
                best_acc, best_p = float(acc), p
    return _evaluate(t, a, best_p, lam, k, model)


def knapsack_budget(
    arrival_rate: float, waiting: int = 0, min_time_s: float = 0.0, utilization: float = 0.9
) -> float:
    """The knapsack scheduler's per-sample time budget B after a completion.

    B = utilization / lambda - waiting x min_time_s, at least ``min_time_s``.

    Args:
        arrival_rate: lambda (> 0).
        waiting: samples waiting in the queue now.
        min_time_s: the cheapest exit's time (every waiting sample needs it).
        utilization: the target share of the server's time (0, 1].

    Returns:
        B in seconds.

    Example:
        >>> knapsack_budget(10.0, waiting=2, min_time_s=0.01, utilization=1.0)
        0.08
    """
    lam = float(arrival_rate)
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"arrival_rate: must be a finite number > 0, got {arrival_rate}")
    if isinstance(waiting, bool) or not isinstance(waiting, (int, np.integer)) or waiting < 0:
        raise ValueError(f"waiting: expected an integer >= 0, got {waiting!r}")
    if not 0.0 < float(utilization) <= 1.0:
        raise ValueError(f"utilization: must be in (0, 1], got {utilization}")
    if not (math.isfinite(float(min_time_s)) and min_time_s >= 0):
        raise ValueError(f"min_time_s: must be >= 0, got {min_time_s}")
    return max(float(min_time_s), float(utilization) / lam - int(waiting) * float(min_time_s))


def knapsack_exit(
    exit_times: Sequence[float], exit_accuracy: Sequence[float], budget_s: float
) -> int:
    """The exit (0-based) the knapsack scheduler picks: the most accurate that fits the budget.

    Ties go to the cheaper exit; if none fits, the cheapest exit.

    Example:
        >>> knapsack_exit([1.0, 2.0], [0.5, 0.9], budget_s=0.5)
        0
    """
    t, a = _check_exits(exit_times, exit_accuracy)
    fits = np.flatnonzero(t <= float(budget_s))
    if fits.size == 0:
        return int(np.argmin(t))
    best = fits[a[fits] == a[fits].max()]
    return int(best[np.argmin(t[best])])
