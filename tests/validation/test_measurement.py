"""Measurement helpers that need no deployment: scheduling policy, argument checks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from earlyexit.validation import Config, measure
from earlyexit.validation.measurement import thread_niceness, thread_realtime

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling")


def test_realtime_is_inherited_by_children_and_restored():
    before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    with thread_realtime(5) as applied:
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        inside = os.sched_getscheduler(0)
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    if applied:  # root or CAP_SYS_NICE: the deployment's processes inherit the policy
        assert inside == os.SCHED_FIFO and int(child.stdout) == os.SCHED_FIFO
    else:
        assert inside == before[0]
    with thread_realtime(None) as applied:
        assert applied is False


def test_niceness_is_restored():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    with thread_niceness(before + 1) as applied:
        assert applied and os.getpriority(os.PRIO_PROCESS, 0) == before + 1
    assert os.getpriority(os.PRIO_PROCESS, 0) in (before, before + 1)  # raising back may be refused


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_measure_refuses_bad_rounds_before_deploying(tmp_path, bad):
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        measure(tmp_path, Config(0.0, (1,), (0,)), None, np.zeros((1, 2)), None, rounds=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one_at_a_time"):
        measure(tmp_path, Config(0.0, (1,), (0,)), None, np.zeros((1, 2)), None, rounds=3,  # type: ignore[arg-type]
                one_at_a_time=False)  # fmt: skip


@pytest.mark.parametrize("gap", [-0.1, 11.0, "0.1"])
def test_measure_refuses_a_bad_gap(tmp_path, gap):
    with pytest.raises(ValueError, match="gap_s must be a number of seconds"):
        measure(tmp_path, Config(0.0, (1,), (0,)), None, np.zeros((1, 2)), None, gap_s=gap)  # type: ignore[arg-type]


def test_measure_passes_refuses_a_bad_pass_count():
    from earlyexit.validation.measurement import measure_passes

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="passes must be an integer >= 1"):
            measure_passes([], None, np.zeros((0, 1)), None, passes=bad)
