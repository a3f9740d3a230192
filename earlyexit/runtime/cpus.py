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
:func:`spread_tiers` gives the slowest tiers a CPU each alone: a slow tier's
emulation stretches its CPU time, cache misses included, by its slowdown, so
the deployment's other threads (:func:`rest_cpus`) run elsewhere, the client
too (:func:`pin_thread` keeps the calling thread there while the deployment
is open): a client free to wake on a tier's core finds its own caches evicted
by what that tier computed, an effect separate devices do not have.

Example:
    >>> with hold_cpu_latency(None) as held:   # None: no request
    ...     held.active
    False
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "CPU_LATENCY_PATH",
    "CpuLatencyRequest",
    "check_cpu_affinity",
    "check_cpu_latency_us",
    "hold_cpu_latency",
    "pin_thread",
    "pin_to_cpus",
    "pinned",
    "rest_cpus",
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
    if not cpus:
        return tuple(sorted(os.sched_getaffinity(0)))
    allowed = _usable_cpus()
    missing = sorted(set(cpus) - allowed)
    bad = missing[0] if missing else None
    if bad is None:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:  # online, yet refused (a cpuset): the first asked stands for them
            bad = cpus[0]
    if bad is not None:
        raise ValueError(f"cpu_affinity: CPU {bad} is not available here; valid: {sorted(allowed)}")
    return tuple(sorted(os.sched_getaffinity(0)))


# thread id -> (its CPUs before its first pin_thread still held, pins held)
_PINS: dict[int, tuple[set[int], int]] = {}
_PINS_LOCK = threading.Lock()


def _usable_cpus() -> set[int]:
    """The CPUs a thread may be pinned to: its own, and the online ones (a thread a
    deployment started on fewer CPUs may still take its tier's)."""
    cpus = set(os.sched_getaffinity(0))
    try:
        with open("/sys/devices/system/cpu/online", encoding="ascii") as f:
            for part in f.read().strip().split(","):
                a, _, b = part.partition("-")
                cpus.update(range(int(a), int(b or a) + 1))
    except (OSError, ValueError):
        pass
    return cpus


def pin_thread(cpus: tuple[int, ...]) -> Callable[[], None]:
    """Pin the calling thread to ``cpus`` until the returned function gives it back its CPUs.

    What the thread starts meanwhile (processes, threads) keeps ``cpus``. The
    returned function may be called from any thread, and more than once (only
    the first call restores; a thread that has exited is left alone).
    ``()`` or no affinity support: nothing changes.

    Returns:
        A function of no arguments that gives the thread back the CPUs it had.

    Raises:
        ValueError: a CPU this process may not use (:func:`pin_to_cpus`).

    Example:
        >>> before = os.sched_getaffinity(0)
        >>> release = pin_thread(tuple(sorted(before))[:1])
        >>> len(os.sched_getaffinity(0))
        1
        >>> release(); os.sched_getaffinity(0) == before
        True
    """
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return lambda: None
    tid = threading.get_native_id()
    before = os.sched_getaffinity(0)
    pin_to_cpus(cpus)
    with _PINS_LOCK:  # a deployment opened inside another one spreads over the CPUs of the first
        base, depth = _PINS.get(tid, (before, 0))
        _PINS[tid] = (base, depth + 1)
    done = threading.Lock()

    def release() -> None:
        if done.acquire(blocking=False):
            with _PINS_LOCK:
                base, depth = _PINS.pop(tid, (before, 1))
                if depth > 1:
                    _PINS[tid] = (base, depth - 1)
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, before)

    return release


@contextmanager
def pinned(cpus: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    """Pin the calling thread to ``cpus`` for the block, then give it back its CPUs.

    What the thread starts inside (processes, threads) keeps ``cpus``.
    ``()`` or no affinity support: nothing changes (:func:`pin_thread`).

    Example:
        >>> before = os.sched_getaffinity(0)
        >>> with pinned(tuple(sorted(before))[:1]) as now:
        ...     len(now)
        1
        >>> os.sched_getaffinity(0) == before
        True
    """
    release = pin_thread(cpus)
    try:
        yield tuple(sorted(os.sched_getaffinity(0))) if cpus and hasattr(os, "sched_getaffinity") else ()  # fmt: skip
    finally:
        release()


def _alone(n_tiers: int) -> tuple[list[int], int]:
    """The CPUs this thread may use (before :func:`pin_thread` pinned it), and how many
    of them go to one tier alone."""
    if not hasattr(os, "sched_getaffinity"):
        return [], 0
    with _PINS_LOCK:
        base = _PINS.get(threading.get_native_id(), (None, 0))[0]
    allowed = sorted(base if base is not None else os.sched_getaffinity(0))
    return allowed, max(0, min(n_tiers, len(allowed) - 1))


def spread_tiers(
    tiers: list[int] | tuple[int, ...], slowdowns: Mapping[int, float] | None = None
) -> dict[int, tuple[int, ...]]:
    """One CPU per tier over the CPUs this process may use, the slowest tiers alone: tier -> (cpu,).

    The slowest tiers (by ``slowdown``, ties by tier) each get a CPU of their
    own, as many as leave one CPU over; the other tiers share the CPUs left
    (:func:`rest_cpus`), in turn, with everything else of the deployment. A
    tier's emulation stretches its worker's CPU time by its slowdown, so a cache
    that another process evicted costs a slow tier that many times more.

    Args:
        tiers: the tiers to place.
        slowdowns: tier -> slowdown (default: all equal).

    Returns:
        tier -> (cpu,); empty where affinity is not supported.

    Example:
        >>> plan = spread_tiers([0, 1], {0: 10.0, 1: 1.0})
        >>> len(os.sched_getaffinity(0)) == 1 or plan[0] not in (plan[1],)
        True
    """
    allowed, alone = _alone(len(set(tiers)))
    if not allowed:
        return {}
    slow = dict(slowdowns or {})
    order = sorted(set(tiers), key=lambda t: (-float(slow.get(t, 1.0)), t))
    shared = allowed[alone:]
    return {t: ((allowed[i],) if i < alone else (shared[(i - alone) % len(shared)],))
            for i, t in enumerate(order)}  # fmt: skip


def rest_cpus(tiers: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """The CPUs :func:`spread_tiers` gives no tier alone: where the rest of a deployment runs.

    A deployment's link emulators and the ZeroMQ I/O threads of its client and
    of each worker run there, off the caches of the tiers that have a CPU alone
    (the thread that calls ``deploy`` keeps its own CPUs).

    Example:
        >>> set(rest_cpus([0])) <= set(os.sched_getaffinity(0))
        True
    """
    allowed, alone = _alone(len(set(tiers)))
    return tuple(allowed[alone:])
