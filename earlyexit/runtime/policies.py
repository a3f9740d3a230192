"""Online exit policies a tier worker can apply (docs/spec.md#load): pure numpy, no I/O.

Every policy answers one question for one sample at one exit,
``should_exit(k, entropy, waiting=0)`` (k: 0-based index of the partition's exit
among the plan's, entropy: the sample's normalized entropy there, waiting:
samples queued at this worker now). The last exit always says yes.

- :class:`ThresholdPolicy`: today's rule, leave when entropy < T.
- :class:`AdaEE`: Pacheco et al., ICC 2023. A UCB multi-armed bandit over a
  grid of thresholds for the first exit, rewarded without labels: a sample
  that leaves early earns 0; one that goes on earns its confidence gain (the
  final exit's confidence minus the first exit's) minus ``cost_weight`` times
  the extra time it took. Arm choice: argmax_a Q_a + c sqrt(ln n / N_a)
  (c = ``exploration``), every arm once first. ``discount`` < 1 forgets old
  rewards (discounted UCB), so that it follows a stream whose difficulty changes.
- :class:`ExitProbabilityPolicy`: the LP scheduler's exit probabilities
  (:func:`earlyexit.planner.schedulers.lp_schedule`), confidence ignored: at
  exit k a sample leaves with probability p_k / (p_k + .. + p_L).
- :class:`KnapsackPolicy`: the knapsack scheduler; the budget from the
  arrival rate and the queue picks the exit.

What the worker calls (the first tier's, for AdaEE): per sample,
``T = policy.choose_threshold()`` before its first exit, keep T with the
sample; ``policy.should_exit(0, entropy)`` (AdaEE uses the T just chosen); when
a sample that went on comes back with its final confidence,
``policy.update(conf_final - conf_first, extra_time_s, threshold=T)``; a
sample that left early: ``policy.update(0.0, 0.0, threshold=T)``.

Example:
    >>> bandit = AdaEE([0.2, 0.5, 0.8], exploration=0.5, cost_weight=1.0, seed=0)
    >>> t = bandit.choose_threshold()
    >>> bandit.update(0.3, 0.05, threshold=t)
    0.25
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["ExitPolicy", "ThresholdPolicy", "AdaEE", "ExitProbabilityPolicy", "KnapsackPolicy"]


def _finite(value: float, name: str, lo: float | None = None, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo))
    if bad:
        rng = "" if lo is None else f" {'>' if lo_open else '>='} {lo}"
        raise ValueError(f"{name}: must be a finite number{rng}, got {value!r}")
    return v


def _check_k(k: int, num_exits: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < num_exits:
        raise ValueError(f"k: expected an exit index in 0..{num_exits - 1}, got {k!r}")
    return int(k)


class ExitPolicy:
    """The interface: ``should_exit(k, entropy, waiting=0) -> bool``; ``num_exits`` exits."""

    num_exits: int = 1

    def should_exit(self, k: int, entropy: float, waiting: int = 0) -> bool:  # pragma: no cover
        """Whether a sample leaves at exit ``k``."""
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        """What a results file records about the policy."""
        return {"policy": type(self).__name__}


class ThresholdPolicy(ExitPolicy):
    """Today's rule: leave at exit k when the entropy is below T (always at the last).

    Example:
        >>> ThresholdPolicy(0.5, 2).should_exit(0, 0.4)
        True
    """

    def __init__(self, threshold: float, num_exits: int) -> None:
        self.threshold = _finite(threshold, "threshold", 0.0)
        if self.threshold > 1.0:
            raise ValueError(f"threshold: must be in [0, 1], got {threshold}")
        self.num_exits = int(num_exits)

    def should_exit(self, k: int, entropy: float, waiting: int = 0) -> bool:
        """Leave when ``entropy < threshold`` or at the last exit."""
        k = _check_k(k, self.num_exits)
        return k == self.num_exits - 1 or float(entropy) < self.threshold

    def describe(self) -> dict[str, object]:
        """``{"policy": "threshold", "threshold": T}``."""
        return {"policy": "threshold", "threshold": self.threshold}


class AdaEE(ExitPolicy):
    """UCB over a grid of first-exit thresholds, rewarded by confidence gain minus time cost.

    Args:
        thresholds: the arms (values in [0, 1], distinct).
        exploration: c >= 0 of the UCB bonus.
        cost_weight: weight of the extra time (reward units per second), >= 0.
        discount: gamma in (0, 1]; 1 is UCB1 as in the paper, < 1 forgets
            (discounted UCB) to follow changes.
        num_exits: exits of the plan (the bandit sets the first's threshold;
            the ones between use ``later_threshold``).
        later_threshold: the threshold of the exits after the first (not the last).
        seed: breaks ties between equal UCB values at random (None: lowest arm).

    Raises:
        ValueError / TypeError: bad arguments, named.
    """

    def __init__(
        self,
        thresholds: Sequence[float],
        exploration: float = 1.0,
        cost_weight: float = 1.0,
        discount: float = 1.0,
        num_exits: int = 2,
        later_threshold: float = 0.0,
        seed: int | None = None,
    ) -> None:
        arms = np.asarray(list(thresholds), dtype=np.float64)
        if arms.ndim != 1 or arms.size == 0 or np.any(~np.isfinite(arms)):
            raise ValueError(
                f"thresholds: expected a non-empty list of numbers, got {thresholds!r}"
            )
        if np.any((arms < 0) | (arms > 1)) or len(set(arms.tolist())) != arms.size:
            raise ValueError(f"thresholds: expected distinct values in [0, 1], got {arms.tolist()}")
        self.thresholds = arms
        self.exploration = _finite(exploration, "exploration", 0.0)
        self.cost_weight = _finite(cost_weight, "cost_weight", 0.0)
        self.discount = _finite(discount, "discount", 0.0, lo_open=True)
        if self.discount > 1.0:
            raise ValueError(f"discount: must be in (0, 1], got {discount}")
        if isinstance(num_exits, bool) or not isinstance(num_exits, int) or num_exits < 1:
            raise ValueError(f"num_exits: expected an integer >= 1, got {num_exits!r}")
        self.num_exits = num_exits
        self.later_threshold = _finite(later_threshold, "later_threshold", 0.0)
        self._rng = None if seed is None else np.random.default_rng(seed)
        self.counts = np.zeros(arms.size)  # discounted N_a
        self.sums = np.zeros(arms.size)  # discounted sum of rewards
        self.plays = 0
        self.arm = 0
        self.history: list[int] = []

    @property
    def values(self) -> np.ndarray:
        """Q_a, the (discounted) mean reward of each arm (0 where never played)."""
        return np.divide(
            self.sums, self.counts, out=np.zeros_like(self.sums), where=self.counts > 0
        )

    @property
    def best_threshold(self) -> float:
        """The arm with the highest mean reward so far."""
        return float(self.thresholds[int(np.argmax(self.values))])

    def choose_threshold(self) -> float:
        """Pick the next arm by UCB (unplayed arms first) and return its threshold."""
        unplayed = np.flatnonzero(self.counts == 0)
        if unplayed.size:
            arm = int(unplayed[0])
        else:
            total = float(self.counts.sum())
            ucb = self.values + self.exploration * np.sqrt(math.log(max(total, 1.0)) / self.counts)
            top = np.flatnonzero(ucb >= ucb.max() - 1e-12)
            arm = int(top[0] if self._rng is None else self._rng.choice(top))
        self.arm = arm
        self.history.append(arm)
        return float(self.thresholds[arm])

    def update(
        self, confidence_gain: float, extra_time: float, threshold: float | None = None
    ) -> float:
        """Reward the arm of ``threshold`` (default: the last chosen); returns the reward.

        Args:
            confidence_gain: final-exit confidence minus first-exit confidence (0 if it left early).
            extra_time: seconds the sample spent beyond the first exit (0 if it left early).
            threshold: the arm the sample was run with.
        """
        gain = _finite(confidence_gain, "confidence_gain")
        extra = _finite(extra_time, "extra_time", 0.0)
        if threshold is None:
            arm = self.arm
        else:
            hits = np.flatnonzero(self.thresholds == float(threshold))
            if hits.size == 0:
                raise ValueError(
                    f"threshold: {threshold} is not an arm; arms: {self.thresholds.tolist()}"
                )
            arm = int(hits[0])
        reward = gain - self.cost_weight * extra
        self.counts *= self.discount
        self.sums *= self.discount
        self.counts[arm] += 1.0
        self.sums[arm] += reward
        self.plays += 1
        return reward

    def should_exit(self, k: int, entropy: float, waiting: int = 0) -> bool:
        """First exit: entropy < the chosen threshold; later ones: ``later_threshold``; last: yes."""
        k = _check_k(k, self.num_exits)
        if k == self.num_exits - 1:
            return True
        t = float(self.thresholds[self.arm]) if k == 0 else self.later_threshold
        return float(entropy) < t

    def describe(self) -> dict[str, object]:
        """The arms, their counts and mean rewards, and the parameters."""
        return {
            "policy": "adaee",
            "thresholds": self.thresholds.tolist(),
            "exploration": self.exploration,
            "cost_weight": self.cost_weight,
            "discount": self.discount,
            "counts": self.counts.tolist(),
            "values": self.values.tolist(),
            "best_threshold": self.best_threshold,
            "plays": self.plays,
        }


class ExitProbabilityPolicy(ExitPolicy):
    """The LP scheduler's policy: a sample leaves at exit l with probability p_l.

    Args:
        probabilities: p_1 .. p_L (>= 0, summing to 1), e.g. ``lp_schedule(...).probabilities``.
        seed: the random stream's seed.

    Example:
        >>> pol = ExitProbabilityPolicy([0.0, 1.0], seed=0)
        >>> pol.should_exit(0, 0.0), pol.should_exit(1, 0.9)
        (False, True)
    """

    def __init__(self, probabilities: Sequence[float], seed: int | None = None) -> None:
        p = np.asarray(list(probabilities), dtype=np.float64)
        if p.ndim != 1 or p.size == 0 or np.any(~np.isfinite(p)) or np.any(p < 0):
            raise ValueError(f"probabilities: expected numbers >= 0, got {probabilities!r}")
        if abs(p.sum() - 1.0) > 1e-6:
            raise ValueError(f"probabilities: must sum to 1, got {p.sum()}")
        self.probabilities = p / p.sum()
        self.num_exits = p.size
        tail = np.cumsum(self.probabilities[::-1])[::-1]
        self.conditional = np.divide(
            self.probabilities, tail, out=np.ones_like(tail), where=tail > 0
        )
        self._rng = np.random.default_rng(seed)

    def should_exit(self, k: int, entropy: float, waiting: int = 0) -> bool:
        """Leave with probability p_k / (p_k + .. + p_L) (confidence ignored)."""
        k = _check_k(k, self.num_exits)
        return k == self.num_exits - 1 or bool(self._rng.random() < self.conditional[k])

    def describe(self) -> dict[str, object]:
        """``{"policy": "lp", "probabilities": [...]}``."""
        return {"policy": "lp", "probabilities": self.probabilities.tolist()}


class KnapsackPolicy(ExitPolicy):
    """The knapsack scheduler's policy: the budget picks the exit, from the rate and the queue.

    Args:
        exit_times: the time a sample takes to reach and leave at each exit (s).
        exit_accuracy: the accuracy at each exit.
        arrival_rate: lambda (samples/s).
        utilization: the target share of the worker's time, (0, 1].

    Example:
        >>> pol = KnapsackPolicy([0.01, 0.05], [0.7, 0.9], arrival_rate=10.0)
        >>> pol.should_exit(0, 0.9, waiting=0), pol.should_exit(0, 0.9, waiting=20)
        (False, True)
    """

    def __init__(
        self,
        exit_times: Sequence[float],
        exit_accuracy: Sequence[float],
        arrival_rate: float,
        utilization: float = 0.9,
    ) -> None:
        from earlyexit.planner.schedulers import _check_exits, knapsack_budget

        self.exit_times, self.exit_accuracy = _check_exits(exit_times, exit_accuracy)
        self.arrival_rate = _finite(arrival_rate, "arrival_rate", 0.0, lo_open=True)
        self.utilization = _finite(utilization, "utilization", 0.0, lo_open=True)
        knapsack_budget(self.arrival_rate, 0, float(self.exit_times.min()), self.utilization)
        self.num_exits = self.exit_times.size

    def target_exit(self, waiting: int = 0) -> int:
        """The exit the budget allows now (0-based)."""
        from earlyexit.planner.schedulers import knapsack_budget, knapsack_exit

        budget = knapsack_budget(
            self.arrival_rate, waiting, float(self.exit_times.min()), self.utilization
        )
        return knapsack_exit(self.exit_times, self.exit_accuracy, budget)

    def should_exit(self, k: int, entropy: float, waiting: int = 0) -> bool:
        """Leave at (or after) the exit the budget allows."""
        k = _check_k(k, self.num_exits)
        return k == self.num_exits - 1 or k >= self.target_exit(waiting)

    def describe(self) -> dict[str, object]:
        """The parameters."""
        return {
            "policy": "knapsack",
            "arrival_rate": self.arrival_rate,
            "utilization": self.utilization,
            "exit_times": self.exit_times.tolist(),
        }
