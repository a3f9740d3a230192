"""``earlyexit load``: an open-loop Poisson load against a deployment on this host.

Options are declared once, by :func:`earlyexit.runtime.load.run_load` (its
signature's defaults and its ``Args:`` lines), read without importing it.

Example:
    $ earlyexit load --bundle bundle/ --topology pi4-wifi --rate 80 --duration 10 --json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from earlyexit._checks import float_range, input_file, int_range, zmq_address
from earlyexit._signatures import add_param, read_signature

__all__ = ["register", "load_command"]

_MAX_SAMPLES = 1_000_000  # earlyexit.runtime.load.MAX_SAMPLES (this module imports no numpy)
_MAX_DURATION_S = 3600.0


def _local(bind: bool) -> Any:
    parse_address = zmq_address(bind=bind)

    def parse(text: str) -> str:
        addr = parse_address(text)
        if addr.startswith("tcp://"):
            host = addr[len("tcp://") :].rsplit(":", 1)[0]
            if not host.startswith(("127.", "localhost", "[::1]")):
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not on this host; load drives only loopback "
                    "(tcp://127.0.0.1:PORT, tcp://localhost:PORT) or ipc:// deployments"
                )
        return addr

    parse.__name__ = "address"
    return parse


def _bundle_dir(text: str) -> str:
    from pathlib import Path

    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a directory; expected a bundle directory (with manifest.json)"
        )
    return text


def _synthetic(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of SyntheticModel arguments like '{{\"num_partitions\": 2}}', "
            f"got {text!r}"
        )
    return value


def register(subparsers: Any) -> None:
    """Add ``load`` to the ``earlyexit`` command."""
    sig = read_signature("earlyexit.runtime.load", "run_load")
    p = subparsers.add_parser(
        "load",
        help="offer a deployment an open-loop Poisson load; latency, throughput, loss, exits",
        description="Send samples at exponential inter-arrival times (open loop) to a deployment "
        "on this host, drop those that find the first tier holding --queue-capacity, and report "
        "latency (mean, p50, p95, p99), throughput, loss ratio and per-exit counts "
        "(docs/load.md). Bounded by --duration and --max-samples; loopback and ipc:// only.",
    )
    add_param(p, sig["rate"], "--rate", type=float_range(0, 1e6, lo_open=True), metavar="PER_S")
    add_param(p, sig["duration_s"], "--duration", type=float_range(0, _MAX_DURATION_S, lo_open=True),
              metavar="S")  # fmt: skip
    which = p.add_mutually_exclusive_group(required=True)
    add_param(which, sig["bundle"], "--bundle", type=_bundle_dir)
    add_param(which, sig["synthetic"], "--synthetic", type=_synthetic, metavar="JSON")
    add_param(which, sig["connect"], "--connect", type=_local(False), action="append",
              default=None, metavar="ADDR")  # fmt: skip
    add_param(p, sig["topology"], "--topology")
    add_param(p, sig["results_bind"], "--results-bind", type=_local(True))
    add_param(p, sig["control_bind"], "--control-bind", type=_local(True))
    p.add_argument("--data", type=input_file, default=None,
                   help="an .npz whose array x holds the inputs, sent in turn "
                        "(default: random inputs of the bundle's shape; required with --connect)")  # fmt: skip
    add_param(p, sig["max_samples"], "--max-samples", type=int_range(1, _MAX_SAMPLES))
    add_param(p, sig["queue_capacity"], "--queue-capacity", type=int_range(1, 100_000))
    add_param(p, sig["seed"], "--seed", type=int_range(0, 2**63 - 1))
    add_param(p, sig["drain_timeout_s"], "--drain-timeout", type=float_range(0, 3600, lo_open=True),
              metavar="S")  # fmt: skip
    add_param(p, sig["threshold"], "--threshold", type=float_range(0, 1))
    add_param(p, sig["policy"], "--policy", type=_policy, metavar="SPEC")
    add_param(p, sig["cpu_latency_us"], "--cpu-latency-us", type=int_range(0, 2_000_000_000),
              metavar="US")  # fmt: skip
    add_param(p, sig["cpu_affinity"], "--cpu-affinity", choices=("spread",))
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=load_command)


def _policy(text: str) -> str:
    """An exit policy spec, checked now (a bad one exits 2 before anything starts)."""
    from earlyexit.runtime.policies import policy_text

    try:
        return policy_text(text)
    except (TypeError, ValueError, OSError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def load_command(args: argparse.Namespace) -> int:
    """Run :func:`earlyexit.runtime.load.run_load` and print its summary (or JSON)."""
    import numpy as np

    from earlyexit.runtime.load import run_load

    x = None
    if args.data:
        try:
            with np.load(args.data, allow_pickle=False) as z:
                x = np.asarray(z["x"])
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(
                f"--data {args.data!r}: expected an .npz with an array x ({err})"
            ) from None
    if args.connect and x is None:
        raise ValueError("--connect needs --data (inputs of the deployment's input shape)")
    res = run_load(
        args.rate, args.duration_s, args.bundle, synthetic=args.synthetic,
        topology=args.topology, connect=args.connect or (), results_bind=args.results_bind,
        control_bind=args.control_bind, inputs=x, max_samples=args.max_samples,
        queue_capacity=args.queue_capacity, seed=args.seed,
        drain_timeout_s=args.drain_timeout_s, threshold=args.threshold, policy=args.policy,
        cpu_latency_us=args.cpu_latency_us, cpu_affinity=args.cpu_affinity,
    )  # fmt: skip
    if args.json:
        print(json.dumps(res.to_dict()))
        return 0
    lat = {k: v * 1e3 for k, v in res.latency_s.items()}
    print(f"offered {res.offered} at {res.rate:g}/s for {res.duration_s:g} s (K {res.queue_capacity}): "
          f"answered {res.answered}, dropped {res.dropped}, unanswered {res.unanswered}")  # fmt: skip
    print(f"latency mean {lat['mean']:.2f} ms  p50 {lat['p50']:.2f}  p95 {lat['p95']:.2f}  "
          f"p99 {lat['p99']:.2f}; throughput {res.throughput:.1f}/s; loss ratio {res.loss_ratio:.4f}")  # fmt: skip
    print("exits " + ", ".join(f"partition {k}: {v}" for k, v in sorted(res.exit_counts.items())))
    for k, report in res.policies.items():
        print(f"partition {k} policy: {json.dumps(report)}")
    return 0
