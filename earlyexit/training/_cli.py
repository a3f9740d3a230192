"""The ``evaluate`` subcommand (``earlyexit train`` is a LightningCLI, see ``cli.py``)."""

from __future__ import annotations

import argparse
import json

from earlyexit._checks import float_range, input_file, int_range

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the ``earlyexit`` command."""
    p = subparsers.add_parser(
        "evaluate",
        help="per-exit accuracy of a checkpoint, and real early exit at a threshold",
        description="Print each exit's accuracy on a data split and, with --threshold, the "
        "exit fractions and accuracy of real early exit.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        type=input_file,
        help="an earlyexit checkpoint (.pt or .ckpt)",
    )
    p.add_argument(
        "--data",
        default="fashion-mnist",
        help="data spec: fashion-mnist, fashion-mnist:<dir>, cifar10:<dir>, imagefolder:<dir>, "
        "audio:<dir> (default: fashion-mnist, the embedded subset)",
    )
    p.add_argument("--split", default="test", choices=["train", "profile", "test"])
    p.add_argument(
        "--threshold",
        type=float_range(0, 1),
        default=None,
        help="normalized-entropy threshold in [0, 1]",
    )
    p.add_argument("--batch-size", type=int_range(1, 65_536), default=256)
    p.add_argument(
        "--limit", type=int_range(1), default=None, help="evaluate only the first N samples"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from earlyexit.training.evaluation import evaluate, format_result

    result = evaluate(
        args.checkpoint,
        data=args.data,
        split=args.split,
        threshold=args.threshold,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_result(result))
    return 0
