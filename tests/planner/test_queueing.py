"""The model under load (docs/spec.md#load): formulas against each other and a discrete-event simulation."""

from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from earlyexit.planner.estimators import exit_fractions
from earlyexit.planner.latency import CostModel, evaluate
from earlyexit.planner.queueing import (
    _station_metrics,
    evaluate_load,
    loss_ratio_approx,
    mg1k_approx,
    mg1k_exact,
    mm1k,
)
from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.planner.topology import resolve_topology


def _seed_formula(rho: float, s2: float, k: int) -> float:
    """Slide 12 of the seed, transcribed literally."""
    sr = math.sqrt(rho)
    num = rho ** ((sr * s2 - sr + 2 * k) / (2 + sr * s2 - sr)) * (rho - 1)
    den = rho ** (2 * (1 + sr * s2 - sr + k) / (2 + sr * s2 - sr)) - 1
    return num / den


def _mm1k_by_hand(rho: float, k: int) -> tuple[float, float]:
    """M/M/1/K: p_n = (1 - rho) rho^n / (1 - rho^(K+1))."""
    p = [(1 - rho) * rho**n / (1 - rho ** (k + 1)) for n in range(k + 1)]
    return p[k], sum(n * q for n, q in enumerate(p))


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.01, 3.0).filter(lambda r: abs(r - 1) > 1e-3),
    st.floats(0.0, 4.0),
    st.integers(1, 60),
)
def test_approx_is_the_seed_formula(rho, s2, k):
    if 2 + math.sqrt(rho) * (s2 - 1) <= 0.05:  # outside the formula's domain: fluid limit
        assert float(loss_ratio_approx(rho, s2, k)) == pytest.approx(1 - 1 / rho)
        return
    ref = _seed_formula(rho, s2, k)
    assert float(loss_ratio_approx(rho, s2, k)) == pytest.approx(ref, rel=1e-9, abs=1e-300)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.01, 3.0).filter(lambda r: abs(r - 1) > 1e-3), st.integers(1, 40))
def test_scv_one_is_mm1k_and_the_chain_agrees(rho, k):
    loss, n = _mm1k_by_hand(rho, k)
    a_loss, a_n = mg1k_approx(rho, 1.0, k)
    assert float(a_loss) == pytest.approx(loss, rel=1e-9, abs=1e-15)
    assert float(a_n) == pytest.approx(n, rel=1e-9, abs=1e-12)
    assert mm1k(rho, k) == pytest.approx((loss, n), rel=1e-9, abs=1e-15)
    # the embedded chain with exponential service is M/M/1/K too (lambda = 1, mean = rho)
    e_loss, e_n = mg1k_exact(1.0, [rho], capacity=k, exponential=True)
    assert e_loss == pytest.approx(loss, rel=1e-7, abs=1e-12)
    assert e_n == pytest.approx(n, rel=1e-7, abs=1e-12)


def test_at_rho_one_the_limits_hold():
    # M/M/1/K at rho = 1: uniform on 0..K
    assert float(loss_ratio_approx(1.0, 1.0, 9)) == pytest.approx(0.1, rel=1e-6)
    # the seed's formula at rho -> 1: (1 + s2) / (2 (s2 + K))
    assert float(loss_ratio_approx(1.0, 0.5, 10)) == pytest.approx(1.5 / 21, rel=1e-5)


def test_exact_md1_matches_pollaczek_khinchine_for_large_k():
    for rho in (0.2, 0.5, 0.8):
        loss, n = mg1k_exact(rho, [1.0], capacity=200)
        assert loss < 1e-12
        assert n == pytest.approx(rho + rho**2 / (2 * (1 - rho)), rel=1e-9)


def test_exact_m_g_1_1_is_erlang_loss():
    loss, _ = mg1k_exact(2.0, [0.1, 0.5], [0.5, 0.5], capacity=1)
    assert loss == pytest.approx(0.6 / 1.6)


@pytest.mark.parametrize(
    "s2_times", [([1.0], [1.0]), ([0.5, 1.5], [0.5, 0.5]), ([0.2, 3.4], [0.8, 0.2])]
)
@pytest.mark.parametrize("rho", [0.5, 0.9, 1.2])
@pytest.mark.parametrize("k", [3, 10])
def test_approx_and_exact_agree_within_a_few_points(s2_times, rho, k):
    times, probs = np.array(s2_times[0]), np.array(s2_times[1])
    mean = float(times @ probs)
    scv = float((times**2) @ probs) / mean**2 - 1
    lam = rho / mean
    e_loss, _ = mg1k_exact(lam, times, probs, capacity=k)
    a_loss, _ = mg1k_approx(rho, scv, k)
    # a two-moment approximation of a distribution with point masses: a few points at most
    assert abs(float(a_loss) - e_loss) < 0.03, (float(a_loss), e_loss)


# ---------------------------------------------------------------------- simulation


def _simulate(route_of, lam: float, k: int, n: int, seed: int) -> tuple[float, float]:
    """FIFO stations that hold at most k messages; returns (loss ratio, mean wait per completed sample).

    ``route_of(rng)`` gives one sample's route, a list of (station, service time).
    """
    rng = np.random.default_rng(seed)
    events: list[tuple[float, int, str, int]] = []
    routes, step, waited = {}, {}, {}
    queue: dict = {}
    busy: dict = {}
    seq = 0
    t = 0.0
    for i in range(n):
        t += rng.exponential(1 / lam)
        routes[i] = route_of(rng)
        heapq.heappush(events, (t, seq, "arrive", i))
        seq += 1
    lost = done = 0
    total_wait = 0.0
    while events:
        now, _, kind, i = heapq.heappop(events)
        if kind == "arrive":
            if step.get(i, 0) == len(routes[i]):
                done += 1
                total_wait += waited.get(i, 0.0)
                continue
            s, _svc = routes[i][step.get(i, 0)]
            q = queue.setdefault(s, deque())
            if len(q) + busy.get(s, 0) >= k:
                lost += 1
                continue
            q.append((i, now))
            if not busy.get(s, 0):
                j, arrived = q.popleft()
                busy[s] = 1
                waited[j] = waited.get(j, 0.0) + now - arrived
                heapq.heappush(events, (now + routes[j][step.get(j, 0)][1], seq, "leave", j))
                seq += 1
        else:  # "leave": i finishes at its station, goes on; the next in line starts
            s = routes[i][step.get(i, 0)][0]
            step[i] = step.get(i, 0) + 1
            heapq.heappush(events, (now, seq, "arrive", i))
            seq += 1
            q = queue[s]
            if q:
                j, arrived = q.popleft()
                waited[j] = waited.get(j, 0.0) + now - arrived
                heapq.heappush(events, (now + routes[j][step.get(j, 0)][1], seq, "leave", j))
                seq += 1
            else:
                busy[s] = 0
    return lost / n, total_wait / max(done, 1)


@pytest.mark.parametrize("rho,k", [(0.6, 4), (0.9, 8), (1.3, 5)])
def test_exact_single_queue_matches_simulation(rho, k):
    times, probs = np.array([0.2, 1.0, 2.5]), np.array([0.5, 0.3, 0.2])
    lam = rho / float(times @ probs)
    loss, n_sys = mg1k_exact(lam, times, probs, capacity=k)
    wait = n_sys / (lam * (1 - loss)) - float(times @ probs)
    n = 60_000
    drawn = iter(np.random.default_rng(2).choice(times, size=n, p=probs).tolist())
    sim_loss, sim_wait = _simulate(lambda _r: [("s", next(drawn))], lam, k, n, 1)
    assert abs(sim_loss - loss) < 4 * math.sqrt(loss * (1 - loss) / n) + 0.004
    assert sim_wait == pytest.approx(wait, rel=0.05)


def _route_sampler(cm: CostModel, threshold: float, cuts, tiers):
    """One sample's route through a 2-partition configuration, built from the raw cost terms."""
    e, _s, _ = exit_fractions(cm.profile, threshold, cuts, "portend")
    src = dst = 0
    assert (cm.source, cm.destination) == (src, dst) and tiers[0] == 0
    b, c = cuts
    w1, w2 = tiers
    rb = float(cm.profile.result_bits)
    base1 = cm.dt[w1, 0] + cm.ct[w1, 0, b]
    base2 = cm.dt[w2, b] + cm.ct[w2, b, c] + cm.rst[w2]
    up = [(("link", j, "up"), cm.bits[b] / cm.bw[j]) for j in range(w1, w2)]
    down = [(("link", j, "down"), rb / cm.bw[j]) for j in reversed(range(dst, w2))]

    def route(rng: np.random.Generator) -> list:
        if rng.random() < e[0]:
            return [(("tier", w1), base1 + cm.rst[w1])]
        return [(("tier", w1), base1 + cm.st[w1, b]), *up, (("tier", w2), base2), *down]

    return route


@pytest.mark.parametrize("rate,k", [(10.0, 5), (14.0, 20), (25.0, 6)])
def test_configuration_matches_simulation(rate, k):
    """Loss and queueing delay of a whole 2-tier path against a simulation of the same stations."""
    prof = synthetic_profile(10)
    topo = resolve_topology("portend-aws")
    cm = CostModel(prof, topo)
    thr, cuts, tiers = 0.5, [4, 10], [0, 2]
    est = evaluate_load(prof, topo, thr, cuts, tiers, rate, k, queue_model="exact")
    n = 40_000
    sim_loss, sim_wait = _simulate(_route_sampler(cm, thr, cuts, tiers), rate, k, n, 7)
    model_wait = est.latency_s - est.unloaded_latency_s
    # loss within 0.02 absolute. The queueing delay: Poisson arrivals at every station is an
    # approximation downstream; the edge's departures are spaced by its service time (46 ms),
    # so the link after it (52 ms a message) queues less than the model says. The model is
    # conservative: at least the simulated delay, at most 40 % more (measured: +18 % to +34 %).
    assert abs(sim_loss - est.loss_ratio) < 0.02, (sim_loss, est.loss_ratio)
    assert sim_wait <= model_wait <= 1.4 * sim_wait, (model_wait, sim_wait)


def test_tiny_rate_is_the_unloaded_latency_and_monotone_in_rate():
    prof = synthetic_profile(10)
    base = evaluate(prof, "portend-aws", 0.5, [4, 10], [0, 2]).latency_s
    assert evaluate_load(prof, "portend-aws", 0.5, [4, 10], [0, 2], 0.0).latency_s == base
    tiny = evaluate_load(prof, "portend-aws", 0.5, [4, 10], [0, 2], 1e-9)
    assert tiny.latency_s == pytest.approx(base, abs=1e-9) and tiny.loss_ratio < 1e-12
    losses = [
        evaluate_load(prof, "portend-aws", 0.5, [4, 10], [0, 2], lam, 10).loss_ratio
        for lam in (1, 5, 10, 20, 40, 80)
    ]
    assert all(a <= b + 1e-15 for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] > 0.3


def test_thinning_downstream_sees_the_fraction_that_goes_on():
    prof = synthetic_profile(10)
    est = evaluate_load(prof, "portend-aws", 0.5, [4, 10], [0, 2], 5.0, 50)
    e, s, _ = exit_fractions(prof, 0.5, [4, 10])
    by = {x.name: x for x in est.stations}
    assert by["tier 0 (edge)"].arrival_rate == pytest.approx(5.0)
    surv = 1 - by["tier 0 (edge)"].loss_ratio
    assert by["tier 2 (cloud)"].arrival_rate == pytest.approx(
        5.0 * s[0] * surv * (1 - by["link 0 up"].loss_ratio) * (1 - by["link 1 up"].loss_ratio)
    )
    assert by["tier 2 (cloud)"].utilization == pytest.approx(
        by["tier 2 (cloud)"].arrival_rate * by["tier 2 (cloud)"].service_mean_s
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"arrival_rate": -1.0}, "arrival_rate"),
        ({"arrival_rate": float("nan")}, "arrival_rate"),
        ({"arrival_rate": 1.0, "queue_capacity": 0}, "queue_capacity"),
        ({"arrival_rate": 1.0, "queue_capacity": 2.5}, "queue_capacity"),
        ({"arrival_rate": 1.0, "queue_model": "mm1"}, "queue_model"),
        ({"arrival_rate": 1.0, "queue_capacity": 5000, "queue_model": "exact"}, "queue_capacity"),
    ],
)
def test_bad_load_arguments_are_named(kwargs, match):
    prof = synthetic_profile(6)
    with pytest.raises((ValueError, TypeError), match=match):
        evaluate_load(prof, "portend-aws", 0.0, [6], [0], **kwargs)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 4.0), st.integers(1, 200))
def test_loss_grows_with_the_rate(s2, k):
    """The search's pruning relies on it (a station's loss grows with its arrival rate)."""
    rho = np.linspace(0.0, 3.0, 301)
    loss = loss_ratio_approx(rho, s2, k)
    assert np.all(np.diff(loss) >= -1e-12)
    exact = [mg1k_exact(r, [0.5, 1.5], [0.5, 0.5], capacity=min(k, 30)) for r in rho[1::30]]
    assert np.all(np.diff([x[0] for x in exact]) >= -1e-12)
    # and so do the mean waits (the search bounds the latency with the first tier's)
    times, probs = np.array([0.5, 1.5]), np.array([0.5, 0.5])
    for model in ("approx", "exact"):
        waits = [_station_metrics(r, times, probs, min(k, 30), model)[4] for r in rho[1::10]]
        assert np.all(np.diff(waits) >= -1e-9), (model, waits)


def test_a_tiers_service_time_includes_its_stretched_hop_cost():
    """The runtime's cost per hand-off enters a tier's service time as the latency model charges
    it: hop_s plus (slowdown - 1) x hop_cpu_s (docs/spec.md#runtime-overhead)."""
    from dataclasses import replace

    from earlyexit.planner.queueing import evaluate_load
    from earlyexit.planner.synthetic import synthetic_profile
    from earlyexit.planner.topology import resolve_topology

    prof = synthetic_profile(6)
    topo = resolve_topology("portend-aws")
    topo = replace(topo, tiers=(replace(topo.tiers[0], slowdown=10.0), *topo.tiers[1:]))
    base = evaluate_load(prof, topo, 0.0, [6], [0], arrival_rate=5.0).stations[0]
    dev = prof.devices[topo.tiers[0].device]
    prof.devices[topo.tiers[0].device] = replace(dev, hop_s=0.001, hop_cpu_s=0.0005)
    with_hop = evaluate_load(prof, topo, 0.0, [6], [0], arrival_rate=5.0).stations[0]
    assert with_hop.service_mean_s - base.service_mean_s == pytest.approx(0.001 + 9 * 0.0005)


def test_loss_grows_with_the_rate_when_a_link_carries_several_hand_offs():
    """Tiers 1, 0, 2: link 0 carries the input up and the features up again, past tier 1.

    Its loss feeds back on its own traffic (more loss upstream, less traffic, less loss);
    the fixed point used to swing between two states and stop on either (the loss ratio
    fell to 0 as the rate grew past saturation). It must grow with the rate.
    """
    from earlyexit.formats import Link, Tier, Topology

    tiers = (Tier("edge", "a1.medium"), Tier("base", "m4.large"), Tier("cloud", "g4dn.xlarge"))
    topo = Topology(tiers, (Link(10, 20), Link(400, 40)), mtu_bytes=9000)
    prof = synthetic_profile(100, ("a1.medium", "m4.large", "g4dn.xlarge"), seed=1)
    rates = np.linspace(20, 40, 11)
    losses = [
        evaluate_load(prof, topo, 0.5, [7, 9, 54], [1, 0, 2], lam).loss_ratio for lam in rates
    ]
    assert all(b >= a - 1e-9 for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] > 0.5  # far past saturation most samples are lost


def test_a_row_of_several_placements_solved_at_once_is_its_own_estimate():
    """load_groups (placements side by side, one fixed point) gives every row what
    load_many gives it alone, and estimate_of_solved rebuilds load_of_configuration's
    estimate from its row: the same stations in the same order, the same values."""
    from itertools import permutations

    from earlyexit.planner._load_many import load_groups
    from earlyexit.planner._underload_bounds import portend_e
    from earlyexit.planner.queueing import estimate_of_solved, load_of_configuration

    prof = synthetic_profile(10)
    cm = CostModel(prof, resolve_topology("portend-aws"))
    rng = np.random.default_rng(0)
    groups = []
    for n_parts in (1, 2, 3):
        for d in permutations(range(cm.m), n_parts):
            cuts = np.sort(rng.choice(np.arange(1, 11), size=(3, n_parts), replace=False), 1)
            groups.append((d, cuts, portend_e(cm.er[int(rng.integers(0, 11))][cuts])))
    for lam in (2.0, 30.0, 300.0):  # light, loaded, saturated
        delay, loss, solved = load_groups(cm, groups, lam, 5, detail=True)
        row = 0
        for d, cuts, e in groups:
            for c, ek in zip(cuts, e, strict=True):
                alone = load_of_configuration(cm, c, d, ek, [0.0] * len(d), 0.1, lam, 5)
                got = estimate_of_solved(
                    cm, c, d, ek, solved, row, delay[row], loss[row], 0.1, lam, 5
                )
                assert [s.name for s in got.stations] == [s.name for s in alone.stations]
                for a, b in zip(got.stations, alone.stations, strict=True):
                    va, vb = a.to_dict(), b.to_dict()
                    assert (va.pop("name"), va.pop("kind")) == (vb.pop("name"), vb.pop("kind"))
                    assert va == pytest.approx(vb, rel=1e-12, abs=1e-15)
                assert got.latency_s == pytest.approx(alone.latency_s, rel=1e-12)
                assert got.loss_ratio == pytest.approx(alone.loss_ratio, rel=1e-12, abs=1e-15)
                row += 1
