"""Online exit policies: AdaEE on a synthetic stream whose difficulty changes (regret), and the others."""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit.planner.schedulers import lp_schedule
from earlyexit.runtime.policies import (
    AdaEE,
    ExitProbabilityPolicy,
    KnapsackPolicy,
    ThresholdPolicy,
)

ARMS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
# a phase: (g, cost). A sample's first-exit entropy h is uniform; it leaves early when h < T
# (reward 0), else its confidence gain is g h (+ noise) and it costs `cost` of extra time.
# Clean data: the final exit gains little, the best threshold is 0.5; noisy data: it gains
# more, sending more samples on pays (best 0.3); then clean again.
PHASES = [(1.0, 0.5), (2.0, 0.5), (1.0, 0.5)]
N = 3000


def expected_reward(g: float, cost: float, t: float) -> float:
    """E[1{h >= T} (g h - cost)] for h ~ U(0, 1)."""
    return g * (1 - t * t) / 2 - cost * (1 - t)


def run_stream(bandit: AdaEE, seed: int) -> list[np.ndarray]:
    """Per-phase regret of every sample: the oracle's expected reward minus the chosen arm's."""
    rng = np.random.default_rng(seed)
    out = []
    for g, cost in PHASES:
        oracle = max(expected_reward(g, cost, t) for t in bandit.thresholds)
        regret = np.empty(N)
        for i in range(N):
            t = bandit.choose_threshold()
            h = rng.random()
            if bandit.should_exit(0, h):
                bandit.update(0.0, 0.0, threshold=t)
            else:
                bandit.update(g * h + rng.normal(0, 0.05), cost, threshold=t)
            regret[i] = oracle - expected_reward(g, cost, t)
        out.append(regret)
    return out


def test_adaee_tracks_the_best_threshold_after_each_change():
    spread = [
        max(expected_reward(g, c, t) for t in ARMS) - min(expected_reward(g, c, t) for t in ARMS)
        for g, c in PHASES
    ]
    tracked, plain = [], []
    for seed in range(3):
        tracked.append(
            run_stream(AdaEE(ARMS, exploration=0.05, discount=0.995, num_exits=2, seed=seed), seed)
        )
        plain.append(run_stream(AdaEE(ARMS, exploration=0.05, num_exits=2, seed=seed), seed))
    for k in range(len(PHASES)):
        after = np.mean([r[k][500:].mean() for r in tracked])
        # 500 samples after a change, the regret per sample is a small part of the arms' spread
        assert after < 0.15 * spread[k], (k, after, spread[k])
        # and it goes down within the phase: the last 1000 samples regret less than the first 500
        assert np.mean([r[k][-1000:].mean() for r in tracked]) < np.mean(
            [r[k][:500].mean() for r in tracked]
        )
    # after the change to noisy data, forgetting pays: plain UCB1 keeps its old estimates
    k = 1
    assert np.mean([r[k][500:].mean() for r in tracked]) < np.mean(
        [r[k][500:].mean() for r in plain]
    )


def test_ucb1_finds_the_best_arm_of_a_stationary_stream():
    arms = [0.1, 0.5, 0.9]
    bandit = AdaEE(arms, exploration=0.1, cost_weight=1.0, seed=1)
    rng = np.random.default_rng(1)
    for _ in range(4000):
        t = bandit.choose_threshold()
        h = rng.random()
        if h < t:
            bandit.update(0.0, 0.0)
        else:
            bandit.update(h + rng.normal(0, 0.05), 0.5)
    assert bandit.best_threshold == 0.5
    last = np.bincount(bandit.history[-1000:], minlength=3)
    assert last.argmax() == 1 and last[1] > 800
    d = bandit.describe()
    assert d["policy"] == "adaee" and d["plays"] == 4000 and sum(d["counts"]) == 4000


def test_adaee_by_hand():
    b = AdaEE([0.2, 0.8], exploration=1.0, cost_weight=2.0)
    assert [b.choose_threshold() for _ in range(1)] == [0.2]
    assert b.update(0.5, 0.1) == pytest.approx(0.3)
    assert b.choose_threshold() == 0.8  # unplayed arms first
    assert b.update(0.0, 0.0) == 0.0
    # Q = (0.3, 0.0), n = 2, N = (1, 1): the bonus is equal, the higher Q wins
    assert b.choose_threshold() == 0.2
    assert b.should_exit(0, 0.1) and not b.should_exit(0, 0.3) and b.should_exit(1, 0.99)
    b2 = AdaEE([0.2, 0.8], exploration=0.0, discount=0.5)
    b2.update(1.0, 0.0, threshold=0.2)
    b2.update(0.0, 0.0, threshold=0.2)
    assert b2.values[0] == pytest.approx(0.5 / 1.5)  # (0.5 * 1 + 0) / (0.5 + 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"thresholds": []}, "thresholds"),
        ({"thresholds": [0.2, 0.2]}, "distinct"),
        ({"thresholds": [1.5]}, "thresholds"),
        ({"thresholds": [0.5], "exploration": -1}, "exploration"),
        ({"thresholds": [0.5], "cost_weight": float("nan")}, "cost_weight"),
        ({"thresholds": [0.5], "discount": 0.0}, "discount"),
        ({"thresholds": [0.5], "discount": 1.5}, "discount"),
        ({"thresholds": [0.5], "num_exits": 0}, "num_exits"),
    ],
)
def test_adaee_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AdaEE(**kwargs)


def test_adaee_bad_updates():
    b = AdaEE([0.5])
    with pytest.raises(ValueError, match="not an arm"):
        b.update(0.1, 0.1, threshold=0.3)
    with pytest.raises(ValueError, match="extra_time"):
        b.update(0.1, -1.0)
    with pytest.raises(ValueError, match="exit index"):
        b.should_exit(2, 0.1)


def test_exit_probability_policy_follows_the_lp_schedule():
    times, acc = [0.5, 1.0, 2.0], [0.6, 0.75, 0.9]
    sched = lp_schedule(times, acc, 0.8, 0.02, 8)
    pol = ExitProbabilityPolicy(sched.probabilities, seed=3)
    counts = np.zeros(3)
    n = 20_000
    for _ in range(n):
        for k in range(3):
            if pol.should_exit(k, 0.5):
                counts[k] += 1
                break
    p = np.array(sched.probabilities)
    assert np.all(np.abs(counts / n - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-9)
    assert pol.describe() == {"policy": "probabilities", "p": list(pol.probabilities)}
    with pytest.raises(ValueError, match="sum to 1"):
        ExitProbabilityPolicy([0.2, 0.2])


def test_knapsack_policy_goes_deeper_when_the_queue_is_empty():
    pol = KnapsackPolicy([0.01, 0.03, 0.08], [0.6, 0.8, 0.9], arrival_rate=10.0, utilization=1.0)
    assert pol.target_exit(0) == 2  # budget 0.1 s
    assert pol.target_exit(3) == 1  # 0.1 - 3 x 0.01 = 0.07 s
    assert pol.target_exit(50) == 0
    assert not pol.should_exit(0, 0.0, waiting=0) and pol.should_exit(2, 0.9, waiting=0)
    assert pol.should_exit(0, 0.9, waiting=50)
    with pytest.raises(ValueError, match="arrival_rate"):
        KnapsackPolicy([0.01], [0.5], arrival_rate=0.0)


def test_threshold_policy_is_todays_rule():
    pol = ThresholdPolicy(0.4, 3)
    assert [pol.should_exit(0, h) for h in (0.39, 0.4)] == [True, False]
    assert pol.should_exit(2, 1.0)
    assert pol.describe() == {"policy": "threshold", "threshold": 0.4}
