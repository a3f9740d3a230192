"""Emulated links: the timing model (runtime/_shaping.py) by value, the relay (link.py) from below."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from earlyexit.formats.trace import LinkTrace, TraceStep
from earlyexit.runtime._shaping import LinkClock, stamped_arrival
from earlyexit.runtime.link import DirectedLink, RouteSender, time_through_links

# --------------------------------------------------------------------------- the model


def test_a_fragment_occupies_the_link_then_propagates():
    clock = LinkClock(bits_per_s=8e6, propagation_s=0.020)
    sent, due = clock.transmit(arrival=5.0, nbytes=10_000)  # 80 kbit at 8 Mb/s: 10 ms
    assert sent == pytest.approx(5.010) and due == pytest.approx(5.030)


def test_fragments_queue_behind_each_other_and_an_idle_link_waits_for_arrivals():
    clock = LinkClock(bits_per_s=12e6, propagation_s=0.0)  # 1500 bytes: 1 ms
    times = [clock.transmit(1.0, 1500)[0] for _ in range(3)]  # three at once: back to back
    assert times == pytest.approx([1.001, 1.002, 1.003])
    assert clock.transmit(2.0, 1500)[0] == pytest.approx(2.001)  # later: starts on arrival


def test_store_and_forward_pipelines_fragments_over_two_hops():
    # two 8 Mb/s hops with 5 ms each, 90 kB in 9000-byte fragments: the first
    # fragment is stored and forwarded, the others stream behind at the bottleneck
    size, mtu, bw = 90_000, 9000, 8e6
    hops = [LinkClock(bw, 0.005), LinkClock(bw, 0.005)]
    last = 0.0
    for _ in range(size // mtu):
        t = 0.0
        for hop in hops:
            t = hop.transmit(t, mtu)[1]
        last = t
    assert last == pytest.approx(8 * (size + mtu) / bw + 0.010)  # 99 ms + 10 ms, not 190 ms


def test_a_trace_sets_the_rate_at_the_start_and_the_delay_at_the_end():
    trace = LinkTrace((TraceStep(0, 8, 10), TraceStep(1, 0.8, 50)))
    clock = LinkClock(1.0, 0.0, trace=trace, epoch=100.0)
    # starts at 0.99 s into the trace at 8 Mb/s (10 ms on the wire), ends at 1.0 s: 50 ms delay
    sent, due = clock.transmit(100.99, 10_000)
    assert sent == pytest.approx(101.0) and due == pytest.approx(101.050)
    # the next starts after the change: 0.8 Mb/s, 100 ms
    sent, due = clock.transmit(101.0, 10_000)
    assert sent == pytest.approx(101.1) and due == pytest.approx(101.15)


def test_links_schedule_from_plausible_time_stamps_only():
    now = time.monotonic()
    assert stamped_arrival(now - 0.01, now) == now - 0.01  # the sender's hand-over time
    assert stamped_arrival(now + 1.0, now) == now  # in the future: another host's clock
    assert stamped_arrival(now - 100.0, now) == now  # implausibly old: another host's clock
    assert (
        stamped_arrival("soon", now) == now
        and stamped_arrival(True, now) == now
        and stamped_arrival(None, now) == now
    )


# --------------------------------------------------------------------------- the relay

# The relay's timing is checked from below here: a message can never arrive
# before its bandwidth and propagation allow (a link that forgot either fails),
# whatever the machine's load. How close it comes to the ideal is measured side
# by side in benchmarks/bench_links.py, not asserted on a shared machine.
_CLOCK_SLACK_S = 0.0015  # timer granularity and the sleep's early wake-up


def test_link_enforces_bandwidth_and_propagation():
    # 80 kB at 8 Mb/s is 80 ms, plus 20 ms of propagation
    (t,) = time_through_links([(8.0, 20.0)], [80_000], mtu=1500)
    assert t >= 0.100 - _CLOCK_SLACK_S, t
    (t,) = time_through_links([(1000.0, 30.0)], [100], mtu=1500)
    assert t >= 0.0300 - _CLOCK_SLACK_S, t


def test_multi_hop_store_and_forward_delivers_no_earlier_than_the_pipeline():
    size, mtu, bw = 90_000, 9000, 8.0
    (t,) = time_through_links([(bw, 5.0), (bw, 5.0)], [size], mtu=mtu)
    assert t >= 8 * (size + mtu) / (bw * 1e6) + 0.010 - _CLOCK_SLACK_S, t


def test_link_rejects_malformed_and_keeps_forwarding():
    ctx = zmq.Context()
    link = DirectedLink(ctx, "tcp://127.0.0.1:*", 100.0, 0.0, 1500, name="bad").start()
    sink = ctx.socket(zmq.PULL)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    raw = ctx.socket(zmq.PUSH)
    raw.connect(link.address)
    sender = RouteSender(ctx)
    try:
        raw.send(b"one frame only")
        raw.send_multipart([b"not json", b"payload"])
        raw.send_multipart([json.dumps({"route": ["http://evil"]}).encode(), b"payload"])
        # the sender's connection is another queue: its message may overtake these three
        assert sender.send([link.address, f"tcp://127.0.0.1:{port}"], b"good")
        assert sink.poll(5000) and sink.recv() == b"good"
        deadline = time.monotonic() + 5.0
        while link.stats["rejected"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.stats["rejected"] == 3
    finally:
        for s in (raw, sink):
            s.close(linger=0)
        sender.close()
        link.stop()
        ctx.term()
