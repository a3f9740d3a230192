"""Replanner: exact re-planning on estimated links, with hysteresis and dwell time."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from earlyexit.formats import Link
from earlyexit.planner import evaluate, plan, resolve_topology
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.runtime.replan import Replanner, candidate_plans, same_configuration

ACC = 0.6


@pytest.fixture(scope="module")
def prof():
    return synthetic_profile(10)


@pytest.fixture(scope="module")
def topo():
    """portend-aws with a fast first link: the optimum offloads; at 0.2 Mb/s it does not."""
    t = resolve_topology("portend-aws")
    return replace(t, links=(Link(1000.0, 20.0), t.links[1]))


def _with_link(topo, j, mbps, ms):
    links = list(topo.links)
    links[j] = Link(mbps, ms)
    return replace(topo, links=tuple(links))


def _brute(prof, topo, threshold_list):
    """The best configuration by enumerating every cut set, placement and threshold."""
    n, m = prof.num_blocks, topo.num_tiers
    best = None
    for last in range(1, n + 1):  # a plan may end at an earlier exit
        for k in range(1, m + 1):
            for cuts in itertools.combinations(range(1, last), k - 1):
                for tiers in itertools.combinations(range(m), k):
                    for t in threshold_list:
                        e = evaluate(prof, topo, t, [*cuts, last], list(tiers))
                        if e.accuracy >= ACC - 1e-12 and (best is None or e.latency_s < best[0] - 1e-12):
                            best = (e.latency_s, t, [*cuts, last], list(tiers))
    return best


def test_a_bandwidth_drop_switches_to_the_exact_optimum(prof, topo):
    start = plan(prof, topo, min_accuracy=ACC)
    r = Replanner(prof, topo, start, min_accuracy=ACC, dwell_s=0.0, min_gain=0.0)
    sw = r.observe(0, 0.2, topo.links[0].propagation_ms, now=1.0)
    slow = _with_link(topo, 0, 0.2, topo.links[0].propagation_ms)
    best = _brute(prof, slow, prof.thresholds.tolist())
    assert sw is not None and not same_configuration(sw.old, sw.new)
    assert sw.new_latency_s == pytest.approx(best[0], rel=1e-9)
    assert sw.new_latency_s < sw.old_latency_s
    assert r.current is sw.new and r.stats.switches == 1 and sw.replan_s > 0


def test_noise_below_the_change_fraction_never_replans(prof, topo):
    start = plan(prof, topo, min_accuracy=ACC)
    r = Replanner(prof, topo, start, min_accuracy=ACC, change=0.2, dwell_s=0.0)
    bw, ms = topo.links[0].bandwidth_mbps, topo.links[0].propagation_ms
    for i, f in enumerate([1.1, 0.9, 1.15, 0.85, 1.0] * 5):
        assert r.observe(0, bw * f, ms, now=float(i)) is None
    assert r.stats.replans == 0


def test_dwell_time_and_gain_hysteresis(prof, topo):
    start = plan(prof, topo, min_accuracy=ACC)
    bw, ms = topo.links[0].bandwidth_mbps, topo.links[0].propagation_ms
    r = Replanner(prof, topo, start, min_accuracy=ACC, dwell_s=5.0, min_gain=0.0)
    r.observe(0, bw, ms, now=0.0)
    assert r.observe(0, 0.2, ms, now=1.0) is None  # in force for 1 s < dwell
    assert r.stats.replans == 0
    assert r.observe(0, 0.2, ms, now=6.0) is not None
    assert r.observe(0, bw, ms, now=7.0) is None  # back, but within the dwell time again
    assert r.observe(0, bw, ms, now=11.5) is not None and same_configuration(r.current, start)
    never = Replanner(prof, topo, start, min_accuracy=ACC, dwell_s=0.0, min_gain=0.999)
    assert never.observe(0, 0.2, ms, now=1.0) is None and never.stats.replans == 1


def test_candidates_restrict_the_choice_to_what_the_bundle_carries(prof, topo):
    ms = topo.links[0].propagation_ms
    cands = candidate_plans(prof, topo, 0, [0.1, 0.3, 1, 3, 10, 30, 100, 400], min_accuracy=ACC)
    assert len(cands) >= 2
    assert all(not same_configuration(a, b) for a, b in itertools.combinations(cands, 2))
    r = Replanner(prof, topo, cands[-1], min_accuracy=ACC, dwell_s=0.0, min_gain=0.0, candidates=cands)
    for bw in (0.15, 2.0, 250.0):
        r.observe(0, bw, ms, now=bw)
        here = _with_link(topo, 0, bw, ms)
        lat = [evaluate(prof, here, c.threshold, [q.last_block for q in c.partitions],
                        [q.tier for q in c.partitions]) for c in cands]  # fmt: skip
        ok = [e.latency_s for e in lat if e.accuracy >= ACC - 1e-12]
        mine = evaluate(prof, here, r.current.threshold, [q.last_block for q in r.current.partitions],
                        [q.tier for q in r.current.partitions]).latency_s  # fmt: skip
        assert mine == pytest.approx(min(ok), rel=1e-12)
        # and the full search is never worse than the candidates
        assert plan(prof, here, min_accuracy=ACC).estimate.latency_s <= mine + 1e-12


def test_bad_arguments(prof, topo):
    start = plan(prof, topo, min_accuracy=ACC)
    with pytest.raises(TypeError, match="current"):
        Replanner(prof, topo, "plan.json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_gain"):
        Replanner(prof, topo, start, min_gain=1.0)
    with pytest.raises(ValueError, match="dwell_s"):
        Replanner(prof, topo, start, dwell_s=-1)
    with pytest.raises(ValueError, match="candidates"):
        Replanner(prof, topo, start, candidates=[])
    r = Replanner(prof, topo, start)
    with pytest.raises(ValueError, match="link must be an index in 0..1"):
        r.observe(2, 10, 1)
    with pytest.raises(ValueError, match="bandwidth"):
        r.observe(0, 0, 1)
    with pytest.raises(ValueError, match="link must be"):
        candidate_plans(prof, topo, 5, [1.0])
    with pytest.raises(ValueError, match="at least one"):
        candidate_plans(prof, topo, 0, [])
