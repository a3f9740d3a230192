"""tools/load_study.py: the emulated devices' profile and the knee, by hand."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from earlyexit.formats import Link, Tier, Topology
from earlyexit.planner.synthetic import synthetic_profile
from tests._scripts import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("tools/load_study.py")


def test_knee_interpolates_where_the_loss_crosses(study):
    assert study.knee([10, 20, 30], [0.0, 0.005, 0.015]) == pytest.approx(25.0)
    assert np.isnan(study.knee([10, 20], [0.02, 0.03]))
    assert study.knee([10, 20], [0.0, 0.001]) == 20


def test_emulated_shifts_the_busy_time_and_curve_by_the_slept_idle(study):
    base = synthetic_profile(4, devices=("dev",), seed=3)
    dev = base.devices["dev"]
    curve = {"gap_s": [0.01, 0.1], "factor": [1.2, 2.0]}
    dev = dataclasses.replace(dev, partition_time_busy_s=dev.partition_time_s * 0.5,
                              idle_curve=curve, hop_cpu_s=1e-3)  # fmt: skip
    prof = dataclasses.replace(base, devices={"dev": dev})
    topo = Topology((Tier("slow", "dev", 5.0), Tier("fast", "dev", 1.0)), (Link(50.0, 1.0),))
    plan = SimpleNamespace(cut_points=(2, 4), tier_indices=(0, 1))  # blocks 1-2 slow, 3-4 fast
    eprof, etopo = study.emulated(prof, topo, plan)
    # the slow tier has its own device; the fast one keeps the original
    assert etopo.tiers[0].device == "dev@slow" and etopo.tiers[1].device == "dev"
    g0 = 4.0 * (float(dev.partition_time_busy_s[0, 1]) + 1e-3)  # (s - 1)(busy + hop_cpu)
    f0 = float(np.interp(g0, [0.0, 0.01, 0.1], [1.0, 1.2, 2.0]))
    assert f0 > 1.0
    new = eprof.devices["dev@slow"]
    np.testing.assert_allclose(new.partition_time_busy_s, dev.partition_time_busy_s * f0)
    assert new.hop_cpu_s == pytest.approx(1e-3 * f0)
    want = [max(1.0, float(np.interp(g + g0, [0.0, 0.01, 0.1], [1.0, 1.2, 2.0])) / f0)
            for g in (0.01, 0.1)]  # fmt: skip
    assert new.idle_curve["factor"] == pytest.approx(want)
    assert eprof.devices["dev"] is prof.devices["dev"]
    # a tier without a curve, or not slower than the host, is left alone
    flat = dataclasses.replace(prof, devices={"dev": dataclasses.replace(dev, idle_curve=None)})
    assert study.emulated(flat, topo, plan)[1].tiers[0].device == "dev"


def test_a_worker_measured_curve_replaces_the_first_tiers_rebased_one(study):
    base = synthetic_profile(4, devices=("dev",), seed=3)
    dev = dataclasses.replace(base.devices["dev"], idle_curve={"gap_s": [0.01], "factor": [1.5]},
                              partition_time_busy_s=base.devices["dev"].partition_time_s * 0.5)  # fmt: skip
    prof = dataclasses.replace(base, devices={"dev": dev})
    topo = Topology((Tier("slow", "dev", 5.0), Tier("slow2", "dev", 3.0)), (Link(50.0, 1.0),))
    plan = SimpleNamespace(cut_points=(2, 4), tier_indices=(0, 1))
    measured = {"gap_s": [0.005, 0.02], "factor": [1.1, 1.4], "wake_s": [1e-4, 3e-4]}
    eprof, etopo = study.emulated(prof, topo, plan, measured)
    first, second = eprof.devices["dev@slow"], eprof.devices["dev@slow2"]
    assert first.idle_curve == measured  # as measured in the worker, not re-based
    assert "wake_s" not in second.idle_curve  # the other tier: re-based from the profile's
    rebased = study.emulated(prof, topo, plan)[0].devices["dev@slow"]
    np.testing.assert_allclose(first.partition_time_busy_s, rebased.partition_time_busy_s)
    # with the worker's CPU per message back to back, that sets the busy time's factor
    own = float(dev.partition_time_busy_s[0, 1]) + (dev.hop_cpu_s or 0.0)
    cpu = {**measured, "cpu_s": [1.3 * own, 1.5 * own]}
    got = study.emulated(prof, topo, plan, cpu)[0].devices["dev@slow"]
    np.testing.assert_allclose(got.partition_time_busy_s, dev.partition_time_busy_s * 1.3)


def test_a_profile_curve_measured_at_the_tiers_slowdown_is_not_rebased(study):
    base = synthetic_profile(4, devices=("dev",), seed=3)
    d0 = base.devices["dev"]
    busy = d0.partition_time_s * 0.5
    whole = float(busy[0, 3]) + 1e-3  # the whole network's busy time + hop_cpu_s
    curve = {"gap_s": [0.005, 0.02], "factor": [1.1, 1.4], "wake_s": [1e-4, 3e-4]}
    idle = {"cpu_s": [1.2 * whole, 1.3 * whole, 1.6 * whole], "slowdown": 5.0}
    dev = dataclasses.replace(d0, partition_time_busy_s=busy, idle_curve=curve, hop_cpu_s=1e-3,
                              extra={**d0.extra, "idle": idle})  # fmt: skip
    prof = dataclasses.replace(base, devices={"dev": dev})
    plan = SimpleNamespace(cut_points=(2, 4), tier_indices=(0, 1))
    topo = Topology((Tier("slow", "dev", 5.0), Tier("other", "dev", 3.0)), (Link(50.0, 1.0),))
    eprof, _ = study.emulated(prof, topo, plan)
    got = eprof.devices["dev@slow"]
    assert got.idle_curve == curve  # measured as that tier runs: taken as it is
    np.testing.assert_allclose(got.partition_time_busy_s, busy * 1.2)
    other = eprof.devices["dev@other"]  # measured at 5x, not 3x: re-based as before
    assert other.idle_curve["factor"] != curve["factor"]
