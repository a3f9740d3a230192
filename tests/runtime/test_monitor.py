"""LinkEstimator: bandwidth and delay from a sender's own transfer times."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from earlyexit.runtime.monitor import LinkEstimator


@pytest.mark.parametrize(("mbps", "ms"), [(0.5, 40.0), (4.0, 10.0), (400.0, 2.0)])
def test_exact_line_is_recovered(mbps, ms):
    est = LinkEstimator()
    for i, n in enumerate([200, 50_000] * 10):
        est.observe(n, ms / 1e3 + 8 * n / (mbps * 1e6), now=float(i))
    e = est.estimate()
    assert e is not None and e.sizes == 2 and e.samples == 20
    assert e.bandwidth_mbps == pytest.approx(mbps, rel=1e-6)
    assert e.propagation_ms == pytest.approx(ms, abs=1e-6)


def test_round_trips_halve_the_intercept():
    est = LinkEstimator(round_trip=True)
    for n in [100, 10_000, 100_000] * 4:
        est.observe(n, 2 * 0.015 + 8 * n / 8e6)
    e = est.estimate()
    assert e.bandwidth_mbps == pytest.approx(8.0) and e.propagation_ms == pytest.approx(15.0)


def test_queueing_noise_is_filtered_by_the_low_quantile():
    rng = np.random.default_rng(0)
    est = LinkEstimator(window=400, quantile=0.05)
    for _ in range(200):
        for n in (1000, 40_000):
            est.observe(n, 0.020 + 8 * n / 2e6 + rng.exponential(0.030))  # queueing only adds
    e = est.estimate()
    assert e.bandwidth_mbps == pytest.approx(2.0, rel=0.15)
    assert e.propagation_ms == pytest.approx(20.0, abs=4.0)


def test_one_size_is_not_identifiable_and_asks_for_a_probe():
    est = LinkEstimator(idle_probe_s=5.0)
    assert est.probe_size(now=0.0) == 64  # nothing seen yet
    for i in range(20):
        est.observe(30_000, 0.05, now=float(i) * 0.1)
    assert est.estimate() is None
    assert est.probe_size(now=2.0) == 64  # the small probe: far from 30 kB
    est.observe(64, 0.010, now=2.0)
    assert est.estimate() is not None and est.probe_size(now=2.1) is None
    assert est.probe_size(now=2.0 + 5.0) is not None  # idle for idle_probe_s


def test_window_forgets_the_old_link():
    est = LinkEstimator(window=40)
    for n in [100, 20_000] * 20:
        est.observe(n, 0.01 + 8 * n / 50e6)
    for n in [100, 20_000] * 20:
        est.observe(n, 0.01 + 8 * n / 2e6)
    assert est.estimate().bandwidth_mbps == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 2}, "window"),
        ({"quantile": 1.5}, "quantile"),
        ({"min_samples": 1}, "min_samples"),
        ({"size_ratio": 1.0}, "size_ratio"),
        ({"idle_probe_s": 0}, "idle_probe_s"),
        ({"probe_bytes": (100, 10)}, "probe_bytes"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinkEstimator(**kwargs)
    est = LinkEstimator()
    with pytest.raises(ValueError, match="nbytes"):
        est.observe(-1, 0.1)
    with pytest.raises(ValueError, match="seconds"):
        est.observe(10, float("nan"))


@pytest.mark.slow
def test_estimates_an_emulated_link():
    """Through the real link emulator (4 Mb/s, 10 ms), one-way times on this host's clock."""
    from earlyexit.runtime.link import DirectedLink, RouteSender

    ctx = zmq.Context.instance()
    link = DirectedLink(ctx, "tcp://127.0.0.1:*", 4.0, 10.0, mtu_bytes=1500).start()
    sink = ctx.socket(zmq.PULL)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    sender = RouteSender(ctx)
    est = LinkEstimator()
    try:
        for n in [100, 20_000] * 12:
            t = time.monotonic()
            assert sender.send([link.address, f"tcp://127.0.0.1:{port}"], b"z" * n)
            assert sink.poll(5000) and len(sink.recv()) == n
            est.observe(n, time.monotonic() - t)
    finally:
        link.stop()
        sender.close()
        sink.close(linger=0)
    e = est.estimate()
    assert e.bandwidth_mbps == pytest.approx(4.0, rel=0.3)
    assert e.propagation_ms == pytest.approx(10.0, abs=5.0)


def test_transfer_times_subtract_what_the_receiver_held_and_forget_the_sends():
    from earlyexit.runtime.monitor import transfer_times

    sent = {1: (10.0, 500), 2: (10.5, 900), 3: (11.0, 100)}
    out = transfer_times(sent, [1, 2, 7, True], [0.2, 0.9, 0.1, 0.1], now=11.3)
    assert out == [
        ((10.0, 500), pytest.approx(1.1)),
    ]  # id 2 held longer than the round trip
    assert sent == {3: (11.0, 100)}  # acked ids leave; an unknown id or a bool is no send
    assert transfer_times(sent, [3], "bad", now=12.0) == [] and 3 in sent


def test_merge_link_report_keeps_the_newest_estimate_per_link_and_skips_garbage():
    from earlyexit.runtime.monitor import merge_link_report

    reports: dict = {}
    merge_link_report(reports, [[0, 1, 50.0, 5.0, 10.0], [1, 2, 9.0, 1.0, 3.0]])
    merge_link_report(reports, [[0, 1, 2.0, 5.0, 9.0], [0, 1, 3.0, 6.0, 11.0]])
    merge_link_report(reports, [[0, 1, float("nan"), 1.0, 99.0], ["a", 1, 1, 1, 1], "x"])
    merge_link_report(reports, {"not": "a list"})
    assert reports == {(0, 1): [3.0, 6.0, 11.0], (1, 2): [9.0, 1.0, 3.0]}
