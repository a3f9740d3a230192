"""One sample at a time, a tier idles at least the propagation around it (docs/spec.md#idle-between-samples)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from earlyexit.formats import Link, Tier, Topology
from earlyexit.planner import evaluate
from earlyexit.planner.latency import CostModel
from earlyexit.planner.synthetic import synthetic_profile

CURVE = {"gap_s": [0.001, 0.01, 0.3], "factor": [1.2, 1.5, 2.0], "wake_s": [1e-4, 3e-4, 5e-4]}
HOP_CPU = {"a1.medium": 3e-3, "g4dn.xlarge": 2e-4}  # the runtime's CPU per partition run


def _cooled(at, g, slowdown, busy, hop_cpu, cold=lambda x: 0.0):
    """(f, h, compute) by hand: the least idle x = g + sleep(x), where the emulation of a
    slower tier sleeps (s - 1) times the cooled CPU, f(x) (busy + s hop_cpu) + s cold(x),
    after each run."""
    runtime = max(slowdown * (hop_cpu or 0.0), 0.0)
    x = g
    for _ in range(10_000):
        f, _h = at(x)
        nxt = g + max(0.0, slowdown - 1) / slowdown * ((busy + runtime) * f + slowdown * cold(x))
        if abs(nxt - x) < 1e-16:
            break
        x = nxt
    f, h = at(x)
    return f, h, busy * f + slowdown * cold(x) + h + (f - 1.0) * runtime


def _line(f, h, curve=CURVE):
    """f and h by hand: linear from (0, 1, 0) through the curve, flat beyond it."""

    def at(g):
        pts = [(0.0, 1.0, 0.0), *zip(curve["gap_s"], curve["factor"], curve["wake_s"], strict=True)]
        for (g0, f0, h0), (g1, f1, h1) in zip(pts, pts[1:], strict=False):
            if g <= g1:
                u = (g - g0) / (g1 - g0)
                return f0 + u * (f1 - f0), h0 + u * (h1 - h0)
        return pts[-1][1], pts[-1][2]

    return at


def _setup(with_curve=("a1.medium", "g4dn.xlarge"), busy=True):
    base = synthetic_profile(10, seed=3)
    devices = {
        name: dataclasses.replace(
            dev,
            partition_time_busy_s=dev.partition_time_s * 0.5 if busy else None,
            idle_curve=CURVE if name in with_curve else None,
            hop_s=1e-4,
            hop_cpu_s=HOP_CPU.get(name),
        )
        for name, dev in base.devices.items()
    }
    prof = dataclasses.replace(base, devices=devices)
    topo = Topology(
        (Tier("edge", "a1.medium", 2.0), Tier("fog", "m4.large", 1.0), Tier("cloud", "g4dn.xlarge", 0.5)),
        (Link(100.0, 2.0), Link(100.0, 7.0)),
        source=0,
        destination=1,
    )  # fmt: skip
    return prof, topo


def _gaps_by_hand(prof, topo):
    """docs/spec.md#idle-between-samples, from the topology's links and the profile's sizes."""
    mtu, bw, pd = 8.0 * topo.mtu_bytes, [100e6, 100e6], [0.002, 0.007]

    def wire(a, b, bits):  # propagation + PORTEND's fragment pipelining on the path a..b
        links = range(min(a, b), max(a, b))
        if a == b:
            return 0.0
        return sum(pd[j] + min(bits, mtu) / bw[j] for j in links) + max(0.0, bits - mtu) / min(
            bw[j] for j in links
        )

    o, rs, src, dst = prof.output_bits_with_input, float(prof.result_bits), 0, 1
    g = np.zeros((3, 11))
    for w in range(3):
        back = wire(w, dst, rs)
        g[w, 0] = wire(src, w, o[0]) + back
        for a in range(1, 11):
            g[w, a] = back + min(wire(src, v, o[0]) + wire(v, w, o[a]) for v in range(3) if v != w)
    return g


def test_the_gaps_and_the_compute_by_hand():
    prof, topo = _setup()
    cm = CostModel(prof, topo)
    want = _gaps_by_hand(prof, topo)
    # the first partition waits for the input and the answer; a later one also for the
    # features from the nearest other tier, which the edge (the source) never is
    assert want[0, 0] < want[0, 1] and want[2, 0] > 0.016
    assert cm.idle_gap == pytest.approx(want, rel=1e-12, abs=1e-15)
    at = _line(CURVE["factor"], CURVE["wake_s"])
    for w, tier in enumerate(topo.tiers):
        dev = prof.devices[tier.device]
        for a in range(10):
            for c in range(a + 1, 11):
                profiled = dev.partition_time_s[a, c - 1] * tier.slowdown
                if dev.idle_curve is None:  # no curve: the profiled time, PORTEND's CT
                    assert cm.compute[w, a, c] == pytest.approx(profiled, rel=1e-12)
                    continue
                # an emulated slower tier (2x) also slept as long as it ran, after the last run
                busy = 0.5 * profiled
                _f, _h, compute = _cooled(at, want[w, a], tier.slowdown, busy, dev.hop_cpu_s)
                assert cm.compute[w, a, c] == pytest.approx(compute, rel=1e-12)
                assert cm.ct[w, a, c] == cm.compute[w, a, c] + cm.run_cpu[w]
                run_cpu = max((tier.slowdown - 1) * (dev.hop_cpu_s or 0.0), -dev.hop_s)
                assert cm.run_cpu[w] == pytest.approx(run_cpu, rel=1e-12)


def test_evaluate_charges_each_partition_its_own_gap():
    prof, topo = _setup()
    at = _line(CURVE["factor"], CURVE["wake_s"])
    est = evaluate(prof, topo, 0.0, [3, 7, 10], [0, 2, 1])  # T 0: every sample runs all three

    def busy(w, a, c):
        return (
            0.5
            * prof.devices[topo.tiers[w].device].partition_time_s[a, c - 1]
            * topo.tiers[w].slowdown
        )

    g = _gaps_by_hand(prof, topo)
    # the edge (2x: it slept as long as it ran, its CPU cooled), first
    *_, edge = _cooled(at, g[0, 0], 2.0, busy(0, 0, 3), HOP_CPU["a1.medium"])
    # the cloud (0.5x: no sleep), reached after block 3
    f2, h2 = at(g[2, 3])
    cloud = busy(2, 3, 7) * f2 + h2 + (f2 - 1) * 0.5 * HOP_CPU["g4dn.xlarge"]
    fog = prof.devices["m4.large"].partition_time_s[7, 9]  # no curve: as profiled
    want = edge + cloud + fog
    assert est.breakdown_s["compute"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("busy", [True, False])
def test_without_a_curve_or_busy_times_it_is_portends_model(busy):
    prof, topo = _setup(
        with_curve=("a1.medium",) if busy else ("a1.medium", "g4dn.xlarge"), busy=busy
    )
    cm = CostModel(prof, topo)
    for w, tier in enumerate(topo.tiers):
        dev = prof.devices[tier.device]
        if busy and dev.idle_curve is not None:
            continue
        iu = np.triu_indices(10)
        assert cm.compute[w, iu[0], iu[1] + 1] == pytest.approx(
            dev.partition_time_s[iu] * tier.slowdown, rel=1e-12
        )


LINKED = {"gap_s": [0.002, 0.3], "factor": [1.1, 2.5], "wake_s": [2e-4, 9e-4],
          "cold_s": [1e-4, 4e-4]}  # the CPU a message pays once after that idle, stretched


def _cold(g):
    """LINKED's cold CPU at idle g, by hand: linear from 0 at g = 0, flat beyond 0.3 s."""
    if g <= 0.002:
        return 1e-4 * g / 0.002
    return 1e-4 + 3e-4 * (min(g, 0.3) - 0.002) / 0.298


@pytest.mark.parametrize("quiet", [True, False])
def test_the_link_curve_where_the_idle_holds_wire_time(quiet):
    """A device's ``link_idle_curve`` prices a partition whose idle holds wire time (a later
    partition, or a tier away from the source); the source's first partition, whose idle is
    only its own sleep, keeps the idle curve (or, without one, its profiled time)."""
    prof, topo = _setup()
    devices = {name: dataclasses.replace(dev, link_idle_curve=LINKED if dev.idle_curve else None,
                                         idle_curve=dev.idle_curve if quiet else None)
               for name, dev in prof.devices.items()}  # fmt: skip
    prof = dataclasses.replace(prof, devices=devices)
    topo = dataclasses.replace(topo, destination=0)  # the answer back at the source
    cm = CostModel(prof, topo)
    at = {"quiet": _line(None, None), "linked": _line(None, None, LINKED)}
    assert cm.idle_gap[0, 0] == 0.0 and np.all(cm.idle_gap[0, 1:] > 0) and np.all(cm.idle_gap[2] > 0)
    seen = set()
    for w, tier in enumerate(topo.tiers):
        dev = prof.devices[tier.device]
        for a in range(10):
            for c in range(a + 1, 11):
                profiled = dev.partition_time_s[a, c - 1] * tier.slowdown
                if dev.link_idle_curve is None:  # m4.large: neither curve
                    assert cm.compute[w, a, c] == pytest.approx(profiled, rel=1e-12)
                    continue
                which = "linked" if cm.idle_gap[w, a] > 0 else "quiet"
                seen.add(which)
                busy = 0.5 * profiled
                if which == "quiet" and not quiet:
                    want = profiled  # no idle curve: as profiled
                else:
                    cold = _cold if which == "linked" else (lambda x: 0.0)
                    *_, want = _cooled(at[which], cm.idle_gap[w, a], tier.slowdown, busy,
                                       dev.hop_cpu_s, cold)  # fmt: skip
                assert cm.compute[w, a, c] == pytest.approx(want, rel=1e-12)
    assert seen == {"linked", "quiet"}
