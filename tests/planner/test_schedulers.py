"""The LP and knapsack schedulers of Casale & Roveri against brute force and by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from earlyexit.planner.queueing import mg1k_exact
from earlyexit.planner.schedulers import (
    knapsack_budget,
    knapsack_exit,
    lp_schedule,
    max_utilization,
)


def _approx_loss(lam, t, p, k):
    from earlyexit.planner.queueing import loss_ratio_approx

    mean = float(p @ t)
    scv = float(p @ t**2) / mean**2 - 1
    return float(loss_ratio_approx(lam * mean, max(scv, 0.0), k))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 4),
    st.integers(0, 2**31 - 1),
    st.floats(0.3, 3.0),
    st.sampled_from([0.001, 0.01, 0.1]),
    st.sampled_from([2, 5, 30]),
)
def test_lp_is_feasible_and_no_grid_mixture_beats_it(n, seed, load, eps, k):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0.1, 2.0, n))
    a = np.sort(rng.uniform(0.3, 0.95, n))
    lam = load / t.mean()
    if _approx_loss(lam, t, np.eye(n)[0], k) > eps:
        with pytest.raises(ValueError, match="cheapest exit"):
            lp_schedule(t, a, lam, eps, k)
        return
    s = lp_schedule(t, a, lam, eps, k)
    p = np.array(s.probabilities)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
    assert s.loss_ratio <= eps
    assert _approx_loss(lam, t, p, k) == pytest.approx(s.loss_ratio, abs=1e-12)
    assert s.accuracy == pytest.approx(float(p @ a))
    # brute force: every mixture of up to three exits on a grid of weights
    best = -1.0
    grid = np.linspace(0, 1, 21)
    for idx in itertools.combinations(range(n), min(3, n)):
        for w in itertools.product(grid, repeat=len(idx) - 1):
            if sum(w) > 1 + 1e-12:
                continue
            q = np.zeros(n)
            q[list(idx)] = [1 - sum(w), *w]
            if _approx_loss(lam, t, q, k) <= eps:
                best = max(best, float(q @ a))
    assert s.accuracy >= best - 1e-9


def test_lp_with_the_exact_queue_meets_the_exact_bound():
    t, a = np.array([0.5, 1.0, 2.0]), np.array([0.6, 0.75, 0.9])
    s = lp_schedule(t, a, 0.8, 0.02, 8, queue_model="exact")
    loss, _ = mg1k_exact(0.8, t, np.array(s.probabilities), 8)
    assert loss == pytest.approx(s.loss_ratio) and loss <= 0.02
    # a looser bound never lowers the accuracy; a higher rate never raises it
    assert lp_schedule(t, a, 0.8, 0.1, 8, "exact").accuracy >= s.accuracy
    assert lp_schedule(t, a, 1.2, 0.02, 8, "exact").accuracy <= s.accuracy


def test_lp_light_load_takes_the_best_exit():
    s = lp_schedule([0.1, 0.2, 0.3], [0.5, 0.9, 0.7], 0.01, 0.01, 10)
    assert s.probabilities == (0.0, 1.0, 0.0)


def test_max_utilization_inverts_the_loss():
    from earlyexit.planner.queueing import loss_ratio_approx

    for scv in (0.0, 0.5, 1.0, 2.0):
        rho = max_utilization(scv, 0.01, 10)
        assert float(loss_ratio_approx(rho, scv, 10)) == pytest.approx(0.01, rel=1e-6)


def test_knapsack_by_hand():
    assert knapsack_budget(10.0) == pytest.approx(0.09)
    assert knapsack_budget(10.0, waiting=3, min_time_s=0.02, utilization=1.0) == pytest.approx(0.04)
    assert knapsack_budget(10.0, waiting=100, min_time_s=0.02) == 0.02
    times, acc = [0.01, 0.03, 0.08], [0.6, 0.8, 0.9]
    assert knapsack_exit(times, acc, 0.09) == 2
    assert knapsack_exit(times, acc, 0.05) == 1
    assert knapsack_exit(times, acc, 0.001) == 0
    assert knapsack_exit([0.01, 0.03], [0.8, 0.8], 1.0) == 0  # a tie goes to the cheaper


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: lp_schedule([1.0], [0.5, 0.6], 1.0, 0.01), "same length"),
        (lambda: lp_schedule([-1.0], [0.5], 1.0, 0.01), "exit_times"),
        (lambda: lp_schedule([1.0], [1.5], 1.0, 0.01), "exit_accuracy"),
        (lambda: lp_schedule([1.0], [0.5], 0.0, 0.01), "arrival_rate"),
        (lambda: lp_schedule([1.0], [0.5], 1.0, 1.0), "max_loss"),
        (lambda: knapsack_budget(0.0), "arrival_rate"),
        (lambda: knapsack_budget(1.0, waiting=-1), "waiting"),
        (lambda: knapsack_budget(1.0, utilization=2.0), "utilization"),
    ],
)
def test_bad_inputs_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
