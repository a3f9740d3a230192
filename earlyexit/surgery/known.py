"""Built-in decomposers for third-party classes (torchvision ResNet and MobileNetV3, timm EfficientNet).

They register lazily: only when a model whose class comes from torchvision or
timm is decomposed, so that importing surgery imports neither library, and
surgery never imports :mod:`earlyexit.backbones`.

- torchvision ResNet: the stem (conv1, bn1, relu, maxpool), then one block per
  residual block; the classifier is avgpool, flatten, fc.
- torchvision MobileNetV3: ``features[0]`` (the stem) and each inverted residual;
  the last 1x1 convolution belongs with the classifier (conv, pool, flatten, MLP).
- timm EfficientNet: the stem (conv_stem, bn1) and its stages, 8 blocks for
  EfficientNet-B0; the head convolution (conv_head, bn2) belongs with the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from earlyexit.surgery.decompose import Decomposition, register_decomposer

__all__ = ["ensure_known_decomposers"]

_DONE: set[str] = set()


class _Flatten(nn.Module):
    """Flatten after timm's pool when it does not flatten itself (a no-op otherwise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _register_torchvision() -> None:
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


def _register_timm() -> None:
    from timm.models.efficientnet import EfficientNet

    @register_decomposer(EfficientNet)
    def _decompose_timm_efficientnet(model: EfficientNet) -> Decomposition:
        blocks: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(model.conv_stem, model.bn1))]
        blocks += [(f"blocks.{i}", stage) for i, stage in enumerate(model.blocks)]
        head = nn.Sequential(
            model.conv_head, model.bn2, model.global_pool, _Flatten(),
            nn.Dropout(float(getattr(model, "drop_rate", 0.0))), model.classifier,
        )  # fmt: skip
        return Decomposition(blocks, head)


_LIBRARIES = {"torchvision": _register_torchvision, "timm": _register_timm}


def ensure_known_decomposers(model: nn.Module) -> None:
    """Register the decomposers of the library that ``model``'s class comes from (once)."""
    for klass in type(model).__mro__:
        library = klass.__module__.partition(".")[0]
        if library in _LIBRARIES and library not in _DONE:
            _DONE.add(library)
            try:
                _LIBRARIES[library]()
            except ImportError:  # pragma: no cover - a library too old for these classes
                pass
