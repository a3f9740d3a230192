"""Busy service times (docs/spec.md#load): a message that finds its tier busy runs the
partition in its back-to-back time, one that finds it empty in the idle-gap time (the
search's exactness with them: tests/planner/test_plan_under_load.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from earlyexit.formats import Profile
from earlyexit.planner.latency import CostModel
from earlyexit.planner.queueing import evaluate_load, mg1k_exact
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.planner.topology import resolve_topology


def _with_busy(prof: Profile, factor: float) -> Profile:
    devices = {
        name: dataclasses.replace(dev, partition_time_busy_s=dev.partition_time_s * factor)
        for name, dev in prof.devices.items()
    }
    return dataclasses.replace(prof, devices=devices)


def _welch(lam: float, cold: np.ndarray, busy: np.ndarray, probs: np.ndarray):
    """M/G/1 with exceptional first service (Welch 1964), K infinite: P(empty), mean wait."""
    m_b, m_c = float(busy @ probs), float(cold @ probs)
    s2_b, s2_c = float(busy**2 @ probs), float(cold**2 @ probs)
    rho = lam * m_b
    p0 = (1 - rho) / (1 - rho + lam * m_c)
    wq = lam * s2_b / (2 * (1 - rho)) + lam * (s2_c - s2_b) / (2 * (1 - rho + lam * m_c))
    return p0, wq, m_c, m_b


def test_exact_chain_with_a_slower_first_service_is_welchs_queue():
    cold, busy, probs = np.array([3.0, 1.5]), np.array([2.0, 0.6]), np.array([0.3, 0.7])
    lam = 0.45  # rho at busy times 0.46, at idle-gap times 0.74
    loss, n = mg1k_exact(lam, busy, probs, 400, first_times=cold)
    p0, wq, m_c, m_b = _welch(lam, cold, busy, probs)
    assert loss < 1e-12
    # Little: N = lam (W_q + E[S served]), E[S served] = P(empty) m_c + (1 - P(empty)) m_b
    assert n == pytest.approx(lam * (wq + p0 * m_c + (1 - p0) * m_b), rel=1e-9)
    # equal laws: the chain of M/G/1/K, unchanged
    assert mg1k_exact(lam, busy, probs, 7, first_times=busy) == mg1k_exact(lam, busy, probs, 7)


def test_exact_chain_against_a_simulation_with_small_k():
    rng = np.random.default_rng(3)
    cold, busy, lam, k = 2.0, 0.7, 0.8, 3
    loss, n = mg1k_exact(lam, [busy], [1.0], k, first_times=[cold])
    # a discrete-event simulation of the same station: FIFO, K in system, drop when full
    arrivals = np.cumsum(rng.exponential(1 / lam, 400_000))
    deps: list[float] = []  # departure times of the messages in system
    dropped = area = 0.0
    last = 0.0
    for t in arrivals:
        while deps and deps[0] <= t:
            d = deps.pop(0)
            area += len(deps) * 0 + (d - last) * (len(deps) + 1)
            last = d
        area += (t - last) * len(deps)
        last = t
        if len(deps) >= k:
            dropped += 1
            continue
        start = deps[-1] if deps else t
        deps.append(start + (busy if deps else cold))
    sim_loss = dropped / arrivals.size
    sim_n = area / last
    assert sim_loss == pytest.approx(loss, abs=0.004)
    assert sim_n == pytest.approx(n, rel=0.02)


@pytest.mark.parametrize("model", ["approx", "exact"])
def test_busy_times_leave_the_unloaded_model_and_speed_the_loaded_one(model):
    prof = synthetic_profile(8, seed=2)
    fast = _with_busy(prof, 0.6)
    args = ("portend-aws", 0.5, [3, 8], [0, 2])
    # a vanishing load: every message finds its tier empty, so today's latency exactly
    for p in (prof, fast):
        le = evaluate_load(p, *args, 1e-12, 20, queue_model=model)
        assert le.latency_s == pytest.approx(le.unloaded_latency_s, abs=1e-12)
        assert evaluate_load(p, *args, 0.0, 20, queue_model=model).latency_s == (
            le.unloaded_latency_s
        )
    lam = 0.8 / evaluate_load(prof, *args, 1e-9, 20).stations[0].service_mean_s
    slow_le = evaluate_load(prof, *args, lam, 20, queue_model=model)
    fast_le = evaluate_load(fast, *args, lam, 20, queue_model=model)
    assert fast_le.unloaded_latency_s == slow_le.unloaded_latency_s
    assert fast_le.latency_s < slow_le.latency_s and fast_le.loss_ratio < slow_le.loss_ratio
    first = fast_le.stations[0]
    s0 = slow_le.stations[0]
    # the first tier serves between its busy and its idle-gap mean
    assert 0.6 * s0.service_mean_s < first.service_mean_s < s0.service_mean_s
    # busy times above the idle-gap ones count as the idle-gap ones: no change at all
    assert evaluate_load(_with_busy(prof, 1.3), *args, lam, 20, queue_model=model) == slow_le


def test_approx_station_at_large_k_is_welchs_p0():
    """One tier, a constant service: the approx law's P(empty) at large K is 1 - rho, and
    the fixed point of q gives Welch's P(empty) for a slower first service."""
    prof = _with_busy(synthetic_profile(4, seed=5), 0.5)
    cm = CostModel(prof, resolve_topology("portend-aws"))
    lam = 0.3 / float(cm.ct[0, 0, 4])
    le = evaluate_load(prof, "portend-aws", 0.0, [4], [0], lam, 2000, cost_model=cm)
    st0 = le.stations[0]
    cold = float(cm.ct[0, 0, 4] + cm.dt[0, 0] + cm.rst[0] + cm.hop_tier[0])
    busy = cold - float(cm.ct[0, 0, 4] - cm.ct_busy[0, 0, 4])
    p0 = _welch(lam, np.array([cold]), np.array([busy]), np.array([1.0]))[0]
    assert st0.service_mean_s == pytest.approx(p0 * cold + (1 - p0) * busy, rel=1e-9)


def test_an_idle_curve_stretches_the_runs_that_find_the_tier_empty():
    base = synthetic_profile(6, seed=4)
    curve = {"gap_s": [0.01, 0.1], "factor": [1.5, 3.0]}
    devices = {
        name: dataclasses.replace(
            dev, partition_time_busy_s=dev.partition_time_s * 0.5, idle_curve=curve
        )
        for name, dev in base.devices.items()
    }
    prof = dataclasses.replace(base, devices=devices)
    topo = resolve_topology("portend-aws")
    cm = CostModel(prof, topo)
    args = ("portend-aws", 0.0, [6], [0])  # one partition on the first tier, T 0: all go on
    le0 = evaluate_load(prof, *args, 0.0, 20, cost_model=cm)
    # a vanishing stream: the tier idles without end before every sample, so it runs
    # the network at the busy time x the last factor instead of Lat's one-at-a-time time
    lat = le0.unloaded_latency_s
    busy_ct = 0.5 * float(prof.devices[topo.tiers[0].device].partition_time_s[0, 5])
    assert float(cm.compute_busy[0, 0, 6]) == pytest.approx(busy_ct)
    assert le0.latency_s == pytest.approx(lat + 3.0 * busy_ct - float(cm.compute[0, 0, 6]))
    # at a moderate rate the first tier's mean service lies between its busy time and
    # its time after an endless idle, and above what the busy time alone gives
    lam = 0.3 / float(cm.ct[0, 0, 6])
    le = evaluate_load(prof, *args, lam, 20, cost_model=cm)
    no_curve = dataclasses.replace(
        prof,
        devices={k: dataclasses.replace(d, idle_curve=None) for k, d in prof.devices.items()},
    )
    le_nc = evaluate_load(no_curve, *args, lam, 20)
    rest = le_nc.stations[0].service_mean_s  # the busy/idle-gap mixture without the curve
    s0 = le.stations[0].service_mean_s
    assert s0 != rest
    t_busy = float(cm.ct_busy[0, 0, 6] + cm.dt[0, 0] + cm.st[0, 6] + cm.hop_tier[0])
    assert t_busy < s0 < t_busy + 2.0 * busy_ct


def test_an_idle_curves_wake_times_add_their_mean_to_the_runs_that_find_the_tier_empty():
    """wake_s adds E[h(I)] (I ~ Exp(rate), h linear between the points) to a message that
    finds its tier empty, not stretched: at a vanishing rate h's last value, exactly; at
    a moderate one the closed form against a numerical integral."""
    base = synthetic_profile(6, seed=4)
    gaps, wake = [0.01, 0.1], [0.002, 0.005]

    def with_curve(h: list[float] | None) -> Profile:
        curve = {"gap_s": gaps, "factor": [1.5, 3.0], **({"wake_s": h} if h else {})}
        return dataclasses.replace(base, devices={
            name: dataclasses.replace(dev, partition_time_busy_s=dev.partition_time_s * 0.5,
                                      idle_curve=curve)
            for name, dev in base.devices.items()})  # fmt: skip

    args = ("portend-aws", 0.0, [6], [0])
    plain, woken = with_curve(None), with_curve(wake)
    assert evaluate_load(woken, *args, 0.0, 20).latency_s == pytest.approx(
        evaluate_load(plain, *args, 0.0, 20).latency_s + wake[-1], abs=1e-12
    )
    lam = 30.0
    x = np.linspace(0.0, 5.0, 2_000_001)
    h = np.interp(x, [0.0, *gaps], [0.0, *wake])
    e_h = float(np.trapezoid(h * lam * np.exp(-lam * x), x) + wake[-1] * np.exp(-lam * 5.0))
    a, b = (evaluate_load(p, *args, lam, 2000, queue_model="exact") for p in (plain, woken))
    assert b.latency_s > a.latency_s  # and the wake-ups occupy the tier: a longer service
    assert b.stations[0].service_mean_s > a.stations[0].service_mean_s
    from earlyexit.planner._load_many import _mean_wake

    got = float(_mean_wake(np.array([0.0, *gaps]), np.array([0.0, *wake]), np.array([lam]))[0])
    assert got == pytest.approx(e_h, rel=1e-6)
