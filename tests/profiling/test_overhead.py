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
    with pytest.raises(ValueError, match="samples must be an int >= 5"):
        measure_hop_overhead(samples=2)
    with pytest.raises(ValueError, match="max_partitions must be an int >= 2"):
        measure_hop_overhead(max_partitions=1)


def test_in_process_time_grows_with_the_chain():
    x = np.zeros((1, 8), np.float32)
    t1, t3 = in_process_time(1, x, reps=60), in_process_time(3, x, reps=60)
    assert 0 < t1 < t3


@pytest.mark.slow
def test_measured_through_real_workers():
    """Real worker processes: every chain is slower than its in-process work, more so when longer,
    and the model with the measured hop_s predicts each chain's median latency better than without."""
    m = measure_hop_overhead(samples=40, max_partitions=3, warmup=5)
    assert m.hops == (2, 3, 4)
    assert all(meas > inp for meas, inp in zip(m.measured_s, m.in_process_s, strict=True))
    assert m.measured_s[0] < m.measured_s[2]
    assert 0 < m.hop_s < 0.05
    # the excess each chain shows is explained by its hand-offs far better than by nothing
    excess = np.subtract(m.measured_s, m.in_process_s)
    err_with = np.abs(excess - m.hop_s * np.array(m.hops)).sum()
    assert err_with < 0.5 * np.abs(excess).sum()


def test_model_charges_the_measured_kind_of_chain():
    """The deployment measured (T = 0, L workers, source = destination) makes L + 1 hand-offs
    in the model too: its overhead is hop_s * (L + 1) when every device has the same hop_s."""
    prof = synthetic_profile(6, ("d",))
    prof.devices["d"].hop_s = 3e-4
    topo = Topology(tuple(Tier(f"t{j}", "d") for j in range(3)), (Link(1e5, 0), Link(1e5, 0)))
    for cuts, tiers in (([6], [0]), ([3, 6], [0, 1]), ([2, 4, 6], [0, 1, 2])):
        est = evaluate(prof, topo, 0.0, cuts, tiers)
        assert est.breakdown_s["overhead"] == pytest.approx(3e-4 * (len(cuts) + 1))
