"""The fast search returns the true optimum of the model of docs/spec.md: compared with plain brute force."""

from __future__ import annotations

import importlib
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earlyexit.planner.bruteforce import (
    brute_force_best,
    brute_force_candidates,
    brute_force_pareto,
)
from earlyexit.planner.latency import CostModel, evaluate
from earlyexit.planner.search import search
from earlyexit.planner.space import make_space

from .strategies import problems

bounds_mod = importlib.import_module("earlyexit.planner._portend_bounds")

TOL = 1e-9
SETTINGS = settings(
    max_examples=int(os.environ.get("EE_HYPOTHESIS_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _check_best(cm, space, estimator, objective, bound):
    got = search(cm, space, estimator, objective, bound)
    ref = brute_force_best(cm, space, estimator, objective, bound)
    if ref is None:
        assert got == []
        return
    assert len(got) == 1
    g = got[0]
    assert g.latency == pytest.approx(ref[0], abs=TOL)
    assert g.accuracy == pytest.approx(ref[1], abs=TOL)
    assert g.key == ref[2], (g, ref)


@st.composite
def hints(draw, cm):
    n, m = cm.n, cm.m
    h = {}
    if draw(st.booleans()):
        h["num_partitions"] = draw(st.integers(1, m))
    if draw(st.booleans()):
        h["tiers"] = sorted(draw(st.sets(st.integers(0, m - 1), min_size=1)))
    if draw(st.booleans()):
        h["cut_points"] = sorted(draw(st.sets(st.integers(1, n), min_size=1)))
    if draw(st.booleans()):
        pool = h.get("cut_points", list(range(1, n + 1)))
        h["exits"] = sorted(draw(st.sets(st.sampled_from(pool), max_size=2)))
    return h


@SETTINGS
@given(problems(clients=True), st.sampled_from(["portend", "exact"]), st.floats(0.0, 1.0), st.data())
def test_p_lat_matches_brute_force(problem, estimator, bound, data):
    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    _check_best(cm, space, estimator, "min_latency", bound)
    _check_best(cm, space, estimator, "min_latency", None)


@SETTINGS
@given(problems(clients=True), st.sampled_from(["portend", "exact"]), st.floats(0.0, 1.0))
def test_p_acc_matches_brute_force(problem, estimator, frac):
    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    lats = brute_force_candidates(cm, space, estimator)[0]
    bound = float(np.quantile(lats, frac))  # a bound that some configurations meet
    _check_best(cm, space, estimator, "max_accuracy", bound)
    _check_best(cm, space, estimator, "max_accuracy", None)


@SETTINGS
@given(problems(clients=True), st.sampled_from(["portend", "exact"]))
def test_pareto_matches_brute_force(problem, estimator):
    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    got = search(cm, space, estimator, "pareto", None)
    ref = brute_force_pareto(cm, space, estimator)
    assert [g.key for g in got] == [r[2] for r in ref]
    for g, r in zip(got, ref, strict=True):
        assert g.latency == pytest.approx(r[0], abs=TOL)
        assert g.accuracy == pytest.approx(r[1], abs=TOL)


@SETTINGS
@given(problems(), st.sampled_from(["portend", "exact"]), st.floats(0.0, 1.0), st.data())
def test_hints_match_brute_force(problem, estimator, bound, data):
    profile, topo = problem
    cm = CostModel(profile, topo)
    try:
        space = make_space(cm, **data.draw(hints(cm)))
    except ValueError:
        return  # hints that leave nothing to search are rejected up front
    _check_best(cm, space, estimator, "min_latency", bound)
    got = search(cm, space, estimator, "pareto", None)
    assert [g.key for g in got] == [r[2] for r in brute_force_pareto(cm, space, estimator)]


@settings(max_examples=60, deadline=None)
@given(problems(clients=True), st.sampled_from(["portend", "exact"]), st.data())
def test_brute_force_agrees_with_evaluate(problem, estimator, data):
    """The reference itself: its numbers are those of ``evaluate`` (the formulas of docs/spec.md)."""
    profile, topo = problem
    cm = CostModel(profile, topo)
    lats, accs, keys = brute_force_candidates(cm, make_space(cm), estimator)
    i = data.draw(st.integers(0, len(keys) - 1))
    _, tiers, cuts, thr = keys[i]
    est = evaluate(profile, topo, thr, list(cuts), list(tiers), estimator, cost_model=cm)
    assert est.latency_s == pytest.approx(lats[i], rel=1e-12, abs=1e-12)
    assert est.accuracy == pytest.approx(accs[i], rel=1e-12, abs=1e-12)
    assert sum(est.breakdown_s.values()) == pytest.approx(est.latency_s, rel=1e-9, abs=1e-12)


@SETTINGS
@given(problems(), st.sampled_from(["min_latency", "max_accuracy", "pareto"]), st.floats(0.0, 1.0))
def test_sweep_bounds_match_brute_force(problem, objective, frac):
    """The backward pass used for large problems (one block at a time) is exact too."""
    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    with mock.patch.object(bounds_mod, "SMALL", 0):
        if objective == "pareto":
            got = search(cm, space, "portend", "pareto", None)
            assert [g.key for g in got] == [r[2] for r in brute_force_pareto(cm, space, "portend")]
            return
        if objective == "min_latency":
            _check_best(cm, space, "portend", objective, frac)
        else:
            lats = brute_force_candidates(cm, space, "portend")[0]
            _check_best(cm, space, "portend", objective, float(np.quantile(lats, frac)))


@SETTINGS
@given(
    problems(max_blocks=9, max_tiers=4), st.sampled_from(["portend", "exact"]), st.floats(0.3, 1.0)
)
def test_p_lat_deeper_matches_brute_force(problem, estimator, bound):
    """More blocks: the lambda choice, the one-partition tables, the incumbents and the
    prefix bounds of the exact estimator at work."""
    profile, topo = problem
    cm = CostModel(profile, topo)
    _check_best(cm, make_space(cm), estimator, "min_latency", bound)
    _check_best(cm, make_space(cm), estimator, "min_latency", None)


@pytest.mark.parametrize(("seed", "bound"), [(0, 0.6), (1, 0.7), (2, 0.75), (3, None)])
def test_deep_optima_match_brute_force(seed, bound):
    """Mid-size synthetic profiles (10 blocks, 4 tiers, 60 samples) against brute force."""
    from earlyexit.formats import Link, Tier, Topology
    from earlyexit.planner.synthetic import synthetic_profile

    profile = synthetic_profile(10, ("a1.medium", "m4.large", "g4dn.xlarge", "reference"), thresholds=5,
                                num_samples=60, seed=seed)  # fmt: skip
    tiers = tuple(Tier(f"t{j}", d, s) for j, (d, s) in
                  enumerate([("a1.medium", 1.0), ("m4.large", 1.0), ("g4dn.xlarge", 1.0), ("reference", 0.3)]))  # fmt: skip
    topo = Topology(tiers, (Link(10, 20), Link(400, 40), Link(1000, 5)), mtu_bytes=9000)
    cm = CostModel(profile, topo)
    for estimator in ("portend", "exact"):
        _check_best(cm, make_space(cm), estimator, "min_latency", bound)
