"""``earlyexit validate``: the command line of :func:`earlyexit.validation.validate`.

Its options are ``validate``'s parameters, defaults, limits and ``Args:`` lines
read from the source (:mod:`earlyexit._signatures`; ``validation.run`` imports
numpy and torch, this module neither). Declared here: ``--device`` pairs,
``--json``, the command line's units (``--gap-ms``) and its 0 for "off"
(``--nice``, ``--realtime``).
"""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

from earlyexit._checks import float_range, input_file, int_range, output_dir
from earlyexit._cliutil import given, key_values
from earlyexit._signatures import add_param, read_constant, read_signature

__all__ = ["register"]

_API = "earlyexit.validation"  # validate and its limits, wherever the package imports them from
MAX_CONFIGS: int = read_constant(_API, "MAX_CONFIGS")
MAX_SAMPLES: int = read_constant(_API, "MAX_SAMPLES")
MAX_ACCURACY_SAMPLES: int = read_constant(_API, "MAX_ACCURACY_SAMPLES")
MAX_PASSES: int = read_constant(_API, "MAX_PASSES")
_JSON_KEYS = ("latency", "latency_error", "exit_rate", "accuracy", "by_estimator", "configs",
              "plots", "notes", "wall_time_s", "chosen", "host_check")  # fmt: skip


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
    sig = read_signature(_API, "validate")
    add_param(p, sig["checkpoint"], type=input_file)
    add_param(p, sig["profile"], type=input_file)
    add_param(p, sig["topology"])
    add_param(p, sig["data"])
    add_param(p, sig["configs"], type=int_range(1, MAX_CONFIGS))
    add_param(p, sig["samples"], type=int_range(1, MAX_SAMPLES))
    add_param(p, sig["accuracy_samples"], type=int_range(1, MAX_ACCURACY_SAMPLES))
    add_param(p, sig["devices"], "--device", action="append", metavar="TIER=DEVICE",
              more="As TIER=DEVICE; repeatable.")  # fmt: skip
    add_param(p, sig["out_dir"], "--out", type=output_dir, default="validation",
              more="Removed again if the run fails.")  # fmt: skip
    add_param(p, sig["seed"], type=int_range(0, 2**32 - 1))
    add_param(p, sig["emulate_links"], "--no-links")
    add_param(p, sig["niceness"], "--nice", type=int_range(-20, 19), more="0: leave it.")
    add_param(p, sig["realtime"], type=int_range(0, 99), more="0: off.")
    add_param(p, sig["gap_s"], "--gap-ms", type=float_range(0.0, 1000.0), scale=1e-3, unit="ms")
    add_param(p, sig["cpu_latency_us"], type=int_range(0, 2_000_000_000), metavar="US")
    add_param(p, sig["cpu_affinity"], choices=("spread",))
    for name in ("force", "keep_logs", "split"):
        add_param(p, sig[name])
    add_param(p, sig["rounds"], type=int_range(1, 99))
    add_param(p, sig["passes"], type=int_range(1, MAX_PASSES))
    add_param(p, sig["min_per_exit"], type=int_range(0, MAX_SAMPLES))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_validate_command)


def _validate_command(args: argparse.Namespace) -> int:
    from earlyexit.validation.run import validate

    devices = key_values(args.devices or (), "--device")
    if args.accuracy_samples < args.samples:
        raise ValueError(
            f"--accuracy-samples must be >= --samples ({args.samples}) and <= "
            f"{MAX_ACCURACY_SAMPLES}, got {args.accuracy_samples}"
        )
    with warnings.catch_warnings():
        # the CLI prints the notes these warnings repeat, once, after the run
        warnings.filterwarnings("ignore", category=UserWarning, module=r"earlyexit\.validation")
        result = validate(**{
            **given(args, read_signature(_API, "validate")),
            "devices": devices,
            "progress": None if args.json else print,
            "niceness": args.niceness or None,  # 0: leave it
            "realtime": args.realtime or None,  # 0: off
        })  # fmt: skip
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
            print(f"{'':8s}   {c:10s} n={v.n:<3d} beta {v.beta:.2f} (s.e. {v.beta_se:.2f}) R2 {v.r2:.2f} median "
                  f"{100 * v.median_abs_relative_error:.1f}% max {100 * v.max_abs_relative_error:.1f}%"
                  f" mean {100 * v.mean_relative_error:+.1f}%")  # fmt: skip
    for c in result.host_check:
        print(f"host check: device {c.device!r}, whole network {c.statistic} profiled "
              f"{c.profiled_s * 1e3:.3f} ms, now " + " then ".join(
                  f"{m * 1e3:.3f} ms ({r:.2f}x)" for m, r in zip(c.measured_s, c.ratio, strict=True)))  # fmt: skip
    for note in result.notes:
        print("note: " + note)
    print(f"wall time {result.wall_time_s:.0f} s")
    print("plots: " + ", ".join(result.plots))
    return 0
