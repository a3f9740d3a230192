"""Training step time of the full configuration against the backbone alone.

ResNet-20 with an exit after each of its 10 blocks, trained on the sum of the
exits' losses with per-exit torchmetrics accuracy (what ``MultiExitModule``
does), against the plain ResNet-20 on its own loss; batch 128, CPU, SGD. The two
are timed in alternation so that load from other processes hits both alike.
Prints the median step times and their ratio (goal: <= 1.35).

    python benchmarks/bench_training.py [--batch 128] [--steps 15] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from earlyexit import MultiExitModel, backbones, decompose


def _step_fn(model: nn.Module, multi_exit: bool, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    metrics = [MulticlassAccuracy(10, average="micro") for _ in range(10)] if multi_exit else []

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        if multi_exit:
            loss = torch.stack([nn.functional.cross_entropy(o, y) for o in out]).sum()
            for metric, logits in zip(metrics, out, strict=True):
                metric.update(logits.detach(), y)
        else:
            loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    shape = (args.in_chans, args.size, args.size)
    backbone = backbones.create("resnet20", num_classes=10, in_chans=args.in_chans).train()
    full = MultiExitModel(decompose(backbone, input_shape=shape), num_classes=10).train()
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, 10, (args.batch,))
    steps = {"backbone": _step_fn(backbone, False, x, y), "full": _step_fn(full, True, x, y)}
    for _ in range(args.warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.steps):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["full"] / med["backbone"]
    result = {
        "model": "resnet20",
        "exits": list(full.exits),
        "batch": args.batch,
        "input_shape": list(shape),
        "threads": torch.get_num_threads(),
        "backbone_step_s": round(med["backbone"], 4),
        "full_config_step_s": round(med["full"], 4),
        "ratio": round(ratio, 3),
        "goal": 1.35,
        "ok": ratio <= 1.35,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"ResNet-20, batch {args.batch}, input {shape}, {result['threads']} thread(s), CPU")
        print(f"  backbone alone      : {med['backbone'] * 1e3:8.1f} ms/step")
        print(f"  full config (10 ex.): {med['full'] * 1e3:8.1f} ms/step")
        print(
            f"  ratio               : {ratio:8.3f}   (goal <= 1.35: {'ok' if result['ok'] else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
