"""The files of docs/spec.md as dataclasses: round trips, schema checks, clear errors, atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from earlyexit.formats import (
    Estimate,
    Manifest,
    ManifestPartition,
    PartitionPlan,
    Plan,
    Profile,
    Topology,
    atomic_write_text,
    digest,
)
from earlyexit.planner.synthetic import synthetic_profile

BD = {"compute": 0.1, "serialize": 0.01, "transmit": 0.02, "propagate": 0.03}


def _plan(**kw):
    base = dict(threshold=0.4, partitions=(PartitionPlan(1, 3, 0, "edge"), PartitionPlan(4, 9, 2, "cloud")),
                estimate=Estimate(0.16, 0.91, (0.7, 0.3), BD), constraint={"min_accuracy": 0.9},
                profile_digest="sha256:aa", topology_digest="sha256:bb")
    base.update(kw)
    return Plan(**base)


def test_profile_round_trip(tmp_path):
    p = synthetic_profile(6, ("edge", "cloud"), num_samples=30)
    path = tmp_path / "profile.json"
    p.save(path)
    q = Profile.load(path)
    assert q.to_dict() == p.to_dict()
    assert np.isnan(q.devices["edge"].partition_time_s[3, 1])  # lower triangle: null in JSON
    raw = json.loads(path.read_text())
    assert raw["schema"] == "earlyexit.profile/1" and raw["devices"]["edge"]["partition_time_s"][1][0] is None
    assert q.samples is not None and q.samples.correct.dtype == bool
    assert q.digest() == p.digest()


def test_profile_errors_name_the_field():
    d = synthetic_profile(4, ("edge",)).to_dict()
    bad = {**d, "schema": "earlyexit.profile/9"}
    with pytest.raises(ValueError, match=r"profile.schema: unknown schema"):
        Profile.from_dict(bad)
    bad = {**d, "exit_rate": [[0.5] * 3] * 11}
    with pytest.raises(ValueError, match=r"profile.exit_rate: expected shape 11 x 4"):
        Profile.from_dict(bad)
    bad = {**d, "branch_accuracy": [0.5, 1.5, 0.2, 0.1]}
    with pytest.raises(ValueError, match=r"profile.branch_accuracy: values must be <= 1.0"):
        Profile.from_dict(bad)
    dev = dict(d["devices"]["edge"])
    dev["serialize_s"] = [0.0] * 3
    with pytest.raises(ValueError, match=r"devices\['edge'\].serialize_s: expected shape 5"):
        Profile.from_dict({**d, "devices": {"edge": dev}})
    dev = dict(d["devices"]["edge"])
    pt = [list(r) for r in dev["partition_time_s"]]
    pt[0][2] = None
    with pytest.raises(ValueError, match=r"partition_time_s\[0\]\[2\] \(blocks 1..3\): missing"):
        Profile.from_dict({**d, "devices": {"edge": {**dev, "partition_time_s": pt}}})
    with pytest.raises(ValueError, match="profile.model: missing"):
        Profile.from_dict({k: v for k, v in d.items() if k != "model"})
    with pytest.raises(TypeError, match="profile.num_blocks: expected an integer"):
        Profile.from_dict({**d, "num_blocks": "four"})


def test_topology_yaml_and_errors(tmp_path):
    text = """
schema: earlyexit.topology/1
tiers: [{name: edge, device: pi}, {name: cloud, device: gpu, slowdown: 0.5}]
links: [{bandwidth_mbps: 10, propagation_ms: 20}]
destination: 1
"""
    path = tmp_path / "t.yaml"
    path.write_text(text)
    t = Topology.load(path)
    assert t.destination == 1 and t.mtu_bytes == 1500 and t.tiers[1].slowdown == 0.5
    t.save(tmp_path / "u.yaml")
    assert Topology.load(tmp_path / "u.yaml") == t
    d = t.to_dict()
    with pytest.raises(ValueError, match=r"topology.links: expected 1 links for 2 tiers"):
        Topology.from_dict({**d, "links": []})
    with pytest.raises(ValueError, match=r"topology.links\[0\]: link.bandwidth_mbps: must be > 0"):
        Topology.from_dict({**d, "links": [{"bandwidth_mbps": 0, "propagation_ms": 1}]})
    with pytest.raises(ValueError, match=r"topology.destination: tier index must be in 0..1"):
        Topology.from_dict({**d, "destination": 2})
    with pytest.raises(ValueError, match=r"topology.tiers\[0\]: unknown field\(s\) \['speed'\]"):
        Topology.from_dict({**d, "tiers": [{"name": "a", "device": "b", "speed": 2}, d["tiers"][1]]})
    with pytest.raises(ValueError, match="topology.schema: missing"):
        Topology.from_dict({k: v for k, v in d.items() if k != "schema"})
    with pytest.raises(FileNotFoundError):
        Topology.load(tmp_path / "none.yaml")


def test_plan_json_round_trip_and_checks(tmp_path):
    p = _plan()
    assert Plan.from_json(p.to_json()) == p
    p.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == p
    assert p.cut_points == (3, 9) and p.tier_indices == (0, 2)
    with pytest.raises(ValueError, match="do not continue the previous partition"):
        _plan(partitions=(PartitionPlan(1, 3, 0, "e"), PartitionPlan(5, 9, 2, "c")))
    with pytest.raises(ValueError, match="tiers must be distinct"):
        _plan(partitions=(PartitionPlan(1, 3, 0, "e"), PartitionPlan(4, 9, 0, "c")))
    with pytest.raises(ValueError, match="plan.estimator"):
        _plan(estimator="magic")
    d = p.to_dict()
    del d["estimate"]["breakdown_s"]["transmit"]
    with pytest.raises(ValueError, match=r"breakdown_s: missing key\(s\) \['transmit'\]"):
        Plan.from_dict(d)
    with pytest.raises(ValueError, match="plan.schema: unknown schema"):
        Plan.from_dict({**p.to_dict(), "schema": "earlyexit.plan/2"})


def test_manifest_round_trip(tmp_path):
    plan = _plan()
    parts = (ManifestPartition(1, {"onnx": "partition_1.onnx", "torchscript": "partition_1.pt"}, "input",
                               ("logits", "entropy", "features"), (None, 3, 32, 32),
                               {"logits": (None, 10)}),
             ManifestPartition(2, {"onnx": "partition_2.onnx"}, "features", ("logits", "entropy")))
    m = Manifest(plan=plan, class_names=tuple("abcdefghij"), input_shape=(3, 32, 32), partitions=parts,
                 normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, temperatures=(1.0, 1.5))
    m.save(tmp_path)
    assert (tmp_path / "manifest.json").exists()
    back = Manifest.load(tmp_path)
    assert back.to_dict() == m.to_dict() and back.threshold == 0.4
    with pytest.raises(ValueError, match="expected 2 entries"):
        Manifest(plan=plan, class_names=("a",), input_shape=(1,), partitions=parts[:1])


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(tmp_path) == ["x.json"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "no" / "x.json", "z")


def test_digest_is_canonical():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 1), st.lists(st.integers(1, 5), min_size=1, max_size=4, unique=True),
       st.floats(0, 10, allow_nan=False), st.floats(0, 1))
def test_plan_round_trip_property(threshold, sizes, lat, acc):
    parts, first = [], 1
    for k, size in enumerate(sizes):
        parts.append(PartitionPlan(first, first + size - 1, k, f"t{k}"))
        first += size
    ef = tuple([1.0 / len(parts)] * len(parts))
    p = Plan(threshold, tuple(parts), Estimate(lat, acc, ef, BD))
    assert Plan.from_json(p.to_json()) == p


def test_atomic_writes_follow_the_umask_and_refuse_directories(tmp_path):
    import os

    from earlyexit.formats import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write_text(tmp_path / "d", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "d"]


@pytest.mark.parametrize("key", ["hop_s", "link_hop_s"])
def test_hop_s_optional_round_trip_and_checked(key):
    """``hop_s`` (the runtime's per-hand-off cost) and ``link_hop_s`` (what crossing a link
    adds): absent stays absent, set round-trips, bad is named."""
    p = synthetic_profile(4, ("edge",))
    old = p.to_dict()
    assert key not in old["devices"]["edge"]  # profiles without it are written as before
    assert getattr(Profile.from_dict(old).devices["edge"], key) is None
    assert Profile.from_dict(old).digest() == p.digest()
    d = json.loads(json.dumps(old))
    d["devices"]["edge"][key] = 0.00041
    q = Profile.from_dict(d)
    assert getattr(q.devices["edge"], key) == 0.00041
    assert Profile.from_dict(q.to_dict()).to_dict()["devices"]["edge"][key] == 0.00041
    assert q.digest() != p.digest()
    d["devices"]["edge"][key] = -1e-3
    with pytest.raises(ValueError, match=rf"profile.devices\['edge'\].{key}: must be >= 0.0"):
        Profile.from_dict(d)
    d["devices"]["edge"][key] = "fast"
    with pytest.raises(TypeError, match=rf"{key}: expected a number"):
        Profile.from_dict(d)


def test_idle_curve_wake_times_optional_round_trip_and_checked():
    """An idle curve's ``wake_s``: absent stays absent (same digest), set round-trips,
    a negative or mis-sized one is named with what is valid."""
    p = synthetic_profile(4, ("edge",))
    d = json.loads(json.dumps(p.to_dict()))
    d["devices"]["edge"]["idle_curve"] = {"gap_s": [0.01, 0.1], "factor": [1.2, 1.5]}
    q = Profile.from_dict(d)
    assert "wake_s" not in q.to_dict()["devices"]["edge"]["idle_curve"]
    d["devices"]["edge"]["idle_curve"]["wake_s"] = [0.0002, 0.0005]
    r = Profile.from_dict(d)
    assert Profile.from_dict(r.to_dict()).devices["edge"].idle_curve["wake_s"] == [0.0002, 0.0005]
    assert r.digest() != q.digest()
    d["devices"]["edge"]["idle_curve"]["wake_s"] = [-0.001, 0.0005]
    with pytest.raises(ValueError, match=r"idle_curve.wake_s.*>= 0"):
        Profile.from_dict(d)
    d["devices"]["edge"]["idle_curve"]["wake_s"] = [0.001]
    with pytest.raises(ValueError, match=r"idle_curve.wake_s"):
        Profile.from_dict(d)
    d["devices"]["edge"]["idle_curve"] = {"gap_s": [0.01], "factor": [1.2], "wake": [0.1]}
    with pytest.raises(
        ValueError, match=r"unknown field\(s\) \['wake'\]; valid: gap_s, factor, wake_s, cold_s"
    ):
        Profile.from_dict(d)


def test_link_idle_curve_optional_round_trip_and_checked():
    """``link_idle_curve``: absent stays absent (old profiles keep their digest), set
    round-trips, and is checked as an idle curve, named as itself."""
    p = synthetic_profile(4, ("edge",))
    d = json.loads(json.dumps(p.to_dict()))
    assert "link_idle_curve" not in d["devices"]["edge"]
    assert Profile.from_dict(d).devices["edge"].link_idle_curve is None
    assert Profile.from_dict(d).digest() == p.digest()
    curve = {"gap_s": [0.01, 0.1], "factor": [1.5, 1.8], "wake_s": [0.0001, 0.0003]}
    d["devices"]["edge"]["link_idle_curve"] = curve
    q = Profile.from_dict(d)
    assert Profile.from_dict(q.to_dict()).devices["edge"].link_idle_curve == curve
    assert q.devices["edge"].idle_curve == p.devices["edge"].idle_curve
    assert q.digest() != p.digest()
    d["devices"]["edge"]["link_idle_curve"] = {"gap_s": [0.01, 0.1], "factor": [0.9, 1.2]}
    with pytest.raises(ValueError, match=r"edge'\]\.link_idle_curve\.factor.*>= 1"):
        Profile.from_dict(d)
    d["devices"]["edge"]["link_idle_curve"] = [1.2]
    with pytest.raises(TypeError, match=r"link_idle_curve"):
        Profile.from_dict(d)


def test_client_curve_optional_round_trip_and_checked():
    """``client_curve``: absent stays absent (the digest too), set round-trips, and a
    bad one is named with what is valid."""
    p = synthetic_profile(4, ("edge",))
    d = json.loads(json.dumps(p.to_dict()))
    assert "client_curve" not in d["devices"]["edge"]
    assert Profile.from_dict(d).devices["edge"].client_curve is None
    assert Profile.from_dict(d).digest() == p.digest()
    curve = {"wait_s": [0.001, 0.01], "encode_s": [1e-5, 2e-5], "decode_s": [4e-5, 9e-5]}
    d["devices"]["edge"]["client_curve"] = curve
    q = Profile.from_dict(d)
    assert Profile.from_dict(q.to_dict()).devices["edge"].client_curve == curve
    assert q.digest() != p.digest()
    bad = [
        ({**curve, "decode_s": [9e-5, 4e-5]}, ValueError, r"client_curve\.decode_s.*never decrease"),
        ({**curve, "wait_s": [0.01, 0.001]}, ValueError, r"client_curve\.wait_s.*increasing"),
        ({**curve, "encode_s": [1e-5]}, ValueError, r"client_curve\.encode_s"),
        ({**curve, "cpu_s": [1, 2]}, ValueError, r"unknown field.*valid: wait_s, encode_s, decode_s"),
        ([0.001], TypeError, r"client_curve"),
    ]
    for raw, err, match in bad:
        d["devices"]["edge"]["client_curve"] = raw
        with pytest.raises(err, match=match):
            Profile.from_dict(d)


def test_estimate_overhead_optional():
    """Plans made before the overhead term have no ``breakdown_s.overhead``; new ones round-trip it."""
    old = Estimate(0.16, 0.91, (0.7, 0.3), BD)
    assert "overhead" not in old.to_dict()["breakdown_s"]
    assert Estimate.from_dict(old.to_dict()) == old
    new = Estimate(0.17, 0.91, (0.7, 0.3), {**BD, "overhead": 0.01})
    assert new.to_dict()["breakdown_s"]["overhead"] == 0.01
    assert Estimate.from_dict(new.to_dict()) == new
    assert Plan.from_json(_plan(estimate=new).to_json()).estimate.breakdown_s["overhead"] == 0.01
