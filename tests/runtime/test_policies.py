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


def test_adaee_with_delayed_rewards_spreads_the_first_choices_over_the_arms():
    """A worker chooses for samples whose rewards come later: pending plays count in the bonus."""
    bandit = AdaEE([0.2, 0.5, 0.8], exploration=1.0)
    first = [bandit.choose_threshold() for _ in range(6)]
    assert first[:3] == [0.2, 0.5, 0.8] and sorted(first[3:]) == [0.2, 0.5, 0.8]
    assert bandit.pending.tolist() == [2.0, 2.0, 2.0] and bandit.counts.sum() == 0
    for t in first[:5]:
        bandit.update(0.1, 0.0, threshold=t)
    bandit.cancel(threshold=first[5])  # its feedback was lost
    assert bandit.pending.sum() == 0 and bandit.counts.sum() == 5 and bandit.plays == 5
    # called as before (each reward before the next choice), nothing is pending
    t = bandit.choose_threshold()
    bandit.update(0.0, 0.0, threshold=t)
    assert bandit.pending.sum() == 0 and bandit.describe()["pending"] == [0.0, 0.0, 0.0]


def test_a_policy_spec_is_parsed_and_checked_in_one_place(tmp_path):
    from earlyexit.runtime.policies import POLICIES, make_policy, parse_policy, policy_text

    assert parse_policy(None) == parse_policy("threshold") == {"policy": "threshold"}
    full = parse_policy({"policy": "adaee", "grid": [0.2, 0.6], "seed": 3})
    assert full == {"policy": "adaee", "grid": [0.2, 0.6], "exploration": 1.0,
                    "cost_weight": 1.0, "discount": 1.0, "seed": 3}  # fmt: skip
    assert parse_policy(policy_text(full)) == full  # canonical text round-trips
    assert set(parse_policy("adaee")) == {"policy", *POLICIES["adaee"]}
    (tmp_path / "k.yaml").write_text(
        "policy: knapsack\nexit_times: [0.01, 0.03]\nexit_accuracy: [0.6, 0.8]\narrival_rate: 50\n"
    )
    k = parse_policy(str(tmp_path / "k.yaml"))
    assert k["utilization"] == 0.9 and k["arrival_rate"] == 50.0
    for bad, needle in [
        ("lp", r"'lp' is no policy name \(threshold, probabilities, knapsack, adaee\)"),
        ({"policy": "bandit"}, "'bandit' is not one of threshold, probabilities, knapsack, adaee"),
        ({"policy": "adaee", "grd": [0.1]}, r"adaee has no field\(s\) \['grd'\]; valid: grid, "),
        ({"policy": "probabilities"}, "probabilities needs 'p'; fields: p, seed"),
        ({"policy": "probabilities", "p": [0.2, 0.2]}, "p: must sum to 1"),
        ({"policy": "probabilities", "p": "0.5"}, "'p' must be a list of 1 to"),
        ({"policy": "adaee", "grid": [0.5, 0.5]}, "grid: expected distinct values"),
        ({"policy": "adaee", "exploration": True}, "'exploration' must be a finite number"),
        ({"policy": "adaee", "seed": -1}, "seed must be an integer >= 0"),
        ('{"policy": "adaee",', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (str(tmp_path / "missing.json"), "no JSON object and no file"),
    ]:
        with pytest.raises((ValueError, TypeError), match=needle):
            parse_policy(bad)
    with pytest.raises(TypeError, match="expected a mapping"):
        parse_policy(3)
    # per worker: the threshold rule is None (the vectorized path), AdaEE in partition 0 only
    assert make_policy("threshold", 0, 2, 0.5) is None
    assert isinstance(make_policy("adaee", 0, 3, 0.4), AdaEE)
    assert make_policy("adaee", 0, 3, 0.4).later_threshold == 0.4
    assert make_policy("adaee", 1, 3, 0.4) is None
    pol = make_policy({"policy": "probabilities", "p": [0.5, 0.5], "seed": 1}, 1, 2, 0.5)
    assert isinstance(pol, ExitProbabilityPolicy)
    with pytest.raises(ValueError, match="'p' gives 2 values; the plan has 3 exits"):
        make_policy({"policy": "probabilities", "p": [0.5, 0.5]}, 0, 3, 0.5)


def test_policy_reports_from_outside_are_taken_only_when_well_formed():
    from earlyexit.runtime.policies import merge_policy_reports

    store: dict = {}
    assert merge_policy_reports(store, {"0": {"policy": "adaee"}, "x": {"policy": "a"},
                                        "1": [1], "2": {"no": "policy"}, "-1": {"policy": "t"}}) == 1  # fmt: skip
    assert store == {0: {"policy": "adaee"}}
    assert merge_policy_reports(store, [1, 2]) == 0 and merge_policy_reports(store, None) == 0


def test_policy_reports_stay_small_enough_for_a_heartbeat():
    import json

    from earlyexit.runtime.policies import REPORT_BYTES, compact_report, merge_policy_reports

    big = AdaEE([i / 299 for i in range(300)]).describe()
    assert len(json.dumps(big)) > REPORT_BYTES
    small = compact_report(big)
    assert len(json.dumps(small)) <= REPORT_BYTES and small["arms"] == 300
    assert small["policy"] == "adaee" and "counts" not in small
    assert compact_report({"policy": "threshold", "threshold": 0.5}) == {
        "policy": "threshold", "threshold": 0.5}  # fmt: skip
    store: dict = {}
    assert merge_policy_reports(store, {"0": big}) == 0 and store == {}  # too large: skipped
    many = {str(k): {"policy": "threshold"} for k in range(40)}
    merge_policy_reports(store, many)
    assert len(store) == 16
