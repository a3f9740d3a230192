"""The ``tv:``/``timm:`` adapters (any model), declared input sizes and local weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from earlyexit import backbones
from earlyexit.backbones._registry import get_entry


def test_list_backbones_lists_every_adapter_model():
    import timm
    import torchvision

    tv = backbones.list_backbones("tv:*")
    assert tv == sorted(
        f"tv:{n}" for n in torchvision.models.list_models(module=torchvision.models)
    )
    assert "tv:regnet_y_400mf" in tv and "tv:vit_b_16" in tv
    assert not any("quantized" in n or "raft" in n for n in tv)  # classification models only
    assert len(backbones.list_backbones("timm:*")) == len(timm.list_models())
    assert backbones.list_backbones("timm:convnext_at*") == [
        f"timm:{n}" for n in timm.list_models("convnext_at*")
    ]
    # without an adapter prefix, only the registry
    assert (
        "tv:alexnet" not in backbones.list_backbones() and "resnet20" in backbones.list_backbones()
    )


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("tv:inception_v3", (299, 299)),
        ("tv:efficientnet_b3", (300, 300)),
        ("tv:regnet_x_400mf", (224, 224)),
        ("tv:vit_h_14", (224, 224)),
        ("timm:efficientnet_b3", (288, 288)),
        ("timm:vit_base_patch16_384", (384, 384)),
        ("vggish", (96, 64)),
    ],
)
def test_declared_input_size(name, size):
    assert get_entry(name).input_size == size


def test_unknown_adapter_names_point_to_the_lists():
    with pytest.raises(ValueError, match=r"list_backbones\('tv:\*'\)"):
        backbones.create("tv:fasterrcnn_resnet50_fpn")  # detection, not classification
    with pytest.raises(ValueError, match=r"list_backbones\('timm:\*'\)"):
        backbones.create("timm:")


@pytest.mark.parametrize(
    "name", ["tv:squeezenet1_1", "tv:shufflenet_v2_x0_5", "tv:mnasnet0_5", "tv:googlenet"]
)
def test_tv_any_model_and_first_conv(name):
    torch.manual_seed(0)
    model = backbones.create(name, num_classes=7, in_chans=1).eval()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    assert model.earlyexit_input_shape == (1, 224, 224)


def test_timm_any_model_with_options():
    model = backbones.create("timm:vit_tiny_patch16_224", num_classes=3, in_chans=2, img_size=32)
    assert model.earlyexit_input_shape == (2, 32, 32)
    assert model.patch_embed.proj.in_channels == 2
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 2, 32, 32)).shape == (2, 3)
    # a pretrained tag is accepted and downloads nothing (pretrained=False)
    tagged = backbones.create("timm:resnet10t.c3_in1k", num_classes=4)
    assert type(tagged).__name__ == "ResNet" and tagged.earlyexit_input_shape == (3, 176, 176)


def _trained_like(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(123)
    model = backbones.create(name, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_local_weights_round_trip(tmp_path: Path, suffix: str):
    src = _trained_like("resnet20", num_classes=5)
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(src.state_dict(), str(path))
    else:
        torch.save({"state_dict": src.state_dict()} if suffix == ".pt" else src.state_dict(), path)
    fresh = backbones.create("resnet20", num_classes=5)
    loaded = backbones.create("resnet20", num_classes=5, weights=path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), src.eval()(x), rtol=0, atol=0)
        assert not torch.allclose(fresh.eval()(x), src(x))


def test_local_weights_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        backbones.create("resnet20", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="nothing is downloaded"):
        backbones.create("resnet20", weights="IMAGENET1K_V1")
    path = tmp_path / "ten.pth"
    torch.save(backbones.create("resnet20", num_classes=10).state_dict(), path)
    with pytest.raises(
        ValueError, match=r"mis-shaped: fc.weight: file \(10, 64\) vs model \(5, 64\)"
    ):
        backbones.create("resnet20", num_classes=5, weights=path)
    with pytest.raises(ValueError, match="missing: layers.9"):
        backbones.create("resnet56", num_classes=10, weights=path)
    with pytest.raises(ValueError, match="unexpected: .*layers.3"):
        sd = backbones.create("resnet32", num_classes=10).state_dict()
        torch.save(sd, tmp_path / "deeper.pth")
        backbones.create("resnet20", num_classes=10, weights=tmp_path / "deeper.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        backbones.create("resnet20", weights=tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        backbones.create("resnet20", weights=tmp_path / "list.pth")
