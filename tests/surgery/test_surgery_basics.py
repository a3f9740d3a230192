"""Surgery on ResNet-20: purity, validation, early exit skipping work, heads, config."""

import pytest
import torch

from earlyexit import MultiExitModel, backbones, decompose, normalized_entropy
from earlyexit.surgery import linear_head, normalize_exits


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return backbones.create("resnet20", num_classes=10).eval()


def test_decompose_is_pure(resnet20):
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    seq = decompose(resnet20)
    mm = MultiExitModel(seq).train()
    opt = torch.optim.SGD(mm.parameters(), lr=1.0)
    sum(o.sum() for o in mm(torch.randn(4, 3, 32, 32))).backward()
    opt.step()
    for k, v in resnet20.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not resnet20.training
    ptrs = {p.data_ptr() for p in resnet20.parameters()}
    assert not ptrs & {p.data_ptr() for p in seq.parameters()}
    assert not {p.data_ptr() for p in seq.parameters()} & {p.data_ptr() for p in mm.parameters()}


def test_surgery_keeps_every_submodules_mode():
    """Trial runs (shapes, MACs, head adaptation) put back each submodule's own mode."""
    torch.manual_seed(0)
    model = backbones.create("resnet20", num_classes=10).train()
    next(m for m in model.layers[4].modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    before = [m.training for m in model.modules()]
    seq = decompose(model)
    mm = MultiExitModel(seq, exits=[1, 5, 10])
    assert [m.training for m in model.modules()] == before
    modes = [m.training for m in seq.modules()]
    assert modes.count(False) == 1 and all(m.training for m in mm.heads.modules())
    assert [m.training for m in mm.blocks.modules()].count(False) == 1


def test_entropy_definition():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    expected = -(p * p.log()).sum() / torch.log(torch.tensor(3.0))
    torch.testing.assert_close(normalized_entropy(p.log()), expected.reshape(1))
    assert float(normalized_entropy(torch.tensor([[100.0, 0.0]]))) < 1e-6
    with pytest.raises(ValueError):
        normalized_entropy(torch.zeros(1, 1))


def test_bad_input_errors(resnet20):
    mm = MultiExitModel(decompose(resnet20)).eval()
    with pytest.raises(ValueError, match="3"):
        mm(torch.randn(2, 1, 32, 32))  # wrong channel count
    with pytest.raises(ValueError, match="shape"):
        mm.predict(torch.randn(3, 32, 32), 0.5)  # no batch axis
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiExitModel(decompose(resnet20), exits=[3, 3, 5])
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiExitModel(decompose(resnet20), exits=[5, 2])
    with pytest.raises(ValueError, match="1..10"):
        MultiExitModel(decompose(resnet20), exits=[0, 4])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        mm.predict(torch.randn(2, 3, 32, 32), 1.5)
    with pytest.raises(TypeError):
        mm.predict(torch.randn(2, 3, 32, 32), "0.5")
    with pytest.raises(ValueError, match="not active"):
        mm.select_exits([2, 4]).select_exits([3])
    with pytest.raises(ValueError, match="num_classes"):
        MultiExitModel(decompose(resnet20), num_classes=7)
    with pytest.raises(TypeError, match="BlockSequence"):
        MultiExitModel("resnet20")


def test_normalize_exits():
    assert normalize_exits(None, 3) == (1, 2, 3)
    assert normalize_exits(-1, 5) == (5,)
    with pytest.raises(TypeError):
        normalize_exits([1.0], 5)
    with pytest.raises(ValueError, match="empty"):
        normalize_exits([], 5)


def test_early_exit_really_skips_computation(resnet20):
    mm = MultiExitModel(decompose(resnet20), exits=[2, 6, 10]).eval()
    x = torch.randn(32, 3, 32, 32)
    rows: dict[int, list[int]] = {i: [] for i in range(1, 11)}
    for i, block in enumerate(mm.blocks, 1):
        block.register_forward_hook(lambda m, inp, out, i=i: rows[i].append(out.shape[0]))
    with torch.no_grad():
        ent2 = normalized_entropy(mm(x)[0])
    threshold = float(ent2.median())
    res = mm.predict(x, threshold)
    left_at_2 = int((res.exit_block == 2).sum())
    assert 0 < left_at_2 < 32
    assert rows[1] == [32, 32] and rows[3][-1] == 32 - left_at_2  # [forward, predict]
    mm.predict(x, 1.0)  # everyone leaves at block 2
    assert len(rows[3]) == 2, "blocks after the first exit must not run when all samples leave"


def test_predict_any_batch_size(resnet20):
    mm = MultiExitModel(decompose(resnet20), exits=[3, 10]).eval()
    for b in (0, 1, 5):
        res = mm.predict(torch.randn(b, 3, 32, 32), 0.5)
        assert res.logits.shape == (b, 10) and res.exit_block.shape == (b,)


def test_head_factories(resnet20):
    seq = decompose(resnet20)
    calls = []

    def factory(block, shape, num_classes):
        calls.append((block, shape))
        return linear_head(block, shape, num_classes)

    mm = MultiExitModel(seq, num_classes=10, exits=[1, 5], head_factory=factory)
    assert calls == [(1, (16, 32, 32)), (5, (32, 16, 16))]
    assert mm.heads["5"][-1].in_features == 32
    # default: copies of the classifier adapted to the block width
    mm = MultiExitModel(seq, exits=[1, 10])
    assert mm.heads["1"][-1].in_features == 16
    torch.testing.assert_close(mm.heads["10"][-1].weight, seq.classifier[-1].weight)
    # a different class count needs non-copied heads
    assert MultiExitModel(seq, num_classes=3, head_factory="linear")(torch.randn(1, 3, 32, 32))[
        0
    ].shape == (1, 3)
    with pytest.raises(TypeError):
        MultiExitModel(seq, head_factory=lambda b, s, c: "not a module")
    with pytest.raises(ValueError, match="valid"):
        MultiExitModel(seq, head_factory="mlp")


def test_config_round_trip(resnet20):
    mm = MultiExitModel(decompose(resnet20)).select_exits([2, 7])
    rebuilt = MultiExitModel.from_config(mm.config, backbones.create)
    rebuilt.load_state_dict(mm.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(mm.eval()(x), rebuilt.eval()(x), strict=True):
            torch.testing.assert_close(a, b)
    assert rebuilt.exits == (2, 7)


def test_temperatures_change_decisions(resnet20):
    mm = MultiExitModel(decompose(resnet20), exits=[1, 10]).eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        ent = normalized_entropy(mm(x)[0])
    t = float(ent.max()) + 1e-3  # every sample would leave at exit 1
    assert (mm.predict(x, t).exit_block == 1).all()
    mm.set_temperatures([1e3, 1.0])  # a hot softmax is nearly uniform
    assert (mm.predict(x, t).exit_block == 10).all()
    with pytest.raises(ValueError):
        mm.set_temperatures([1.0])
