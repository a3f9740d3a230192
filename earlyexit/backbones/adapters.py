"""Adapters for torchvision ResNets and MobileNetV3 (``tv:``) and timm EfficientNets (``timm:``).

Weights are random: nothing is downloaded. Decomposition:

- torchvision ResNet: the stem (conv1, bn1, relu, maxpool), then one block per
  residual block; the classifier is avgpool, flatten, fc.
- torchvision MobileNetV3: ``features[0]`` (the stem) and each inverted residual;
  the last 1x1 convolution belongs with the classifier (conv, pool, flatten, MLP).
- timm EfficientNet: the stem (conv_stem, bn1) and its 7 stages, 8 blocks for
  EfficientNet-B0; the head convolution (conv_head, bn2) belongs with the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from earlyexit.backbones._registry import BackboneEntry, register_backbone
from earlyexit.surgery.decompose import Decomposition, register_decomposer

__all__ = ["adapter_entry"]

_TV_RESNETS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2",
)  # fmt: skip
_TV_MOBILENETS = ("mobilenet_v3_small", "mobilenet_v3_large")
_LISTED_TV = ("resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large")
_LISTED_TIMM = ("efficientnet_b0",)


def _replace_conv_in(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None,
    )  # fmt: skip


def _tv_resnet(name: str, num_classes: int, in_chans: int) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_chans != 3:
        model.conv1 = _replace_conv_in(model.conv1, in_chans)
    return model


def _tv_mobilenet(name: str, num_classes: int, in_chans: int) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_chans != 3:
        model.features[0][0] = _replace_conv_in(model.features[0][0], in_chans)
    return model


def _timm_model(name: str, num_classes: int, in_chans: int) -> nn.Module:
    import timm
    from timm.models.efficientnet import EfficientNet

    if name not in timm.list_models():
        raise ValueError(f"unknown timm model {name!r}")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if not isinstance(model, EfficientNet):
        raise ValueError(
            f"timm:{name} is a {type(model).__name__}; only timm EfficientNet-family "
            "models have a built-in decomposition (decompose others with cut_points=)"
        )
    return model


def adapter_entry(name: str) -> BackboneEntry | None:
    """Return a registry entry for an adapter name not listed explicitly, else None."""
    prefix, _, model_name = name.partition(":")
    if prefix == "tv" and model_name in _TV_RESNETS:
        return BackboneEntry(name, lambda **kw: _tv_resnet(model_name, **kw), (224, 224))
    if prefix == "tv" and model_name in _TV_MOBILENETS:
        return BackboneEntry(name, lambda **kw: _tv_mobilenet(model_name, **kw), (224, 224))
    if prefix == "timm" and model_name:
        return BackboneEntry(name, lambda **kw: _timm_model(model_name, **kw), (224, 224))
    return None


for _name in _LISTED_TV:
    _entry = adapter_entry(f"tv:{_name}")
    register_backbone(_entry.name, _entry.input_size, f"torchvision {_name}")(_entry.fn)
for _name in _LISTED_TIMM:
    _entry = adapter_entry(f"timm:{_name}")
    register_backbone(_entry.name, _entry.input_size, f"timm {_name}")(_entry.fn)


def _register_decomposers() -> None:
    from torchvision.models.mobilenetv3 import MobileNetV3
    from torchvision.models.resnet import ResNet

    @register_decomposer(ResNet)
    def _decompose_tv_resnet(model: ResNet) -> Decomposition:
        blocks: list[tuple[str, nn.Module]] = [
            ("stem", nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool))
        ]
        for li in range(1, 5):
            for bi, block in enumerate(getattr(model, f"layer{li}")):
                blocks.append((f"layer{li}.{bi}", block))
        return Decomposition(blocks, nn.Sequential(model.avgpool, nn.Flatten(1), model.fc))

    @register_decomposer(MobileNetV3)
    def _decompose_tv_mobilenet(model: MobileNetV3) -> Decomposition:
        feats = list(model.features)
        blocks = [("stem", feats[0])] + [(f"features.{i}", m) for i, m in enumerate(feats[1:-1], 1)]
        head = nn.Sequential(feats[-1], model.avgpool, nn.Flatten(1), *model.classifier)
        return Decomposition(blocks, head)

    try:
        from timm.models.efficientnet import EfficientNet
    except ImportError:  # pragma: no cover - timm is a dependency
        return

    @register_decomposer(EfficientNet)
    def _decompose_timm_efficientnet(model: EfficientNet) -> Decomposition:
        blocks: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(model.conv_stem, model.bn1))]
        blocks += [(f"blocks.{i}", stage) for i, stage in enumerate(model.blocks)]
        head = nn.Sequential(
            model.conv_head, model.bn2, model.global_pool, _Flatten(),
            nn.Dropout(float(getattr(model, "drop_rate", 0.0))), model.classifier,
        )  # fmt: skip
        return Decomposition(blocks, head)


class _Flatten(nn.Module):
    """Flatten after timm's pool when it does not flatten itself (a no-op otherwise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


_register_decomposers()
