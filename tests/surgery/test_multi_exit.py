"""MultiExitModel over every registered backbone: equivalence, real early exit, purity."""

import pytest
import torch

from earlyexit import MultiExitModel, decompose, normalized_entropy
from tests.conftest import make_backbone


@pytest.fixture
def built(backbone_name):
    model, shape = make_backbone(backbone_name)
    seq = decompose(model, input_shape=shape)
    torch.manual_seed(1)
    x = torch.randn(6, *shape)
    return model, seq, x


def test_blocks_in_order_equal_backbone(built):
    model, seq, x = built
    with torch.no_grad():
        ref = model(x)
        h = x
        for block in seq:
            h = block(h)
        out = seq.classifier(h)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(seq.eval()(x), ref, rtol=0, atol=1e-6)


def test_last_exit_equals_backbone_logits(built):
    model, seq, x = built
    mm = MultiExitModel(seq).eval()
    with torch.no_grad():
        outs = mm(x)
    assert len(outs) == len(seq) and all(o.shape == (6, 10) for o in outs)
    torch.testing.assert_close(outs[-1], model(x), rtol=0, atol=1e-6)


def _mixed_threshold(mm: MultiExitModel, x: torch.Tensor) -> float:
    """The threshold at which the samples spread over the most distinct exits."""
    with torch.no_grad():
        ent = torch.stack([normalized_entropy(o) for o in mm(x)])  # [exits, B]
    ent[-1] = -1.0  # the last exit takes everyone left

    def spread(t: float) -> int:
        return len(set((ent < t).float().argmax(0).tolist()))

    candidates = ent[:-1].flatten().sort().values + 1e-6
    return float(max(candidates, key=lambda t: spread(float(t))))


def test_predict_batch_equals_sample_by_sample(built):
    _, seq, x = built
    mm = MultiExitModel(seq).eval()
    threshold = _mixed_threshold(mm, x)
    batch = mm.predict(x, threshold)
    assert len(set(batch.exit_block.tolist())) > 1, (
        "the test needs samples leaving at different exits"
    )
    for j in range(x.shape[0]):
        one = mm.predict(x[j : j + 1], threshold)
        assert one.exit_block.item() == batch.exit_block[j].item()
        assert one.prediction.item() == batch.prediction[j].item()
        torch.testing.assert_close(one.logits[0], batch.logits[j], rtol=1e-4, atol=1e-4)


def test_predict_agrees_with_forward(built):
    """predict's exit and logits are what the exhaustive forward pass implies."""
    _, seq, x = built
    mm = MultiExitModel(seq).eval()
    threshold = _mixed_threshold(mm, x)
    res = mm.predict(x, threshold)
    with torch.no_grad():
        outs = mm(x)
    for j in range(x.shape[0]):
        k = next(
            (k for k, o in enumerate(outs[:-1]) if normalized_entropy(o[j]) < threshold),
            len(outs) - 1,
        )
        assert res.exit_block[j].item() == mm.exits[k]
        torch.testing.assert_close(res.logits[j], outs[k][j], rtol=1e-4, atol=1e-4)


def test_threshold_extremes(built):
    _, seq, x = built
    mm = MultiExitModel(seq).eval()
    assert (mm.predict(x, 0.0).exit_block == len(seq)).all()
    assert (mm.predict(x, 1.0).exit_block == 1).all()


def test_select_exits_partial_dnn(built):
    _, seq, x = built
    mm = MultiExitModel(seq).eval()
    n = len(seq)
    chosen = [1, max(2, n // 2)]
    small = mm.select_exits(chosen)
    assert small.exits == tuple(chosen) and small.num_blocks == chosen[-1]
    assert mm.exits == tuple(range(1, n + 1)) and mm.num_blocks == n  # untouched
    with torch.no_grad():
        full, part = mm(x), small(x)
    for k, e in enumerate(chosen):
        torch.testing.assert_close(part[k], full[e - 1], rtol=0, atol=1e-6)
    assert (small.predict(x, 0.0).exit_block == chosen[-1]).all()


@pytest.mark.fx
def test_from_config_passes_backbone_kwargs():
    """A timm model built with options (img_size) is rebuilt with them."""
    from earlyexit import backbones

    net = backbones.create("timm:vit_tiny_patch16_224", num_classes=4, img_size=32)
    assert net.earlyexit_kwargs == {"img_size": 32}
    config = {
        "backbone": "timm:vit_tiny_patch16_224",
        "backbone_kwargs": {"img_size": 32},
        "num_classes": 4,
        "in_chans": 3,
        "input_shape": [3, 32, 32],
        "exits": [3, -1],
        "head": "copy",
    }
    rebuilt = MultiExitModel.from_config(config, backbones.create).eval()
    assert rebuilt.input_shape == (3, 32, 32) and rebuilt.exits[0] == 3
    with torch.no_grad():
        assert [tuple(o.shape) for o in rebuilt(torch.zeros(2, 3, 32, 32))] == [(2, 4), (2, 4)]
    with pytest.raises(ValueError, match="backbone_kwargs must be a mapping"):
        MultiExitModel.from_config({**config, "backbone_kwargs": [32]}, backbones.create)


@pytest.mark.fx
def test_a_model_built_with_options_round_trips_through_its_config():
    """create(..., img_size=32) is recorded in the config, so from_config rebuilds the same model."""
    from earlyexit import backbones

    net = backbones.create("timm:vit_tiny_patch16_224", num_classes=4, img_size=32)
    model = MultiExitModel(decompose(net), num_classes=4).eval()
    assert model.config["backbone_kwargs"] == {"img_size": 32}
    rebuilt = MultiExitModel.from_config(model.config, backbones.create).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x), strict=True):
            torch.testing.assert_close(a, b)
    plain = MultiExitModel(decompose(backbones.create("resnet20")))
    assert not {"backbone_kwargs", "decomposition"} & set(plain.config)  # digests unchanged


@pytest.mark.parametrize(
    "name, options",
    [
        pytest.param("tv:squeezenet1_0", {}, marks=pytest.mark.fx),
        pytest.param("tv:squeezenet1_0", {"max_blocks": 3}, marks=pytest.mark.fx),
        ("resnet20", {"max_blocks": 4}),
    ],
)
def test_any_decomposition_round_trips_through_its_config(name, options):
    """Models cut by the fx path, or merged with max_blocks, are rebuilt the same way."""
    from earlyexit import backbones

    kw = {"in_chans": 3} if name.startswith("tv:") else {}
    shape = (3, 64, 64) if name.startswith("tv:") else None
    model = MultiExitModel(
        decompose(backbones.create(name, num_classes=5, **kw), input_shape=shape, **options),
        num_classes=5,
    ).eval()
    rebuilt = MultiExitModel.from_config(model.config, backbones.create).eval()
    assert rebuilt.num_blocks == model.num_blocks
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, *model.input_shape)
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x), strict=True):
            torch.testing.assert_close(a, b)
