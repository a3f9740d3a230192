"""Link traces: files, queries, and the emulated link following one."""

from __future__ import annotations

import json

import pytest
import zmq

from earlyexit.formats import Link, Tier, Topology
from earlyexit.formats.trace import BUILTIN_TRACES, LinkTrace, TraceStep


def test_piecewise_constant_queries():
    tr = LinkTrace((TraceStep(0, 50, 20), TraceStep(10, 2, 30), TraceStep(20, 50, 20)))
    assert [tr.at(t).bandwidth_mbps for t in (-1, 0, 9.99, 10, 15, 20, 1e6)] == [50, 50, 50, 2, 2, 50, 50]
    assert tr.at(12).propagation_ms == 30
    assert tr.change_times == (10, 20) and tr.duration_s == 20
    assert [(a, b) for a, b, _ in tr.phases()] == [(0, 10), (10, 20), (20, 30)]
    assert tr.scaled(0.5).at(5.5).bandwidth_mbps == 2


@pytest.mark.parametrize("name", list(BUILTIN_TRACES))
def test_builtins_round_trip_through_yaml_and_csv(name, tmp_path):
    tr = LinkTrace.builtin(name)
    assert tr.name == name and tr.description
    tr.save(tmp_path / "t.yaml")
    assert LinkTrace.load(tmp_path / "t.yaml") == tr
    tr.save(tmp_path / "t.csv")
    back = LinkTrace.load(tmp_path / "t.csv")
    rows = [v for s in tr.steps for v in (s.time_s, s.bandwidth_mbps, s.propagation_ms)]
    assert [v for s in back.steps for v in (s.time_s, s.bandwidth_mbps, s.propagation_ms)] == pytest.approx(rows, rel=1e-5)
    assert LinkTrace.load(name) == tr  # a built-in name loads without a file


def test_topology_at_replaces_only_the_traced_link():
    topo = Topology((Tier("a", "x"), Tier("b", "x"), Tier("c", "x")), (Link(10, 5), Link(100, 50)))
    tr = LinkTrace.builtin("wifi-to-4g", link=1)
    at = tr.topology_at(topo, 12.0)
    assert at.links == (Link(10, 5), Link(10, 40)) and at.tiers == topo.tiers
    with pytest.raises(ValueError, match="trace.link: 5"):
        LinkTrace.builtin("wifi-to-4g", link=5).topology_at(topo, 0)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"schema": "x", "steps": [[0, 1, 1]]}, ValueError, "trace.schema"),
        ({"schema": "earlyexit.trace/1", "steps": []}, ValueError, "at least one step"),
        ({"schema": "earlyexit.trace/1", "steps": [[0, 1, 1], [0, 2, 1]]}, ValueError, r"steps\[1\].*increase"),
        ({"schema": "earlyexit.trace/1", "steps": [[0, 0, 1]]}, ValueError, r"steps\[0\].*bandwidth"),
        ({"schema": "earlyexit.trace/1", "steps": [[0, 1, -1]]}, ValueError, r"steps\[0\].*propagation"),
        ({"schema": "earlyexit.trace/1", "steps": [[0, 1]]}, TypeError, r"steps\[0\]"),
        ({"schema": "earlyexit.trace/1", "steps": [{"time_s": 0, "bw": 1}]}, ValueError, "unknown field"),
        ({"schema": "earlyexit.trace/1", "steps": [[0, "fast", 1]]}, TypeError, "bandwidth"),
        ({"schema": "earlyexit.trace/1", "steps": [[0, 1, 1]], "extra": 1}, ValueError, "unknown field"),
        ({"schema": "earlyexit.trace/1", "steps": [[0, 1, 1]], "link": -1}, ValueError, "trace.link"),
    ],
)
def test_bad_traces_name_the_field(data, error, match):
    with pytest.raises(error, match=match):
        LinkTrace.from_dict(data)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not a built-in trace"):
        LinkTrace.load(tmp_path / "missing.yaml")
    (tmp_path / "a.csv").write_text("t,b,d\n0,1,1\n")
    with pytest.raises(ValueError, match="first line"):
        LinkTrace.load(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("time_s,bandwidth_mbps,propagation_ms\n0,1\n")
    with pytest.raises(ValueError, match="line 2"):
        LinkTrace.load(tmp_path / "b.csv")
    (tmp_path / "c.yaml").write_text("schema: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        LinkTrace.load(tmp_path / "c.yaml")


def test_emulated_link_follows_the_trace():
    """After the step to 0.5 Mb/s, a 5 kB message needs >= 80 ms on the wire (lower bound only)."""
    import time

    from earlyexit.runtime.link import DirectedLink, RouteSender

    ctx = zmq.Context.instance()
    change = 0.25
    tr = LinkTrace((TraceStep(0, 1000, 0), TraceStep(change, 0.5, 30)))
    link = DirectedLink(ctx, "tcp://127.0.0.1:*", 1, 1, mtu_bytes=1500, trace=tr).start()
    sink = ctx.socket(zmq.PULL)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    sender = RouteSender(ctx)
    try:
        payload = b"x" * 5000
        t0 = time.monotonic()
        assert sender.send([link.address, f"tcp://127.0.0.1:{port}"], payload)
        assert sink.poll(5000) and sink.recv() == payload
        time.sleep(max(0.0, link.epoch + change + 0.01 - time.monotonic()))
        t1 = time.monotonic()
        assert sender.send([link.address, f"tcp://127.0.0.1:{port}"], payload)
        assert sink.poll(5000) and sink.recv() == payload
        after = time.monotonic() - t1
        assert after >= 8 * 5000 / 0.5e6 + 0.030  # bandwidth and delay of the second step
        assert t1 > t0
    finally:
        link.stop()
        sender.close()
        sink.close(linger=0)


def test_run_links_passes_trace_and_epoch():
    import threading
    import time

    from earlyexit.runtime.link import run_links

    got: list[list[str]] = []
    stop = threading.Event()
    epoch = time.monotonic() - 100.0  # the trace is long past its step: 0.5 Mb/s now
    spec = {"bind": "tcp://127.0.0.1:*", "bandwidth_mbps": 1000, "propagation_ms": 0,
            "trace": LinkTrace((TraceStep(0, 1000, 0), TraceStep(1, 0.5, 0))).to_dict(), "epoch": epoch}
    th = threading.Thread(target=run_links, args=([json.loads(json.dumps(spec))], stop, got.append))
    th.start()
    ctx = zmq.Context.instance()
    sink = ctx.socket(zmq.PULL)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    from earlyexit.runtime.link import RouteSender

    sender = RouteSender(ctx)
    try:
        while not got:
            time.sleep(0.01)
        t = time.monotonic()
        sender.send([got[0][0], f"tcp://127.0.0.1:{port}"], b"y" * 2500)
        assert sink.poll(5000) and len(sink.recv()) == 2500
        assert time.monotonic() - t >= 8 * 2500 / 0.5e6
    finally:
        stop.set()
        th.join()
        sender.close()
        sink.close(linger=0)
