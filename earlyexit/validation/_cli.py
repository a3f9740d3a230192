"""``earlyexit validate``: the command line of :func:`earlyexit.validation.validate`."""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

from earlyexit._checks import float_range, input_file, int_range, output_dir

__all__ = ["register"]

# kept in step with earlyexit.validation.run (which imports numpy): a test compares them
MAX_CONFIGS, MAX_SAMPLES, MAX_ACCURACY_SAMPLES = 1000, 100_000, 1_000_000
_JSON_KEYS = ("latency", "latency_error", "exit_rate", "accuracy", "by_estimator", "configs",
              "plots", "notes", "wall_time_s", "chosen")  # fmt: skip


def register(subparsers: Any) -> None:
    """Add ``earlyexit validate`` to the command line.

    Args:
        subparsers: the ``earlyexit`` parser's subparsers.
    """
    p = subparsers.add_parser(
        "validate",
        help="deploy configurations for real and compare with the estimates",
        description="PORTEND-style validation: deploy K configurations (Pareto-optimal and "
        "others) over emulated links, run S test samples one at a time, and report beta and "
        "R^2 of estimated against measured latency, exit rate and accuracy, and every "
        "configuration's relative latency error with its median, maximum and the fit inside "
        "each cluster (edge-only, multi-tier, cloud).",
    )
    p.add_argument("--checkpoint", required=True, type=input_file)
    p.add_argument("--profile", required=True, type=input_file, help="its profile (JSON)")
    p.add_argument("--topology", required=True, help="built-in name or YAML file")
    p.add_argument("--data", default=None, help="data spec (default: the checkpoint's dataset)")
    p.add_argument("--configs", type=int_range(1, MAX_CONFIGS), default=30,
                   help=f"K configurations (1 to {MAX_CONFIGS})")  # fmt: skip
    p.add_argument("--samples", type=int_range(1, MAX_SAMPLES), default=100,
                   help="S test samples per configuration, one at a time over the emulated "
                   f"links (1 to {MAX_SAMPLES})")  # fmt: skip
    p.add_argument(
        "--accuracy-samples",
        type=int_range(1, MAX_ACCURACY_SAMPLES),
        default=2000,
        help="test samples per configuration for accuracy and exit fractions (the bundle's "
        "files chained in one process when more than --samples; at least --samples, at most "
        f"{MAX_ACCURACY_SAMPLES})",
    )
    p.add_argument("--device", action="append", default=[], metavar="TIER=DEVICE",
                   help="bind a tier (name, index or device) to a profile device; repeatable")  # fmt: skip
    p.add_argument("--out", type=output_dir, default="validation",
                   help="output directory (plots, JSON, bundles); removed again if the run fails")  # fmt: skip
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    p.add_argument("--no-links", action="store_true", help="do not emulate links")
    p.add_argument(
        "--nice",
        type=int_range(-20, 19),
        default=-15,
        help="scheduling niceness of the deployment and client during the latency pass "
        "(isolates the emulated tiers from other load; needs root); use 0 to leave it",
    )
    p.add_argument("--realtime", type=int_range(0, 99), default=10,
                   help="run each deployment and the client under SCHED_FIFO at this priority "
                   "during the latency pass (no waiting behind other work; needs root); 0: off")  # fmt: skip
    p.add_argument("--gap-ms", type=float_range(0.0, 1000.0), default=0.0,
                   help="idle time before each timed sample, in ms (0 to 1000; 0: back to "
                   "back, as the runtime's hand-off cost is measured)")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="go on (with a warning) when the profile was made with other weights")  # fmt: skip
    p.add_argument("--keep-logs", action="store_true",
                   help="keep every process's log under OUT/logs/")  # fmt: skip
    p.add_argument("--split", action="store_true",
                   help="also deploy each configuration without links, and without links or "
                   "slowdowns, and print where measured and estimated latency part")  # fmt: skip
    p.add_argument("--rounds", type=int_range(1, 99), default=3,
                   help="times each timed sample goes through a deployment; its latency is the "
                   "median (a burst of other work must hit it in most rounds to count)")  # fmt: skip
    p.add_argument("--min-per-exit", type=int_range(0, MAX_SAMPLES), default=10,
                   help="time at least this many samples of every exit (each exit's mean is "
                   "weighted by its fraction over the accuracy pass)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_validate_command)


def _devices(items: list[str]) -> dict[str, str]:
    devices = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--device expects TIER=DEVICE, got {item!r}")
        devices[key] = value
    return devices


def _validate_command(args: argparse.Namespace) -> int:
    from earlyexit.validation.run import validate

    devices = _devices(args.device)
    if args.accuracy_samples < args.samples:
        raise ValueError(
            f"--accuracy-samples must be >= --samples ({args.samples}) and <= "
            f"{MAX_ACCURACY_SAMPLES}, got {args.accuracy_samples}"
        )
    with warnings.catch_warnings():
        # the CLI prints the notes these warnings repeat, once, after the run
        warnings.filterwarnings("ignore", category=UserWarning, module=r"earlyexit\.validation")
        result = validate(
            args.checkpoint, args.profile, args.topology, args.data,
            configs=args.configs, samples=args.samples, accuracy_samples=args.accuracy_samples,
            out_dir=args.out, seed=args.seed, devices=devices, emulate_links=not args.no_links,
            progress=None if args.json else print, niceness=None if args.nice == 0 else args.nice,
            force=args.force, keep_logs=args.keep_logs, split=args.split, rounds=args.rounds,
            min_per_exit=args.min_per_exit, realtime=args.realtime or None,
            gap_s=args.gap_ms / 1000.0,
        )  # fmt: skip
    full = result.to_dict()
    if args.json:
        print(json.dumps({k: full[k] for k in _JSON_KEYS if k in full}, indent=2, default=float))
        return 0
    for name, fig in result.summary.by_estimator.items():
        lat, er, acc, err = fig.latency, fig.exit_rate, fig.accuracy, fig.latency_error
        print(f"{name:8s} latency beta {lat.beta:.3f} R2 {lat.r2:.3f} | exit rate beta "
              f"{er.beta:.3f} R2 {er.r2:.3f} | accuracy mean |error| "
              f"{acc.mean_abs_error * 100:.2f} points (sampling s.e. {acc.sampling_se * 100:.2f})")  # fmt: skip
        print(f"{'':8s} latency relative error median {100 * err.median_abs_relative_error:.1f}% "
              f"max {100 * err.max_abs_relative_error:.1f}% mean {100 * err.mean_relative_error:+.1f}%")  # fmt: skip
        for c, v in err.clusters.items():
            print(f"{'':8s}   {c:10s} n={v.n:<3d} beta {v.beta:.2f} R2 {v.r2:.2f} median "
                  f"{100 * v.median_abs_relative_error:.1f}% max {100 * v.max_abs_relative_error:.1f}%"
                  f" mean {100 * v.mean_relative_error:+.1f}%")  # fmt: skip
    for note in result.notes:
        print("note: " + note)
    print(f"wall time {result.wall_time_s:.0f} s")
    print("plots: " + ", ".join(result.plots))
    return 0
