"""Default exit heads for any block output (GraphModule classifiers, tokens, channels-last)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx as fx
from torch import nn

from earlyexit import MultiExitModel
from earlyexit.surgery.decompose import BlockSequence
from earlyexit.surgery.heads import (
    HeadHint,
    adapt_classifier,
    default_head,
    linear_head,
    pooled_head,
    resolve_head_factory,
)

# ------------------------------------------------------------------ classifiers


class _TokenClassifier(nn.Module):
    """ViT-style: final norm, class-token (or mean) pooling, linear."""

    def __init__(self, width: int, classes: int, pool: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.pool = pool
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = x[:, 0] if self.pool == "token" else x[:, 1:].mean(1)
        return self.head(x)


class _BakedNormClassifier(nn.Module):
    """ConvNeXt-style head whose norm width is a constant of the traced graph."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.fc = nn.Linear(width, classes)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        x = nn.functional.layer_norm(x, (self.width,), self.weight, self.bias)
        return self.fc(x)


class _SwinClassifier(nn.Module):
    """Swin-style on ``[H, W, C]``: norm over C, mean over H and W, linear."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x).mean((1, 2)))


def _run(head: nn.Module, shape: tuple[int, ...], batch: int = 3) -> torch.Tensor:
    with torch.no_grad():
        return head.eval()(torch.randn(batch, *shape))


@pytest.mark.fx
def test_graphmodule_classifier_is_adapted_not_refused():
    clf = fx.symbolic_trace(
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.BatchNorm1d(64), nn.Linear(64, 10))
    )
    before = copy.deepcopy(clf.state_dict())
    head = default_head(clf, (64, 4, 4), (16, 16, 16), 10)
    assert isinstance(head, fx.GraphModule)
    assert head.get_submodule("2").num_features == 16
    assert head.get_submodule("3").in_features == 16 and head.get_submodule("3").out_features == 10
    assert _run(head, (16, 16, 16)).shape == (3, 10)
    # the classifier itself is untouched
    assert clf.get_submodule("3").in_features == 64
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())


@pytest.mark.fx
def test_layers_whose_input_is_unchanged_keep_the_classifier_weights():
    """EfficientNet-style: only the first (width-taking) layer is rebuilt."""
    clf = fx.symbolic_trace(
        nn.Sequential(
            nn.Conv2d(32, 48, 1),
            nn.BatchNorm2d(48),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(48, 5),
        )  # fmt: skip
    )
    head = adapt_classifier(clf, (32, 2, 2), (8, 8, 8), num_classes=5)
    assert head.get_submodule("0").in_channels == 8
    torch.testing.assert_close(head.get_submodule("4").weight, clf.get_submodule("4").weight)
    torch.testing.assert_close(
        head.get_submodule("1").running_var, clf.get_submodule("1").running_var
    )


@pytest.mark.fx
def test_baked_norm_falls_back_to_pool_norm_linear():
    clf = fx.symbolic_trace(_BakedNormClassifier(64, 10))
    assert adapt_classifier(clf, (64, 2, 2), (16, 8, 8), num_classes=10) is None
    head = default_head(clf, (64, 2, 2), (16, 8, 8), 10)
    assert [type(m).__name__ for m in head] == ["_Pool", "LayerNorm", "Linear"]
    assert head[1].normalized_shape == (16,) and head[2].in_features == 16
    # the pool averages the spatial axes: a constant map gives the per-channel constant
    x = torch.arange(16.0).view(1, 16, 1, 1).expand(2, 16, 8, 8)
    torch.testing.assert_close(head[0](x), torch.arange(16.0).expand(2, 16))


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_token_heads_use_the_models_pooling(pool):
    clf = _TokenClassifier(32, 7, pool)
    head = pooled_head(clf, (5, 32), (9, 16), 7)
    assert [type(m).__name__ for m in head] == ["_Pool", "LayerNorm", "Linear"]
    assert head[1].normalized_shape == (16,) and head[2].in_features == 16
    x = torch.randn(2, 9, 16)
    y = x.clone()
    y[:, 1:] += torch.randn(2, 8, 16)  # change every token but the class token
    with torch.no_grad():
        same = torch.allclose(head.eval()(x), head(y))
    assert same == (pool == "token")
    # a hint overrides the inference
    hinted = pooled_head(clf, (5, 32), (9, 16), 7, HeadHint(layout="tokens", pooling="token"))
    with torch.no_grad():
        assert torch.allclose(hinted.eval()(x), hinted(y))


@pytest.mark.fx
def test_token_sequences_of_another_width_get_adapted_copies():
    clf = fx.symbolic_trace(_TokenClassifier(32, 7, "token"))
    head = default_head(clf, (5, 32), (5, 16), 7)
    assert head.get_submodule("norm").normalized_shape == (16,)
    assert _run(head, (5, 16)).shape == (3, 7)


@pytest.mark.fx
def test_channels_last_maps_pool_their_spatial_axes():
    clf = fx.symbolic_trace(_SwinClassifier(64, 4))
    # the traced norm is a module, so an adapted copy works ...
    adapted = default_head(clf, (2, 2, 64), (8, 8, 16), 4)
    assert adapted.get_submodule("norm").normalized_shape == (16,)
    assert _run(adapted, (8, 8, 16)).shape == (3, 4)
    # ... and the fallback pools H and W of [H, W, C], not the channels
    head = pooled_head(clf, (2, 2, 64), (8, 8, 16), 4)
    assert head[0].dims == (1, 2) and head[-1].in_features == 16
    assert _run(head, (8, 8, 16)).shape == (3, 4)


def test_anything_else_is_flatten_pool_plus_linear():
    clf = nn.Linear(24, 3)  # the last block already gives a vector
    head = default_head(clf, (24,), (6, 5, 5), 3)  # a rank change: nothing to adapt
    assert [type(m).__name__ for m in head] == ["_Pool", "Linear"]
    assert head[0].mode == "flatten" and head[1].in_features == 6
    assert _run(head, (6, 5, 5)).shape == (3, 3)
    # a single-layer classifier is adapted as a whole; pooled_head takes a vector as is
    adapted = default_head(clf, (24,), (12,), 3)
    assert isinstance(adapted, nn.Linear) and adapted.in_features == 12
    assert [type(m).__name__ for m in pooled_head(clf, (24,), (12,), 3)] == ["Identity", "Linear"]


@pytest.mark.fx
def test_flattening_classifiers_pool_to_the_final_map_first():
    """VGG-style Linear over a flattened map; [1, C] tokens are not such a map."""
    clf = fx.symbolic_trace(nn.Sequential(nn.Flatten(1), nn.Linear(8 * 3 * 2, 4)))
    head = adapt_classifier(clf, (8, 3, 2), (4, 12, 8), num_classes=4)
    assert isinstance(head[0], nn.AdaptiveAvgPool2d) and head[0].output_size == (3, 2)
    assert head.get_submodule("1.1").in_features == 4 * 3 * 2
    token = fx.symbolic_trace(nn.Sequential(nn.Flatten(1), nn.Linear(384, 4)))
    head = adapt_classifier(token, (1, 384), (1, 128), num_classes=4)
    assert head.get_submodule("1").in_features == 128  # no pool over the channels


def test_head_hint_is_checked():
    with pytest.raises(ValueError, match="valid: channels_first, channels_last, tokens"):
        HeadHint(layout="nhwc")
    with pytest.raises(ValueError, match="valid: avg, token"):
        HeadHint(pooling="max")
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        HeadHint(num_prefix_tokens=-1)
    with pytest.raises(TypeError, match="HeadHint"):
        resolve_head_factory(None, nn.Linear(2, 2), (2,), hint={"layout": "tokens"})


def test_maps_of_more_than_three_spatial_axes_are_refused_with_the_shape():
    with pytest.raises(ValueError, match=r"1 to 3 spatial axes, got shape \(2, 3, 4, 5, 6\)"):
        linear_head(1, (2, 3, 4, 5, 6), 10)
    assert linear_head(1, (2, 3, 4, 5), 10)(torch.zeros(1, 2, 3, 4, 5)).shape == (1, 10)


# ------------------------------------------------------------------ MultiExitModel wiring


def _graph_sequence(num_blocks: int, width: int = 8) -> BlockSequence:
    torch.manual_seed(0)
    blocks = [
        (f"b{i}", nn.Sequential(nn.Linear(width, width), nn.ReLU())) for i in range(num_blocks)
    ]
    clf = fx.symbolic_trace(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 5)))
    return BlockSequence(blocks, clf, (width,))


@pytest.mark.fx
def test_many_blocks_build_only_the_asked_exits():
    seq = _graph_sequence(120)
    calls: list[int] = []

    def factory(block, shape, num_classes):
        calls.append(block)
        return nn.Linear(shape[-1], num_classes)

    mm = MultiExitModel(seq, exits=[10, 60, 120], head_factory=factory)
    assert calls == [10, 60, 120] and sorted(mm.heads.keys(), key=int) == ["10", "60", "120"]
    default = MultiExitModel(seq, exits=[7, 120])
    assert list(default.heads.keys()) == ["7", "120"] and default.num_blocks == 120


class _CountedHead(nn.Linear):
    copies = 0

    def __deepcopy__(self, memo):
        type(self).copies += 1
        new = nn.Linear(self.in_features, self.out_features)
        new.load_state_dict(self.state_dict())
        return new


@pytest.mark.fx
def test_select_exits_copies_only_the_kept_heads():
    seq = _graph_sequence(40)
    mm = MultiExitModel(seq, head_factory=lambda b, s, c: _CountedHead(s[-1], c))
    _CountedHead.copies = 0
    small = mm.select_exits([5, 20])
    assert _CountedHead.copies == 2
    assert small.num_blocks == 20 and list(small.heads.keys()) == ["5", "20"]
    x = torch.randn(3, 8)
    with torch.no_grad():
        full, part = mm.eval()(x), small.eval()(x)
    torch.testing.assert_close(part[1], full[19], rtol=0, atol=0)


@pytest.mark.fx
def test_last_exit_is_the_models_own_classifier_with_a_graph_classifier():
    seq = _graph_sequence(4)
    mm = MultiExitModel(seq).eval()
    x = torch.randn(6, 8)
    with torch.no_grad():
        torch.testing.assert_close(mm(x)[-1], seq.eval()(x), rtol=0, atol=0)
    assert isinstance(mm.heads["4"], fx.GraphModule)


class _BakedTokenClassifier(nn.Module):
    """Mean over tokens, then a layer norm whose width is baked into the traced graph."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.fc = nn.Linear(width, classes)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.layer_norm(x.mean(1), (self.width,), self.weight)
        return self.fc(x)


@pytest.mark.fx
def test_multi_exit_model_passes_the_decompositions_hint():
    torch.manual_seed(0)
    blocks = [("embed", nn.Linear(4, 16)), ("wide", nn.Linear(16, 32))]
    clf = fx.symbolic_trace(_BakedTokenClassifier(32, 5))
    seq = BlockSequence(blocks, clf, (6, 4))
    inferred = MultiExitModel(seq)
    assert inferred.heads["1"][0].mode == "tokens_avg"  # the classifier averages tokens
    seq.head_hint = HeadHint(layout="tokens", pooling="token")
    hinted = MultiExitModel(seq)
    assert hinted.heads["1"][0].mode == "token"
    assert [type(m).__name__ for m in hinted.heads["1"]] == ["_Pool", "LayerNorm", "Linear"]
    x = torch.randn(3, 6, 4)
    with torch.no_grad():
        torch.testing.assert_close(hinted.eval()(x)[-1], seq.eval()(x), rtol=0, atol=0)
    seq.head_hint = {"pooling": "token"}
    with pytest.raises(TypeError, match="HeadHint"):
        MultiExitModel(seq)
