"""Choosing configurations, their clusters, and both estimators' view of them."""

from __future__ import annotations

import pytest

from earlyexit.planner import evaluate
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.planner.topology import resolve_topology
from earlyexit.validation import Config, choose_configs, cluster_of, estimate, estimates


@pytest.fixture(scope="module")
def profile():
    return synthetic_profile(6, num_samples=200)


def test_choose_configs_mixes_pareto_and_others(profile):
    cfgs = choose_configs(profile, "portend-aws", 12, seed=1)
    assert len(cfgs) == 12
    assert len({c.key for c in cfgs}) == 12
    assert 1 <= sum(c.pareto for c in cfgs) <= 6 and not all(c.pareto for c in cfgs)
    assert [c.pareto for c in cfgs] == sorted((c.pareto for c in cfgs), reverse=True)
    for c in cfgs:
        assert list(c.cuts) == sorted(set(c.cuts)) and 1 <= c.cuts[-1] <= 6
        assert len(c.tiers) == len(c.cuts) == len(set(c.tiers)) and max(c.tiers) < 3
    assert choose_configs(profile, "portend-aws", 12, seed=1) == cfgs  # seeded
    with pytest.raises(ValueError, match="k must be"):
        choose_configs(profile, "portend-aws", 0)


def test_cluster_of():
    assert cluster_of(Config(0.5, (9,), (0,))) == "edge-only"
    assert cluster_of(Config(0.5, (9,), (2,))) == "cloud"
    assert cluster_of({"tiers": [0, 2]}) == "multi-tier"
    assert cluster_of(Config(0.5, (9,), (2,)), source=2) == "edge-only"  # the source's tier


def test_config_round_trips_and_estimates_match_the_planner(profile):
    c = Config(0.5, (2, 6), (0, 2), True)
    assert Config.from_dict(c.to_dict()) == c
    with pytest.raises(TypeError, match="mapping"):
        Config.from_dict([0.5])  # type: ignore[arg-type]
    topo = resolve_topology("portend-aws")
    typed, plain = estimates(profile, topo, c), estimate(profile, topo, c)
    assert set(typed) == set(plain) == {"portend", "exact"}
    for name in typed:
        want = evaluate(profile, topo, 0.5, [2, 6], [0, 2], name)
        assert typed[name] == want and plain[name] == want.to_dict()
    no_samples = synthetic_profile(6)
    assert set(estimates(no_samples, topo, c)) == {"portend"}


def test_estimated_split_matches_the_breakdown(profile):
    from earlyexit.formats import Topology
    from earlyexit.validation.results import estimated_split

    topo = resolve_topology("portend-aws").to_dict()
    for tier, s in zip(topo["tiers"], (4.0, 2.0, 1.0), strict=True):
        tier["slowdown"] = s
    topo = Topology.from_dict(topo)
    c = Config(0.5, (2, 6), (0, 2))
    got = estimated_split(profile, topo, c)
    for name, e in estimates(profile, topo, c).items():
        sp = got[name]
        b = e.breakdown_s
        assert sp.full_s == e.latency_s
        assert sp.links_s == pytest.approx(b["transmit"] + b["propagate"], rel=1e-12)
        # at slowdown 1 the compute and (de)serialization shrink; links and overhead do not
        assert 0 < sp.bare_s < sp.no_links_s and sp.slowdown_s > 0
    unit = estimated_split(profile, resolve_topology("portend-aws"), c)
    assert all(v.slowdown_s == pytest.approx(0.0, abs=1e-15) for v in unit.values())


def test_random_configs_cover_every_cluster(profile):
    cfgs = choose_configs(profile, "portend-aws", 12, seed=3)
    others = [c for c in cfgs if not c.pareto]
    got = [cluster_of(c) for c in others]
    assert {"edge-only", "multi-tier", "cloud"} <= set(got)
    assert all(c.threshold == 0.0 for c in others if len(c.cuts) == 1)
    # a single-tier cluster's slope rests on its ends: block 1 alone and the whole network
    for cluster in ("edge-only", "cloud"):
        lengths = {c.cuts[-1] for c in cfgs if cluster_of(c) == cluster}
        assert {1, 6} <= lengths, (cluster, lengths)
    one_tier = choose_configs(synthetic_profile(4, ("reference",)), {"schema": "earlyexit.topology/1",
        "tiers": [{"name": "a", "device": "reference"}], "links": []}, 3, seed=0)  # fmt: skip
    assert all(cluster_of(c) == "edge-only" for c in one_tier) and len(one_tier) <= 4
