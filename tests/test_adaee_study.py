"""tools/adaee_study.py: the replay is the worker's rule, the scores are what the docs say."""

from __future__ import annotations

import numpy as np
import pytest

from tests._scripts import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("tools/adaee_study.py")


def test_entropy_and_confidence_by_hand(study):
    logits = np.log(np.array([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3], [1.0 - 2e-9, 1e-9, 1e-9]]))
    h = study.normalized_entropy(logits)
    expected = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)) / np.log(3)
    np.testing.assert_allclose(h, [expected, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(study.confidence(logits), [0.5, 1 / 3, 1.0], atol=1e-6)


def _stream(n=600, seed=1):
    rng = np.random.default_rng(seed)
    ent = rng.uniform(0, 1, n)
    first = (rng.uniform(0, 1, n) > ent).astype(float)  # confident samples are right more often
    final = np.maximum(first, (rng.uniform(0, 1, n) > 0.3).astype(float))
    return ent, first, final - first, rng.normal(0.05, 0.1, n)


def test_fixed_scores_match_a_loop(study):
    ent, first, gain, _ = _stream(50)
    grid = np.array([0.0, 0.3, 1.0])
    got = study.scores(ent, first, gain, 0.01, 2.0, grid)
    for a, t in enumerate(grid):
        for i in range(len(ent)):
            want = first[i] + (gain[i] - 2.0 * 0.01 if ent[i] >= t else 0.0)
            assert got[a, i] == pytest.approx(want)
    assert np.allclose(got[-1], first)  # T=1: every sample leaves (entropies < 1 here)


def test_replay_scores_are_the_fixed_scores_of_the_chosen_thresholds(study):
    ent, first, gain, conf_gain = _stream()
    out = study.replay(
        ent, conf_gain, gain, first, 0.01, cost_weight=2.0, exploration=0.1, discount=0.99
    )
    grid = np.array(study.GRID)
    fixed = study.scores(ent, first, gain, 0.01, 2.0, grid)
    idx = np.searchsorted(grid, out["threshold"])
    np.testing.assert_allclose(out["score"], fixed[idx, np.arange(len(ent))])
    assert np.array_equal(out["went_on"], ent >= out["threshold"])
    assert set(np.unique(out["threshold"])) <= set(study.GRID)


def test_phase_table_against_direct_means(study):
    ent, first, gain, conf_gain = _stream(900)
    grid = np.array(study.GRID)
    fixed = study.scores(ent, first, gain, 0.01, 2.0, grid)
    mine = fixed[4]
    rows = study.phase_table(
        mine, fixed, [("a", 0, 450), ("b", 450, 900)], plan_index=4, settle=100
    )
    for row, (a, b) in zip(rows, [(0, 450), (450, 900)], strict=True):
        per_t = fixed[:, a + 100 : b].mean(axis=1)
        assert row["oracle"] == pytest.approx(per_t.max()) and row["plan"] == pytest.approx(
            per_t[4]
        )
        assert row["adaee"] == pytest.approx(per_t[4]) and row["ratio"] == pytest.approx(
            per_t[4] / per_t.max()
        )
        assert 0.0 <= row["gap"] <= 1.0
