"""Real early exit against the full backbone, and against the ideal speed-up.

ResNet-110 with exits after blocks 10, 30 and 55, batch 256 on the CPU, at the
threshold where half the samples leave at block 10. Prints the measured
throughput of ``MultiExitModel.predict`` against the plain backbone, the ideal
speed-up computed from per-block costs and the exit fractions, and their ratio
(goal: >= 0.8).

    python benchmarks/bench_early_exit.py [--batch 256] [--reps 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from earlyexit import MultiExitModel, backbones, decompose, normalized_entropy


def _time(fn, reps: int) -> float:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _realistic_resnet110() -> torch.nn.Module:
    """Random weights, with BN statistics estimated on random data so that
    activations (and exit entropies) are well scaled, as in a trained network."""
    torch.manual_seed(0)
    model = backbones.create("resnet110", num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, 3, 32, 32))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    backbone = _realistic_resnet110()
    model = MultiExitModel(decompose(backbone), exits=[10, 30, 55]).eval()
    x = torch.randn(args.batch, 3, 32, 32)
    with torch.no_grad():
        ent10 = normalized_entropy(model(x)[0])
    threshold = float(ent10.median()) + 1e-7  # about half leave at block 10
    result = model.predict(x, threshold)
    frac = {e: float((result.exit_block == e).float().mean()) for e in model.exits}
    reach = {10: 1.0, 30: 1.0 - frac[10], 55: 1.0 - frac[10] - frac[30]}

    # per-block and per-head costs on the full batch
    with torch.no_grad():
        block_cost, head_cost, h = [], {}, x
        for i, block in enumerate(model.blocks, 1):
            block_cost.append(_time(lambda b=block, h=h: b(h), 3))
            h = block(h)
            if str(i) in model.heads:
                head_cost[i] = _time(lambda i=i, h=h: model.heads[str(i)](h), 5)
    full_cost = sum(block_cost) + head_cost[55]
    ee_cost = 0.0
    prev = 0
    for e in model.exits:
        ee_cost += reach[e] * (sum(block_cost[prev:e]) + head_cost[e])
        prev = e
    ideal = full_cost / ee_cost

    with torch.no_grad():
        backbone(x)
        model.predict(x, threshold)  # warm-up
        t_full, t_ee = [], []
        for _ in range(args.reps):  # interleaved, so both see the same machine
            t_full.append(_time(lambda: backbone(x), 1))
            t_ee.append(_time(lambda: model.predict(x, threshold), 1))
    t_full_m, t_ee_m = statistics.median(t_full), statistics.median(t_ee)
    measured = t_full_m / t_ee_m
    out = {
        "batch": args.batch,
        "threshold": threshold,
        "exit_fractions": frac,
        "full_backbone_samples_per_s": args.batch / t_full_m,
        "early_exit_samples_per_s": args.batch / t_ee_m,
        "measured_speedup": measured,
        "ideal_speedup": ideal,
        "fraction_of_ideal": measured / ideal,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"resnet110, exits {list(model.exits)}, batch {args.batch}, {out['threads']} threads")
    print(
        f"threshold {threshold:.4f}: exit fractions "
        + ", ".join(f"{e}: {f:.1%}" for e, f in frac.items())
    )
    print(f"full backbone     {out['full_backbone_samples_per_s']:8.1f} samples/s")
    print(f"early exit        {out['early_exit_samples_per_s']:8.1f} samples/s")
    print(
        f"measured speed-up {measured:6.2f}x   ideal {ideal:6.2f}x   fraction of ideal {measured / ideal:.2f} (goal >= 0.8)"
    )


if __name__ == "__main__":
    main()
