"""``earlyexit serve``: one tier's worker.

Example:
    $ earlyexit serve --bundle bundle/ --tier 1 --bind tcp://*:5556 \\
          --advertise tcp://10.0.0.2:5566 --control-bind tcp://*:5566 \\
          --next tcp://10.0.0.3:5557 --results tcp://10.0.0.1:5558
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from earlyexit._checks import check_bindable, float_range, int_range, zmq_address
from earlyexit._cliutil import add_fields, name_flags
from earlyexit._signatures import add_param, read_constant, read_fields, read_signature

__all__ = ["register", "serve_command", "adapt_command", "MAX_HWM"]

_OPTIONS = "earlyexit.runtime.options"
MAX_HWM: int = read_constant(_OPTIONS, "MAX_HWM")
"""The largest ZeroMQ high-water mark ``serve`` takes: :data:`earlyexit.runtime.options.MAX_HWM`,
read from its source (this module imports no numpy)."""
_MAX_MESSAGE = 2**31 - 1
# WorkerOptions fields that serve computes from the bundle (every other field is a flag)
_FROM_BUNDLE = frozenset({"partition", "num_partitions", "tier", "next_tier", "last_block",
                          "heartbeat_s"})  # fmt: skip


def _bundle_dir(text: str) -> str:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a directory; expected a bundle directory (with manifest.json)"
        )
    return text


def _cpu_list(text: str) -> tuple[int, ...]:
    """An argparse type: ``0,2`` -> CPU numbers, checked by ``check_cpu_affinity``."""
    from earlyexit.runtime.cpus import check_cpu_affinity  # the standard library only

    try:
        cpus = [int(t) for t in text.split(",") if t.strip()]
        if not cpus:
            raise ValueError("no CPU number")
        return check_cpu_affinity(cpus, "--cpu-affinity")
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(
            f"expected distinct CPU numbers such as 1 or 0,1, got {text!r} ({err})"
        ) from None


def _shapes() -> dict[str, dict[str, Any]]:
    """What serve's options need beyond WorkerOptions' own declaration of each field."""
    bind, connect = zmq_address(bind=True), zmq_address(bind=False)
    route = {"action": "append", "type": connect, "metavar": "ADDR"}
    return {
        "threshold": {"type": float_range(0, 1), "default": None,
                      "more": "Default: the bundle's threshold."},
        "result_route": {**route, "flags": ("--results",), "required": True,
                         "more": "Repeat for link hops."},
        "next_route": {**route, "flags": ("--next",), "default": None,
                       "more": "Repeat for link hops."},
        "bind": {"type": bind, "default": "tcp://127.0.0.1:5555",
                 "more": "Checked to be free before READY."},
        "control_bind": {"type": bind},
        "advertise": {"type": connect, "more": "Needed when binding to *."},
        "slowdown": {"type": float_range(0, 1000, lo_open=True),
                     "more": "Sleeps (slowdown - 1) x compute time."},
        "max_batch": {"type": int_range(1, 4096)},
        "batch_timeout_s": {"flags": ("--batch-timeout-ms",), "scale": 1e-3, "unit": "ms",
                            "type": float_range(0, 60_000)},
        "hwm": {"type": int_range(1, MAX_HWM)},
        "max_message_bytes": {"type": int_range(1024, _MAX_MESSAGE),
                              "more": "At least one sample of the partition's input must fit."},
        "dead_after_s": {"type": float_range(0, 3600, lo_open=True)},
        "cpu_affinity": {"type": _cpu_list, "metavar": "CPUS", "default": (),
                         "more": "Comma-separated, e.g. 1 or 0,1 (default: not pinned)."},
        "cpu_latency_us": {"type": int_range(0, 2_000_000_000), "metavar": "US",
                           "more": "Needs write access to /dev/cpu_dma_latency (root)."},
    }  # fmt: skip


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``earlyexit`` command.

    Its worker options are the fields of
    :class:`~earlyexit.runtime.options.WorkerOptions`, read from the source
    (a new field is a new flag): all but those computed from the bundle.
    """
    p = subparsers.add_parser(
        "serve",
        help="run one tier's partition of a bundle as a ZeroMQ worker",
        description="Serve one partition of a bundle. Inputs arrive on --bind; samples that "
        "exit go to --results (the destination), the others to --next (the next partition). "
        "Routes may list emulated-link hops first, the endpoint last.",
    )
    p.add_argument(
        "--bundle", required=True, type=_bundle_dir, help="bundle directory (manifest.json)"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--tier", type=int_range(0, 1000), help="serve the partition the plan places on tier K"
    )
    which.add_argument("--partition", type=int_range(0, 1000), help="serve partition K (0-based)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "fp16"))
    p.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "onnx", "torchscript"),
        help="ONNX Runtime, or the TorchScript fallback (auto: ONNX when available)",
    )
    p.add_argument(
        "--threads",
        type=int_range(0, 1024),
        default=1,
        help="ONNX Runtime intra-op threads (0: its choice)",
    )
    worker = p.add_argument_group("worker options (earlyexit.runtime.options.WorkerOptions)")
    fields = add_fields(worker, read_fields(_OPTIONS, "WorkerOptions"), _shapes(), _FROM_BUNDLE)
    p.set_defaults(worker_fields=fields)
    p.set_defaults(func=serve_command)
    _register_adapt(subparsers)


def _register_adapt(subparsers: Any) -> None:
    """Add ``adapt``: adaptive, static and oracle deployments on a link trace."""
    p = subparsers.add_parser(
        "adapt",
        help="run candidate plans switchable on a link trace: adaptive vs static vs oracle",
        description="Deploy the candidate plans' bundles switchable over emulated links that "
        "follow a trace; run the adaptive controller, the static plan and the oracle, one sample "
        "at a time; print per phase mean latency and accuracy (docs/adaptive.md).",
    )
    sig = read_signature("earlyexit.runtime.adaptive", "compare_on_trace")
    add_param(p, sig["profile"])
    add_param(p, sig["topology"], more="A built-in name or a YAML file.")
    add_param(p, sig["bundles"], "--bundle", action="append", type=_bundle_dir,
              more="Repeat, one per candidate.")  # fmt: skip
    p.add_argument("--data", required=True,
                   help="an .npz with arrays x (inputs, as the bundle takes them) and y (labels)")  # fmt: skip
    p.add_argument("--trace", required=True, help="a trace file or a built-in trace name")
    p.add_argument("--time-scale", type=float_range(0, 100, lo_open=True), default=1.0,
                   help="multiply the trace's times by this (default: 1)")  # fmt: skip
    add_param(p, sig["settle_s"], "--settle", type=float_range(0, 3600), unit="s")
    add_param(p, sig["min_accuracy"], type=float_range(0, 1),
              more="Its accuracy constraint (default: none).")  # fmt: skip
    add_param(p, sig["rounds"], type=int_range(1, 1000))
    p.add_argument("--plot", help="write latency over time with the switches marked (PNG)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.set_defaults(func=adapt_command)


def adapt_command(args: argparse.Namespace) -> int:
    """Run :func:`earlyexit.runtime.adaptive.compare_on_trace` and print its table."""
    import json

    import numpy as np

    from earlyexit.formats.trace import LinkTrace
    from earlyexit.runtime.adaptive import compare_on_trace

    try:
        with np.load(args.data, allow_pickle=False) as z:
            x, y = z["x"], z["y"] if "y" in z else None
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(
            f"--data {args.data!r}: expected an .npz with arrays x and y ({err})"
        ) from None
    trace = LinkTrace.load(args.trace)
    if args.time_scale != 1.0:
        trace = trace.scaled(args.time_scale)
    res = compare_on_trace(args.profile, args.topology, args.bundles, x, y, trace,
                           settle_s=args.settle_s, min_accuracy=args.min_accuracy,
                           rounds=args.rounds)  # fmt: skip
    if args.plot:
        from earlyexit.plotting import plot_adaptive

        plot_adaptive(res, args.plot)
    if args.json:
        print(json.dumps(res, default=str))
        return 0
    for row in res["table"]:
        cells = "  ".join(
            f"{m} {row[m + '_latency_ms'] or float('nan'):.2f} ms acc {row[m + '_accuracy'] or float('nan'):.3f}"
            for m in res["runs"]
        )
        lo, hi = row["bandwidth_mbps"]
        bw = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        print(f"[{row['start']:.1f}, {row['end']:.1f}) s {bw} Mb/s: {cells}{_gain_cells(row)}")
    sw = res["runs"]["adaptive"]["switches"]
    print(f"adaptive switches at {[round(s['t'], 2) for s in sw]} s; re-planning "
          f"{max(res['replan_ms'], default=0.0):.2f} ms at most")  # fmt: skip
    return 0


def _gain_cells(row: dict[str, Any]) -> str:
    """The row's speed-ups over static and the rounds' adaptive/oracle ratios, if it has them."""
    out = ""
    if row.get("oracle_speedup") is not None:
        out += f"  oracle/static {row['oracle_speedup']:.2f}x"
    if row.get("model_oracle_speedup") is not None:
        out += f" (model {row['model_oracle_speedup']:.2f}x)"
    if row.get("adaptive_speedup") is not None:
        out += f"  adaptive/static {row['adaptive_speedup']:.2f}x"
    rounds = [r for r in row.get("adaptive_oracle_rounds") or [] if r is not None]
    if len(rounds) > 1:
        out += f"  adaptive/oracle per round {' '.join(f'{r:.2f}' for r in rounds)}"
    return out + ("  [degraded]" if row.get("degraded") else "")


def serve_command(args: argparse.Namespace) -> int:
    """Run ``earlyexit serve``: build the worker's options from the flags and serve.

    Every flag ends up in the :class:`~earlyexit.runtime.options.WorkerOptions` or
    the runner spec given to :func:`~earlyexit.runtime.worker.serve_config`, which
    serves until SIGTERM/SIGINT.

    Args:
        args: the parsed ``serve`` arguments.

    Returns:
        The exit code.

    Every argument is checked, the partition's files against the manifest's
    SHA-256 and the addresses to bind for being free, before READY is printed.

    Raises:
        ValueError: a tier that hosts no partition, a partition out of range, a
            message limit below one sample, an address that cannot be bound, a file
            that does not match the manifest or does not load.
    """
    import zmq

    from earlyexit.formats import Manifest
    from earlyexit.runtime._files import check_file
    from earlyexit.runtime.options import WorkerOptions
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
    if not last and not args.next_route:
        raise ValueError(
            f"partition {k} is not the last one: give --next (the next worker's route)"
        )
    if last and args.next_route:
        raise ValueError(f"partition {k} is the last one: it has no --next")
    shape = tuple(manifest.partitions[k].input_shape) or tuple(manifest.input_shape)
    sample_bytes = 4 * math.prod(int(d) for d in shape[1:] if d is not None) + 1024
    max_bytes = args.max_message_bytes
    if max_bytes < sample_bytes:
        raise ValueError(
            f"--max-message-bytes must be in [{sample_bytes}, {_MAX_MESSAGE}] (one sample of "
            f"partition {k}'s input {list(shape)} float32 with its header must fit), got {max_bytes}"
        )
    if args.bind == args.control_bind and not args.bind.endswith(":*"):
        raise ValueError(f"--bind and --control-bind must differ, both are {args.bind!r}")
    check_bindable(args.bind, "--bind")
    check_bindable(args.control_bind, "--control-bind")
    served = manifest.partitions[k]
    for fmt in served.files:  # its files against their size and SHA-256, before any parsing
        check_file(args.bundle, served, fmt)
    runner = {
        "kind": "bundle",
        "path": args.bundle,
        "partition": k,
        "precision": args.precision,
        "intra_op_threads": args.threads,
        "engine": args.engine,
    }
    given = {name: getattr(args, name) for name in args.worker_fields}
    given["threshold"] = manifest.threshold if args.threshold is None else args.threshold
    given["result_route"] = tuple(args.result_route)
    given["next_route"] = () if last else tuple(args.next_route)
    try:
        options = WorkerOptions(
            **given,
            partition=k,
            num_partitions=len(plan.partitions),
            tier=plan.partitions[k].tier,
            next_tier=None if last else plan.partitions[k + 1].tier,
            last_block=plan.partitions[k].last_block,
            heartbeat_s=min(0.2, args.dead_after_s / 4),
        )
    except (TypeError, ValueError) as err:  # a field's own check: said with its flag
        raise type(err)(name_flags(str(err), args.worker_fields)) from None
    try:
        return serve_config(runner, options)
    except zmq.ZMQError as err:  # an address taken between the check and the bind
        raise ValueError(f"ZeroMQ: {err.strerror} (--bind, --control-bind)") from None
