"""The host check: the whole network timed again as the profile timed it, and its note."""

from __future__ import annotations

import dataclasses
import socket
import time

import numpy as np
import pytest

from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.validation.hostcheck import (
    DRIFT_TOLERANCE,
    HostCheck,
    check_host,
    drift_note,
    elsewhere_notes,
    host_checks,
    profiled_times,
)

SLEEPS = (0.002, 0.0, 0.003)


def _sleepy():
    torch = pytest.importorskip("torch")
    from torch import nn

    from earlyexit import MultiExitModel, decompose

    class Sleep(nn.Module):
        def __init__(self, seconds: float) -> None:
            super().__init__()
            self.seconds, self.lin = seconds, nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(self.seconds)
            return self.lin(x)

    net = nn.Sequential(*(Sleep(s) for s in SLEEPS), nn.Linear(8, 3))
    return MultiExitModel(decompose(net, input_shape=(8,), leaf_modules=[Sleep])), torch


def _profile(hosts: dict[str, str]):
    """A 3-block profile whose devices were 'profiled' on the given hosts, eager, 2 reps."""
    prof = synthetic_profile(len(SLEEPS), devices=tuple(hosts), num_classes=3)
    for name, host in hosts.items():
        dev = prof.devices[name]
        meta = {**dev.meta, "host": host, "engine": "torch", "reps": 2, "warmup": 0,
                "gap_s": 0.0, "threads": 1, "batch_size": 2}  # fmt: skip
        prof.devices[name] = dataclasses.replace(dev, meta=meta)
    return prof


def test_check_host_times_the_whole_network_of_devices_profiled_here():
    model, torch = _sleepy()
    prof = _profile({"here": socket.gethostname(), "pi": "some-raspberry-pi"})
    got = check_host(model, prof, ["here", "pi"], torch.randn(8, 8))
    assert list(got) == ["here"]  # the Pi's times say nothing about this machine
    assert got["here"]["cold"] >= sum(SLEEPS)  # every block, not a part
    assert got["here"]["busy"] == got["here"]["cold"]  # profiled without a gap: one time
    with pytest.raises(
        ValueError, match=r"device 'gpu' is not in the profile \(it has \['here', 'pi'\]\)"
    ):
        check_host(model, prof, ["gpu"], torch.randn(8, 8))


def test_host_checks_compare_each_statistic_the_profile_has():
    prof = _profile({"here": socket.gethostname()})
    dev = prof.devices["here"]
    cold = np.asarray(dev.partition_time_s, dtype=float)
    busy = cold * 0.5
    prof.devices["here"] = dataclasses.replace(dev, partition_time_busy_s=busy)
    assert profiled_times(prof, "here") == {"cold": cold[0, -1], "busy": busy[0, -1]}
    now = [{"here": {"cold": cold[0, -1] * 1.2, "busy": busy[0, -1]}},
           {"here": {"cold": cold[0, -1], "busy": busy[0, -1] * 0.9}}]  # fmt: skip
    c, b = host_checks(prof, now)
    assert (c.statistic, c.profiled_s, c.ratio) == ("cold", cold[0, -1], (1.2, 1.0))
    assert (b.statistic, b.profiled_s, b.ratio) == ("busy", busy[0, -1], (1.0, 0.9))
    assert b.to_dict() == {"profiled_s": busy[0, -1], "measured_s": [busy[0, -1], busy[0, -1] * 0.9],
                           "ratio": [1.0, 0.9]}  # fmt: skip
    # no busy table (a profile timed back to back): the cold time only
    prof.devices["here"] = dataclasses.replace(dev, partition_time_busy_s=None)
    assert [h.statistic for h in host_checks(prof, now)] == ["cold"]
    assert host_checks(prof, [now[0], {}]) == []  # measured in only one run: left out


@pytest.mark.parametrize(("ratios", "noted"), [
    ((1.0, 1.0), False), ((1.0 + DRIFT_TOLERANCE - 0.01, 1.0), False),
    ((1.0, 1.0 + DRIFT_TOLERANCE + 0.01), True), ((1.0 - DRIFT_TOLERANCE - 0.01, 1.0), True),
])  # fmt: skip
def test_a_drift_beyond_the_tolerance_before_or_after_is_noted(ratios, noted):
    c = HostCheck("cpu-1thread", "busy", 0.001, tuple(0.001 * r for r in ratios))
    note = drift_note([c, HostCheck("other", "busy", 0.002, (0.002, 0.002))])
    assert (note is not None) == noted
    if noted:
        assert note.startswith("device 'cpu-1thread' ran the whole network (busy) ")
        assert "other" not in note and "profile again right before validating" in note


def test_a_device_profiled_on_another_host_is_named():
    prof = _profile({"here": socket.gethostname(), "pi": "some-raspberry-pi"})
    (note,) = elsewhere_notes(prof, ["here", "pi"])
    assert note.startswith("device 'pi' was profiled on another host ('some-raspberry-pi')")
    assert f"every tier on {socket.gethostname()!r}" in note
    assert elsewhere_notes(prof, ["here"]) == []
