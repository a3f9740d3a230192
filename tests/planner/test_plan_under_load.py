"""Planning under load: exact against a brute force, today's plan as lambda -> 0, capacity, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earlyexit.cli import main
from earlyexit.formats import Plan
from earlyexit.planner import plan
from earlyexit.planner._select import select_best
from earlyexit.planner.api import plan_capacity
from earlyexit.planner.bruteforce import brute_force_candidates
from earlyexit.planner.latency import CostModel
from earlyexit.planner.queueing import evaluate_load
from earlyexit.planner.space import make_space
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.planner.underload import search_under_load

from .strategies import problems

SETTINGS = settings(
    max_examples=int(os.environ.get("EE_HYPOTHESIS_EXAMPLES", "120")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _brute_force_under_load(cm, space, estimator, objective, bound, lam, k, max_loss, model):
    """Every configuration of the space evaluated under load, the best feasible one chosen."""
    _lats, accs, keys = brute_force_candidates(cm, space, estimator)
    feas = []
    for acc, key in zip(accs, keys, strict=True):
        n_parts, d, cuts, thr = key
        le = evaluate_load(
            cm.profile, cm.topology, thr, list(cuts), list(d), lam, k, estimator, model,
            cost_model=cm,
        )  # fmt: skip
        if max_loss is not None and le.loss_ratio > max_loss + 1e-12:
            continue
        if objective == "max_accuracy" and le.latency_s > bound + 1e-9:
            continue
        feas.append((le.latency_s, acc, key, le))
    if not feas:
        return None
    b = bound if objective == "min_latency" else None
    i = select_best(
        np.array([f[0] for f in feas]), np.array([f[1] for f in feas]), [f[2] for f in feas],
        objective, b,
    )  # fmt: skip
    return None if i is None else feas[i]


@SETTINGS
@given(
    problems(max_blocks=5, max_tiers=3, busy=True, clients=True),  # busy times, idle and client curves or not
    st.sampled_from(["portend", "exact"]),
    st.sampled_from(["min_latency", "max_accuracy"]),
    st.floats(0.0, 1.0),
    st.sampled_from([0.01, 0.1, 0.5, 2.0]),
    st.sampled_from([1, 3, 20]),
    st.sampled_from([None, 0.001, 0.05, 0.5]),
    st.sampled_from(["approx", "exact"]),
)
def test_search_under_load_matches_brute_force(
    problem, estimator, objective, frac, lam, k, max_loss, model
):
    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    if objective == "min_latency":
        bound = frac
    else:  # a loaded-latency bound between the fastest and slowest unloaded latencies
        lats = brute_force_candidates(cm, space, estimator)[0]
        bound = min(lats) + frac * (max(lats) - min(lats)) * 2
    got = search_under_load(cm, space, estimator, objective, bound, lam, k, max_loss, model)
    ref = _brute_force_under_load(cm, space, estimator, objective, bound, lam, k, max_loss, model)
    if ref is None:
        assert got is None
        return
    assert got is not None
    cand, le = got
    assert le.latency_s == pytest.approx(ref[0], abs=1e-9)
    assert cand.accuracy == pytest.approx(ref[1], abs=1e-9)
    assert (len(cand.cuts), cand.tiers, cand.cuts, cand.threshold) == ref[2]


@pytest.mark.parametrize("bounds", [{"min_accuracy": 0.6}, {"max_latency": 0.2}, {}])
@pytest.mark.parametrize("estimator", ["portend", "exact"])
def test_tiny_rate_gives_todays_plan(bounds, estimator):
    prof = synthetic_profile(10, num_samples=200) if estimator == "exact" else synthetic_profile(10)
    today = plan(prof, "portend-aws", estimator=estimator, **bounds)
    loaded = plan(prof, "portend-aws", estimator=estimator, arrival_rate=1e-9, **bounds)
    assert (loaded.threshold, loaded.cut_points, loaded.tier_indices) == (
        today.threshold,
        today.cut_points,
        today.tier_indices,
    )
    assert loaded.estimate == today.estimate
    assert loaded.extra["load"]["latency_s"] == pytest.approx(today.estimate.latency_s, abs=1e-9)
    assert "load" not in today.extra
    # the plan under load is today's plan, field for field, with the load recorded beside
    assert {k: v for k, v in loaded.extra.items() if k != "load"} == dict(today.extra)
    assert dataclasses.replace(loaded, extra=today.extra) == today


def test_load_changes_the_plan_and_is_recorded(tmp_path):
    prof = synthetic_profile(12)
    today = plan(prof, "portend-aws", min_accuracy=0.6)
    loaded = plan(prof, "portend-aws", min_accuracy=0.6, arrival_rate=40, max_loss=0.01)
    assert (loaded.cut_points, loaded.tier_indices) != (today.cut_points, today.tier_indices)
    rec = loaded.extra["load"]
    assert rec["arrival_rate"] == 40 and rec["max_loss"] == 0.01 and rec["queue_capacity"] == 50
    assert rec["loss_ratio"] <= 0.01 and rec["latency_s"] >= loaded.estimate.latency_s
    # today's plan at that rate loses more than the bound, or is slower
    at = evaluate_load(
        prof, "portend-aws", today.threshold, today.cut_points, today.tier_indices, 40
    )
    assert at.loss_ratio > 0.01 or at.latency_s >= rec["latency_s"]
    path = tmp_path / "plan.json"
    loaded.save(path)
    back = Plan.load(path)
    assert back.extra["load"] == json.loads(json.dumps(rec))
    assert back.to_json() == loaded.to_json()


def test_capacity_is_the_knee_of_the_loss_bound():
    prof = synthetic_profile(12)
    p = plan(prof, "portend-aws", min_accuracy=0.6)
    lam = plan_capacity(p, prof, "portend-aws", max_loss=0.01)

    def loss(rate: float) -> float:
        return evaluate_load(
            prof, "portend-aws", p.threshold, p.cut_points, p.tier_indices, rate
        ).loss_ratio

    assert loss(lam) <= 0.01 < loss(lam * 1.001)
    assert plan_capacity(p, prof, "portend-aws", max_loss=0.1) > lam
    assert plan_capacity(p, prof, "portend-aws", max_loss=0.01, queue_capacity=5) < lam
    other = plan(synthetic_profile(12, seed=3), "portend-aws")
    with pytest.raises(ValueError, match="profile"):
        plan_capacity(other, prof, "portend-aws")
    with pytest.raises(ValueError, match="max_loss"):
        plan_capacity(p, prof, "portend-aws", max_loss=1.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_loss": 0.01}, "arrival_rate"),
        ({"queue_capacity": 5}, "arrival_rate"),
        ({"arrival_rate": -1}, "arrival_rate"),
        ({"arrival_rate": 10, "max_loss": 0.0}, "max_loss"),
        ({"arrival_rate": 10, "max_loss": 1.5}, "max_loss"),
        ({"arrival_rate": 10, "queue_model": "fluid"}, "queue_model"),
        ({"arrival_rate": 1e6, "max_loss": 0.01}, "no configuration"),
    ],
)
def test_bad_load_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        plan(synthetic_profile(6), "portend-aws", **kwargs)


# ---------------------------------------------------------------------- the command line


@pytest.fixture()
def prof_path(tmp_path):
    path = tmp_path / "profile.json"
    synthetic_profile(12).save(path)
    return str(path)


def _plan_json(capsys, prof_path, *extra):
    argv = ["plan", "--profile", prof_path, "--topology", "portend-aws", "--json", *extra]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_plan_load_flags_reach_the_plan(prof_path, capsys):
    data = _plan_json(capsys, prof_path, "--arrival-rate", "30", "--max-loss", "0.02")
    assert data["load"]["arrival_rate"] == 30.0
    assert data["load"]["max_loss"] == 0.02
    assert data["load"]["queue_capacity"] == 50 and data["load"]["queue_model"] == "approx"
    data = _plan_json(
        capsys, prof_path, "--arrival-rate", "30", "--queue-capacity", "7", "--queue-model", "exact"
    )
    assert data["load"]["queue_capacity"] == 7 and data["load"]["queue_model"] == "exact"
    assert data["load"]["max_loss"] is None
    assert "load" not in _plan_json(capsys, prof_path)
    argv = ["plan", "--profile", prof_path, "--topology", "portend-aws", "--arrival-rate", "30"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "under load: 30 samples/s" in out and "tier 0 (edge)" in out


def test_cli_capacity_flags_reach_the_function(prof_path, tmp_path, capsys):
    out = tmp_path / "plan.json"
    argv = ["plan", "--profile", prof_path, "--topology", "portend-aws", "-o", str(out)]
    assert main([*argv, "--min-accuracy", "0.6"]) == 0
    capsys.readouterr()
    base = ["capacity", "--plan", str(out), "--profile", prof_path, "--topology", "portend-aws"]

    def cap(*extra: str) -> float:
        assert main([*base, "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)["capacity"]

    p = Plan.load(out)
    assert cap() == pytest.approx(plan_capacity(p, prof_path, "portend-aws", 0.01), rel=1e-12)
    assert cap("--max-loss", "0.2") == pytest.approx(
        plan_capacity(p, prof_path, "portend-aws", 0.2), rel=1e-12
    )
    assert cap("--queue-capacity", "3") == pytest.approx(
        plan_capacity(p, prof_path, "portend-aws", 0.01, 3), rel=1e-12
    )
    assert cap("--queue-capacity", "3", "--queue-model", "exact") == pytest.approx(
        plan_capacity(p, prof_path, "portend-aws", 0.01, 3, "exact"), rel=1e-12
    )
    assert main(base) == 0
    assert "samples/s with loss ratio <= 0.01" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "--arrival-rate", "-3"],
        ["plan", "--arrival-rate", "abc"],
        ["plan", "--arrival-rate", "10", "--max-loss", "0"],
        ["plan", "--arrival-rate", "10", "--max-loss", "nan"],
        ["plan", "--arrival-rate", "10", "--queue-capacity", "0"],
        ["plan", "--arrival-rate", "10", "--queue-model", "fluid"],
        ["plan", "--max-loss", "0.1"],
        ["plan", "--arrival-rate", "1e7", "--max-loss", "0.01"],
        ["capacity", "--max-loss", "1"],
        ["capacity", "--queue-capacity", "-2"],
        ["capacity", "--queue-capacity", "5000", "--queue-model", "exact"],
    ],
)
def test_cli_bad_values_exit_2_with_one_line(argv, prof_path, tmp_path, capsys):
    plan_file = tmp_path / "p.json"
    plan(synthetic_profile(12), "portend-aws").save(plan_file)
    common = ["--profile", prof_path, "--topology", "portend-aws"]
    if argv[0] == "capacity":
        common += ["--plan", str(plan_file)]
    try:
        code = main([argv[0], *common, *argv[1:]])
    except SystemExit as exc:  # argparse refuses the value itself
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and err.startswith(f"earlyexit {argv[0]}")


def test_capacity_needs_an_existing_plan(prof_path, tmp_path, capsys):
    argv = ["capacity", "--plan", str(tmp_path / "none.json"), "--profile", prof_path]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--topology", "portend-aws"])
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    prof = synthetic_profile(6)
    assert math.isfinite(plan_capacity(plan(prof, "iot"), prof, "iot"))


@SETTINGS
@given(
    problems(max_blocks=6, max_tiers=3),
    st.floats(0.0, 1.0),
    st.sampled_from([0.05, 0.5, 2.0, 8.0]),
    st.sampled_from([1, 3, 20]),
    st.sampled_from([None, 0.001, 0.05, 0.5]),
)
def test_label_dp_under_load_matches_brute_force(problem, frac, lam, k, max_loss):
    """The DP path (PORTEND, P_lat, approx queues) on its own, where it applies."""
    from earlyexit.planner.underload import _fast_under_load

    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    eps = math.inf if max_loss is None else max_loss
    fast = _fast_under_load(cm, space, frac, lam, k, eps)
    ref = _brute_force_under_load(
        cm, space, "portend", "min_latency", frac, lam, k, max_loss, "approx"
    )
    if fast is None:  # no incumbent from the bound's optimum: the general search answers
        return
    got, _count = fast
    if ref is None:
        assert got == []
        return
    assert got
    i = select_best(
        np.array([g[1] for g in got]), np.array([g[2] for g in got]),
        [g[0] for g in got], "min_latency", None,
    )  # fmt: skip
    key, latency, acc = got[i]
    assert latency == pytest.approx(ref[0], abs=1e-9)
    assert acc == pytest.approx(ref[1], abs=1e-9)
    assert key == ref[2]


# ---------------------------------------------------------------------- N=55, M=3: never hang


def _n55():
    from earlyexit.formats import Link, Tier, Topology

    prof = synthetic_profile(55, ("a1.medium", "m4.large", "g4dn.xlarge"), seed=1)
    tiers = (Tier("edge", "a1.medium"), Tier("base", "m4.large"), Tier("cloud", "g4dn.xlarge"))
    topo = Topology(tiers, (Link(10, 20), Link(400, 40)), mtu_bytes=9000)
    today = plan(prof, topo, min_accuracy=0.6)
    return prof, topo, today, plan_capacity(today, prof, topo, max_loss=0.01)


def test_n55_past_todays_capacity_another_plan_or_a_clear_refusal():
    prof, topo, today, knee = _n55()
    # 1.2 x what today's plan sustains: another plan does, within the loss bound
    p = plan(prof, topo, min_accuracy=0.6, arrival_rate=1.2 * knee, max_loss=0.01)
    assert p.extra["load"]["loss_ratio"] <= 0.01 and p.estimate.accuracy >= 0.6
    assert (p.cut_points, p.tier_indices) != (today.cut_points, today.tier_indices)
    at = evaluate_load(prof, topo, today.threshold, today.cut_points, today.tier_indices,
                       1.2 * knee)  # fmt: skip
    assert at.loss_ratio > 0.01
    # 1.5 x and 10 x: no configuration; the message says what today's plan loses and sustains
    for frac in (1.5, 10.0):
        with pytest.raises(ValueError, match=r"no configuration .* sustains at most 40\.\d+/s"):
            plan(prof, topo, min_accuracy=0.6, arrival_rate=frac * knee, max_loss=0.01)


@pytest.mark.slow
def test_n55_exact_queues_past_capacity_answer_or_refuse():
    prof, topo, _today, knee = _n55()
    for frac in (1.5, 10.0):
        with pytest.raises(ValueError, match="no configuration|hints"):
            plan(prof, topo, min_accuracy=0.6, arrival_rate=frac * knee, max_loss=0.01,
                 queue_model="exact", queue_capacity=20)  # fmt: skip


def test_too_many_to_evaluate_names_the_hints(monkeypatch):
    import earlyexit.planner.underload as ul

    prof, topo, _today, knee = _n55()
    monkeypatch.setattr(ul, "MAX_EVALUATIONS", 0)
    with pytest.raises(ValueError, match="max_partitions, tiers, cut_points"):
        plan(prof, topo, min_accuracy=0.6, arrival_rate=0.5 * knee, max_loss=0.01)


@SETTINGS
@given(
    problems(max_blocks=5, max_tiers=3),
    st.floats(0.0, 1.0),
    st.sampled_from([0.5, 2.0, 8.0]),
    st.sampled_from([1, 3, 20]),
    st.sampled_from([None, 0.05, 0.5]),
    st.sampled_from([0.05, 0.5, 2.0]),
)
def test_bounds_hold_with_a_cpu_hand_off_cost_on_fast_tiers(problem, frac, lam, k, max_loss, cpu):
    """A tier with slowdown < 1 hands off in less than hop_s (its CPU part shrinks).

    The bounds charged hop_s whole and so could exceed the model's wait: the search
    answered None where a configuration meets the bound. They charge what the load
    model charges (CostModel.hop_tier).
    """
    from dataclasses import replace

    profile, topo = problem
    devices = {
        name: replace(d, hop_s=(d.hop_s or 0.0) + cpu, hop_cpu_s=cpu)
        for name, d in profile.devices.items()
    }
    cm = CostModel(replace(profile, devices=devices), topo)
    space = make_space(cm)
    got = search_under_load(cm, space, "portend", "min_latency", frac, lam, k, max_loss, "approx")
    ref = _brute_force_under_load(
        cm, space, "portend", "min_latency", frac, lam, k, max_loss, "approx"
    )
    assert (got is None) == (ref is None)
    if ref is not None:
        assert got[1].latency_s == pytest.approx(ref[0], abs=1e-9)
        assert (len(got[0].cuts), got[0].tiers, got[0].cuts, got[0].threshold) == ref[2]


@SETTINGS
@given(
    problems(max_blocks=6, max_tiers=3),
    st.sampled_from([0.05, 0.5, 2.0, 8.0, 40.0]),
    st.sampled_from([1, 2, 3, 20, 50]),
    st.sampled_from([0.001, 0.05, 0.5, 1.0]),
)
def test_wait_table_read_off_the_grid_is_below_the_formula(problem, lam, k, eps1):
    """The DP's wait table from the grid in rho never exceeds the formula's own values
    (a lower bound of a lower bound), and marks infinite only what the formula does."""
    from earlyexit.planner._underload_bounds import _wait_table

    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    grid = _wait_table(cm, space, lam, eps1, k, grid=True)[0]
    exact = _wait_table(cm, space, lam, eps1, k, grid=False)[0]
    assert np.all(np.isinf(exact) | (grid <= exact))
    assert np.all(np.isinf(exact)[np.isinf(grid)])
    # and close to it on the grid (loads below its start, rho < 1e-4, read 0)
    fin = np.isfinite(grid) & np.isfinite(exact) & (grid > 0)  # the formula may rule out more
    assert np.all(grid[fin] >= 0.5 * exact[fin])


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.05, 500.0),
    st.sampled_from(["smooth", "steep", "step", "flat"]),
    st.sampled_from([1e-6, 1e-3]),
    st.floats(0.01, 20.0),
)
def test_knee_finds_the_largest_rate_within_the_bound(root, shape, tol, start):
    """The capacity's bracket search ends within its tolerance below the true knee,
    on loss curves smooth or not (a step defeats the interpolation: the midpoint
    still closes the bracket)."""
    from earlyexit.planner._underload_capacity import _knee

    eps = 0.01
    curve = {
        "smooth": lambda x: eps * (x / root) ** 3,
        "steep": lambda x: np.minimum(1.0, eps * np.exp(np.minimum(40.0 * (x / root - 1.0), 50.0))),
        "step": lambda x: np.where(x <= root, eps * 0.5, 0.5),
        "flat": lambda x: np.where(x <= root, 0.0, 1.0),
    }[shape]
    got = _knee(lambda xs: curve(np.asarray(xs, dtype=float)), eps, start, 1e15, tol)
    assert got <= root * (1 + 1e-12)
    assert got >= root * (1 - 2 * tol)


@SETTINGS
@given(
    problems(max_blocks=5, max_tiers=3),
    st.sampled_from([0.5, 2.0, 8.0, 40.0]),
    st.sampled_from([1, 3, 20]),
    st.sampled_from([0.001, 0.05, 0.5]),
)
def test_rule_out_keeps_every_configuration_within_the_loss_bound(problem, lam, k, eps):
    """The scan's rule-out (tiers' own loss bounds, a placement per row) drops only
    configurations whose loss, by the load model, exceeds the bound."""
    from earlyexit.planner._underload_bounds import portend_e
    from earlyexit.planner._underload_scan import _rule_out

    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    _lats, _accs, keys = brute_force_candidates(cm, space, "portend")
    fresh = []
    for _n, d, cuts, thr in keys:
        t = int(np.flatnonzero(cm.thresholds == thr)[0])
        c = np.array([cuts])
        fresh.append((d, c, portend_e(cm.er[t][c]), [(d, cuts, thr)]))
    memo: dict = {}
    kept = {kk for *_, kks in _rule_out(cm, fresh, lam, eps, k, memo) for kk in kks}
    assert len(kept) + len(memo) == len(fresh)
    for d, c, _e, (kk,) in fresh:
        if kk in kept:
            continue
        loss = evaluate_load(
            profile, topo, kk[2], list(c[0]), list(d), lam, k, cost_model=cm
        ).loss_ratio
        assert loss > eps, (kk, loss, memo[kk])
