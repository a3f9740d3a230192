"""The runtime-overhead term of the latency model: zero is PORTEND's model, non-zero stays exact."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from earlyexit.formats import Link, Profile, Tier, Topology
from earlyexit.planner.bruteforce import brute_force_best, brute_force_pareto
from earlyexit.planner.latency import CostModel, evaluate
from earlyexit.planner.search import search
from earlyexit.planner.space import make_space
from earlyexit.planner.synthetic import synthetic_profile

DEVICES = ("a1.medium", "m4.large", "g4dn.xlarge")


def _topo(dest: int = 0) -> Topology:
    tiers = tuple(
        Tier(f"t{j}", d, s) for j, (d, s) in enumerate(zip(DEVICES, (2.0, 1.0, 0.5), strict=True))
    )
    return Topology(tiers, (Link(10, 20), Link(400, 40)), mtu_bytes=9000, destination=dest)


def _with_hops(profile: Profile, hops: dict[str, float | None]) -> Profile:
    out = copy.deepcopy(profile)
    for name, h in hops.items():
        out.devices[name].hop_s = h
    return out


@pytest.fixture(scope="module")
def prof() -> Profile:
    return synthetic_profile(8, DEVICES, num_samples=80, seed=5)


def test_absent_and_zero_hop_are_portends_model(prof):
    """hop_s absent (old profiles) or 0: every cost array is bit-identical, no overhead."""
    assert all(d.hop_s is None for d in prof.devices.values())
    zero = _with_hops(prof, dict.fromkeys(DEVICES, 0.0))
    a, b = CostModel(prof, _topo()), CostModel(zero, _topo())
    assert np.array_equal(a.x, b.x) and np.array_equal(a.r, b.r)
    assert np.array_equal(a.x, a.ser + a.txm + a.prop[:, :, None])  # the paper's terms only
    est = evaluate(prof, _topo(), float(prof.thresholds[4]), [3, 8], [0, 2])
    assert est.breakdown_s["overhead"] == 0.0
    assert (
        est.latency_s
        == evaluate(zero, _topo(), float(prof.thresholds[4]), [3, 8], [0, 2]).latency_s
    )


@pytest.mark.parametrize("dest", [0, 2])
def test_overhead_is_charged_per_hand_off(prof, dest):
    """Each hand-off a -> b costs (h_a + h_b)/2: the input once, a forward with S_k, a result with E_k."""
    h = {"a1.medium": 0.004, "m4.large": 0.001, "g4dn.xlarge": 0.0005}
    hopped = _with_hops(prof, h)
    topo = _topo(dest)
    t, cuts, tiers = float(prof.thresholds[5]), [2, 5, 8], [0, 1, 2]
    base = evaluate(prof, topo, t, cuts, tiers)
    est = evaluate(hopped, topo, t, cuts, tiers)
    e = est.exit_fractions
    s = [1 - sum(e[: k + 1]) for k in range(3)]
    hv = [h[d] for d in DEVICES]

    def pair(a: int, b: int) -> float:
        return (hv[a] + hv[b]) / 2

    expect = pair(0, 0)  # source (tier 0) -> first partition on tier 0
    expect += s[0] * pair(0, 1) + s[1] * pair(1, 2)
    expect += sum(e[k] * pair(tiers[k], dest) for k in range(3))
    assert est.breakdown_s["overhead"] == pytest.approx(expect, rel=1e-12)
    assert est.latency_s - base.latency_s == pytest.approx(expect, rel=1e-9)
    assert sum(est.breakdown_s.values()) == pytest.approx(est.latency_s, rel=1e-12)
    # the other terms do not move: the slowdown does not scale the hop cost
    for k in ("compute", "serialize", "transmit", "propagate"):
        assert est.breakdown_s[k] == pytest.approx(base.breakdown_s[k], rel=1e-12)


def test_no_early_exit_makes_l_plus_one_hand_offs(prof):
    """T = 0: every sample makes exactly L + 1 hand-offs (what the measurement deploys)."""
    hopped = _with_hops(prof, dict.fromkeys(DEVICES, 0.002))
    topo = Topology(
        tuple(Tier(f"t{j}", d) for j, d in enumerate(DEVICES)), (Link(1e4, 0), Link(1e4, 0))
    )
    for cuts, tiers in (([8], [0]), ([4, 8], [0, 1]), ([2, 5, 8], [0, 1, 2])):
        est = evaluate(hopped, topo, 0.0, cuts, tiers)
        assert est.breakdown_s["overhead"] == pytest.approx(0.002 * (len(cuts) + 1))


def test_a_costly_hop_moves_the_optimum(prof):
    """The search sees the term: a device whose hand-offs are costly is avoided, as brute force says."""
    cm0 = CostModel(prof, _topo())
    best0 = search(cm0, make_space(cm0), "portend", "min_latency", 0.7)[0]
    assert best0.tiers == (1,)  # without the term: all on the base station
    hopped = _with_hops(prof, {"m4.large": 1.0})  # 1 s per hand-off there dwarfs the rest
    cm = CostModel(hopped, _topo())
    best = search(cm, make_space(cm), "portend", "min_latency", 0.7)[0]
    ref = brute_force_best(cm, make_space(cm), "portend", "min_latency", 0.7)
    assert best.key == ref[2] and best.latency == pytest.approx(ref[0], abs=1e-9)
    assert 1 not in best.tiers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nonzero_hops_stay_exact_on_mid_size_profiles(seed):
    """10 blocks, 4 tiers, random per-device hop costs: P_lat, P_acc and Pareto equal brute force."""
    devs = ("a1.medium", "m4.large", "g4dn.xlarge", "reference")
    profile = synthetic_profile(10, devs, thresholds=5, num_samples=60, seed=seed)
    rng = np.random.default_rng(seed)
    profile = _with_hops(profile, {d: float(rng.uniform(0, 0.02)) for d in devs})
    tiers = tuple(Tier(f"t{j}", d) for j, d in enumerate(devs))
    topo = Topology(tiers, (Link(10, 20), Link(400, 40), Link(1000, 5)), mtu_bytes=9000)
    cm = CostModel(profile, topo)
    space = make_space(cm)
    for estimator in ("portend", "exact"):
        got = search(cm, space, estimator, "min_latency", 0.7)[0]
        ref = brute_force_best(cm, space, estimator, "min_latency", 0.7)
        assert got.key == ref[2] and got.latency == pytest.approx(ref[0], abs=1e-9)
    front = search(cm, space, "portend", "pareto", None)
    assert [g.key for g in front] == [r[2] for r in brute_force_pareto(cm, space, "portend")]


def test_synthetic_profile_hop_s():
    p = synthetic_profile(4, {"fast": 1.0, "slow": 4.0}, hop_s=1e-3)
    assert p.devices["fast"].hop_s == pytest.approx(1e-3)
    # scaled by the square root of the slowness, as (de)serializing is
    assert p.devices["slow"].hop_s == pytest.approx(2e-3)
    assert all(d.hop_s is None for d in synthetic_profile(4).devices.values())
    with pytest.raises(ValueError, match="hop_s: must be >= 0"):
        synthetic_profile(4, hop_s=-1.0)


def test_cli_plan_reports_the_overhead(tmp_path, capsys):
    """``earlyexit plan`` writes breakdown_s.overhead and prints it when the profile has hop costs."""
    import json

    from earlyexit.cli import main

    for hop, shown in ((None, False), (3e-4, True)):
        path = tmp_path / f"p{hop}.json"
        synthetic_profile(6, num_samples=40, hop_s=hop).save(path)
        args = ["plan", "--profile", str(path), "--topology", "portend-aws"]
        args += ["--min-accuracy", "0.6"]
        assert main(args) == 0
        assert ("overhead" in capsys.readouterr().out) is shown
        assert main([*args, "--json"]) == 0
        est = json.loads(capsys.readouterr().out)["estimate"]
        assert (est["breakdown_s"]["overhead"] > 0) is shown
        assert sum(est["breakdown_s"].values()) == pytest.approx(est["latency_s"], rel=1e-9)


def _with_cpu(profile: Profile, cpu: dict[str, float | None]) -> Profile:
    out = copy.deepcopy(profile)
    for name, c in cpu.items():
        out.devices[name].hop_cpu_s = c
    return out


@pytest.mark.parametrize("dest", [0, 2])
def test_the_runtime_cpu_per_partition_run_is_stretched_by_the_slowdown(prof, dest):
    """Each partition run on tier w adds (slowdown_w - 1) hop_cpu_s (at least -hop_s) per
    sample that reaches it; hand-offs cost hop_s unstretched. Absent or 0 changes nothing."""
    h = {"a1.medium": 0.004, "m4.large": 0.001, "g4dn.xlarge": 0.0005}
    c = {"a1.medium": 0.003, "m4.large": 0.0008, "g4dn.xlarge": 0.0004}
    hopped = _with_hops(prof, h)
    topo = _topo(dest)  # slowdowns 2, 1, 0.5
    t, cuts, tiers = float(prof.thresholds[5]), [2, 5, 8], [0, 1, 2]
    base = evaluate(hopped, topo, t, cuts, tiers)
    zero = evaluate(_with_cpu(hopped, dict.fromkeys(DEVICES, 0.0)), topo, t, cuts, tiers)
    assert zero.latency_s == base.latency_s and zero.breakdown_s == base.breakdown_s
    est = evaluate(_with_cpu(hopped, c), topo, t, cuts, tiers)
    slow = [tier.slowdown for tier in topo.tiers]
    hv = [h[d] for d in DEVICES]
    run = [max(-h[d], (s - 1) * c[d]) for d, s in zip(DEVICES, slow, strict=True)]
    e = est.exit_fractions
    s_ = [1 - sum(e[: k + 1]) for k in range(3)]

    def pair(a: int, b: int) -> float:
        return (hv[a] + hv[b]) / 2

    expect = pair(0, 0) + s_[0] * pair(0, 1) + s_[1] * pair(1, 2)
    expect += sum(e[k] * pair(tiers[k], dest) for k in range(3))
    assert base.breakdown_s["overhead"] == pytest.approx(expect, rel=1e-12)
    expect += sum((s_[k] + e[k]) * run[tiers[k]] for k in range(3))
    assert est.breakdown_s["overhead"] == pytest.approx(expect, rel=1e-12)
    assert est.latency_s - base.latency_s == pytest.approx(
        sum((s_[k] + e[k]) * run[tiers[k]] for k in range(3)), rel=1e-9
    )
    for k in ("compute", "serialize", "transmit", "propagate"):
        assert est.breakdown_s[k] == pytest.approx(base.breakdown_s[k], rel=1e-12)
    # slowdown 1 everywhere: the CPU part changes nothing
    flat = Topology(tuple(Tier(f"t{j}", d) for j, d in enumerate(DEVICES)), _topo(dest).links,
                    mtu_bytes=9000, destination=dest)  # fmt: skip
    assert evaluate(_with_cpu(hopped, c), flat, t, cuts, tiers).latency_s == pytest.approx(
        evaluate(hopped, flat, t, cuts, tiers).latency_s, rel=1e-15
    )


@pytest.mark.parametrize("dest", [0, 2])
def test_a_link_crossing_costs_each_end_half_its_link_hop(prof, dest):
    """link_hop_s is charged only on hand-offs between different tiers, half to each end."""
    lk = {"a1.medium": 0.003, "m4.large": 0.0007, "g4dn.xlarge": 0.0002}
    linked = copy.deepcopy(prof)
    for name, v in lk.items():
        linked.devices[name].link_hop_s = v
    topo = _topo(dest)
    t, cuts, tiers = float(prof.thresholds[5]), [2, 5, 8], [0, 1, 2]
    base, est = evaluate(prof, topo, t, cuts, tiers), evaluate(linked, topo, t, cuts, tiers)
    e = est.exit_fractions
    s = [1 - sum(e[: k + 1]) for k in range(3)]
    lv = [lk[d] for d in DEVICES]

    def cross(a: int, b: int) -> float:
        return 0.0 if a == b else (lv[a] + lv[b]) / 2

    expect = cross(0, 0) + s[0] * cross(0, 1) + s[1] * cross(1, 2)  # source = tier 0
    expect += sum(e[k] * cross(tiers[k], dest) for k in range(3))
    assert est.breakdown_s["overhead"] - base.breakdown_s["overhead"] == pytest.approx(expect)
    assert est.latency_s - base.latency_s == pytest.approx(expect, rel=1e-9)
    # one tier, no crossing: nothing changes
    one = ([8], [0])
    assert (
        evaluate(linked, _topo(0), 0.0, *one).latency_s
        == evaluate(prof, _topo(0), 0.0, *one).latency_s
    )


@pytest.mark.parametrize("seed", [3, 4])
def test_stretched_hops_stay_exact(seed):
    """Random hop and CPU costs on slowed tiers: P_lat and Pareto equal brute force."""
    devs = ("a1.medium", "m4.large", "g4dn.xlarge")
    profile = synthetic_profile(9, devs, thresholds=5, num_samples=60, seed=seed)
    rng = np.random.default_rng(seed)
    profile = _with_hops(profile, {d: float(rng.uniform(0, 0.02)) for d in devs})
    profile = _with_cpu(profile, {d: float(rng.uniform(0, 0.02)) for d in devs})
    for d in devs:  # and what crossing a link adds
        profile.devices[d].link_hop_s = float(rng.uniform(0, 0.02))
    tiers = tuple(
        Tier(f"t{j}", d, s) for j, (d, s) in enumerate(zip(devs, (4.0, 2.0, 1.0), strict=True))
    )
    cm = CostModel(profile, Topology(tiers, (Link(10, 20), Link(400, 40)), mtu_bytes=9000))
    space = make_space(cm)
    for estimator in ("portend", "exact"):
        got = search(cm, space, estimator, "min_latency", 0.7)[0]
        ref = brute_force_best(cm, space, estimator, "min_latency", 0.7)
        assert got.key == ref[2] and got.latency == pytest.approx(ref[0], abs=1e-9)
    front = search(cm, space, "portend", "pareto", None)
    assert [g.key for g in front] == [r[2] for r in brute_force_pareto(cm, space, "portend")]
