"""A 3-tier deployment as files: the demo's shipped checkpoint cut in three on PORTEND's topology.

``portend-aws`` (edge, base station, cloud) with slowdowns 4, 2, 1 and node
labels on two tiers, a profile of one device (synthetic: profiling takes minutes),
the plan (blocks 1-3 on the edge, 4-6 on the base station, 7-10 in the cloud)
and its ONNX bundle (exported once per session, about 20 s), plus inputs chosen
so that every exit is taken, and what ``BundleSession.predict`` says of them.
"""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit.formats import Topology

DEVICE = "cpu-1thread"
LABELS = {
    "edge": {"kubernetes.io/arch": "arm64", "earlyexit/tier": "edge"},
    "cloud": {"earlyexit/tier": "cloud"},
}


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory):
    """``{"bundle", "plan", "topology", "profile"}`` paths of the demo's 3-tier plan."""
    pytest.importorskip("torch")  # the export only; everything under test is torch-free
    import earlyexit
    from earlyexit._demo import DEFAULT_CHECKPOINT
    from earlyexit.export import export_bundle
    from earlyexit.planner import bind_devices, load_builtin_topology
    from earlyexit.planner.synthetic import synthetic_profile

    out = tmp_path_factory.mktemp("demo")
    topo = bind_devices(load_builtin_topology("portend-aws"), dict.fromkeys(
        ("a1.medium", "m4.large", "g4dn.xlarge"), DEVICE))  # fmt: skip
    data = topo.to_dict()
    for tier, slowdown in zip(data["tiers"], (4.0, 2.0, 1.0), strict=True):
        tier["slowdown"] = slowdown
    topo = Topology.from_dict(data)
    profile = synthetic_profile(10, devices=(DEVICE,), model="resnet20", dataset="fashion-mnist")
    plan = earlyexit.plan(profile, topo, num_partitions=3, cut_points=[3, 6, 10], thresholds=[0.5])
    assert plan.tier_indices == (0, 1, 2)
    data = topo.to_dict()
    for tier in data["tiers"]:
        if tier["name"] in LABELS:
            tier["labels"] = LABELS[tier["name"]]
    Topology.from_dict(data).save(out / "topology.yaml")
    profile.save(out / "profile.json")
    plan.save(out / "plan.json")
    model = earlyexit.load(str(DEFAULT_CHECKPOINT)).eval()
    x = np.random.default_rng(1).standard_normal((8, 1, 28, 28)).astype(np.float32)
    export_bundle(model, plan, out / "bundle", formats="onnx", verify_data=x)
    return {k: out / n for k, n in (("bundle", "bundle"), ("plan", "plan.json"),
                                    ("topology", "topology.yaml"), ("profile", "profile.json"))}  # fmt: skip


@pytest.fixture(scope="session")
def samples(demo_files):
    """``(x, want)``: 24 inputs, 8 taking each exit, and ``BundleSession.predict`` of them."""
    from earlyexit.runtime.session import BundleSession

    session = BundleSession(demo_files["bundle"])
    rng = np.random.default_rng(0)
    pool = np.concatenate([rng.standard_normal((96, 1, 28, 28)) * s for s in (0.1, 0.2, 0.3)])
    pool = pool.astype(np.float32)
    exits = session.predict(pool)["exit_partition"]
    pick = np.concatenate([np.flatnonzero(exits == k)[:8] for k in range(3)])
    assert len(pick) == 24, np.bincount(exits, minlength=3)  # the pool reaches every exit
    x = pool[np.sort(pick)]
    return x, session.predict(x)
