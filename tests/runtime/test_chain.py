"""The early-exit chain: one rule, batch-size independent, computing only what stays."""

from __future__ import annotations

import numpy as np
import pytest

from earlyexit.runtime.chain import ChainResult, exit_step, first_exits, leaves, run_chain
from earlyexit.runtime.synthetic import SyntheticModel


class _Counting:
    """A partition runner that records how many rows it was given."""

    def __init__(self, run):
        self.run, self.rows = run, []

    def __call__(self, x):
        self.rows.append(len(x))
        return self.run(x)


@pytest.mark.parametrize("threshold", [0.0, 0.4, 0.6, 1.0])
def test_chain_is_the_same_at_any_batch_size_and_skips_work(threshold):
    m = SyntheticModel(num_partitions=3, seed=2)
    x = m.inputs(64, seed=4)
    runners = [_Counting(m.runner(k)) for k in range(3)]
    out = run_chain(runners, x, threshold, exit_blocks=[2, 5, 9])
    # each sample alone gives the same exit and logits as in the batch
    for i in range(0, 64, 7):
        one = run_chain([m.runner(k) for k in range(3)], x[i : i + 1], threshold, [2, 5, 9])
        assert one.exit_partition[0] == out.exit_partition[i]
        np.testing.assert_allclose(one.logits[0], out.logits[i], rtol=1e-4, atol=1e-4)
    # partition k ran only on the samples that had not left before it
    reached = [int((out.exit_partition >= k).sum()) for k in range(3)]
    assert [sum(r.rows) for r in runners] == reached
    assert all(len(r.rows) <= 1 for r in runners)  # one batch per partition, never per sample
    assert out.exit_block.tolist() == [[2, 5, 9][k] for k in out.exit_partition]
    if threshold == 0.0:
        assert set(out.exit_partition.tolist()) == {2}  # nothing is below 0: all run to the end
    if threshold == 1.0:
        assert set(out.exit_partition.tolist()) == {0}
    # the rule read off forced entropies gives the same exits
    forced, h = [], x
    for k in range(3):
        logits, ent, h = m.run_partition(k, h)
        forced.append(ent)
    np.testing.assert_array_equal(first_exits(np.stack(forced), threshold), out.exit_partition)
    # the result reads like the dict predict used to return
    assert isinstance(out, ChainResult) and set(out.keys()) >= {"prediction", "exit_block"}
    np.testing.assert_array_equal(out["prediction"], out.logits.argmax(-1))


def test_step_splits_leavers_from_stayers_and_checks_its_runner():
    def run(x):
        ent = np.array([0.1, 0.9, 0.2], np.float32)[: len(x)]
        return np.eye(3, 4, dtype=np.float32)[: len(x)], ent, x * 2

    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    step = exit_step(run, x, 0.5, last=False)
    assert step.leave.tolist() == [0, 2] and step.stay.tolist() == [1]
    np.testing.assert_array_equal(step.features, x[[1]] * 2)
    assert exit_step(run, x, 0.5, last=True).features is None
    # the comparison is made in float32, as torch does: 0.1f is not below float32(0.1)
    assert not leaves(np.array([0.1], np.float32), 0.1, last=False)[0]
    with pytest.raises(ValueError, match="expected"):
        exit_step(lambda x: (np.zeros((1, 4)), np.zeros(1), None), x, 0.5, last=True)
    with pytest.raises(ValueError, match="features"):
        exit_step(lambda x: (np.zeros((3, 4)), np.ones(3), None), x, 0.5, last=False)
    for bad, err in ((1.5, ValueError), (True, TypeError), ("0.5", TypeError)):
        with pytest.raises(err, match="threshold"):
            run_chain([run], x, bad)  # type: ignore[arg-type]
