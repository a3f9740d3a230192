"""Unit tests of the planner: model, estimators, topologies, API, baselines, what-if, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import earlyexit
from earlyexit.cli import main
from earlyexit.formats import Link, Plan, Tier, Topology
from earlyexit.planner import (
    CostModel,
    baselines,
    bind_devices,
    evaluate,
    list_topologies,
    make_space,
    pareto,
    plan,
    resolve_topology,
    search,
    whatif,
)
from earlyexit.planner.bruteforce import brute_force_best
from earlyexit.planner.estimators import exact_fractions, exit_fractions, portend_fractions
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.planner.whatif import parse_values, set_parameter


@pytest.fixture(scope="module")
def prof():
    return synthetic_profile(12, num_samples=200, seed=3)


# ---------------------------------------------------------------- estimators


def test_portend_fractions_as_written_no_clamping():
    e, s = portend_fractions(np.array([0.6, 0.2, 0.9]), [1, 2, 3])
    assert e == pytest.approx([0.6, -0.4, 0.8])  # not nested: E_2 < 0, kept
    assert s == pytest.approx([0.4, 0.8, 0.0])
    assert portend_fractions(np.array([0.6, 0.2]), [2]) == ([1.0], [0.0])  # L = 1: E_L = 1


def test_exact_fractions_first_confident_branch():
    ent = np.array([[0.1, 0.9, 0.9], [0.9, 0.2, 0.9], [0.5, 0.5, 0.5]])
    cor = np.array([[1, 1, 1], [0, 1, 0], [0, 0, 1]], bool)
    e, s, acc = exact_fractions(ent, cor, 0.3, [1, 2, 3])
    assert e == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert acc == pytest.approx(1.0)


def test_threshold_zero_means_no_early_exit(prof):
    e, _, _ = exit_fractions(prof, 0.0, [3, 7, 12], "portend")
    assert e == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="profile's thresholds"):
        exit_fractions(prof, 0.55, [3], "portend")


def test_exact_needs_samples():
    with pytest.raises(ValueError, match="per-sample record"):
        plan(synthetic_profile(4), "portend-aws", estimator="exact")


# ---------------------------------------------------------------- latency model


def _two_hop(mtu=1500, dest=0):
    return Topology(
        tiers=(Tier("a", "reference"), Tier("b", "reference"), Tier("c", "reference", 2.0)),
        links=(Link(10, 20), Link(400, 40)),
        mtu_bytes=mtu,
        destination=dest,
    )


def test_transfer_fragment_pipelining(prof):
    cm = CostModel(prof, _two_hop())
    bits = cm.bits[3]
    assert cm.txm[0, 1, 3] == pytest.approx(bits / 10e6)  # one hop: exactly bits/BW
    mtu = 1500 * 8
    expect = min(bits, mtu) / 10e6 + min(bits, mtu) / 400e6 + max(0, bits - mtu) / 10e6
    assert cm.txm[0, 2, 3] == pytest.approx(expect)
    assert cm.txm[2, 0, 3] == pytest.approx(expect)  # down the hierarchy too
    assert cm.prop[0, 2] == pytest.approx(0.060)
    assert cm.txm[1, 1, 3] == 0 and cm.prop[1, 1] == 0
    dev = prof.devices["reference"]
    assert cm.x[1, 1, 3] == pytest.approx(dev.serialize_s[3] + dev.deserialize_s[3])
    assert cm.ct[2, 0, 5] == pytest.approx(2.0 * dev.partition_time_s[0, 4])  # slowdown


def test_latency_formula_by_hand(prof):
    topo = _two_hop(dest=1)
    cm = CostModel(prof, topo)
    t = float(prof.thresholds[5])
    est = evaluate(prof, topo, t, [4, 9], [2, 0])
    er = prof.exit_rate[5]
    e1, e2 = er[3], 1 - er[3]
    ref = (
        cm.x[0, 2, 0]
        + cm.ct[2, 0, 4]
        + (1 - e1) * cm.x[2, 0, 4]
        + e1 * cm.r[2]
        + (1 - e1) * cm.ct[0, 4, 9]
        + e2 * cm.r[0]
    )
    assert est.latency_s == pytest.approx(ref)
    assert est.exit_fractions == pytest.approx((e1, e2))
    assert sum(est.breakdown_s.values()) == pytest.approx(est.latency_s)
    assert est.breakdown_s["propagate"] == pytest.approx(
        0.06 + (1 - e1) * 0.06 + e1 * 0.04 + e2 * 0.02
    )


def test_evaluate_rejects_bad_configurations(prof):
    with pytest.raises(ValueError, match="strictly increasing"):
        evaluate(prof, "portend-aws", 0.5, [5, 3], [0, 1])
    with pytest.raises(ValueError, match="distinct"):
        evaluate(prof, "portend-aws", 0.5, [3, 5], [1, 1])
    with pytest.raises(ValueError, match="no such tier"):
        evaluate(prof, "portend-aws", 0.5, [3], ["moon"])
    with pytest.raises(ValueError, match="not in the profile"):
        evaluate(synthetic_profile(4, ("x",)), "portend-aws", 0.5, [3], [0])


# ---------------------------------------------------------------- topologies


def test_builtin_topologies():
    assert list_topologies() == ["iot", "mobile", "pi4-wifi", "portend-aws"]
    from earlyexit.planner import BUILTIN_TOPOLOGIES

    assert list(BUILTIN_TOPOLOGIES) == list_topologies()  # the literal --help shows
    aws = resolve_topology("portend-aws")
    assert [(lk.bandwidth_mbps, lk.propagation_ms) for lk in aws.links] == [(10, 20), (400, 40)]
    assert aws.mtu_bytes == 9000 and aws.num_tiers == 3
    mob = resolve_topology("mobile")
    assert [t.slowdown for t in mob.tiers] == [500, 10, 2.5, 1]
    assert [lk.bandwidth_mbps for lk in mob.links] == [0.5, 10, 500]
    iot = resolve_topology("iot")
    assert [t.slowdown for t in iot.tiers] == [100, 5, 2.5, 1]
    assert [(lk.bandwidth_mbps, lk.propagation_ms) for lk in iot.links] == [
        (10, 10),
        (40, 10),
        (500, 50),
    ]
    with pytest.raises(ValueError, match="valid: iot, mobile, pi4-wifi, portend-aws"):
        resolve_topology("mars")
    assert bind_devices(aws, {"edge": "pi"}).tiers[0].device == "pi"


# ---------------------------------------------------------------- search features


def _random_problem(seed):
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(3, 7)), int(rng.integers(2, 5))
    p = synthetic_profile(
        n,
        {f"d{k}": float(rng.uniform(0.3, 5)) for k in range(m)},
        thresholds=[0.0, 0.4, 0.7],
        seed=seed,
    )
    tiers = tuple(Tier(f"t{j}", f"d{j}", float(rng.choice([0.3, 1.0, 4.0]))) for j in range(m))
    links = tuple(
        Link(float(rng.choice([1, 10, 400])), float(rng.choice([1, 20, 40]))) for _ in range(m - 1)
    )
    topo = Topology(
        tiers, links, source=int(rng.integers(0, m)), destination=int(rng.integers(0, m))
    )
    return p, topo


def test_optimum_covers_non_consecutive_partial_and_remote_destination():
    """Planner == brute force on random problems whose optima use every feature of the space."""
    seen = set()
    for seed in range(60):
        p, topo = _random_problem(seed)
        cm = CostModel(p, topo)
        space = make_space(cm)
        for bound in (0.3, 0.55, 0.7):
            got = search(cm, space, "portend", "min_latency", bound)
            ref = brute_force_best(cm, space, "portend", "min_latency", bound)
            assert (got == []) == (ref is None)
            if ref is None:
                continue
            assert got[0].key == ref[2] and got[0].latency == pytest.approx(ref[0], abs=1e-9)
            d, cuts = got[0].tiers, got[0].cuts
            if any(b < a for a, b in zip(d, d[1:], strict=False)):
                seen.add("down")
            hops = [topo.source, *d]
            if any(abs(b - a) > 1 for a, b in zip(hops, hops[1:], strict=False)):
                seen.add("skip")
            if cuts[-1] < p.num_blocks:
                seen.add("partial")
            if topo.destination != topo.source:
                seen.add("destination")
            if len(cuts) > 1:
                seen.add("multi")
    assert {"down", "skip", "partial", "destination", "multi"} <= seen


def test_hints(prof):
    p = plan(prof, "portend-aws", min_accuracy=0.5, placement=["edge", "cloud"])
    assert p.tier_indices == (0, 2)
    p = plan(prof, "portend-aws", min_accuracy=0.5, exits=[12], num_partitions=2)
    assert p.cut_points[-1] == 12 and len(p.partitions) == 2
    p = plan(prof, "portend-aws", min_accuracy=0.5, cut_points=[3, 6, 9], tiers=[1, 2])
    assert set(p.cut_points) <= {3, 6, 9} and set(p.tier_indices) <= {1, 2}
    p = plan(prof, "portend-aws", thresholds=[0.3])
    assert p.threshold == pytest.approx(0.3) or len(p.partitions) == 1
    with pytest.raises(TypeError, match="valid hints"):
        plan(prof, "portend-aws", partitions=2)
    with pytest.raises(ValueError, match="must be in 1..3"):
        plan(prof, "portend-aws", num_partitions=4)
    with pytest.raises(ValueError, match="leave no configuration"):
        plan(prof, "portend-aws", cut_points=[4], num_partitions=2)


def test_plan_api_paths_and_json(prof, tmp_path):
    path = tmp_path / "profile.json"
    prof.save(path)
    topo_path = tmp_path / "topo.yaml"
    resolve_topology("portend-aws").save(topo_path)
    p1 = earlyexit.plan(str(path), str(topo_path), min_accuracy=0.6)
    p2 = plan(prof, "portend-aws", min_accuracy=0.6)
    assert p1.to_dict() == p2.to_dict()
    assert p1.estimate.accuracy >= 0.6 - 1e-9
    assert p1.profile_digest == prof.digest() and p1.topology_digest.startswith("sha256:")
    assert Plan.from_json(p1.to_json()) == p1
    with pytest.raises(ValueError, match="highest estimated accuracy"):
        plan(prof, "portend-aws", min_accuracy=0.9999)
    with pytest.raises(ValueError, match="not both"):
        plan(prof, "portend-aws", min_accuracy=0.5, max_latency=1.0)
    with pytest.raises(FileNotFoundError):
        plan(tmp_path / "missing.json", "portend-aws")


def test_p_acc_and_pareto_consistent(prof):
    front = pareto(prof, "portend-aws")
    lats = [q.estimate.latency_s for q in front]
    accs = [q.estimate.accuracy for q in front]
    assert lats == sorted(lats) and accs == sorted(accs)
    mid = front[len(front) // 2]
    best = plan(prof, "portend-aws", max_latency=mid.estimate.latency_s)
    assert best.estimate.accuracy == pytest.approx(mid.estimate.accuracy, abs=1e-9)
    fast = plan(prof, "portend-aws", min_accuracy=mid.estimate.accuracy)
    assert fast.estimate.latency_s == pytest.approx(mid.estimate.latency_s, abs=1e-9)


def test_exact_estimator_plan(prof):
    p = plan(prof, "portend-aws", min_accuracy=0.6, estimator="exact")
    est = evaluate(
        prof, "portend-aws", p.threshold, list(p.cut_points), list(p.tier_indices), "exact"
    )
    assert p.estimate == est and est.accuracy >= 0.6 - 1e-9


def test_baselines(prof):
    b = baselines(prof, "portend-aws")
    assert b["edge_only"].tier_indices == (0,) and b["cloud_only"].tier_indices == (2,)
    ns = b["neurosurgeon"]
    assert ns.cut_points[-1] == prof.num_blocks and set(ns.tier_indices) <= {0, 2}
    assert ns.estimate.latency_s <= min(
        b["edge_only"].estimate.latency_s, b["cloud_only"].estimate.latency_s
    )
    for p in range(1, prof.num_blocks):
        assert (
            ns.estimate.latency_s
            <= evaluate(prof, "portend-aws", 0.0, [p, prof.num_blocks], [0, 2]).latency_s
        )
    opt = plan(
        prof, "portend-aws", min_accuracy=float(prof.branch_accuracy[-1]), exits=[prof.num_blocks]
    )
    assert opt.estimate.latency_s <= ns.estimate.latency_s + 1e-12


def test_whatif(prof):
    rows = whatif(prof, "portend-aws", "links[0].bandwidth_mbps", [0.5, 5, 50], min_accuracy=0.6)
    assert [r["value"] for r in rows] == [0.5, 5, 50]
    lat = [r["latency_s"] for r in rows]
    assert lat[0] >= lat[1] >= lat[2]  # more bandwidth never hurts the optimum
    assert parse_values("1:3:3") == [1, 2, 3]
    with pytest.raises(ValueError, match="has bandwidth_mbps, propagation_ms"):
        set_parameter(resolve_topology("portend-aws"), "links[0].color", 1)
    with pytest.raises(ValueError, match="index must be in"):
        set_parameter(resolve_topology("portend-aws"), "links[5].bandwidth_mbps", 1)


def test_whatif_grids_are_bounded(prof):
    from earlyexit.planner.whatif import MAX_VALUES

    assert len(parse_values(f"1:100:{MAX_VALUES}")) == MAX_VALUES
    for text in (f"1:100:{MAX_VALUES + 1}", "1:100:100000000", ",".join(["1"] * (MAX_VALUES + 1))):
        with pytest.raises(ValueError, match=f"at most {MAX_VALUES}"):
            parse_values(text)
    for text in ("1:nan:3", "inf,1", "1:2:0", ""):
        with pytest.raises(ValueError, match="expected start:stop:count"):
            parse_values(text)
    with pytest.raises(ValueError, match=f"at most {MAX_VALUES}"):
        whatif(prof, "portend-aws", "links[0].bandwidth_mbps", [1.0] * (MAX_VALUES + 1))


# ---------------------------------------------------------------- CLI


def test_cli_plan_json_and_table(prof, tmp_path, capsys):
    path = tmp_path / "p.json"
    prof.save(path)
    assert (
        main(
            [
                "plan",
                "--profile",
                str(path),
                "--topology",
                "portend-aws",
                "--min-accuracy",
                "0.6",
                "--json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert Plan.from_json(out) == plan(prof, "portend-aws", min_accuracy=0.6)
    assert json.loads(out)["schema"] == "earlyexit.plan/1"
    assert (
        main(
            [
                "plan",
                "--profile",
                str(path),
                "--topology",
                "portend-aws",
                "--max-latency",
                "0.2",
                "--estimator",
                "exact",
                "--tiers",
                "edge,cloud",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "neurosurgeon" in table and "speed-up" in table and "breakdown" in table
    assert main(["plan", "--profile", str(path), "--topology", "nowhere"]) == 2
    assert "unknown built-in topology" in capsys.readouterr().err


def test_cli_pareto_and_whatif_plots(prof, tmp_path, capsys):
    path = tmp_path / "p.json"
    prof.save(path)
    png = tmp_path / "front.png"
    assert (
        main(["pareto", "--profile", str(path), "--topology", "portend-aws", "--plot", str(png)])
        == 0
    )
    assert png.stat().st_size > 1000
    assert "Pareto-optimal" in capsys.readouterr().out
    png2 = tmp_path / "what.png"
    assert (
        main(
            [
                "whatif",
                "--profile",
                str(path),
                "--topology",
                "portend-aws",
                "--min-accuracy",
                "0.6",
                "--vary",
                "tiers[1].slowdown=1:0.1:3:log",
                "--plot",
                str(png2),
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and png2.stat().st_size > 1000


def test_planner_never_imports_torch(tmp_path):
    code = (
        "import sys, earlyexit\n"
        "from earlyexit.planner.synthetic import synthetic_profile\n"
        "p = synthetic_profile(8, num_samples=20)\n"
        "earlyexit.plan(p, 'portend-aws', min_accuracy=0.5)\n"
        "earlyexit.pareto(p, 'mobile', estimator='exact')\n"
        "import earlyexit.planner._cli, earlyexit.planner.whatif\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
