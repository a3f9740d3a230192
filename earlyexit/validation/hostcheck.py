"""Does this machine still run as it did when the profile was made?

A validation compares a profile measured at one time with deployments measured
at another. On a shared host the speed of the CPU drifts between the two (on the
2-core development VM the profiled time of the whole ResNet-20 was 0.60 ms in
the demos of one afternoon and 0.83 ms in a demo of the next, profiled in a
busy spell), and an emulated slower tier multiplies
that drift by its slowdown: a compute-bound configuration on the ×10 tier then
measures far off its estimate through no fault of the model (up to 41 % where
the profile had been timed in a slow spell).
:func:`check_host` times the whole network again, with the engine and settings
the profile recorded, for every device that was profiled on this host, so that
``validate`` can say how far the machine drifted before and after its
measurements (docs/spec.md#validation-results).

Two statistics are compared, each where the profile has it: ``cold``, the time
after the profile's idle gap (``partition_time_s``; how a lone sample finds the
caches), and ``busy``, the time right after another run
(``partition_time_busy_s``; what the latency model stretches by the idle curve).

Example:
    >>> HostCheck("cpu", "busy", 0.001, (0.0012, 0.0011)).ratio
    (1.2, 1.1)
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from typing import Any

from earlyexit.formats import Profile

__all__ = [
    "DRIFT_TOLERANCE",
    "HostCheck",
    "check_host",
    "drift_note",
    "elsewhere_notes",
    "host_checks",
    "profiled_times",
]

DRIFT_TOLERANCE = 0.1
"""A device whose whole network now runs more than this fraction slower or faster than
profiled gets a note."""


@dataclass(frozen=True)
class HostCheck:
    """One statistic of the whole network's time on this host, as profiled and as measured now.

    Attributes:
        device: the profile's device name.
        statistic: ``"cold"`` (after the profile's idle gap: ``partition_time_s``) or
            ``"busy"`` (right after another run: ``partition_time_busy_s``).
        profiled_s: the profile's entry ``[0, N-1]`` of that table.
        measured_s: the same timed again, once per check (before and after the measurements).
    """

    device: str
    statistic: str
    profiled_s: float
    measured_s: tuple[float, ...]

    @property
    def ratio(self) -> tuple[float, ...]:
        """Each measurement over the profiled time (rounded to 4 digits)."""
        return tuple(round(m / self.profiled_s, 4) for m in self.measured_s)

    def to_dict(self) -> dict[str, Any]:
        """The entry of ``validation.json``'s ``host_check[device][statistic]``."""
        return {"profiled_s": self.profiled_s, "measured_s": list(self.measured_s),
                "ratio": list(self.ratio)}  # fmt: skip


def check_host(
    model: Any, prof: Profile, devices: list[str], inputs: Any
) -> dict[str, dict[str, float]]:
    """Time the whole network now as each of ``devices`` was profiled, on this host.

    Devices profiled on another host (``meta["host"]``) are left out: their times
    say nothing about this machine.

    Args:
        model: the checkpoint's :class:`~earlyexit.MultiExitModel` (the profile's model).
        prof: the profile.
        devices: profile device names to check.
        inputs: test inputs (a tensor); the first ``meta["batch_size"]`` (default 1) are timed.

    Returns:
        ``{device: {"cold": seconds, "busy": seconds}}`` (:func:`time_network
        <earlyexit.profiling.timing.time_network>` with the profile's engine, idle
        gap, warm-up, repetitions, percentile, threads and CPU latency request).

    Raises:
        ValueError: a device missing from the profile.
    """
    from earlyexit.profiling.timing import time_network, torch_threads
    from earlyexit.runtime.cpus import hold_cpu_latency

    out: dict[str, dict[str, float]] = {}
    for name in devices:
        if name not in prof.devices:
            raise ValueError(
                f"device {name!r} is not in the profile (it has {sorted(prof.devices)})"
            )
        meta = prof.devices[name].meta
        if meta.get("host") != socket.gethostname():
            continue
        engine = "onnx" if meta.get("engine") == "onnxruntime" else "torch"
        threads = meta.get("threads")
        sample = inputs[: int(meta.get("batch_size") or 1)]
        with hold_cpu_latency(meta.get("cpu_latency_us"), quiet=True), torch_threads(threads):
            cold, busy = time_network(
                model, sample, engine=engine, warmup=int(meta.get("warmup", 2)),
                reps=int(meta.get("reps", 15)), percentile=float(meta.get("percentile", 50.0)),
                gap_s=float(meta.get("gap_s") or 0.0), intra_op_threads=int(threads or 1),
            )  # fmt: skip
        out[name] = {"cold": cold, "busy": busy}
    return out


def elsewhere_notes(prof: Profile, devices: list[str]) -> list[str]:
    """A note per device of ``devices`` that was profiled on another host than this one.

    Such a device's times describe that machine, while ``validate`` deploys every
    tier on this one: its estimates and the measurements then differ by the two
    machines' speeds, and :func:`check_host` leaves it out.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> elsewhere_notes(synthetic_profile(3, devices=("edge",)), ["edge"])[0][:42]
        "device 'edge' was profiled on another host"
    """
    here = socket.gethostname()
    out = []
    for name in devices:
        host = prof.devices[name].meta.get("host")
        if host != here:
            out.append(
                f"device {name!r} was profiled on another host ({host!r}), but this run deploys "
                f"every tier on {here!r}: its estimates describe that machine, not this one, "
                "and the host check leaves it out; profile it here to validate the model"
            )
    return out


def profiled_times(prof: Profile, device: str) -> dict[str, float]:
    """The profile's whole-network times of ``device``: ``{"cold": s, "busy": s}``, each
    where its table exists and the entry is finite and positive.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> sorted(profiled_times(synthetic_profile(3, devices=("edge",)), "edge"))
        ['cold']
    """
    dev = prof.devices[device]
    out = {}
    for stat, table in (("cold", dev.partition_time_s), ("busy", dev.partition_time_busy_s)):
        t = float(table[0][prof.num_blocks - 1]) if table is not None else math.nan
        if math.isfinite(t) and t > 0:
            out[stat] = t
    return out


def host_checks(prof: Profile, runs: list[dict[str, dict[str, float]]]) -> list[HostCheck]:
    """Join :func:`check_host`'s runs (before and after the measurements) with the profile.

    Args:
        prof: the profile.
        runs: :func:`check_host`'s results, in time order.

    Returns:
        One :class:`HostCheck` per device measured in every run and statistic the
        profile has, by device name, ``cold`` before ``busy``.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> p = synthetic_profile(3, devices=("edge",))
        >>> t = profiled_times(p, "edge")["cold"]
        >>> host_checks(p, [{"edge": {"cold": 2 * t}}, {"edge": {"cold": t}}])[0].ratio
        (2.0, 1.0)
    """
    out = []
    for name in sorted(set.intersection(*(set(r) for r in runs)) if runs else ()):
        for stat, t in profiled_times(prof, name).items():
            out.append(HostCheck(name, stat, t, tuple(float(r[name][stat]) for r in runs)))
    return out


def drift_note(checks: list[HostCheck]) -> str | None:
    """A note when a device's whole network ran more than :data:`DRIFT_TOLERANCE` off its profile.

    Example:
        >>> drift_note([HostCheck("cpu", "busy", 0.001, (0.0013, 0.0012))])[:51]
        "device 'cpu' ran the whole network (busy) 1.30x and"
    """
    off = [c for c in checks if any(abs(r - 1.0) > DRIFT_TOLERANCE for r in c.ratio)]
    if not off:
        return None
    said = "; ".join(
        f"device {c.device!r} ran the whole network ({c.statistic}) "
        + " and ".join(f"{r:.2f}x" for r in c.ratio)
        + f" its profiled {c.profiled_s * 1e3:.3f} ms (before and after the measurements)"
        for c in off
    )
    return (
        f"{said}: this host's speed drifted since the profile was made, and a tier's emulated "
        "slowdown multiplies the drift, so compute-bound estimates are off by about that much "
        "through no fault of the model; profile again right before validating"
    )
