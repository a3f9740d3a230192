"""The one-pass label DP under load: the probe's configurations and the falling bar."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earlyexit.planner._select import ACC_ATOL
from earlyexit.planner._underload_bounds import _wait_table
from earlyexit.planner.estimators import exit_fractions
from earlyexit.planner.latency import CostModel
from earlyexit.planner.queueing import evaluate_load
from earlyexit.planner.space import make_space

from .strategies import problems

SETTINGS = settings(
    max_examples=int(os.environ.get("EE_HYPOTHESIS_EXAMPLES", "120")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# a problem, the accuracy bound, the rate, K and the loss bound
_LOADS = (
    problems(max_blocks=6, max_tiers=3),
    st.floats(0.0, 1.0),
    st.sampled_from([0.05, 0.5, 2.0, 8.0]),
    st.sampled_from([1, 3, 20]),
    st.sampled_from([None, 0.001, 0.05, 0.5]),
)


def _bound_of(cm, space, tab, t_pos, cuts, tiers):
    """The DP's value of one configuration, computed apart: Lat plus (1 - ER_b) W per
    partition (the wait table's entry of its tier and blocks)."""
    thr = float(cm.thresholds[space.t_idx[t_pos]])
    e, s, _acc = exit_fractions(cm.profile, thr, cuts, "portend")
    lat, _ = cm.latency(cuts, tiers, e, s)
    er = cm.er[space.t_idx[t_pos]]
    prev = 0
    for w, c in zip(tiers, cuts, strict=True):
        lat += (1.0 - er[prev]) * tab[t_pos, w, prev, c]
        prev = c
    return lat, _acc


@SETTINGS
@given(*_LOADS)
def test_probe_gets_real_configurations_at_their_bound(problem, frac, lam, k, max_loss):
    """Every configuration handed to the probe is a real one of the space that meets the
    accuracy bound, at the value the DP gave it; the bar it sets is one of them under load."""
    from earlyexit.planner._labels import CutCodes
    from earlyexit.planner._portend import PortendSearch

    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    eps = math.inf if max_loss is None else max_loss
    tab = _wait_table(cm, space, lam, min(eps, 1.0), k)
    if tab is None:
        return
    seen: list[tuple[int, tuple, tuple, float]] = []

    def probe(configs, _last):
        best = math.inf
        for t_pos, tiers, cuts in configs:
            thr = float(cm.thresholds[space.t_idx[t_pos]])
            le = evaluate_load(
                cm.profile, cm.topology, thr, list(cuts), list(tiers), lam, k, "portend",
                "approx", cost_model=cm,
            )  # fmt: skip
            seen.append((t_pos, tiers, cuts, le.latency_s))
            if le.loss_ratio <= eps + 1e-12 and math.isfinite(le.latency_s):
                best = min(best, le.latency_s)
        return best

    ps = PortendSearch(
        cm, space, "min_latency", frac, codes=CutCodes(cm.n, cm.m, space.max_parts),
        extra=tab, fixed_inc=math.inf, probe=probe,
    )  # fmt: skip
    orig = ps._probe_best
    handed: list[np.ndarray] = []

    def spy(vals, *args, **kw):
        handed.append(np.sort(vals[vals < args[-2].inc])[:4])
        return orig(vals, *args, **kw)

    ps._probe_best = spy
    fin, _ = ps.run("min_latency", frac)
    values = np.concatenate(handed) if handed else np.zeros(0)
    assert len(seen) == values.size
    for (t_pos, tiers, cuts, _lat), v in zip(seen, values, strict=True):
        assert len(set(tiers)) == len(tiers)  # a tier once
        assert all(space.tier_allowed[i, w] for i, w in enumerate(tiers))
        assert list(cuts) == sorted(set(cuts)) and space.end_ok[cuts[-1]]
        assert space.min_parts <= len(cuts) <= space.max_parts
        got, acc = _bound_of(cm, space, tab[0], t_pos, cuts, tiers)
        assert got == pytest.approx(v, rel=1e-9, abs=1e-12)
        if frac is not None:
            assert acc >= frac - ACC_ATOL - 1e-9
    feasible = [lat for *_x, lat in seen]
    if math.isfinite(ps.inc):
        assert ps.inc in feasible
    # every listed configuration's bound is within the bar
    assert np.all(fin.lat <= ps.inc + 1e-9 * (1 + abs(ps.inc)) if math.isfinite(ps.inc) else True)


@SETTINGS
@given(*_LOADS)
def test_todays_search_from_the_label_dp_under_load(problem, frac, lam, k, max_loss):
    """Today's plan from the tables of the search under load (as the message of an
    infeasible plan finds it) is today's plan, candidate for candidate."""
    from earlyexit.planner.search import search
    from earlyexit.planner.underload import search_under_load

    profile, topo = problem
    cm = CostModel(profile, topo)
    space = make_space(cm)
    reuse: dict = {}
    search_under_load(
        cm, space, "portend", "min_latency", frac, lam, k, max_loss, "approx", reuse=reuse
    )
    ps = reuse.get("searcher")
    if ps is None or ps.cm is not cm:  # no table, or busy times: not reused
        return
    today = search(cm, space, "portend", "min_latency", frac)
    assert search(cm, space, "portend", "min_latency", frac, searcher=ps.unloaded()) == today
    # and the search under load is not disturbed by it: the same answer again
    again = search(cm, space, "portend", "min_latency", frac, searcher=ps.unloaded())
    assert again == today


def test_infeasible_message_same_with_the_reused_tables():
    """N=55 past today's capacity: the message (today's plan, its loss, the rate it
    sustains) is the same whether today's search reuses the label DP's tables or not,
    and the rate is today's plan's capacity."""
    import re

    from earlyexit.formats import Link, Tier, Topology
    from earlyexit.planner import plan
    from earlyexit.planner.api import plan_capacity
    from earlyexit.planner.synthetic import synthetic_profile
    from earlyexit.planner.underload import explain_infeasible, search_under_load

    prof = synthetic_profile(55, ("a1.medium", "m4.large", "g4dn.xlarge"), seed=1)
    tiers = (Tier("edge", "a1.medium"), Tier("base", "m4.large"), Tier("cloud", "g4dn.xlarge"))
    topo = Topology(tiers, (Link(10, 20), Link(400, 40)), mtu_bytes=9000)
    today = plan(prof, topo, min_accuracy=0.6)
    knee = plan_capacity(today, prof, topo, max_loss=0.01)
    cm = CostModel(prof, topo)
    space = make_space(cm)
    reuse: dict = {}
    args = (cm, space, "portend", "min_latency", 0.6, 1.5 * knee, None, 0.01, "approx")
    assert search_under_load(*args, reuse=reuse) is None  # infeasible
    assert reuse["searcher"].cm is cm
    msg = explain_infeasible(*args, searcher=reuse["searcher"])
    assert msg == explain_infeasible(*args)
    assert f"T={today.threshold:g}, P={list(today.cut_points)}, D={list(today.tier_indices)}" in msg
    said = float(re.search(r"sustains at most ([0-9.e+]+)/s", msg).group(1))
    assert said == pytest.approx(knee, rel=1e-3)
