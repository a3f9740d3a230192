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
sample that left early: ``policy.update(0.0, 0.0, threshold=T)``; one whose
reward will never come: ``policy.cancel(threshold=T)``. An arm chosen for samples
whose rewards are still to come counts as played in the UCB bonus, so that
delayed feedback does not send a burst of samples to one arm.

Example:
    >>> bandit = AdaEE([0.2, 0.5, 0.8], exploration=0.5, cost_weight=1.0, seed=0)
    >>> t = bandit.choose_threshold()
    >>> bandit.update(0.3, 0.05, threshold=t)
    0.25
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "POLICIES",
    "ExitPolicy",
    "ThresholdPolicy",
    "AdaEE",
    "ExitProbabilityPolicy",
    "KnapsackPolicy",
    "parse_policy",
    "policy_text",
    "make_policy",
    "merge_policy_reports",
    "compact_report",
    "confidence",
    "REPORT_BYTES",
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


# ----------------------------------------------------------------- policy specs
POLICIES: dict[str, dict[str, Any]] = {
    "threshold": {},
    "probabilities": {"p": None, "seed": None},
    "knapsack": {"exit_times": None, "exit_accuracy": None, "arrival_rate": None,
                 "utilization": 0.9},
    "adaee": {"grid": [round(0.1 * i, 1) for i in range(1, 10)], "exploration": 1.0,
              "cost_weight": 1.0, "discount": 1.0, "seed": None},
}  # fmt: skip
"""Every policy a worker applies: its name -> its fields and their defaults (None: required,
except ``seed``). The spec of a policy is this data, e.g. ``{"policy": "adaee", "grid": [0.2,
0.5]}``; :func:`parse_policy` checks it once."""
_LISTS = {"p", "exit_times", "exit_accuracy", "grid"}
_OPTIONAL = {"seed"}
_MAX_LIST = 4096


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _spec_source(spec: Any) -> Mapping[str, Any]:
    """A spec given as a mapping, a policy name, JSON text or a JSON/YAML file's path."""
    if isinstance(spec, Mapping):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f'policy: expected a mapping like {{"policy": "threshold"}}, a policy name, '
            f"JSON text or a JSON/YAML file, got {type(spec).__name__}"
        )
    text = os.fspath(spec).strip()
    if text in POLICIES:
        return {"policy": text}
    if not text.startswith(("{", "[")):
        path = Path(text)
        if not path.is_file():
            raise ValueError(
                f"policy: {text[:80]!r} is no policy name ({', '.join(POLICIES)}), no JSON "
                "object and no file"
            )
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            from earlyexit.formats._common import _parse_mapping

            return _parse_mapping(text, f"policy: file {path.name!r}", "YAML")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"policy: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise TypeError(f"policy: expected a JSON object, got {type(data).__name__}")
    return data


def parse_policy(spec: Any = None) -> dict[str, Any]:
    """A policy spec checked and completed with its defaults: the one place specs are read.

    Args:
        spec: None (``threshold``, today's rule), a policy name, a mapping
            ``{"policy": NAME, field: value, ...}``, its JSON text, or the path
            of a JSON or YAML file holding it. Fields per policy: :data:`POLICIES`.

    Returns:
        ``{"policy": NAME, **every field}`` (JSON-able).

    Raises:
        ValueError: an unknown policy or field, a missing or bad value (named,
            with the valid ones).
        TypeError: a spec that is none of the forms above.

    Example:
        >>> parse_policy('{"policy": "adaee", "grid": [0.2, 0.5]}')["exploration"]
        1.0
        >>> parse_policy(None)
        {'policy': 'threshold'}
    """
    data = {"policy": "threshold"} if spec is None else _spec_source(spec)
    name = data.get("policy")
    if not isinstance(name, str) or name not in POLICIES:
        raise ValueError(f"policy: {str(name)[:40]!r} is not one of {', '.join(POLICIES)}")
    fields = POLICIES[name]
    unknown = sorted(str(k)[:40] for k in data if k != "policy" and k not in fields)
    if unknown:
        valid = ", ".join(fields) or "none"
        raise ValueError(f"policy: {name} has no field(s) {unknown}; valid: {valid}")
    out: dict[str, Any] = {"policy": name}
    for field, default in fields.items():
        v = data.get(field, default)
        if v is None and field not in _OPTIONAL:
            raise ValueError(f"policy: {name} needs {field!r}; fields: {', '.join(fields)}")
        if field == "seed":
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"policy: seed must be an integer >= 0 or null, got {v!r}")
        elif field in _LISTS:
            ok = isinstance(v, (list, tuple)) and 0 < len(v) <= _MAX_LIST
            if not ok or not all(_number(x) for x in v):
                raise ValueError(
                    f"policy: {name}: {field!r} must be a list of 1 to {_MAX_LIST} finite "
                    f"numbers, got {str(v)[:80]}"
                )
            v = [float(x) for x in v]
        elif not _number(v):
            raise ValueError(f"policy: {name}: {field!r} must be a finite number, got {v!r}")
        else:
            v = float(v)
        out[field] = v
    make_policy(out, partition=0, num_partitions=None, threshold=0.5)  # the values' own checks
    return out


def policy_text(spec: Any = None) -> str:
    """The canonical JSON text of a checked spec (what crosses into a worker process).

    Example:
        >>> policy_text("threshold")
        '{"policy":"threshold"}'
    """
    return json.dumps(parse_policy(spec), separators=(",", ":"), sort_keys=True)


def make_policy(
    spec: Any, partition: int, num_partitions: int | None, threshold: float
) -> ExitPolicy | None:
    """The policy the worker of ``partition`` applies at its exit (None: the threshold rule).

    ``threshold`` gives None, so that the worker keeps its vectorized path.
    ``adaee`` is a bandit in the first tier's worker only (partition 0); the
    later workers apply ``threshold``, which is the bandit's own rule for the
    exits after the first (``later_threshold``). ``probabilities`` and
    ``knapsack`` give one value per exit of the plan: every worker applies
    its own exit ``k = partition``.

    Args:
        spec: as for :func:`parse_policy` (checked again if not canonical).
        partition: the worker's 0-based partition.
        num_partitions: L, the plan's exits (None: do not check the lengths).
        threshold: the deployment's exit threshold.

    Returns:
        The policy, or None for the threshold rule.

    Raises:
        ValueError: values the policy refuses, or lists that do not give one
            value per exit.
    """
    s = spec if isinstance(spec, dict) and "policy" in spec else parse_policy(spec)
    name = s["policy"]
    if name == "threshold" or (name == "adaee" and partition != 0):
        return None
    n = num_partitions
    for field in ("p", "exit_times", "exit_accuracy"):
        if n is not None and field in s and len(s[field]) != n:
            raise ValueError(
                f"policy: {name}: {field!r} gives {len(s[field])} values; the plan has {n} exits"
            )
    try:
        if name == "probabilities":
            seed = None if s["seed"] is None else [int(s["seed"]), int(partition)]
            return ExitProbabilityPolicy(s["p"], seed=seed)  # type: ignore[arg-type]
        if name == "knapsack":
            return KnapsackPolicy(s["exit_times"], s["exit_accuracy"], s["arrival_rate"],
                                  s["utilization"])  # fmt: skip
        return AdaEE(s["grid"], s["exploration"], s["cost_weight"], s["discount"],
                     num_exits=max(n or 2, 1), later_threshold=threshold,
                     seed=s["seed"])  # fmt: skip
    except (TypeError, ValueError) as err:
        msg = str(err).replace("thresholds:", "grid:").replace("probabilities:", "p:")
        raise ValueError(f"policy: {name}: {msg}") from None


_MAX_REPORTS = 16
REPORT_BYTES = 2048
"""The largest policy report (JSON) a heartbeat carries: 16 of them stay far under a header's 64 KiB."""
_PER_ARM = ("thresholds", "counts", "values", "pending")


def compact_report(report: Mapping[str, Any], limit: int = REPORT_BYTES) -> dict[str, Any]:
    """A policy report that fits ``limit`` bytes of JSON: per-arm lists dropped if need be.

    Example:
        >>> big = AdaEE([i / 999 for i in range(1000)]).describe()
        >>> sorted(compact_report(big))[:3], compact_report(big)["arms"]
        (['arms', 'best_threshold', 'cost_weight'], 1000)
    """
    out = dict(report)
    if len(json.dumps(out)) <= limit:
        return out
    arms = len(out.get("thresholds") or ())
    out = {k: v for k, v in out.items() if k not in _PER_ARM and k != "p" and k != "exit_times"}
    out["arms"] = arms
    if len(json.dumps(out)) > limit:
        return {"policy": str(out.get("policy", "?"))[:40], "truncated": True}
    return out


def merge_policy_reports(store: MutableMapping[int, dict[str, Any]], report: Any) -> int:
    """Keep the policy reports a heartbeat carries: ``{partition: describe()}``, checked.

    Args:
        store: partition -> its newest report (updated in place; at most 16 partitions).
        report: the heartbeat's ``policies`` field (from another process: anything).

    Returns:
        How many reports were taken (entries that are not ``{"<int>": {"policy": ...}}``,
        or larger than :data:`REPORT_BYTES` of JSON, are skipped).
    """
    if not isinstance(report, Mapping):
        return 0
    taken = 0
    for key, value in list(report.items())[:_MAX_REPORTS]:
        try:
            k = int(key)
        except (TypeError, ValueError):
            continue
        if not (0 <= k < 1_000_000 and isinstance(value, Mapping) and "policy" in value):
            continue
        if k not in store and len(store) >= _MAX_REPORTS:
            continue
        try:
            small = len(json.dumps(value)) <= REPORT_BYTES
        except (TypeError, ValueError):  # not JSON (NaN is: Python writes it)
            small = False
        if small:
            store[k] = dict(value)
            taken += 1
    return taken
