"""Tier workers, emulated links, client and loopback deployments (no bundle needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from earlyexit.formats import Link, Tier, Topology
from earlyexit.runtime.client import Client
from earlyexit.runtime.deployment import deploy, route
from earlyexit.runtime.options import WorkerOptions
from earlyexit.runtime.synthetic import SyntheticModel
from earlyexit.runtime.wire import encode
from earlyexit.runtime.worker import Worker, make_runner

THRESHOLD = 0.6


@pytest.fixture
def three_tiers():
    d = deploy(
        synthetic={"num_partitions": 3},
        threshold=THRESHOLD,
        dead_after_s=1.0,
        max_message_bytes=1 << 20,
    )
    yield d
    d.close()


def _check_against_reference(results, x, threshold=THRESHOLD):
    ref = SyntheticModel(3).reference(x, threshold)
    for r, f in zip(results, ref, strict=True):
        assert r.partition == f["partition"] and not r.degraded
        np.testing.assert_allclose(r.logits, f["logits"], rtol=1e-5, atol=1e-5)


def test_deployment_matches_in_process_early_exit(three_tiers):
    x = three_tiers.inputs(120)
    results = three_tiers.run(x)
    assert [r.id for r in results] == list(range(120))
    _check_against_reference(results, x)
    assert {r.partition for r in results} == {0, 1, 2}  # every tier is used
    assert {r.tier for r in results} == {0, 1, 2}
    assert three_tiers.client.stats["delivered"] == 120
    assert three_tiers.client.stats["duplicates"] == 0
    one = three_tiers.run(x[:5], one_at_a_time=True)
    _check_against_reference(one, x[:5])
    assert all(0 < r.latency_s < 5 for r in one)


def test_micro_batching_gives_the_same_results():
    with deploy(
        synthetic={"num_partitions": 3}, threshold=THRESHOLD, max_batch=8, batch_timeout_s=0.005
    ) as d:
        x = d.inputs(64, seed=3)
        results = d.run(x)
        _check_against_reference(results, x)
        d.close()
        assert "batches" in d.log(0)
        stats = json.loads(d.log(0).rsplit("stops: ", 1)[1].splitlines()[0])
        assert stats["batches"] < stats["samples"]  # batches of several samples happened


def test_routes_follow_links_in_both_directions():
    up, down = ["u0", "u1", "u2"], ["d0", "d1", "d2"]
    assert route(1, 3, "E", up, down) == ["u1", "u2", "E"]
    assert route(3, 1, "E", up, down) == ["d2", "d1", "E"]
    assert route(2, 2, "E", up, down) == ["E"]
    assert route(0, 2, "E") == ["E"]


# Latencies over emulated links are checked from below: a sample can never arrive
# before bandwidth and propagation allow, whatever the machine's load (the link
# emulator's own tests are in test_link.py).
_CLOCK_SLACK_S = 0.0015  # timer granularity and the sleep's early wake-up


@pytest.mark.slow
def test_emulated_topology_latency_follows_the_links():
    topo = Topology(
        tiers=(Tier("edge", "d"), Tier("mid", "d"), Tier("far", "d")),
        links=(Link(20.0, 15.0), Link(200.0, 10.0)),
        mtu_bytes=1500,
    )
    with deploy(
        synthetic={"num_partitions": 3, "hidden": 1024}, threshold=THRESHOLD, topology=topo
    ) as d:
        x = d.inputs(30)
        results = d.run(x, one_at_a_time=True)
        _check_against_reference_generic(results, x, hidden=1024)
        feats = (
            len(
                encode(
                    np.zeros((1, 1024), np.float32),
                    kind="features",
                    ids=[0],
                    ack=d.client.control_address,
                )
            )
            * 8
        )
        floors = {
            0: 0.0,
            1: feats / 20e6 + 0.030,
            2: feats / 20e6 + feats / 200e6 + 2 * (0.015 + 0.010),
        }
        for r in results:
            # features over link 0 (20 Mb/s), result back over link 0: at least
            # the transmission and both propagations
            assert r.latency_s >= floors[r.partition] - _CLOCK_SLACK_S, (r.partition, r.latency_s)
        medians = {
            k: float(np.median([r.latency_s for r in results if r.partition == k]))
            for k in {r.partition for r in results}
        }
        assert sorted(medians, key=medians.get) == sorted(medians)  # farther exits, later


def _check_against_reference_generic(results, x, hidden):
    ref = SyntheticModel(3, hidden=hidden).reference(x, THRESHOLD)
    assert [r.partition for r in results] == [f["partition"] for f in ref]


# --------------------------------------------------------------------------- faults


def test_killed_worker_degrades_in_flight_samples_to_their_last_exit():
    # threshold 0.3: most samples need the last partition; slow it down so many are in flight
    topo = Topology(
        tiers=(Tier("a", "d"), Tier("b", "d"), Tier("c", "d", slowdown=40.0)),
        links=(Link(1000, 0), Link(1000, 0)),
    )
    model = {"num_partitions": 3, "repeat": 20}
    with deploy(
        synthetic=model, threshold=0.3, topology=topo, emulate_links=False, dead_after_s=1.0
    ) as d:
        x = d.inputs(150, seed=5)
        ids = d.client.submit(x)
        first = []
        while len(first) < 10:
            first += d.client.poll(5.0)
        d.kill(2)
        rest = d.client.gather(timeout_s=30.0)
        results = first + rest
        got = sorted(r.id for r in results)
        assert got == sorted(ids)  # count in == count out, no duplicates
        assert d.client.stats["delivered"] == len(ids)
        degraded = [r for r in results if r.degraded]
        assert degraded, "some samples were in flight to the killed tier"
        ref = SyntheticModel(**model)
        for r in degraded:
            assert r.partition == 1 and r.tier == 1  # the last exit they passed
            logits, ent, _ = ref.run_partition(1, ref.run_partition(0, x[r.id : r.id + 1])[2])
            np.testing.assert_allclose(r.logits, logits[0], rtol=1e-4, atol=1e-4)
            assert r.entropy >= 0.3
        # later samples that need the dead tier also finish at partition 1
        more = d.run(d.inputs(20, seed=6), timeout_s=20.0)
        assert all(r.partition < 2 for r in more)
        assert any(r.degraded for r in more)
        assert "degraded" in d.log(1)


def test_killed_first_worker_returns_degraded_results_without_an_exit():
    topo = Topology(tiers=(Tier("a", "d", slowdown=40.0), Tier("b", "d")), links=(Link(1000, 0),))
    with deploy(
        synthetic={"num_partitions": 2, "repeat": 20},
        threshold=0.5,
        topology=topo,
        emulate_links=False,
        dead_after_s=0.8,
    ) as d:
        x = d.inputs(60)
        ids = d.client.submit(x[:30])
        first = d.client.poll(10.0)
        # frozen, then killed: the first worker cannot have taken these 30, whatever the load
        d.pause(0)
        ids += d.client.submit(x[30:])
        d.kill(0)
        results = first + d.client.gather(timeout_s=20.0)
        assert sorted(r.id for r in results) == sorted(ids)
        lost = [r for r in results if r.partition == -1]
        assert set(ids[30:]) <= {r.id for r in lost}
        assert all(r.degraded and r.logits is None and r.prediction is None for r in lost)
        assert first and not first[0].degraded


def test_malformed_and_oversized_messages_are_rejected_and_the_worker_keeps_serving(three_tiers):
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(three_tiers.worker_address(0))
    try:
        raw.send(b"garbage bytes, not a wire message")  # bad magic
        raw.send(encode(np.zeros((300_000,), np.float32), kind="input", ids=[0]))  # > 1 MiB
        raw.send(encode(np.zeros((2, 32), np.float32), kind="input", ids=[1]))  # ids mismatch
        raw.send(encode(np.zeros((1, 32), np.float32), kind="bogus", ids=[1]))  # bad kind
        raw.send(encode(np.zeros((1, 32), np.float32), kind="input", ids=[1], ack="http://x"))
        # the partition raises: answered as failed, under an id the client never uses
        raw.send(encode(np.zeros((1, 7), np.float32), kind="input", ids=[10**6]))
        raw.send_multipart([b"a", b"b"])  # two frames
        msg = encode(np.zeros((1, 32), np.float32), kind="input", ids=[1])
        raw.send(msg[: len(msg) - 3])  # truncated
        x = three_tiers.inputs(10, seed=9)
        results = three_tiers.run(x, timeout_s=10.0)
        _check_against_reference(results, x)
        assert three_tiers.client.stats["delivered"] == 10  # nothing spurious came out
        deadline = time.monotonic() + 5
        while three_tiers.log(0).count("rejected") < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        log = three_tiers.log(0)
        assert log.count("rejected a message") == 7, log
        # the partition itself refused the 7-wide input: answered as failed, not rejected
        assert "partition 0 failed on 1 sample(s)" in log and "takes 32 features, got 7" in log
        assert "exceeds the limit" in log and "bad magic" in log
        assert three_tiers.worker_alive(0)
    finally:
        raw.close(linger=0)
        ctx.term()


def _hostile_messages() -> list[bytes]:
    """Messages that claim absurd shapes, break the header, or lie about types."""
    import struct

    from earlyexit.runtime.wire import MAGIC

    def msg(header: object, payload: bytes = b"\0" * 16) -> bytes:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        return MAGIC + struct.pack("<I", len(raw)) + raw + payload

    out = [
        msg({"dtype": "float32", "shape": shape, "kind": "input", "ids": [1]})
        for shape in ([2**32, 2**32], [2**62, 4], [2**70], [True], [1.5], [1] * 40)
    ]
    out += [
        msg(b'{"dtype": "float32", "shape": [' + b"9" * 5000 + b"]}"),
        msg(b"[" * 20000 + b"]" * 20000),
        msg({"dtype": ["float32"], "shape": [1]}),
        msg({"dtype": "float32", "shape": [4], "kind": "input", "ids": [[1], 2, 3, 4]}, b"\0" * 16),
        msg(
            {"dtype": "float32", "shape": [1, 32], "kind": "input", "ids": [1], "ack": 7},
            b"\0" * 128,
        ),
        msg({"dtype": "float32", "shape": [1, 32], "kind": ["input"], "ids": [1]}, b"\0" * 128),
        msg({"dtype": "float32", "shape": [1, 32], "kind": "input", "ids": [2**80]}, b"\0" * 128),
        msg({"dtype": "float32", "shape": [0, 32], "kind": "input", "ids": []}, b""),
        # a well-formed NaN input: served, under an id the client never uses (an id the
        # client has in flight would race with that sample's own result)
        msg(
            {"dtype": "float32", "shape": [1, 32], "kind": "input", "ids": [10**6]},
            np.full((1, 32), np.nan, np.float32).tobytes(),
        ),
    ]
    return out


def test_hostile_messages_never_stop_a_worker(three_tiers):
    """Absurd shapes, unparsable headers and lying types on the input and control sockets."""
    ctx = zmq.Context()
    socks = []
    try:
        for addr in (three_tiers.worker_address(0), three_tiers.worker_address(1)):
            s = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(addr)
            socks.append(s)
        # partition 0's control socket takes acks from partition 1: ids that are not ints
        control = ctx.socket(zmq.PUSH)
        control.setsockopt(zmq.LINGER, 0)
        control.connect(str(three_tiers._workers[0].info["control"]))
        socks.append(control)
        hostile = _hostile_messages()
        for s in socks[:2]:
            for m in hostile:
                s.send(m)
        for ids in ([[1]], [{"a": 1}], [None, 1.5], "x"):
            control.send(encode(np.zeros(0, np.uint8), kind="ack", partition=1, ids=ids))
        for m in hostile:
            control.send(m)
        x = three_tiers.inputs(20, seed=11)
        results = three_tiers.run(x, timeout_s=10.0)
        _check_against_reference(results, x)
        for k in range(3):
            assert three_tiers.worker_alive(k), three_tiers.log(k)
        assert "Traceback" not in three_tiers.log()
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()


def test_client_rejects_bad_results_and_dedups():
    with Client(["tcp://127.0.0.1:9"], send_timeout_s=0.2) as c:
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(c.results_address)
        try:
            push.send(b"junk")
            push.send(encode(np.zeros((1, 3), np.float32), kind="result", ids=[5], entropy=[0.1]))
            assert c.poll(0.5) == []  # id 5 was never submitted: dropped as a duplicate
            assert c.stats["rejected"] == 1 and c.stats["duplicates"] == 1
        finally:
            push.close(linger=0)
            ctx.term()
        with pytest.raises(TimeoutError):
            c.submit(np.zeros((1, 3), np.float32))  # nobody listens
        with pytest.raises(ValueError, match="ids"):
            c.submit(np.zeros((2, 3), np.float32), ids=[1])


@pytest.mark.slow
def test_backpressure_blocks_the_client_instead_of_growing_queues():
    # The worker is frozen (SIGSTOP), so it cannot keep up however loaded the machine is
    # (a merely slow worker can keep up with a client slowed down by other processes, and
    # then nothing is proved). 256 kB inputs, so that the kernel's socket buffers hold
    # only a few of them: without backpressure all 2000 submits would be queued at once.
    topo = Topology(tiers=(Tier("a", "d"),), links=())
    with deploy(
        synthetic={"num_partitions": 1, "in_dim": 65536},
        threshold=0.5,
        topology=topo,
        hwm=2,
        dead_after_s=120.0,  # a frozen worker sends no heartbeats; do not declare it dead
    ) as d:
        x = d.inputs(1)
        d.client.infer(x[0], timeout_s=60.0)  # connected and serving
        d.pause(0)
        d.client.send_timeout_s = 0.5
        sent = 0
        try:
            with pytest.raises(TimeoutError):
                for _ in range(2000):
                    d.client.submit(x)
                    sent += 1
        finally:
            d.resume(0)
        assert 0 < sent < 200  # the client blocked, bounded by the high-water marks
        assert d.client.in_flight == sent
        results = d.client.gather(timeout_s=120.0)  # nothing lost, nothing degraded
        assert len(results) == sent and not any(r.degraded for r in results)


# --------------------------------------------------------------------------- units, torch


def test_worker_and_runner_arguments_are_checked():
    with pytest.raises(ValueError, match="kind"):
        make_runner({"kind": "nope"})
    with pytest.raises(ValueError, match="module:function"):
        make_runner({"kind": "factory", "factory": "nofunction"})
    run = make_runner({"kind": "synthetic", "partition": 1, "num_partitions": 2})
    assert run(np.zeros((2, 64), np.float32))[2] is None
    with pytest.raises(ValueError, match="next_route"):
        WorkerOptions(partition=0, num_partitions=2, threshold=0.5, result_route=("tcp://x:1",))
    with pytest.raises(ValueError, match="threshold"):
        WorkerOptions(partition=0, num_partitions=1, threshold=1.5, result_route=("tcp://x:1",))
    with pytest.raises(TypeError, match="WorkerOptions"):
        Worker(run, {"partition": 0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        deploy()


def test_worker_in_a_thread_serves_a_client():
    model = SyntheticModel(1)
    with Client() as client:
        opts = WorkerOptions(
            partition=0, num_partitions=1, threshold=0.5, result_route=(client.results_address,)
        )
        worker = Worker(model.runner(0), opts)
        stop = threading.Event()
        t = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
        t.start()
        try:
            client.input_route = [worker.input_address]
            r = client.infer(model.inputs(1)[0], timeout_s=5.0)
            assert r.partition == 0 and r.prediction is not None
        finally:
            stop.set()
            t.join(5)
            worker.close()


def test_runtime_never_imports_torch():
    code = (
        "import sys\n"
        "from earlyexit.runtime.deployment import deploy\n"
        "import earlyexit.runtime, earlyexit.runtime.worker, earlyexit.runtime.link\n"
        "import earlyexit.runtime._cli\n"
        "with deploy(synthetic={'num_partitions': 2}, threshold=0.5) as d:\n"
        "    assert len(d.run(d.inputs(5))) == 5\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m in\n"
        "    ('earlyexit.surgery', 'earlyexit.training', 'earlyexit.profiling', 'earlyexit.export'))\n"
        "print('BAD', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _serve_in_thread(runner, client, slowdown):
    opts = WorkerOptions(
        partition=0,
        num_partitions=1,
        threshold=0.5,
        result_route=(client.results_address,),
        slowdown=slowdown,
    )
    worker = Worker(runner, opts)
    stop = threading.Event()
    t = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
    t.start()
    client.input_route = [worker.input_address]
    return worker, stop, t


def _busy(seconds):
    def run(x):
        t0 = time.thread_time()
        while time.thread_time() - t0 < seconds:  # CPU work, as a partition does
            pass
        return np.zeros((len(x), 10), np.float32), np.zeros(len(x)), None

    return run


def _idle(seconds):
    def run(x):
        time.sleep(seconds)  # waits without computing: nothing for a slower CPU to stretch
        return np.zeros((len(x), 10), np.float32), np.zeros(len(x)), None

    return run


def test_slowdown_stretches_cpu_time_not_waiting():
    x = np.zeros((1, 8), np.float32)
    with Client() as client:
        for runner, slowdown, low, high in (
            (_busy(0.010), 4.0, 0.040, None),  # 10 ms of CPU on a 4x slower tier: >= 40 ms
            (_idle(0.030), 4.0, 0.030, 0.080),  # 30 ms asleep stays ~30 ms (not 120)
        ):
            worker, stop, t = _serve_in_thread(runner, client, slowdown)
            try:
                lat = min(client.infer(x[0], timeout_s=10.0).latency_s for _ in range(3))
            finally:
                stop.set()
                t.join(5)
                worker.close()
            assert lat >= low and (high is None or lat < high), (slowdown, lat)
    with pytest.raises(ValueError, match="slowdown"):
        Client(source_slowdown=0.0)
