"""A small trained-looking ResNet-20 on the embedded Fashion-MNIST subset, and plans for it."""

from __future__ import annotations

import torch

import earlyexit
from earlyexit.data import EarlyExitDataModule
from earlyexit.formats import Estimate, PartitionPlan, Plan

_BREAKDOWN = dict.fromkeys(("compute", "serialize", "transmit", "propagate"), 0.0)


def make_model() -> tuple[earlyexit.MultiExitModel, EarlyExitDataModule]:
    """ResNet-20 (1x28x28, 10 classes, exits after every block) with BN statistics from data."""
    torch.manual_seed(0)
    dm = EarlyExitDataModule("fashion-mnist", batch_size=64, augment=False)
    backbone = earlyexit.backbones.create("resnet20", num_classes=10, in_chans=1)
    model = earlyexit.MultiExitModel(earlyexit.decompose(backbone, input_shape=(1, 28, 28)))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(dm.dataloader("train", shuffle=False)):
            model(x)
            if i == 1:
                break
    model.eval()
    model.set_temperatures([0.05 + 0.01 * i for i in range(len(model.exits))])
    model.metadata = dm.metadata
    model.normalization = dm.normalization
    return model, dm


def samples(dm: EarlyExitDataModule, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = dm.dataset(split)
    xs, ys = zip(*(ds[i] for i in range(n)), strict=True)
    return torch.stack(xs), torch.stack(ys)


def make_plan(
    model: earlyexit.MultiExitModel, exits: tuple[int, ...], x: torch.Tensor | None = None
) -> Plan:
    """A plan cutting after ``exits``, its threshold the median first-exit entropy on ``x``."""
    threshold = 0.5
    if x is not None:  # about half the samples leave at the first exit
        with torch.no_grad():
            logits = model.select_exits([exits[0]])(x)[0]
        t = model.temperatures[model.exits.index(exits[0])]
        ent = earlyexit.normalized_entropy(logits, t).sort().values
        mid = len(ent) // 2
        threshold = float(ent[mid - 1] + ent[mid]) / 2  # between two samples, never on one
    parts, prev = [], 0
    for tier, e in enumerate(exits):
        parts.append(PartitionPlan(prev + 1, e, tier, f"tier{tier}"))
        prev = e
    n = len(exits)
    return Plan(threshold, tuple(parts), Estimate(0.01, 0.9, (1.0 / n,) * n, _BREAKDOWN))
