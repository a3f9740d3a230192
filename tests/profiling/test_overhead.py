"""The runtime's per-hand-off cost: the fit on constructed data, and a real measurement."""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit.formats import Link, Tier, Topology
from earlyexit.planner.latency import evaluate
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.profiling.overhead import fit_hops, in_process_time, measure_hop_overhead


def test_fit_hops_against_least_squares():
    rng = np.random.default_rng(0)
    hops = np.array([2, 3, 4, 5, 2, 3, 4, 5], float)
    excess = 3e-4 * hops - 1e-4 + rng.normal(0, 2e-5, hops.size)
    hop_s, slope, intercept, r2 = fit_hops(hops, excess)
    # through the origin: an independent least-squares solve
    (ref,), *_ = np.linalg.lstsq(hops[:, None], excess, rcond=None)
    assert hop_s == pytest.approx(ref, rel=1e-9)
    a = np.vstack([hops, np.ones_like(hops)]).T
    (ref_slope, ref_icpt), *_ = np.linalg.lstsq(a, excess, rcond=None)
    assert (slope, intercept) == pytest.approx((ref_slope, ref_icpt), rel=1e-7)
    resid = excess - a @ np.array([ref_slope, ref_icpt])
    assert r2 == pytest.approx(
        1 - (resid**2).sum() / ((excess - excess.mean()) ** 2).sum(), rel=1e-9
    )


def test_fit_hops_is_exact_on_a_line_and_never_negative():
    assert fit_hops([2, 3, 4], [0.002, 0.003, 0.004]) == (0.001, 0.001, 0.0, 1.0)
    hop_s, slope, _, _ = fit_hops([2, 3], [-0.001, -0.002])  # a faster-than-in-process "cost"
    assert hop_s == 0.0 and slope < 0


@pytest.mark.parametrize(
    ("hops", "excess", "match"),
    [
        ([2, 2], [0.1, 0.2], "two distinct"),
        ([0, 1], [0.1, 0.2], "positive"),
        ([2, 3], [0.1], "one length"),
    ],
)
def test_fit_hops_rejects_bad_input(hops, excess, match):
    with pytest.raises(ValueError, match=match):
        fit_hops(hops, excess)


def test_measure_rejects_bad_arguments():
    with pytest.raises(ValueError, match="samples must be an int >= 5 per round"):
        measure_hop_overhead(samples=2, rounds=1)
    with pytest.raises(
        ValueError, match=r"samples must be an int >= 5 per round \(25 for 5 rounds\)"
    ):
        measure_hop_overhead(samples=20)
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        measure_hop_overhead(rounds=0)
    with pytest.raises(ValueError, match="max_partitions must be an int >= 2"):
        measure_hop_overhead(max_partitions=1)


def test_in_process_time_grows_with_the_chain():
    x = np.zeros((1, 8), np.float32)
    t1, t3 = in_process_time(1, x, reps=60), in_process_time(3, x, reps=60)
    assert 0 < t1 < t3


@pytest.mark.slow
def test_measured_through_real_workers():
    """Real worker processes: every chain is slower than its in-process work (it adds
    processes and messages); the quietest of the rounds is kept. How much slower is
    wall time on a shared machine: benchmarks/bench_runtime.py measures it."""
    m = measure_hop_overhead(samples=40, max_partitions=3, warmup=5)
    assert m.hops == (2, 3, 4)
    assert all(meas > inp for meas, inp in zip(m.measured_s, m.in_process_s, strict=True))
    assert m.hop_s >= 0 and np.isfinite(m.hop_s)
    assert len(m.extra["rounds_hop_s"]) == 5 and m.hop_s == min(m.extra["rounds_hop_s"])
    assert m.extra["transport"] == "ipc"
    # the kept estimate is the free line's and the fit's own arithmetic on the kept round
    excess = np.subtract(m.measured_s, m.in_process_s)
    assert fit_hops(m.hops, excess)[:3] == (m.hop_s, m.slope_s, m.per_sample_s)


def test_model_charges_the_measured_kind_of_chain():
    """The deployment measured (T = 0, L workers, source = destination) makes L + 1 hand-offs
    in the model too: its overhead is hop_s * (L + 1) when every device has the same hop_s."""
    prof = synthetic_profile(6, ("d",))
    prof.devices["d"].hop_s = 3e-4
    topo = Topology(tuple(Tier(f"t{j}", "d") for j in range(3)), (Link(1e5, 0), Link(1e5, 0)))
    for cuts, tiers in (([6], [0]), ([3, 6], [0, 1]), ([2, 4, 6], [0, 1, 2])):
        est = evaluate(prof, topo, 0.0, cuts, tiers)
        assert est.breakdown_s["overhead"] == pytest.approx(3e-4 * (len(cuts) + 1))


def _median_s(fn, reps: int = 100) -> float:
    import time

    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


@pytest.mark.slow
def test_hop_cost_predicts_another_deployment():
    """Out of sample: the per-hop cost of T = 0 chains of a tiny model brings the model closer to
    a 3-partition deployment with early exits of a heavier model than the model without it.
    Both run interleaved, sample by sample, so that both see the same load of the machine."""
    import contextlib

    from earlyexit.profiling.overhead import _MODEL
    from earlyexit.runtime.deployment import deploy
    from earlyexit.runtime.synthetic import SyntheticModel
    from earlyexit.runtime.wire import decode, encode

    kw = dict(num_partitions=3, in_dim=256, hidden=256, num_classes=10, seed=3, repeat=20)
    model = SyntheticModel(**kw)
    x = model.inputs(110, seed=5)
    small = np.zeros((1, _MODEL["in_dim"]), np.float32)
    lat: dict[str, list] = {"1": [], "2": [], "3": [], "big": []}
    with contextlib.ExitStack() as stack:
        runs = {str(n): stack.enter_context(
                    deploy(synthetic={"num_partitions": n, **_MODEL}, threshold=0.0))
                for n in (1, 2, 3)}  # fmt: skip
        runs["big"] = stack.enter_context(deploy(synthetic=kw, threshold=0.6))
        for i in range(len(x)):
            for name, d in runs.items():
                r = d.client.infer(x[i] if name == "big" else small[0])
                if i >= 10:
                    lat[name].append(r if name == "big" else r.latency_s)
    hops = [2, 3, 4]
    excess = [np.median(lat[str(n)]) - in_process_time(n, small) for n in (1, 2, 3)]
    hop = fit_hops(hops, excess)[0]

    ack = "tcp://127.0.0.1:1"
    feats, ct = x[:1], []
    for k in range(3):  # compute of each partition, in process
        ct.append(_median_s(lambda f=feats, k=k: model.run_partition(k, np.array(f))))
        feats = model.run_partition(k, feats)[2]
    h = model.run_partition(0, x[:1])[2]
    logits = np.zeros((1, 10), np.float32)
    ser = {}  # serialize + deserialize (with the receiver's copy) of each kind of message
    for kind, arr, meta in (("input", x[:1], {"ack": ack}), ("features", h, {"ack": ack}),
                            ("result", logits, {"entropy": [0.5], "degraded": False})):  # fmt: skip
        msg = encode(arr, kind=kind, ids=[0], **meta)
        ser[kind] = _median_s(lambda a=arr, kd=kind, m=meta: encode(a, kind=kd, ids=[0], **m))
        ser[kind] += _median_s(lambda msg=msg: np.array(decode(msg)[0]))

    def model_latency(k: int, o: float) -> float:
        """A sample leaving at partition k: k + 2 hand-offs."""
        return ser["input"] + sum(ct[: k + 1]) + k * ser["features"] + ser["result"] + (k + 2) * o

    parts = np.array([r.partition for r in lat["big"]])
    big = np.array([r.latency_s for r in lat["big"]])
    used = [k for k in range(3) if (parts == k).sum() >= 5]
    assert used, "no partition took enough samples"
    w = np.array([(parts == k).mean() for k in used])
    measured = float(sum(wk * np.median(big[parts == k]) for wk, k in zip(w, used, strict=True)))
    without = float(sum(wk * model_latency(k, 0.0) for wk, k in zip(w, used, strict=True)))
    with_hop = float(sum(wk * model_latency(k, hop) for wk, k in zip(w, used, strict=True)))
    assert abs(with_hop - measured) < abs(without - measured), (measured, without, with_hop, hop)


def test_measure_hop_cpu_rejects_bad_arguments():
    from earlyexit.profiling.overhead import measure_hop_cpu

    with pytest.raises(ValueError, match="slowdown must be a number > 1"):
        measure_hop_cpu(slowdown=1.0)
    with pytest.raises(ValueError, match="max_partitions must be an int >= 2"):
        measure_hop_cpu(max_partitions=1)
    with pytest.raises(ValueError, match="samples must be an int >= 5"):
        measure_hop_cpu(samples=3)


@pytest.mark.slow
def test_measure_hop_cpu_through_real_workers():
    """Chains at slowdown 3: the workers' stretched CPU per sample, and its fit per partition run."""
    from earlyexit.profiling.overhead import measure_hop_cpu

    got = measure_hop_cpu(samples=20, max_partitions=2, slowdown=3.0, warmup=3)
    assert got["partitions"] == [1, 2] and got["slowdown"] == 3.0
    assert len(got["cpu_per_sample_s"]) == len(got["in_process_s"]) == 2
    # every worker spent CPU on each message, more in the longer chain
    assert 0 < got["cpu_per_sample_s"][0] < got["cpu_per_sample_s"][1]
    excess = [c - i for c, i in zip(got["cpu_per_sample_s"], got["in_process_s"], strict=True)]
    assert got["cpu_hop_s"] == max(0.0, fit_hops(got["partitions"], excess)[0])


@pytest.mark.slow
def test_final_stats_count_the_stretched_cpu_of_every_message():
    """A worker's cpu_s is the thread CPU its emulation stretched: it slept (slowdown - 1)
    times that before sending, so the samples' latencies hold at least that much sleep."""
    from earlyexit.formats import Tier, Topology
    from earlyexit.runtime import deploy

    n = 30
    lat = {}
    for slow in (1.0, 21.0):
        topo = Topology((Tier("t0", "cpu", slow),), (), mtu_bytes=9000)
        with deploy(synthetic={"num_partitions": 1, "in_dim": 8, "hidden": 8, "num_classes": 4},
                    threshold=0.0, topology=topo, tiers=[0], emulate_links=False) as d:  # fmt: skip
            x = d.inputs(n, seed=0)
            lat[slow] = sum(d.client.infer(x[i], timeout_s=30).latency_s for i in range(n))
            d.close()
            stats = d.final_stats(0)
        assert stats["received"] == n
        if slow == 1.0:
            assert stats["cpu_s"] == 0.0  # no emulation, no CPU clock read
    assert stats["cpu_s"] > 0
    assert lat[21.0] >= 20 * stats["cpu_s"]  # the sleep is inside the latency it measured
    assert lat[21.0] > lat[1.0]


def test_measure_link_hop_rejects_bad_arguments():
    from earlyexit.profiling.overhead import measure_link_hop

    with pytest.raises(ValueError, match="propagation_ms must be a number in"):
        measure_link_hop(propagation_ms=0)
    with pytest.raises(ValueError, match="samples must be an int >= 5 per round"):
        measure_link_hop(samples=24, rounds=5)
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        measure_link_hop(rounds=0)


@pytest.mark.slow
def test_measure_link_hop_through_real_links():
    """A worker across an emulated 3 ms link against the same worker without: the relay's
    cost per crossing is what the linked samples took beyond two propagations, halved."""
    from earlyexit.profiling.overhead import measure_link_hop

    got = measure_link_hop(samples=25, rounds=5, warmup=3, propagation_ms=3.0)
    # the emulator holds every message at least its delay: input and answer, 2 x 3 ms
    assert got["linked_s"] >= got["unlinked_s"] + 0.006
    assert got["link_hop_s"] == pytest.approx((got["linked_s"] - got["unlinked_s"] - 0.006) / 2)
    assert len(got["rounds_s"]) == 5 and got["link_hop_s"] == min(got["rounds_s"])
    assert 0.0 <= got["link_hop_s"] < 0.005 and got["propagation_s"] == pytest.approx(0.003)
