"""time_partitions times exactly blocks a+1..b+1 of every partition [a, b].

Blocks that sleep a known time make this checkable without timing margins:
a partition's time can never be below the sleeps of the blocks it contains,
whatever the machine's load, so only lower bounds are asserted.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from earlyexit import MultiExitModel, decompose
from earlyexit.profiling.timing import time_partitions

SLEEPS = (0.0, 0.004, 0.0, 0.008)


class _Sleep(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.lin(x)


@pytest.fixture(scope="module")
def sleepy() -> MultiExitModel:
    net = nn.Sequential(*(_Sleep(s) for s in SLEEPS), nn.Linear(8, 3))
    blocks = decompose(net, input_shape=(8,), leaf_modules=[_Sleep])
    assert len(blocks) == len(SLEEPS)
    return MultiExitModel(blocks)


def test_every_partition_contains_exactly_its_blocks(sleepy):
    t = time_partitions(sleepy, torch.randn(1, 8), warmup=0, reps=2)
    n = len(SLEEPS)
    assert t.shape == (n, n)
    assert np.isnan(t[np.tril_indices(n, -1)]).all()
    for a in range(n):
        for b in range(a, n):
            assert t[a, b] >= sum(SLEEPS[a : b + 1]), (a, b, t[a, b])
    # and the partitions without a sleeping block are measured too (finite, positive)
    assert np.isfinite(t[np.triu_indices(n)]).all() and (t[np.triu_indices(n)] > 0).all()


def test_the_model_is_left_as_it_was(sleepy):
    sleepy.train()
    time_partitions(sleepy, torch.randn(2, 8), warmup=0, reps=1)
    assert sleepy.training


def test_onnx_partitions_time_every_partition_and_leave_the_mode():
    """The ONNX engine shares the eager loop: every partition of a 3-block model, NaN below."""
    pytest.importorskip("onnxruntime")
    from earlyexit.profiling.timing import time_onnx_partitions

    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 3))
    model = MultiExitModel(decompose(net, input_shape=(8,))).train()
    n = model.num_blocks
    t = time_onnx_partitions(model, torch.randn(1, 8), warmup=0, reps=2, budget_s=0.0)
    assert t.shape == (n, n)
    assert np.isnan(t[np.tril_indices(n, -1)]).all()
    assert np.isfinite(t[np.triu_indices(n)]).all() and (t[np.triu_indices(n)] > 0).all()
    assert model.training


def test_a_bad_percentile_is_refused_before_any_timing(sleepy):
    sleepy.train()
    for bad in (0.0, 100.5):
        with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\]"):
            time_partitions(sleepy, torch.randn(1, 8), percentile=bad)
    assert sleepy.training


class _Cold(nn.Module):
    """Slow after an idle gap: 4 ms when its last call ended over 30 ms ago, else 1 ms."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.last = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.004 if time.perf_counter() - self.last > 0.03 else 0.001)
        self.last = time.perf_counter()
        return self.lin(x)


def test_a_gap_also_times_the_busy_runs_and_the_idle_curve():
    net = nn.Sequential(_Cold(), nn.Linear(8, 3))
    model = MultiExitModel(decompose(net, input_shape=(8,), leaf_modules=[_Cold]))
    n = model.num_blocks
    busy = np.full((n, n), np.nan)
    curve: dict = {}
    t = time_partitions(model, torch.randn(1, 8), warmup=1, reps=3, gap_s=0.04,
                        busy_out=busy, curve_out=curve)  # fmt: skip
    assert t[0, 0] >= 0.004 and 0.001 <= busy[0, 0] < 0.004  # after the gap, then right after
    assert curve["gap_s"] == [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    f = dict(zip(curve["gap_s"], curve["factor"], strict=True))
    assert min(curve["factor"]) >= 1.0 and np.all(np.diff(curve["factor"]) >= 0)
    assert f[0.002] < 2.0 < f[0.05] and f[0.2] > 2.0  # slow only after gaps past 30 ms
    # without a gap every run is a busy one: the two tables are the same
    busy0 = np.full((n, n), np.nan)
    t0 = time_partitions(model, torch.randn(1, 8), warmup=0, reps=2, busy_out=busy0)
    assert np.array_equal(busy0, t0, equal_nan=True)


def test_a_partition_timed_during_a_burst_of_other_work_is_timed_again(sleepy):
    """The first build of [2..3] runs 30 ms slow (a burst); the check re-times it.

    Only what noise cannot produce is asserted: the burst's time is gone, and the
    other partitions keep their lower bounds.
    """
    from earlyexit.profiling.timing import _time_each_partition, inconsistent_partitions

    builds: dict[tuple[int, int], int] = {}

    def run_of(a: int, b: int, inputs):  # each partition sleeps 2 ms per block
        builds[(a, b)] = builds.get((a, b), 0) + 1
        slow = 0.030 if (a, b) == (1, 2) and builds[(a, b)] == 1 else 0.0
        return lambda: time.sleep(0.002 * (b - a + 1) + slow)

    t = _time_each_partition(sleepy, torch.randn(1, 8), run_of, "x", 0, 3, 50.0, 1.0, False, 0.0)
    assert builds[(1, 2)] >= 2  # built again
    assert t[1, 2] < 0.030  # the burst's time is not kept
    assert t[1, 2] >= 0.004 and t[0, 3] >= 0.008
    t_bad = t.copy()
    t_bad[1, 2] = 10 * t[0, 2]
    assert (1, 2) in inconsistent_partitions(t_bad)


def test_time_network_times_every_block_as_the_profile_times_the_whole_partition(sleepy):
    """The whole network: never below all the blocks' sleeps, the mode left alone."""
    from earlyexit.profiling.timing import time_network

    sleepy.train()
    cold, busy = time_network(sleepy, torch.randn(1, 8), warmup=0, reps=2)
    assert cold >= sum(SLEEPS) and busy == cold  # no gap: one back-to-back time
    assert sleepy.training
    with pytest.raises(ValueError, match="engine must be one of torch, onnx, got 'tvm'"):
        time_network(sleepy, torch.randn(1, 8), engine="tvm")


def test_time_network_after_a_gap_and_right_after_as_the_profile_does():
    """With a gap: the run after it (cold) and the run right after (busy), as ``time_partitions``."""
    from earlyexit.profiling.timing import time_network

    net = nn.Sequential(_Cold(), nn.Linear(8, 3))
    model = MultiExitModel(decompose(net, input_shape=(8,), leaf_modules=[_Cold]))
    cold, busy = time_network(model, torch.randn(1, 8), warmup=1, reps=3, gap_s=0.04)
    assert cold >= 0.004 and 0.001 <= busy < 0.004


def test_time_network_runs_the_onnx_engine():
    pytest.importorskip("onnxruntime")
    from earlyexit.profiling.timing import time_network

    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 3))
    model = MultiExitModel(decompose(net, input_shape=(8,))).train()
    cold, busy = time_network(model, torch.randn(1, 8), engine="onnx", warmup=0, reps=2)
    assert 0 < cold < 1 and busy == cold and model.training
