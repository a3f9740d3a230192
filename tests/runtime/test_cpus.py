"""The CPU latency request: checked, written as the kernel reads it, released, and felt by the kernel."""

from __future__ import annotations

import glob
import logging
import os
import re
import struct
import time

import pytest

from earlyexit.runtime.cpus import (
    CPU_LATENCY_PATH,
    check_cpu_latency_us,
    hold_cpu_latency,
)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("bad", [-1, 2.5, True, "0", 2**31])
def test_bad_bounds_are_refused_with_the_valid_range(bad: object) -> None:
    with pytest.raises(ValueError, match=r"cpu_latency_us must be None .* \[0, 2000000000\]"):
        check_cpu_latency_us(bad)
    with pytest.raises(ValueError, match="cpu_latency_us"), hold_cpu_latency(bad):  # type: ignore[arg-type]
        pass


def test_none_holds_nothing(tmp_path) -> None:
    f = tmp_path / "qos"
    f.write_bytes(b"")
    with hold_cpu_latency(None, path=f) as r:
        assert (r.requested_us, r.active) == (None, False)
    assert f.read_bytes() == b""


def test_the_bound_is_written_as_a_native_s32_and_the_file_closed_after(tmp_path) -> None:
    f = tmp_path / "qos"
    f.write_bytes(b"")
    before = _open_fds()
    with hold_cpu_latency(25, path=f) as r:
        assert r.active and r.requested_us == 25 and r.reason == ""
        assert _open_fds() == before + 1  # held open: closing it ends the request
    assert _open_fds() == before
    assert struct.unpack("=i", f.read_bytes()) == (25,)


def test_an_unavailable_file_is_reported_and_logged_not_raised(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING), hold_cpu_latency(0, path=tmp_path / "none") as r:
        assert not r.active and "cannot open" in r.reason and "none" in r.reason
    assert "not held" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING), hold_cpu_latency(0, tmp_path / "none", quiet=True) as r:
        assert not r.active and "cannot open" in r.reason
    assert caplog.text == ""


def _deep_idle_entries() -> int:
    """How often any CPU entered an idle state other than polling (cpuidle's state1 and up)."""
    total = 0
    for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpuidle/state*/usage"):
        if not path.endswith("state0/usage"):  # state0 is POLL
            with open(path) as fh:
                total += int(fh.read())
    return total


def _sleep_a_lot() -> None:
    for _ in range(50):
        time.sleep(0.002)


def test_the_kernel_honours_the_request_where_it_can_be_made() -> None:
    """With 0 us held, no CPU enters a sleeping idle state; without it, they do.

    Where the request cannot be made (no file, no permission, no cpuidle), the
    request must say so instead.
    """
    writable = os.access(CPU_LATENCY_PATH, os.W_OK)
    states = glob.glob("/sys/devices/system/cpu/cpu0/cpuidle/state1/usage")
    with hold_cpu_latency(0) as r:
        assert r.active == writable, r.reason
        if not (r.active and states):
            assert writable or "cannot open" in r.reason
            return
        before = _deep_idle_entries()
        _sleep_a_lot()
        held = _deep_idle_entries() - before
    assert held == 0
    if _effective_us() == 0:  # another process holds one too (a deployment, a benchmark)
        return
    before = _deep_idle_entries()
    _sleep_a_lot()
    released = _deep_idle_entries() - before
    assert released > 0


def _effective_us() -> int:
    """The bound the kernel applies now (the smallest of every process's request)."""
    with open(CPU_LATENCY_PATH, "rb") as fh:
        return struct.unpack("=i", fh.read(4))[0]


def test_a_deployment_passes_the_request_to_every_worker_and_reports_it() -> None:
    import numpy as np

    from earlyexit.runtime.deployment import deploy
    from earlyexit.runtime.synthetic import SyntheticModel

    writable = os.access(CPU_LATENCY_PATH, os.W_OK)
    kw = {"num_partitions": 2}
    with deploy(synthetic=kw, threshold=0.5, cpu_latency_us=0) as d:
        reports = d.cpu_latency
        assert [r["requested_us"] for r in reports] == [0, 0]
        assert all(r["active"] == writable for r in reports), reports
        x = d.inputs(8)
        got = d.run(x)
    ref = SyntheticModel(**kw).reference(x, 0.5)  # the same exits as without the request
    assert [r.partition for r in got] == [r["partition"] for r in ref]
    with deploy(synthetic=kw, threshold=0.5) as d:
        assert [r["requested_us"] for r in d.cpu_latency] == [None, None]
    assert np.isfinite([r.latency_s for r in got]).all()


def test_pinning_covers_the_threads_started_after_it() -> None:
    """In a child (this process stays unpinned): pinned to one CPU, a new thread runs there too."""
    import subprocess
    import sys

    cpu = max(os.sched_getaffinity(0))
    code = (
        "import os, threading\n"
        "from earlyexit.runtime.cpus import pin_to_cpus\n"
        f"print(pin_to_cpus(({cpu},)))\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0))); t.start(); t.join()\n"
        "print(sorted(seen[0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [f"({cpu},)", f"[{cpu}]"]


def test_unavailable_cpus_and_bad_lists_are_refused() -> None:
    from earlyexit.runtime.cpus import check_cpu_affinity, pin_to_cpus

    allowed = sorted(os.sched_getaffinity(0))
    with pytest.raises(
        ValueError, match=re.escape(f"CPU 4000 is not available here; valid: {allowed}")
    ):
        pin_to_cpus((4000,))
    assert sorted(os.sched_getaffinity(0)) == allowed  # nothing changed
    with pytest.raises(TypeError, match="list of CPU numbers"):
        check_cpu_affinity("0,1")
    with pytest.raises(ValueError, match="twice"):
        check_cpu_affinity([1, 1])


@pytest.mark.parametrize(
    ("ncpu", "placement", "rest"),
    [
        (4, {1: (0,), 2: (1,), 0: (2,)}, (3,)),  # each alone, one CPU over
        (3, {1: (0,), 2: (1,), 0: (2,)}, (2,)),  # the fastest shares with the rest
        (2, {1: (0,), 2: (1,), 0: (1,)}, (1,)),  # the slowest alone
        (1, {1: (0,), 2: (0,), 0: (0,)}, (0,)),  # nothing to spread
    ],
)
def test_spread_gives_the_slowest_tiers_a_cpu_alone(
    monkeypatch: pytest.MonkeyPatch, ncpu: int, placement: dict, rest: tuple
) -> None:
    from earlyexit.runtime.cpus import rest_cpus, spread_tiers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(ncpu)))
    assert spread_tiers([0, 1, 2], {0: 1.0, 1: 10.0, 2: 2.0}) == placement
    assert rest_cpus([0, 1, 2]) == rest


def _threads_cpus(pid: int) -> dict[int, set[int]]:
    """Thread id -> the CPUs it may run on, for every thread of process ``pid``."""
    return {int(t): os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def test_a_spread_deployment_keeps_its_other_threads_off_a_slow_tiers_cpu() -> None:
    from earlyexit.formats import Link, Tier, Topology
    from earlyexit.runtime.cpus import rest_cpus, spread_tiers
    from earlyexit.runtime.deployment import deploy

    before = os.sched_getaffinity(0)
    topo = Topology(tiers=(Tier("fast", "d", 1.0), Tier("pi", "d", 10.0), Tier("mid", "d", 2.0)),
                    links=(Link(100.0, 0.5), Link(100.0, 0.5)), mtu_bytes=9000)  # fmt: skip
    placement = spread_tiers([0, 1, 2], {0: 1.0, 1: 10.0, 2: 2.0})
    rest = set(rest_cpus([0, 1, 2]))
    with deploy(synthetic={"num_partitions": 3}, threshold=0.5, topology=topo,
                cpu_affinity="spread") as d:  # fmt: skip
        assert d.cpus == [list(placement[t]) for t in range(3)]
        assert os.sched_getaffinity(0) == rest  # the caller (the client) off the tiers alone
        workers = {w.popen.pid for w in d._workers}
        for k, w in enumerate(d._workers):  # the main thread serves
            assert os.sched_getaffinity(w.popen.pid) == set(placement[k])
        others = [c for p in d._procs for t, c in _threads_cpus(p.popen.pid).items()
                  if p.popen.pid not in workers or t != p.popen.pid]  # fmt: skip
        assert others and all(c == rest for c in others)  # links, ZeroMQ I/O threads
        assert len(d.run(d.inputs(4))) == 4
    assert os.sched_getaffinity(0) == before  # given back on close
    allowed = sorted(before)
    assert spread_tiers([5, 2]) == {2: (allowed[0],), 5: (allowed[1 % len(allowed)],)}
    with pytest.raises(ValueError, match="names tier 7"):
        deploy(synthetic={"num_partitions": 2}, threshold=0.5, cpu_affinity={7: [0]})
    with pytest.raises(ValueError, match="'spread' or a mapping"):
        deploy(synthetic={"num_partitions": 2}, threshold=0.5, cpu_affinity="all")
    assert os.sched_getaffinity(0) == before


def test_a_spread_deployment_closed_from_another_thread_gives_the_caller_its_cpus_back() -> None:
    import threading

    from earlyexit.runtime.cpus import rest_cpus
    from earlyexit.runtime.deployment import deploy

    before = os.sched_getaffinity(0)
    d = deploy(synthetic={"num_partitions": 2}, threshold=0.5, cpu_affinity="spread")
    try:
        assert os.sched_getaffinity(0) == set(rest_cpus([0, 1]))
        closer = threading.Thread(target=d.close)
        closer.start()
        closer.join()
        assert os.sched_getaffinity(0) == before
    finally:
        d.close()  # a second close restores nothing twice
    assert os.sched_getaffinity(0) == before


def test_a_spread_deployment_opened_inside_another_spreads_over_the_callers_own_cpus() -> None:
    from earlyexit.formats import Link, Tier, Topology
    from earlyexit.runtime.cpus import spread_tiers
    from earlyexit.runtime.deployment import deploy

    before = os.sched_getaffinity(0)
    topo = Topology(tiers=(Tier("pi", "d", 10.0), Tier("server", "d", 1.0)),
                    links=(Link(100.0, 0.5),), mtu_bytes=9000)  # fmt: skip
    placement = spread_tiers([0, 1], {0: 10.0, 1: 1.0})
    with deploy(synthetic={"num_partitions": 1}, threshold=0.5, cpu_affinity="spread") as outer:
        with deploy(synthetic={"num_partitions": 2}, threshold=0.5, topology=topo,
                    cpu_affinity="spread") as inner:  # fmt: skip
            assert inner.cpus == [list(placement[0]), list(placement[1])]
            assert len(inner.run(inner.inputs(2))) == 2
        assert len(outer.run(outer.inputs(2))) == 2
    assert os.sched_getaffinity(0) == before
