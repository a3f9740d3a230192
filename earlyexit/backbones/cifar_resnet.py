"""CIFAR ResNets of He et al. (2016), depth 6n+2, with option-A (parameter-free) shortcuts.

Decomposition: block 1 is the stem (conv-bn-relu), then one block per residual
block, so ResNet-20 has 10 blocks and ResNet-110 has 55, as in PORTEND's tables.
The final classifying layers are global average pooling, flatten and a linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from earlyexit.backbones._registry import register_backbone
from earlyexit.surgery.decompose import Decomposition, register_decomposer

__all__ = ["CifarResNet", "BasicBlock", "cifar_resnet"]


class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample spatially and zero-pad the new channels."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad - half))


class BasicBlock(nn.Module):
    """Two 3x3 conv-bn layers with a residual connection."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            _ShortcutA(in_planes, planes, stride)
            if stride != 1 or in_planes != planes
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (any size >= 8 works).

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110, ...).
        num_classes: number of classes.
        in_chans: input channels.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


@register_decomposer(CifarResNet)
def _decompose_cifar_resnet(model: CifarResNet) -> Decomposition:
    n = len(model.layers) // 3
    blocks = [("stem", model.stem)]
    for j, layer in enumerate(model.layers):
        blocks.append((f"stage{j // n + 1}.block{j % n + 1}", layer))
    return Decomposition(blocks, nn.Sequential(model.pool, model.flatten, model.fc))


def cifar_resnet(depth: int, num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    """Build a CIFAR ResNet of the given depth (6n+2)."""
    return CifarResNet(depth, num_classes, in_chans)


def _make(depth: int):
    def fn(num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_chans)

    fn.__name__ = f"resnet{depth}"
    fn.__doc__ = f"CIFAR ResNet-{depth} ({(depth - 2) // 2 + 1} blocks)."
    return fn


for _depth in (20, 32, 44, 56, 110):
    register_backbone(
        f"resnet{_depth}",
        input_size=(32, 32),
        description=f"CIFAR ResNet-{_depth}, He et al. 2016 ({(_depth - 2) // 2 + 1} blocks)",
    )(_make(_depth))
