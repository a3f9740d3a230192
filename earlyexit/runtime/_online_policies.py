"""The online exit policies themselves (see :mod:`earlyexit.runtime.policies`, which
re-exports them): pure numpy, no I/O."""


from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "ExitPolicy",
    "ThresholdPolicy",
    "AdaEE",
    "ExitProbabilityPolicy",
    "KnapsackPolicy",
    "confidence",
]


_HISTORY = 100_000


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
        # chosen, reward not yet in (a worker's samples that went on, awaiting feedback)
        self.pending = np.zeros(arms.size)
        self.plays = 0
        self.arm = 0
        self.history: list[int] = []  # the arms chosen, the newest _HISTORY at least

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
        # an arm chosen for samples whose rewards are still to come counts as played for the
        # bonus (delayed feedback): otherwise every sample until the first reward takes one arm
        played = self.counts + self.pending
        unplayed = np.flatnonzero(played == 0)
        if unplayed.size:
            arm = int(unplayed[0])
        else:
            total = float(played.sum())
            ucb = self.values + self.exploration * np.sqrt(math.log(max(total, 1.0)) / played)
            top = np.flatnonzero(ucb >= ucb.max() - 1e-12)
            arm = int(top[0] if self._rng is None else self._rng.choice(top))
        self.arm = arm
        self.pending[arm] += 1.0
        self.history.append(arm)
        if len(self.history) > 2 * _HISTORY:
            del self.history[:-_HISTORY]
        return float(self.thresholds[arm])

    def _arm(self, threshold: float | None) -> int:
        if threshold is None:
            return self.arm
        hits = np.flatnonzero(self.thresholds == float(threshold))
        if hits.size == 0:
            raise ValueError(
                f"threshold: {threshold} is not an arm; arms: {self.thresholds.tolist()}"
            )
        return int(hits[0])

    def cancel(self, threshold: float | None = None) -> None:
        """A chosen sample whose reward will never come (it failed, its feedback was lost)."""
        arm = self._arm(threshold)
        self.pending[arm] = max(self.pending[arm] - 1.0, 0.0)

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
        arm = self._arm(threshold)
        reward = gain - self.cost_weight * extra
        self.pending[arm] = max(self.pending[arm] - 1.0, 0.0)
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
            "pending": self.pending.tolist(),
        }


class ExitProbabilityPolicy(ExitPolicy):
    """The LP scheduler's policy: a sample leaves at exit l with probability p_l.

    Args:
        probabilities: p_1 .. p_L (>= 0, summing to 1), e.g. ``lp_schedule(...).probabilities``.
        seed: the random stream's seed (an int or a sequence of ints).

    Example:
        >>> pol = ExitProbabilityPolicy([0.0, 1.0], seed=0)
        >>> pol.should_exit(0, 0.0), pol.should_exit(1, 0.9)
        (False, True)
    """

    def __init__(
        self, probabilities: Sequence[float], seed: int | Sequence[int] | None = None
    ) -> None:
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
        """``{"policy": "probabilities", "p": [...]}`` (the spec that makes it)."""
        return {"policy": "probabilities", "p": self.probabilities.tolist()}


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


def confidence(logits: np.ndarray) -> np.ndarray:
    """AdaEE's confidence of each row of logits: the largest softmax probability.

    Example:
        >>> confidence(np.array([[0.0, 0.0], [10.0, 0.0]])).round(3).tolist()
        [0.5, 1.0]
    """
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return 1.0 / p.sum(axis=-1)  # the largest is exp(0) = 1
