"""The search at fine granularity: the accuracy-grid bound is exact, and N up to 1000 encodes.

Timing is benchmarks/bench_planner.py's (case E); these tests check values only.
"""

from __future__ import annotations

import importlib
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earlyexit.formats import Link, Tier, Topology
from earlyexit.planner._labels import CutCodes, lex_less, rank_keys
from earlyexit.planner.bruteforce import brute_force_best
from earlyexit.planner.latency import CostModel, evaluate
from earlyexit.planner.search import search
from earlyexit.planner.space import make_space
from earlyexit.planner.synthetic import synthetic_profile

from .strategies import problems
from .test_exactness import _check_best, hints

portend_mod = importlib.import_module("earlyexit.planner._portend")

SETTINGS = settings(
    max_examples=int(os.environ.get("EE_HYPOTHESIS_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(problems(max_blocks=8, max_tiers=4), st.floats(0.0, 1.0), st.data())
def test_accuracy_grid_bound_matches_brute_force(problem, bound, data):
    """The accuracy-grid lower bound (on for large problems) forced on small ones."""
    profile, topo = problem
    cm = CostModel(profile, topo)
    with mock.patch.object(portend_mod, "ACC_GRID_MIN", 0):
        _check_best(cm, make_space(cm), "portend", "min_latency", bound)
        try:
            space = make_space(cm, **data.draw(hints(cm)))
        except ValueError:
            return
        _check_best(cm, space, "portend", "min_latency", bound)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_grid_is_a_lower_bound(seed):
    """Every label's grid bound is at most its true best feasible completion (checked by brute force
    over the completions of the one-partition prefixes)."""
    profile = synthetic_profile(
        7, ("a1.medium", "m4.large", "g4dn.xlarge"), thresholds=4, seed=seed
    )
    cm = CostModel(profile, _topology(3))
    space = make_space(cm)
    bound = 0.7
    ps = portend_mod.PortendSearch(cm, space, "min_latency", bound)
    ps._acc_grid(bound)
    checked = 0
    for t_pos, ti in enumerate(space.t_idx):
        for c in range(1, cm.n):
            for w in range(cm.m):
                # prefix: one partition 1..c on tier w; completions: every configuration extending it
                sub = make_space(
                    cm, thresholds=[float(cm.thresholds[ti])], exits=[c], placement=None
                )
                best = np.inf
                for lat_acc in _completions(cm, sub, c, w):
                    if lat_acc[1] >= bound - 1e-9:
                        best = min(best, lat_acc[0])
                pre = evaluate(
                    profile, _topology(3), float(cm.thresholds[ti]), [c], [w], cost_model=cm
                )
                e1 = ps.er[t_pos, c]
                pre_lat = pre.latency_s - (1 - e1) * cm.r[w]  # the label: without its end term
                pre_acc = cm.acc[c] * e1
                need = bound - 1e-9 - pre_acc
                lb = ps._acc_grid_lb(
                    np.array([t_pos]), np.array([c]), np.array([w]), np.array([need]), 1
                )[0]
                assert pre_lat + lb <= best + 1e-9
                checked += np.isfinite(best)
    assert checked > 0


def _completions(cm, space, c, w):
    """(latency, accuracy) of every configuration whose first partition is 1..c on tier w."""
    from earlyexit.planner.bruteforce import brute_force_candidates

    lats, accs, keys = brute_force_candidates(cm, space, "portend")
    for lat, acc, (_, tiers, cuts, _) in zip(lats, accs, keys, strict=True):
        if cuts[0] == c and tiers[0] == w:
            yield lat, acc


def _topology(m: int) -> Topology:
    devs = [
        "a1.medium",
        "m4.large",
        "g4dn.xlarge",
        "a1.medium",
        "m4.large",
        "g4dn.xlarge",
        "a1.medium",
        "m4.large",
    ]
    tiers = tuple(Tier(f"t{i}", devs[i], 1.0 + 0.2 * (i >= 3)) for i in range(m))
    bw = [10, 400, 1000, 100, 50, 200, 25][: m - 1]
    pd = [20, 40, 10, 5, 30, 8, 15][: m - 1]
    return Topology(tiers, tuple(Link(b, d) for b, d in zip(bw, pd, strict=True)), mtu_bytes=9000)


@given(st.integers(1, 1000), st.integers(1, 8), st.data())
@settings(max_examples=60, deadline=None)
def test_cut_codes_round_trip_and_order(n, length, data):
    """Codes of N <= 1000 blocks and L <= 8 cuts decode to their tuples and sort like them."""
    codes = CutCodes(n, 8, 8)
    seqs = [
        sorted(
            data.draw(st.sets(st.integers(1, n), min_size=min(length, n), max_size=min(length, n)))
        )
        for _ in range(5)
    ]
    arr = codes.zeros(len(seqs))
    for k in range(len(seqs[0])):
        arr = codes.push(arr, k, np.array([s[k] for s in seqs]))
    assert [codes.decode(row, len(seqs[0])) for row in arr] == [tuple(s) for s in seqs]
    for i in range(len(seqs)):
        for j in range(len(seqs)):
            assert bool(lex_less(arr[i : i + 1], arr[j : j + 1])[0]) == (seqs[i] < seqs[j])
    rank = rank_keys(
        np.full(len(seqs), len(seqs[0])),
        np.zeros(len(seqs), np.int64),
        arr,
        np.zeros(len(seqs), np.int64),
    )
    assert [seqs[i] for i in np.argsort(rank)] == sorted(seqs)


def test_fine_granularity_is_accepted_and_exact():
    """N=1000 blocks, M=8 tiers (two words of cut code): the search answers what brute force
    does on a space it can enumerate (fixed placement, nine cut points)."""
    n, m = 1000, 8
    devs = ("a1.medium", "m4.large", "g4dn.xlarge")
    profile = synthetic_profile(n, devs, thresholds=3, seed=3)
    cm = CostModel(profile, _topology(m))
    space = make_space(cm, placement=list(range(m)), cut_points=[100 * i + 37 for i in range(9)])
    assert CutCodes(n, m, space.max_parts).words == 2
    for bound in (None, 0.6):
        _check_best(cm, space, "portend", "min_latency", bound)
        got = search(cm, space, "portend", "min_latency", bound)
        ref = brute_force_best(cm, space, "portend", "min_latency", bound)
        assert got[0].cuts == ref[2][2] and len(got[0].cuts) == m


@pytest.mark.parametrize("exits", [[6], [4, 6], None])
def test_everyone_exited_labels_still_reach_required_exits(exits):
    """ER = 1 everywhere (every sample leaves at the first exit): a label that may not end
    (a required exit is further on) must still be extended; one that may end is not."""
    import dataclasses

    base = synthetic_profile(
        6, ("a1.medium", "m4.large", "g4dn.xlarge"), thresholds=[0.5, 1.0], seed=4
    )
    er = base.exit_rate.copy()
    er[1] = 1.0
    profile = dataclasses.replace(base, exit_rate=er)
    cm = CostModel(profile, _topology(3))
    space = make_space(cm, exits=exits)
    for bound in (None, 0.3):
        _check_best(cm, space, "portend", "min_latency", bound)
    if exits is not None:  # everyone leaves at block 1; the required exits cost nothing
        got = search(cm, space, "portend", "min_latency", None)[0]
        assert got.threshold == 1.0 and got.cuts[0] == 1 and set(exits) <= set(got.cuts)
