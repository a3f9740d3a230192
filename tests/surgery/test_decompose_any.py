"""Default decomposition of models from timm, torchvision and users (random weights, small inputs).

For each model: decompose with defaults; running the blocks one after the other
and then the classifier gives the model's output; every block takes one tensor
(the previous block's output) at any batch size; the user's model is unchanged,
and decomposing it again works.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx as fx
from torch import nn

from earlyexit import decompose, list_cut_points
from earlyexit.surgery import BlockSequence, register_leaf_module

pytestmark = pytest.mark.fx

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small forwards: one thread avoids oversubscribing a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _state(model: nn.Module) -> dict:
    """Everything decomposing must leave alone: tensors, modes and plain attributes."""
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    attrs = {}
    for name, m in model.named_modules():
        plain = {
            k: (sorted(v) if isinstance(v, dict) else v)
            for k, v in vars(m).items()
            if not k.startswith("_") and isinstance(v, (dict, int, float, str, bool, tuple))
        }
        attrs[name] = (m.training, plain)
    return {"tensors": tensors, "attrs": attrs}


def _assert_same_state(before: dict, after: dict) -> None:
    assert before["attrs"] == after["attrs"]
    assert before["tensors"].keys() == after["tensors"].keys()
    for k, v in before["tensors"].items():
        torch.testing.assert_close(after["tensors"][k], v, rtol=0, atol=0)


def _check(model: nn.Module, input_shape: tuple[int, ...] | None = None, **kwargs) -> BlockSequence:
    torch.manual_seed(0)
    model.eval()
    before = _state(model)
    seq = decompose(model, input_shape=input_shape, **kwargs)
    _assert_same_state(before, _state(model))
    assert len(seq) >= 2, seq.names
    again = decompose(model, input_shape=input_shape, **kwargs)
    assert again.names == seq.names
    _assert_same_state(before, _state(model))
    x = torch.randn(3, *seq.input_shape)  # not one of the batch sizes used for the analysis
    with torch.no_grad():
        expected = model(x)
        h = x
        for block in seq.blocks:
            if isinstance(block, fx.GraphModule):
                inputs = [n for n in block.graph.nodes if n.op == "placeholder"]
                assert len(inputs) == 1, [n.name for n in inputs]
            h = block(h.clone())
            assert isinstance(h, torch.Tensor) and h.shape[0] == 3
        torch.testing.assert_close(seq.classifier(h), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(seq(x), expected, rtol=1e-4, atol=1e-4)
    return seq


def test_timm_vit_every_transformer_block():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32)
    seq = _check(model)  # input shape from the model: (3, 32, 32)
    assert seq.input_shape == (3, 32, 32)
    assert seq.names[-12:] == [f"blocks.{i}" for i in range(12)]
    assert seq.block_info[-1].output_shape == (5, 192)  # class token + 2x2 patches
    coarse = _check(model, max_blocks=4)
    assert len(coarse) == 4 and coarse.names[-1] == "blocks.11"


def test_timm_convnext_stages_or_blocks():
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=10)
    blocks = _check(model, (3, 64, 64))
    stages = _check(model, (3, 64, 64), granularity="stage")
    assert stages.names == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert len(blocks) > len(stages) and "stages.2.blocks.5" in blocks.names


def test_timm_swin():
    model = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, img_size=32,
        window_size=2, embed_dim=24, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
    )  # fmt: skip
    seq = _check(model)
    assert len(seq.block_info[-1].output_shape) == 3  # NHWC feature map


def test_timm_levit_attention_cache_untouched():
    model = timm.create_model("levit_128s", pretrained=False, num_classes=10, img_size=64)
    caches = [m for m in model.modules() if hasattr(m, "attention_bias_cache")]
    assert caches
    model.eval()  # LeViT caches its attention biases in eval mode
    list_cut_points(model, input_shape=(3, 64, 64))
    decompose(model, input_shape=(3, 64, 64))
    assert all(m.attention_bias_cache == {} for m in caches)
    _check(model, (3, 64, 64))  # runs the user's model, which fills its own cache
    assert all(isinstance(v, torch.Tensor) for m in caches for v in m.attention_bias_cache.values())


def test_timm_tf_blocks_with_early_batch_size():
    lite = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)

    class LiteNet(nn.Module):
        """EfficientNet-Lite's body in a forward that reads the batch size first."""

        def __init__(self) -> None:
            super().__init__()
            self.conv_stem, self.bn1, self.blocks = lite.conv_stem, lite.bn1, lite.blocks
            self.fc = nn.Linear(320 * 2 * 2, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bs = x.size(0)
            x = self.blocks(self.bn1(self.conv_stem(x)))
            return self.fc(x.view(bs, -1))

    seq = _check(LiteNet(), (3, 64, 64))
    assert seq.names[-1].startswith("blocks.6")
    # the registered decomposer still serves timm's own EfficientNet
    assert _check(lite, (3, 64, 64)).names[:2] == ["stem", "blocks.0"]


def test_torchvision_regnet_and_shufflenet():
    regnet = _check(torchvision.models.regnet_x_400mf(num_classes=10), (3, 64, 64))
    assert regnet.names[0] == "stem" and regnet.names[1].startswith("trunk_output.block1")
    shuffle = _check(torchvision.models.shufflenet_v2_x0_5(num_classes=10), (3, 64, 64))
    assert "stage4.3" in shuffle.names


@pytest.mark.slow
def test_torchvision_squeezenet_mnasnet_vit():
    _check(torchvision.models.squeezenet1_0(num_classes=10), (3, 64, 64))
    _check(torchvision.models.mnasnet0_5(num_classes=10), (3, 64, 64))
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=10,
    )  # fmt: skip
    seq = _check(vit, (3, 32, 32))  # n, c, h, w = x.shape is read before conv_proj
    assert seq.names[-3:] == [f"encoder.layers.encoder_layer_{i}" for i in range(3)]


class _Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = q @ k.transpose(1, 2)
        if mask is not None:
            att = att + mask
        return x + att.softmax(-1) @ v


class UserNet(nn.Module):
    """Optional forward argument, shape read at the start, a constant bias table."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.blocks = nn.ModuleList([_Attention(8) for _ in range(3)])
        self.bias = nn.Parameter(torch.randn(16, 16) * 0.1)
        self.fc = nn.Linear(8 * 16, 5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        x = self.embed(x).flatten(2).transpose(1, 2)
        for blk in self.blocks:
            x = blk(x, self.bias if mask is None else mask)
        return self.fc(x.reshape(b, -1))


def test_user_module():
    seq = _check(UserNet(), (3, 16, 16))
    assert seq.names == ["embed", "blocks.0", "blocks.1", "blocks.2"]
    assert _check(UserNet(), (3, 16, 16), max_blocks=2).names == ["blocks.0", "blocks.2"]


def test_user_leaf_module_and_errors():
    class Opaque(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: not traceable
                return x * 2
            return x

    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), Opaque(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(64, 2)
    )
    with pytest.raises(ValueError, match="register_leaf_module"):
        decompose(net, input_shape=(3, 8, 8))
    seq = _check(net, (3, 8, 8), leaf_modules=[Opaque])
    assert len(seq) >= 2
    register_leaf_module(Opaque)
    assert _check(copy.deepcopy(net), (3, 8, 8)).names == seq.names
    with pytest.raises(ValueError, match="input_shape is required"):
        decompose(net)
    with pytest.raises(ValueError, match="positive ints"):
        decompose(net, input_shape=(3, 0, 8))


def test_crossing_error_names_tensor_and_blocks():
    model = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(
        ValueError, match=r"tensor 'maxpool'.*block 1.*'add' in block 3.*join block 1 and block 3"
    ):
        decompose(model, (3, 32, 32), cut_points=["maxpool", "layer1.0.conv1", "layer1.0.relu_1"])


class FoldNet(nn.Module):
    """A middle tensor folds patches into the batch axis ([4B, 16]), as TNT's pixel embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.inner = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.post = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.size(0)
        x = self.stem(x)
        x = self.inner(x.reshape(b * 4, 16))
        x = self.post(x.reshape(b, 4, 4, 4))
        return self.fc(x.flatten(1))


def test_blocks_return_batch_first_tensors_only():
    points = list_cut_points(FoldNet(), input_shape=(3, 4, 4))
    assert "stem.1" in points and "post.1" in points
    assert "inner.0" not in points and "inner.1" not in points
    with pytest.raises(ValueError, match="not a tensor that a block can return"):
        decompose(FoldNet(), (3, 4, 4), cut_points=["inner.1"])
    _check(FoldNet(), (3, 4, 4))


class SizeChecked(nn.Module):
    """Checks its input's rank and size in Python, as timm's Gemma4 ViT does."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] % 4 != 0:
            raise ValueError("expected [B, C, H, W] with W divisible by 4")
        return self.fc(self.b(self.a(x)).mean((2, 3)))


def test_input_rank_and_sizes_are_constants_when_needed():
    seq = _check(SizeChecked(), (3, 8, 8))
    assert seq.names == ["a", "b"]
    with pytest.raises(ValueError, match="divisible by 4"):
        decompose(SizeChecked(), (3, 8, 6))


def test_vit_first_exit_reads_an_input_dependent_class_token():
    """The patch embedding alone ends no block: its class token is the same for every input."""
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32)
    seq = decompose(model).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = seq.blocks[0](x)
    assert not torch.equal(first[0, 0], first[1, 0])
    assert len(seq) == 12  # every transformer block; the embedding joined the first
