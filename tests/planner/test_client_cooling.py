"""The client's cooling (docs/spec.md#the-client): computed by hand, absent is the old model, the search stays exact."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from earlyexit.formats import Link, Profile, Tier, Topology
from earlyexit.planner import plan
from earlyexit.planner.bruteforce import brute_force_best, brute_force_candidates
from earlyexit.planner.latency import CostModel, evaluate
from earlyexit.planner.search import search
from earlyexit.planner.space import make_space
from earlyexit.planner.synthetic import synthetic_profile

DEVICES = ("a1.medium", "m4.large", "g4dn.xlarge")
ENC = {"wait_s": [0.002, 0.01, 0.05], "encode_s": [1e-4, 3e-4, 4e-4], "decode_s": [0.0, 0.0, 0.0]}
DEC = {"wait_s": [0.005, 0.1], "encode_s": [0.0, 0.0], "decode_s": [2e-4, 2.2e-3]}


def _topo(source: int = 0, destination: int = 2) -> Topology:
    tiers = tuple(
        Tier(f"t{j}", d, s) for j, (d, s) in enumerate(zip(DEVICES, (3.0, 1.0, 0.5), strict=True))
    )
    return Topology(tiers, (Link(10, 20), Link(400, 40)), mtu_bytes=9000,
                    source=source, destination=destination)  # fmt: skip


@pytest.fixture(scope="module")
def prof() -> Profile:
    return synthetic_profile(8, DEVICES, num_samples=80, seed=5)


def _with_clients(profile: Profile) -> Profile:
    out = copy.deepcopy(profile)
    out.devices["a1.medium"].client_curve = dict(ENC)
    out.devices["g4dn.xlarge"].client_curve = dict(DEC)
    return out


def _by_hand(lat: float) -> float:
    """s_src (enc(R) - enc(w_1)) + s_dst (dec(R) - dec(w_1)), a scalar loop over the points."""

    def interp(w: list[float], v: list[float], x: float) -> float:
        if x <= w[0]:
            return v[0]
        for a, b, va, vb in zip(w, w[1:], v, v[1:], strict=False):
            if x <= b:
                return va + (x - a) / (b - a) * (vb - va)
        return v[-1]

    enc = interp(ENC["wait_s"], ENC["encode_s"], lat) - ENC["encode_s"][0]
    dec = interp(DEC["wait_s"], DEC["decode_s"], lat) - DEC["decode_s"][0]
    return 3.0 * enc + 0.5 * dec


@pytest.mark.parametrize(
    ("threshold", "cuts", "tiers"),
    [(0.0, [8], [0]), (0.0, [8], [2]), (0.5, [3, 8], [0, 2]), (0.4, [2, 5, 8], [0, 1, 2])],
)
def test_the_client_cooling_is_its_curves_growth_stretched(prof, threshold, cuts, tiers):
    """Lat = R + s_src (enc(R) - enc(w_1)) + s_dst (dec(R) - dec(w_1)), R the latency
    without the term; the source's encode curve and the destination's decode curve,
    charged to the overhead."""
    topo = _topo()
    before = evaluate(prof, topo, threshold, cuts, tiers)
    after = evaluate(_with_clients(prof), topo, threshold, cuts, tiers)
    r = before.latency_s
    assert r > ENC["wait_s"][0]  # the term is not 0 here: the check can fail
    assert after.latency_s == pytest.approx(r + _by_hand(r), rel=1e-12)
    assert after.latency_s > r
    grown = after.breakdown_s["overhead"] - before.breakdown_s["overhead"]
    assert grown == pytest.approx(_by_hand(r), rel=1e-9)
    assert sum(after.breakdown_s.values()) == pytest.approx(after.latency_s, rel=1e-12)


def test_only_the_source_encodes_and_only_the_destination_decodes(prof):
    """Swap source and destination: the curves on the other ends charge nothing."""
    topo = _topo(source=2, destination=0)
    before = evaluate(prof, topo, 0.0, [8], [1])
    after = evaluate(_with_clients(prof), topo, 0.0, [8], [1])
    # g4dn (now the source) has no encode growth, a1.medium (the destination) no decode
    assert after.latency_s == before.latency_s


def test_absent_curves_are_the_model_without_the_term(prof):
    topo = _topo()
    cm = CostModel(prof, topo)
    assert cm.client_curves == (None, None)
    assert cm.client_cooling(0.3) == 0.0
    assert np.all(cm.client_cooling(np.array([0.0, 1.0])) == 0.0)
    assert cm.client_wait_within(0.25) == 0.25


def test_the_latency_bound_is_inverted_exactly(prof):
    """client_wait_within(y) is the largest R with R + cooling(R) <= y: below the first
    point, between points and beyond the last."""
    cm = CostModel(_with_clients(prof), _topo())
    for y in (0.001, 0.004, 0.03, 0.07, 0.2, 1.0):
        r = cm.client_wait_within(y)
        assert r + cm.client_cooling(r) == pytest.approx(y, rel=1e-12, abs=1e-15)
        assert r + 1e-9 + cm.client_cooling(r + 1e-9) > y


def test_a_latency_bound_counts_the_cooling_and_the_search_stays_exact(prof):
    """P_acc under a bound that some plans meet only without the term: the search and the
    brute force agree, and the plan's reported latency, which holds the term, meets it."""
    profile = _with_clients(prof)
    cm = CostModel(profile, _topo())
    space = make_space(cm)
    lats = np.array(brute_force_candidates(cm, space, "portend")[0])
    for bound in np.quantile(lats, [0.05, 0.3, 0.7]):
        got = search(cm, space, "portend", "max_accuracy", float(bound))
        ref = brute_force_best(cm, space, "portend", "max_accuracy", float(bound))
        assert got[0].key == ref[2] and got[0].latency == pytest.approx(ref[0], abs=1e-12)
        p = plan(profile, _topo(), max_latency=float(bound))
        assert p.estimate.latency_s <= bound + 1e-9
    # a bound that only the term's absence would meet is not met
    fastest = float(lats.min())
    r = cm.client_wait_within(fastest)
    assert r < fastest
    with pytest.raises(ValueError, match="no configuration meets max_latency"):
        plan(profile, _topo(), max_latency=r + 0.5 * (fastest - r))
