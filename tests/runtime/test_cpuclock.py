"""The emulation's CPU clock leaves out the garbage collector's time, and only that."""

from __future__ import annotations

import gc
import threading
import time

from earlyexit.runtime._cpuclock import emulation_cpu


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_collection_is_not_counted_and_work_is() -> None:
    junk = []
    for _ in range(300_000):  # cycles: a full collection has work to do
        a: list = []
        a.append(a)
        junk.append(a)
    t0, c0 = time.thread_time(), emulation_cpu()
    gc.collect()
    t1, c1 = time.thread_time(), emulation_cpu()
    assert t1 - t0 > 0.005  # the collection did cost CPU ...
    assert c1 - c0 < 0.2 * (t1 - t0)  # ... which the emulation does not stretch
    _spin(0.02)
    t2, c2 = time.thread_time(), emulation_cpu()
    assert abs((c2 - c1) - (t2 - t1)) < 1e-3  # other work counts in full
    del junk


def test_each_thread_keeps_its_own_total() -> None:
    before = emulation_cpu()
    seen: list[float] = []

    def other() -> None:
        junk = [[] for _ in range(100_000)]
        for j in junk:
            j.append(j)
        c0, t0 = emulation_cpu(), time.thread_time()
        gc.collect()
        seen.append((time.thread_time() - t0) - (emulation_cpu() - c0))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen[0] > 0.0  # that thread's collection came off its own clock
    assert emulation_cpu() >= before  # and not off this thread's
