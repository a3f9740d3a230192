"""``earlyexit demo``: the whole pipeline on the embedded default, end to end.

It grows as the pipeline's stages land; today it decomposes ResNet-20, builds
the full-configuration multi-exit model and runs real early exit on a batch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["register", "run_demo"]


def run_demo(out: str | Path = "demo_out", threshold: float = 0.9, batch: int = 256) -> dict:
    """Run the demo and write ``out/report.json``.

    Args:
        out: output directory (created).
        threshold: entropy threshold for early exit.
        batch: batch size of the smoke run.

    Returns:
        The report as a dict.
    """
    import torch

    from earlyexit import backbones
    from earlyexit.surgery import MultiExitModel, decompose

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    seq = decompose(
        backbones.create("resnet20", num_classes=10, in_chans=1), input_shape=(1, 28, 28)
    )
    model = MultiExitModel(seq).eval()
    x = torch.randn(batch, 1, 28, 28)
    result = model.predict(x, threshold)
    counts = torch.bincount(result.exit_block, minlength=model.num_blocks + 1)[1:]
    report = {
        "backbone": "resnet20",
        "blocks": [b.to_dict() for b in model.block_info],
        "threshold": threshold,
        "exit_fractions": (counts.float() / batch).tolist(),
        "wall_time_s": time.perf_counter() - start,
    }
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "report.json")
    return report


def _cmd_demo(args: argparse.Namespace) -> int:
    report = run_demo(args.out, args.threshold)
    print(f"resnet20: {len(report['blocks'])} blocks, exits after every block")
    for i, f in enumerate(report["exit_fractions"], 1):
        print(f"  exit {i:2d}: {f:6.1%} of samples")
    print(f"wrote {Path(args.out) / 'report.json'} in {report['wall_time_s']:.1f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser("demo", help="run the end-to-end demo on the embedded default")
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--threshold", type=float, default=0.9)
    p.set_defaults(func=_cmd_demo)
