"""A real exported bundle served by tier workers over emulated links (slow: exports ONNX)."""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit.formats import Estimate, Link, PartitionPlan, Plan, Tier, Topology
from earlyexit.runtime.deployment import deploy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch = pytest.importorskip("torch")
    export = pytest.importorskip("earlyexit.export")
    from earlyexit import backbones
    from earlyexit.surgery import MultiExitModel, decompose

    torch.manual_seed(0)
    model = MultiExitModel(
        decompose(backbones.create("resnet20", num_classes=10)), num_classes=10
    ).eval()
    est = Estimate(
        0.0,
        0.0,
        (0.3, 0.3, 0.4),
        dict.fromkeys(("compute", "serialize", "transmit", "propagate"), 0.0),
    )
    plan = Plan(
        0.9,
        (
            PartitionPlan(1, 3, 0, "edge"),
            PartitionPlan(4, 6, 1, "mid"),
            PartitionPlan(7, 10, 2, "cloud"),
        ),
        est,
    )
    out = tmp_path_factory.mktemp("bundle") / "b"
    export.export_bundle(
        model, plan, out, formats="onnx,torchscript", verify_data=torch.randn(8, 3, 32, 32)
    )
    return out


def test_bundle_over_emulated_links_matches_one_process(bundle):
    from earlyexit.runtime.session import BundleSession

    session = BundleSession(bundle)
    x = np.random.default_rng(0).standard_normal((24, 3, 32, 32)).astype(np.float32)
    _, ent0, feats = session.run_partition(0, x)
    ent1 = session.run_partition(1, feats)[1]
    threshold = float(np.quantile(np.minimum(ent0, ent1), 0.5))  # some samples reach every exit
    want = session.predict(x, threshold)
    topo = Topology(
        tiers=(Tier("edge", "d"), Tier("mid", "d"), Tier("cloud", "d")),
        links=(Link(50.0, 5.0), Link(200.0, 5.0)),
        mtu_bytes=9000,
    )
    with deploy(bundle, threshold=threshold, topology=topo) as d:
        got = d.run(x, one_at_a_time=True, timeout_s=30)
    assert [r.partition for r in got] == want["exit_partition"].tolist()
    assert (
        2 in set(want["exit_partition"].tolist()) and len(set(want["exit_partition"].tolist())) >= 2
    )
    assert [r.block for r in got] == want["exit_block"].tolist()
    assert [r.prediction for r in got] == want["prediction"].tolist()
    np.testing.assert_allclose(np.stack([r.logits for r in got]), want["logits"], atol=1e-4)
    far = [r.latency_s for r in got if r.partition == 2]
    assert far and min(far) > 0.020  # two hops out and two back: 4 x 5 ms of propagation


@pytest.mark.torchscript
def test_torchscript_fallback_matches_onnx(bundle):
    """`serve --engine torchscript` runs the same partitions from their TorchScript files."""
    from earlyexit.runtime.session import BundleSession
    from earlyexit.runtime.torchscript import choose_engine
    from earlyexit.runtime.worker import make_runner

    assert choose_engine(bundle, "auto") == "onnx"
    assert choose_engine(bundle, "torchscript") == "torchscript"
    with pytest.raises(ValueError, match="valid"):
        choose_engine(bundle, "tflite")
    session = BundleSession(bundle)
    x = np.random.default_rng(3).standard_normal((5, 3, 32, 32)).astype(np.float32)
    for k in range(session.num_partitions):
        spec = {"kind": "bundle", "path": str(bundle), "partition": k, "engine": "torchscript"}
        got, want = make_runner(spec)(x), session.run_partition(k, x)
        for g, w in zip(got, want, strict=True):
            if w is None:
                assert g is None
            else:
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
        x = want[2] if want[2] is not None else x


def test_measure_idle_curve_times_the_first_partition_of_a_longer_bundle(bundle):
    """measure_idle_curve deploys every partition (threshold 1: all leave at the first)
    and returns a curve a profile accepts, its factors the measured CPU ratios."""
    from earlyexit.formats.profile import _idle_curve
    from earlyexit.profiling.overhead import measure_idle_curve

    c = measure_idle_curve(bundle, gaps_s=[0.002, 0.01], samples=3, warmup=1)
    assert _idle_curve({k: c[k] for k in ("gap_s", "factor", "wake_s")}, "c")["gap_s"] == [
        0.002,
        0.01,
    ]
    cpu = np.array(c["cpu_s"])
    assert len(cpu) == 3 and np.all(cpu > 0)
    assert c["factor"] == pytest.approx(np.maximum.accumulate(np.maximum(cpu[1:] / cpu[0], 1)))
    # as a slower tier is deployed: its worker sleeps (s - 1) times its CPU, which the
    # round trip then holds and the wake-up times leave out
    c4 = measure_idle_curve(bundle, gaps_s=[0.002], samples=3, warmup=1, slowdown=4.0,
                            cpu_affinity="spread")  # fmt: skip
    rtt, cpu4 = np.array(c4["round_trip_s"]), np.array(c4["cpu_s"])
    assert np.all(rtt > 4.0 * cpu4 * 0.9)
    want = max(0.0, (rtt[1] - 4.0 * cpu4[1]) - (rtt[0] - 4.0 * cpu4[0]))
    assert c4["wake_s"] == pytest.approx([want])
    with pytest.raises(ValueError, match="slowdown must be a number > 1"):
        measure_idle_curve(bundle, slowdown=1.0)


def test_measure_idle_curve_through_a_link(bundle):
    """through_links: the idle is the first link's propagation there and back, taken out
    of the round trips, and a bad flag or a missing small bundle is named."""
    from earlyexit.profiling.overhead import measure_idle_curve

    gap = 0.03
    c = measure_idle_curve(bundle, gaps_s=[gap], samples=3, warmup=1, through_links=True)
    assert "emulated link" in c["method"] and "cold_s" not in c
    rtt = np.array(c["round_trip_s"])
    # net of the 30 ms: what is left is the run and the relays, far less than the gap
    assert np.all(rtt > 0) and rtt[1] < gap
    assert len(c["factor"]) == 1 and c["factor"][0] >= 1.0
    # the client's own CPU, counted at the source's slowdown, against its whole wait:
    # the back-to-back round trip, then the gap's (which holds the 30 ms)
    cc = c["client_curve"]
    assert len(cc["wait_s"]) == 2 and cc["wait_s"][0] < gap < cc["wait_s"][1]
    assert cc["wait_s"] == pytest.approx([rtt[0], rtt[1] + gap], rel=1e-9)
    assert all(v > 0 for k in ("encode_s", "decode_s") for v in cc[k])
    assert cc["decode_s"][0] < 1e-2 and cc["encode_s"] == sorted(cc["encode_s"])
    with pytest.raises(TypeError, match="through_links must be True or False"):
        measure_idle_curve(bundle, through_links="yes")
    with pytest.raises(FileNotFoundError, match="manifest"):
        measure_idle_curve(bundle, small=bundle.parent / "missing")
