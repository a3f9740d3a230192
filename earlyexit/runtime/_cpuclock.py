"""The CPU clock a slowdown emulation stretches: this thread's CPU time, without the garbage collector's.

A tier or client that emulates a slower device sleeps ``(slowdown - 1)`` times
the thread CPU time a message cost. Python's cyclic garbage collector runs
when an allocation crosses a threshold, in whatever thread allocates; in a
process that imported torch a full collection took about 0.12 s on the
development machine, and stretched 10x it froze a client for 1.2 s (the load
generator fell 1.2 s behind and dropped an eighth of a run). That time is the
host process's housekeeping, not the message's work, so the emulation leaves
it out: :func:`emulation_cpu` is ``time.thread_time()`` minus the CPU time
this thread spent in collections.

Example:
    >>> a = emulation_cpu(); import gc; _ = gc.collect(); b = emulation_cpu()
    >>> b - a < 0.01
    True
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

__all__ = ["emulation_cpu"]

_local = threading.local()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    """gc callback: add the collection's thread CPU time to this thread's total."""
    if phase == "start":
        _local.start = time.thread_time()
    elif phase == "stop":
        start = getattr(_local, "start", None)
        if start is not None:
            _local.gc_s = getattr(_local, "gc_s", 0.0) + (time.thread_time() - start)
            _local.start = None


if _on_gc not in gc.callbacks:
    gc.callbacks.append(_on_gc)


def emulation_cpu() -> float:
    """This thread's CPU time (s) outside garbage collections: what a slowdown stretches."""
    return time.thread_time() - getattr(_local, "gc_s", 0.0)
