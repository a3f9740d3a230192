"""How a tier worker uses the host's CPUs: a wake-up latency request, and CPU affinity.

**Wake-up latency.**

A tier worker sleeps between messages. When its CPU idles, Linux lets it enter
an idle state (HLT on x86, WFI on ARM; in a virtual machine, the virtual CPU is
handed back to the host) from which waking costs time, and the caches come back
cold. On this project's 2-core VM a hop between processes costs 0.05 ms when the
receivers sleep and 0.015 ms when they do not (``benchmarks/bench_runtime.py``).
Latency-sensitive Linux programs ask the kernel for a bound on that wake-up
latency through ``/dev/cpu_dma_latency`` (the kernel's "CPU latency QoS"
interface; ``cyclictest`` and tuned's latency-performance profile do the same):
while the file is held open with a value of ``us`` microseconds, idle CPUs only
enter states that wake within ``us``; 0 keeps them polling. The request ends
when the file is closed, or when the process dies.

The request is system-wide and costs power (idle CPUs do not sleep), so it is
opt-in: ``earlyexit serve --cpu-latency-us 0``, ``deploy(cpu_latency_us=0)``,
``profile(cpu_latency_us=0)``. Writing the file needs root (or a udev rule that
opens it to a group); without it, or on a system without the file, the request
is not held, a warning is logged once, and everything runs as without it.

**Affinity.** Several tiers emulated on one host share its cores and their
caches: a worker's partition, run right after another process ran on its core,
finds its weights evicted (on this host a ResNet-20 partition takes 0.25 ms
instead of 0.16 ms after its L2 cache was overwritten). Pinning each tier's
worker to its own core (``deploy(cpu_affinity="spread")``, ``serve
--cpu-affinity 1``) keeps each tier's caches its own, as on separate devices.
:func:`pin_to_cpus` pins the calling thread, and the threads it starts
afterwards. A worker pins its serving thread once its sockets are up, so that
ZeroMQ's I/O thread stays free to take the next message on another core.

Example:
    >>> with hold_cpu_latency(None) as held:   # None: no request
    ...     held.active
    False
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "CPU_LATENCY_PATH",
    "CpuLatencyRequest",
    "check_cpu_affinity",
    "check_cpu_latency_us",
    "hold_cpu_latency",
    "pin_to_cpus",
    "spread_tiers",
]

log = logging.getLogger(__name__)

CPU_LATENCY_PATH = "/dev/cpu_dma_latency"
"""The kernel's CPU latency QoS file (drivers: Documentation/power/pm_qos_interface.rst)."""
_MAX_US = 2_000_000_000  # the kernel's s32 range


@dataclass(frozen=True)
class CpuLatencyRequest:
    """What :func:`hold_cpu_latency` got.

    Attributes:
        requested_us: the bound asked for, in microseconds (None: none asked).
        active: whether the kernel holds it now.
        reason: why it is not active ("" when it is).
    """

    requested_us: int | None
    active: bool
    reason: str = ""


def check_cpu_latency_us(value: object, name: str = "cpu_latency_us") -> int | None:
    """Check a wake-up latency bound: None, or an integer of microseconds >= 0.

    Raises:
        ValueError: a negative, too large or non-integer value.

    Example:
        >>> check_cpu_latency_us(0), check_cpu_latency_us(None)
        (0, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_US:
        raise ValueError(
            f"{name} must be None (no request) or an integer number of microseconds in "
            f"[0, {_MAX_US}] (0: idle CPUs poll instead of sleeping), got {value!r}"
        )
    return int(value)


@contextmanager
def hold_cpu_latency(
    max_us: int | None, path: str | os.PathLike[str] = CPU_LATENCY_PATH, *, quiet: bool = False
) -> Iterator[CpuLatencyRequest]:
    """Hold a CPU wake-up latency request of ``max_us`` for the ``with`` block.

    Args:
        max_us: the bound in microseconds (0: idle CPUs poll); None holds nothing.
        path: the QoS file (tests point it elsewhere).
        quiet: do not log a request that could not be made (the caller reports it).

    Yields:
        A :class:`CpuLatencyRequest` saying whether the request is held, and if
        not, why (no permission, no such file): then nothing else changes.

    Raises:
        ValueError: a bad ``max_us``.

    Example:
        >>> with hold_cpu_latency(0, path="/nonexistent/qos") as r:
        ...     r.active
        False
    """
    max_us = check_cpu_latency_us(max_us)
    if max_us is None:
        yield CpuLatencyRequest(None, False, "not requested")
        return
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        reason = f"cannot open {os.fspath(path)}: {e.strerror or e}"
        if not quiet:
            log.warning(
                "CPU latency request of %d us not held (%s); running without it", max_us, reason
            )
        yield CpuLatencyRequest(max_us, False, reason)
        return
    try:
        try:
            os.write(fd, struct.pack("=i", max_us))  # the kernel reads a native s32
        except OSError as e:
            reason = f"cannot write {os.fspath(path)}: {e.strerror or e}"
            if not quiet:
                log.warning("CPU latency request of %d us not held (%s)", max_us, reason)
            yield CpuLatencyRequest(max_us, False, reason)
            return
        yield CpuLatencyRequest(max_us, True)
    finally:
        os.close(fd)  # closing ends the request


_MAX_CPUS = 4096


def check_cpu_affinity(value: object, name: str = "cpu_affinity") -> tuple[int, ...]:
    """Check a set of CPUs: distinct integers >= 0 (empty: no pinning).

    Raises:
        TypeError: not a list or tuple of integers.
        ValueError: a negative, repeated or too large CPU number.

    Example:
        >>> check_cpu_affinity([1, 0]), check_cpu_affinity(())
        ((0, 1), ())
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of CPU numbers such as [0, 1], got {value!r}")
    bad = [
        c for c in value if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < _MAX_CPUS
    ]
    if bad:
        raise ValueError(f"{name}: {bad[0]!r} is not a CPU number in [0, {_MAX_CPUS - 1}]")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} lists a CPU twice: {list(value)}")
    return tuple(sorted(value))


def pin_to_cpus(cpus: tuple[int, ...]) -> tuple[int, ...]:
    """Pin the calling thread (and threads it starts later) to ``cpus``; () changes nothing.

    Returns:
        The CPUs the calling thread may run on now.

    Raises:
        ValueError: a CPU this process may not use (the valid ones are named),
            or pinning not supported here (not Linux).

    Example:
        >>> pin_to_cpus(()) == tuple(sorted(os.sched_getaffinity(0)))
        True
    """
    cpus = check_cpu_affinity(cpus)
    if not hasattr(os, "sched_setaffinity"):
        if cpus:
            raise ValueError("cpu_affinity needs Linux (os.sched_setaffinity); give () here")
        return ()
    allowed = tuple(sorted(os.sched_getaffinity(0)))
    if not cpus:
        return allowed
    missing = sorted(set(cpus) - set(allowed))
    if missing:
        raise ValueError(
            f"cpu_affinity: CPU {missing[0]} is not available here; valid: {list(allowed)}"
        )
    os.sched_setaffinity(0, cpus)
    return tuple(sorted(os.sched_getaffinity(0)))


def spread_tiers(tiers: list[int] | tuple[int, ...]) -> dict[int, tuple[int, ...]]:
    """One CPU per tier, in turn over the CPUs this process may use: tier -> (cpu,).

    Example:
        >>> len(spread_tiers([0, 1, 2]))
        3
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed:
        return {}
    return {t: (allowed[i % len(allowed)],) for i, t in enumerate(sorted(set(tiers)))}
