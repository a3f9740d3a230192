"""``earlyexit serve`` (one tier's worker) and ``earlyexit validate``.

Example:
    $ earlyexit serve --bundle bundle/ --tier 1 --bind tcp://*:5556 \\
          --advertise tcp://10.0.0.2:5566 --control-bind tcp://*:5566 \\
          --next tcp://10.0.0.3:5557 --results tcp://10.0.0.1:5558
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "serve_command"]


def _positive(value: str) -> float:
    v = float(value)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return v


def register(subparsers: Any) -> None:
    """Add ``serve`` (and ``validate`` when available) to the ``earlyexit`` command."""
    p = subparsers.add_parser(
        "serve",
        help="run one tier's partition of a bundle as a ZeroMQ worker",
        description="Serve one partition of a bundle. Inputs arrive on --bind; samples that "
        "exit go to --results (the destination), the others to --next (the next partition). "
        "Routes may list emulated-link hops first, the endpoint last.",
    )
    p.add_argument("--bundle", required=True, help="bundle directory (manifest.json)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tier", type=int, help="serve the partition the plan places on tier K")
    which.add_argument("--partition", type=int, help="serve partition K (0-based)")
    p.add_argument("--bind", default="tcp://127.0.0.1:5555", help="input address to bind")
    p.add_argument(
        "--control-bind",
        default="tcp://127.0.0.1:*",
        help="address for acks and heartbeats from the next partition",
    )
    p.add_argument(
        "--advertise",
        default=None,
        help="the control address as upstream reaches it (when binding to *)",
    )
    p.add_argument(
        "--next",
        action="append",
        default=None,
        metavar="ADDR",
        help="route to the next partition's worker (repeat for link hops)",
    )
    p.add_argument(
        "--results",
        action="append",
        required=True,
        metavar="ADDR",
        help="route to the destination's results address (repeat for link hops)",
    )
    p.add_argument("--threshold", type=float, default=None, help="override the bundle's threshold")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "fp16"))
    p.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "onnx", "torchscript"),
        help="ONNX Runtime, or the TorchScript fallback (auto: ONNX when available)",
    )
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument(
        "--slowdown",
        type=_positive,
        default=1.0,
        help="emulate a slower device: sleep (slowdown-1) x compute time",
    )
    p.add_argument("--max-batch", type=int, default=1, help="micro-batch size (messages)")
    p.add_argument("--batch-timeout-ms", type=float, default=0.0)
    p.add_argument("--hwm", type=int, default=64, help="ZeroMQ high-water mark (messages)")
    p.add_argument("--max-message-bytes", type=int, default=None)
    p.add_argument(
        "--dead-after",
        type=_positive,
        default=2.0,
        help="seconds of silence after which the next partition is considered dead",
    )
    p.set_defaults(func=serve_command)
    try:
        from earlyexit.validation import register_validate
    except ModuleNotFoundError as err:
        if err.name != "earlyexit.validation":
            raise
    else:
        register_validate(subparsers)


def serve_command(args: argparse.Namespace) -> int:
    """Run ``earlyexit serve``: build the worker config and serve until SIGTERM/SIGINT.

    Args:
        args: the parsed ``serve`` arguments.

    Returns:
        The exit code.

    Raises:
        ValueError: a tier that hosts no partition, a partition out of range.
    """
    from earlyexit.formats import Manifest
    from earlyexit.runtime.wire import MAX_MESSAGE_BYTES
    from earlyexit.runtime.worker import serve_config

    manifest = Manifest.load(args.bundle)
    plan = manifest.plan
    if args.tier is not None:
        tiers = list(plan.tier_indices)
        if args.tier not in tiers:
            raise ValueError(
                f"the plan places no partition on tier {args.tier}; tiers used: {tiers}"
            )
        k = tiers.index(args.tier)
    else:
        k = args.partition
        if not 0 <= k < len(plan.partitions):
            raise ValueError(f"--partition must be in 0..{len(plan.partitions) - 1}, got {k}")
    last = k == len(plan.partitions) - 1
    if not last and not args.next:
        raise ValueError(
            f"partition {k} is not the last one: give --next (the next worker's route)"
        )
    config = {
        "runner": {
            "kind": "bundle",
            "path": args.bundle,
            "partition": k,
            "precision": args.precision,
            "intra_op_threads": args.threads,
            "engine": args.engine,
        },
        "partition": k,
        "num_partitions": len(plan.partitions),
        "threshold": manifest.threshold if args.threshold is None else args.threshold,
        "tier": plan.partitions[k].tier,
        "last_block": plan.partitions[k].last_block,
        "result_route": args.results,
        "next_route": None if last else args.next,
        "bind": args.bind,
        "control_bind": args.control_bind,
        "advertise": args.advertise,
        "slowdown": args.slowdown,
        "max_batch": args.max_batch,
        "batch_timeout_s": args.batch_timeout_ms / 1000,
        "hwm": args.hwm,
        "max_message_bytes": args.max_message_bytes or MAX_MESSAGE_BYTES,
        "dead_after_s": args.dead_after,
    }
    return serve_config(config)
