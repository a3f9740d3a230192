"""A command stopped by SIGTERM stops what it started: no orphaned workers or link relays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _default_signals() -> None:
    """In the child before exec: SIGTERM and SIGHUP at their default action."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_stops_the_deployment_a_command_started(sig: int, tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; from earlyexit.cli import main; sys.exit(main())", "load", "--synthetic", '{"num_partitions": 2}',
           "--threshold", "0.5", "--rate", "20", "--duration", "60", "--json"]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    # the command handles only signals left at their default action (a run under nohup
    # ignores SIGHUP, and so does the command then): give the child the default ones,
    # whatever the test runner inherited
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=_default_signals)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        kids: set[int] = set()
        while time.monotonic() < deadline and len(kids) < 2 and proc.poll() is None:
            time.sleep(0.2)
            kids = _children(proc.pid)
        assert len(kids) >= 2, f"the deployment did not start: {proc.poll()} {kids}"
        time.sleep(1.0)  # serving
        proc.send_signal(sig)
        code = proc.wait(30)
        assert code == 128 + sig, proc.stderr.read()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(_alive, kids)):
            time.sleep(0.1)
        assert not [k for k in kids if _alive(k)], "workers left running after SIGTERM"
        # the deployment's temporary folder (logs) is removed
        assert not list(tmp_path.glob("earlyexit-deploy-*"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
