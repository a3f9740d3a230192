"""Default exits on representative timm and torchvision models (random weights, small inputs).

For each model: ``decompose`` (its default blocks; hand-picked cut points where a
model has none), default heads for the chosen exits, the last exit equal to the
model's output, and ``predict`` doing real early exit on a batch: hooks count
the samples every block sees, and samples that left never reach later blocks.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from earlyexit import MultiExitModel, backbones, decompose, normalized_entropy

pytestmark = pytest.mark.fx  # timm and torchvision models cut by torch.fx

# name, create kwargs, input shape, cut points for a tracer without default blocks
# (a "!" first forces them: Swin's stage ends give channels-last [H, W, C] blocks)
CASES: dict[str, tuple[str, dict, tuple[int, ...], list[str] | None]] = {
    "vit": ("timm:vit_tiny_patch16_224", {"img_size": 32}, (3, 32, 32), None),
    "convnext": (
        "timm:convnext_atto", {}, (3, 32, 32), ["add_1", "add_3", "add_9", "add_11"],
    ),
    "efficientnet": ("timm:efficientnet_lite0", {}, (3, 32, 32), None),
    "levit": ("timm:levit_128s", {"img_size": 64}, (3, 64, 64), None),
    "tv_squeezenet": ("tv:squeezenet1_1", {}, (3, 64, 64), None),
}  # fmt: skip
SLOW_CASES: dict[str, tuple[str, dict, tuple[int, ...], list[str] | None]] = {
    "swin": (
        "timm:swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 4},
        (3, 64, 64), ["!", "reshape_7", "reshape_16", "reshape_41", "reshape_50"],
    ),
    "regnet": (
        "timm:regnetx_002", {}, (3, 32, 32),
        ["s1.b1.act3", "s2.b1.act3", "s3.b4.act3", "s4.b7.act3"],
    ),
    "tv_regnet": (
        "tv:regnet_x_400mf", {}, (3, 32, 32),
        [
            "trunk_output.block1.block1-0.activation",
            "trunk_output.block2.block2-1.activation",
            "trunk_output.block3.block3-6.activation",
            "trunk_output.block4.block4-11.activation",
        ],
    ),
    "tv_efficientnet": ("tv:efficientnet_b0", {}, (3, 32, 32), None),
    "tv_convnext": ("tv:convnext_tiny", {}, (3, 32, 32), None),
    "deit": ("timm:deit_tiny_distilled_patch16_224", {"img_size": 32}, (3, 32, 32), None),
}  # fmt: skip


def _build(case: tuple) -> tuple[nn.Module, object, tuple[int, ...]]:
    name, kwargs, shape, cuts = case
    torch.manual_seed(0)
    model = backbones.create(name, num_classes=10, in_chans=shape[0], **kwargs)
    # eval-mode batch norm with init statistics makes deep random nets degenerate
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, *shape))
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cuts and cuts[0] == "!":
            return model, decompose(model, input_shape=shape, cut_points=cuts[1:]), shape
        try:
            seq = decompose(model, input_shape=shape)
        except ValueError as err:
            if cuts is None or "cut_points" not in str(err):
                raise
            seq = decompose(model, input_shape=shape, cut_points=cuts)
    return model, seq, shape


def _spread_exits(n: int, k: int = 4) -> list[int]:
    return sorted({max(1, round(i * n / k)) for i in range(1, k)} | {n})


def _check_model(case: tuple, all_exits: bool = False) -> None:
    model, seq, shape = _build(case)
    n = len(seq)
    assert n >= 3, f"too few blocks to test early exit: {seq.names}"
    exits = None if all_exits else _spread_exits(n)
    mm = MultiExitModel(seq, exits=exits).eval()
    torch.manual_seed(1)
    x = torch.randn(8, *shape)
    with torch.no_grad():
        outs = mm(x)
        ref = model(x)
    assert all(o.shape == (8, 10) and torch.isfinite(o).all() for o in outs)
    torch.testing.assert_close(outs[-1], ref, rtol=1e-4, atol=1e-4)  # last exit == model

    # a threshold that lets some samples leave at the first exit and keeps the others
    ent = torch.stack([normalized_entropy(o) for o in outs])
    first = ent[0].sort().values
    threshold = float((first[3] + first[4]) / 2)  # 4 of 8 samples leave at exit 1
    assert first[3] < first[4], "the test needs distinct entropies at the first exit"
    seen = [0] * mm.num_blocks

    def counter(i):
        def hook(module, args):
            seen[i] += args[0].shape[0]

        return hook

    handles = [b.register_forward_pre_hook(counter(i)) for i, b in enumerate(mm.blocks)]
    try:
        res = mm.predict(x, threshold)
    finally:
        for h in handles:
            h.remove()
    left_early = int((res.exit_block == mm.exits[0]).sum())
    assert left_early == 4
    first_exit = mm.exits[0]
    assert seen[:first_exit] == [8] * first_exit
    # every later block sees exactly the samples that have not left yet
    for block in range(first_exit + 1, mm.num_blocks + 1):
        remaining = int((res.exit_block >= block).sum())
        assert seen[block - 1] == remaining < 8
    # each sample's exit and logits are what the exhaustive forward pass implies
    for j in range(8):
        k = next((k for k in range(len(outs) - 1) if ent[k, j] < threshold), len(outs) - 1)
        assert res.exit_block[j].item() == mm.exits[k]
        torch.testing.assert_close(res.logits[j], outs[k][j], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_default_exits_and_real_early_exit(case: str) -> None:
    _check_model(CASES[case])


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SLOW_CASES), ids=list(SLOW_CASES))
def test_default_exits_heavier_models(case: str) -> None:
    _check_model(SLOW_CASES[case])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["convnext", "levit"])
def test_a_head_after_every_block(case: str) -> None:
    _check_model(CASES[case], all_exits=True)
