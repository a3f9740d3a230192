"""slice(): pure, per plan, partitions that chain to the model's own outputs."""

from __future__ import annotations

import pytest
import torch

from earlyexit.formats import Plan
from earlyexit.surgery.slicing import Partition, partition_ranges, slice


def test_slice_is_pure(model, plan):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parts = slice(model, plan)
    with torch.no_grad():
        for p in parts:
            for prm in p.parameters():
                prm.add_(1.0)  # partitions own copies
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and not any(p.training for p in parts)


def test_partitions_chain_to_model_outputs(model, plan, verify_data):
    x = verify_data[0][:16]
    parts = slice(model, plan)
    assert [(p.first_block, p.last_block) for p in parts] == [(1, 3), (4, 10)]
    assert [p.output_names for p in parts] == [
        ("logits", "entropy", "features"),
        ("logits", "entropy"),
    ]
    with torch.no_grad():
        ref = model.select_exits([3, 10])(x)
        l1, e1, f1 = parts[0](x)
        l2, e2 = parts[1](f1)
    torch.testing.assert_close(l1, ref[0])
    torch.testing.assert_close(l2, ref[1])
    t = model.temperatures
    torch.testing.assert_close(e1, _entropy(ref[0], float(t[2])))
    torch.testing.assert_close(e2, _entropy(ref[1], float(t[9])))
    assert float(parts[0].temperature) == pytest.approx(float(t[2]))
    assert parts[1].input_shape == tuple(f1.shape[1:])


def _entropy(logits: torch.Tensor, t: float) -> torch.Tensor:
    p = torch.softmax(logits / t, -1)
    return -(p * p.clamp_min(1e-30).log()).sum(-1) / torch.log(torch.tensor(10.0))


def test_plan_exits_and_pairs_agree(model, plan):
    assert partition_ranges(model, plan) == ((1, 3), (4, 10))
    assert partition_ranges(model, [3, -1]) == ((1, 3), (4, 10))
    assert partition_ranges(model, [(1, 3), (4, 10)]) == ((1, 3), (4, 10))
    assert partition_ranges(model, 5) == ((1, 5),)  # a partial DNN in one partition
    assert isinstance(plan, Plan)


@pytest.mark.torchscript
def test_partition_traces_without_branches(model, plan, verify_data):
    part = slice(model, plan)[0]
    x = verify_data[0][:4]
    traced = torch.jit.trace(part, (x,), check_trace=False)
    with torch.no_grad():
        for a, b in zip(traced(x[:1]), part(x[:1]), strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ([(1, 3), (5, 10)], ValueError, "continue the previous"),
        ([(2, 10)], ValueError, "continue the previous"),
        ([4, 3], ValueError, "strictly increasing"),
        ([11], ValueError, "out of range"),
        ([(1, 3.0)], TypeError, "pair of ints"),
        ("3,10", TypeError, "Plan, a list of exits"),
        ({"exits": [3]}, TypeError, "Plan, a list of exits"),
    ],
)
def test_bad_partitions_are_rejected(model, spec, error, match):
    with pytest.raises(error, match=match):
        slice(model, spec)


def test_inactive_exit_is_named(model):
    small = model.select_exits([2, 6])
    with pytest.raises(ValueError, match=r"active exits: \[2, 6\]"):
        slice(small, [3, 6])
    with pytest.raises(TypeError, match="MultiExitModel"):
        slice(torch.nn.Linear(2, 2), [1])


def test_partition_validates_its_arguments():
    with pytest.raises(ValueError, match="temperature"):
        Partition([torch.nn.Identity()], torch.nn.Identity(), 0.0, 0, 1, 1, True, (2,), (2,), 2)
    with pytest.raises(ValueError, match="need 2 modules"):
        Partition([torch.nn.Identity()], torch.nn.Identity(), 1.0, 0, 1, 2, True, (2,), (2,), 2)
