"""``earlyexit profile`` and ``earlyexit profile merge``.

Their options are the parameters of :func:`earlyexit.profiling.api.profile` and
:func:`~earlyexit.profiling.api.merge_profiles`: defaults and help read from
their source (:mod:`earlyexit._signatures`). Declared here: the files written
(``-o``, ``--plot``), ``--json`` and the command line's units (``--gap-ms``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from earlyexit._checks import (
    float_range,
    image_file,
    input_file,
    int_range,
    output_file,
)
from earlyexit._cliutil import given, unit_list
from earlyexit._signatures import add_param, read_constant, read_signature
from earlyexit.plotting import plot_profile

__all__ = ["register", "plot_profile"]  # plot_profile: re-exported from its old home


def _summary(profile) -> str:
    name, dev = next(iter(profile.devices.items()))
    n = profile.num_blocks
    lines = [
        f"{profile.model} on {profile.dataset}: {n} blocks, {profile.extra.get('profiling_samples')} "
        f"profiling samples, device {name!r} ({dev.meta.get('threads')} threads)",
        f"{'exit':>4} {'acc':>6} "
        + " ".join(f"ER@{t:.1f}" for t in profile.thresholds[1::2])
        + f" {'CT[1..i] ms':>12}",
    ]
    for i in range(n):
        rates = " ".join(f"{r:6.2f}" for r in profile.exit_rate[1::2, i])
        lines.append(
            f"{i + 1:>4} {100 * profile.branch_accuracy[i]:5.1f}% {rates} {1e3 * dev.partition_time_s[0, i]:12.3f}"
        )
    if dev.hop_s is not None:
        lines.append(
            f"runtime cost per hand-off between processes (hop_s): {1e3 * dev.hop_s:.3f} ms"
        )
    return "\n".join(lines)


def _cmd_profile(args: argparse.Namespace) -> int:
    from earlyexit.profiling.api import profile

    if args.plot and Path(args.plot).resolve() == Path(args.output).resolve():
        raise ValueError(f"--plot and -o/--output name the same file {args.output!r}")
    if args.save_calibrated and not args.calibrate:
        raise ValueError("--save-calibrated needs --calibrate (it saves the fitted temperatures)")
    outs = [Path(f).resolve() for f in (args.output, args.plot) if f]
    if args.save_calibrated and Path(args.save_calibrated).resolve() in outs:
        raise ValueError(f"--save-calibrated names another output's file {args.save_calibrated!r}")
    sig = read_signature("earlyexit.profiling.api", "profile")
    prof = profile(**given(args, sig), progress=not args.json)
    if args.save_calibrated:
        _save_calibrated(args.model, prof, args.save_calibrated)
    # the plot first (a bad plot path must leave no profile behind), then the profile
    if args.plot:
        existed = Path(args.plot).exists()
        plot_profile(prof, args.plot)
    try:
        prof.save(args.output)
    except BaseException:
        if args.plot and not existed:
            with contextlib.suppress(OSError):
                Path(args.plot).unlink()
        raise
    if args.json:
        print(prof.to_json())
        return 0
    print(_summary(prof))
    gran = next(iter(prof.devices.values())).extra.get("granularity")
    if gran:
        print(
            "Fig. 5: prefix partitions [1..b], ms (layer-wise sum / block-wise sum / partition-wise)"
        )
        for b, lw, bw, pw in zip(
            gran["last_block"],
            gran["layer_wise_s"],
            gran["block_wise_s"],
            gran["partition_wise_s"],
            strict=True,
        ):
            print(f"  [1..{b:>2}] {1e3 * lw:8.3f} {1e3 * bw:8.3f} {1e3 * pw:8.3f}")
        print(
            f"  median partition/layer-sum {gran['median_ratio_partition_to_layer']:.2f}, "
            f"partition/block-sum {gran['median_ratio_partition_to_block']:.2f}"
        )
    print(f"wrote {args.output}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _save_calibrated(checkpoint: str, prof, path: str) -> None:
    """The checkpoint with the profile's temperatures, so that export and validate accept
    the profile's plans (the profile's model digest covers the temperatures)."""
    from earlyexit.checkpoint import load, save
    from earlyexit.surgery.digest import model_digest

    model = load(checkpoint)
    model.set_temperatures(prof.temperatures)
    want = prof.extra.get("model_digest")
    if want and model_digest(model) != want:  # a bug, not an input
        raise RuntimeError("the calibrated checkpoint does not match the profile's model digest")
    save(model, path)


def _cmd_merge(args: argparse.Namespace) -> int:
    from earlyexit.profiling.api import merge_profiles

    merged = merge_profiles(args.profiles)
    merged.save(args.output)
    if args.json:
        print(json.dumps({"devices": sorted(merged.devices), "output": str(args.output)}))
    else:
        print(f"merged devices {sorted(merged.devices)} into {args.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``profile`` and ``profile merge`` (spelled ``profile-merge`` internally)."""
    p = sub.add_parser(
        "profile", help="profile exits, partition times and serialization on this device"
    )
    sig = read_signature("earlyexit.profiling.api", "profile")
    add_param(p, sig["model"], "--checkpoint", type=input_file, more="Here its path.")
    add_param(p, sig["data"])
    add_param(p, sig["device_name"])
    add_param(p, sig["threads"], type=int_range(1, 1024))
    add_param(p, sig["batch_size"], type=int_range(1, 4096))
    add_param(p, sig["thresholds"], type=unit_list, more="E.g. 0,0.25,0.5,0.75,1.")
    add_param(p, sig["calibrate"])
    add_param(p, sig["engine"], choices=read_constant("earlyexit.profiling.timing", "ENGINES"))
    add_param(p, sig["gap_s"], "--gap-ms", type=float_range(0, 10_000), scale=1e-3, unit="ms")
    add_param(p, sig["measure_hops"], more="Takes about 10 s.")
    add_param(p, sig["worker_idle_curve"])
    add_param(p, sig["link_idle_curve"])
    add_param(p, sig["idle_slowdown"], type=float_range(1.0, 1e6, lo_open=True))
    add_param(p, sig["cpu_affinity"], choices=("spread",))
    add_param(p, sig["cpu_latency_us"], type=int_range(0, 2_000_000_000), metavar="US")
    add_param(p, sig["reps"], type=int_range(1, 100_000))
    add_param(p, sig["percentile"], type=float_range(0, 100))
    add_param(p, sig["granularity"], "--compare-granularity")
    p.add_argument(
        "--plot",
        type=image_file,
        default=None,
        help="save a PNG of exit rates, accuracies and partition times",
    )
    p.add_argument("-o", "--output", type=output_file, default="profile.json",
                   help="the profile JSON to write (default: profile.json)")  # fmt: skip
    p.add_argument("--save-calibrated", type=output_file, default=None, metavar="PATH",
                   help="with --calibrate: also write the checkpoint with the fitted exit "
                   "temperatures; export and validate the profile's plans with it")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the profile JSON")
    p.set_defaults(func=_cmd_profile)

    m = sub.add_parser(
        "profile-merge", help="merge profiles of one model made on different devices"
    )
    merge = read_signature("earlyexit.profiling.api", "merge_profiles")
    add_param(m, merge["profiles"], "profiles", nargs="+", type=input_file)
    m.add_argument("-o", "--output", required=True, type=output_file, help="the merged profile")
    m.add_argument("--json", action="store_true", help="print the devices and output as JSON")
    m.set_defaults(func=_cmd_merge)
