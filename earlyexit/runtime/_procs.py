"""The processes of a deployment on this host: started with a READY handshake, stopped in bounded time.

Each worker and link relay runs as ``python -m <module>`` with its stderr in a
log file; it prints one ``READY {json}`` line on stdout once it listens.
Stopping sends SIGTERM (and SIGCONT, so that a paused process can stop), then
kills what has not exited within a few seconds.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from earlyexit.runtime.client import Client

__all__ = ["Proc", "close_all", "spawn", "terminate"]

_PKG_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class Proc:
    """A started process: its role (``worker0``, ``link1``...), handle, log and READY info."""

    role: str
    popen: subprocess.Popen
    log_path: Path
    info: dict[str, Any] = field(default_factory=dict)
    final_log: str | None = None  # the log's text, kept when its file is removed

    def log_text(self) -> str:
        """The process's log so far (kept in memory once its file is removed)."""
        if self.final_log is not None:
            return self.final_log
        return self.log_path.read_text(errors="replace")


def terminate(procs: list[Proc], timeout_s: float = 3.0) -> None:
    """Stop ``procs``: SIGTERM (and SIGCONT), then SIGKILL for those alive after ``timeout_s``."""
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
            p.popen.send_signal(signal.SIGCONT)  # a paused worker must run to stop
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.popen.wait(max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait(2.0)
        if p.popen.stdout:
            p.popen.stdout.close()


def close_all(client: Client, procs: list[Proc], remove_dir: Path | None = None) -> None:
    """Close ``client``, stop ``procs``, then remove ``remove_dir`` (their logs kept in memory)."""
    try:
        client.close()
    finally:
        try:
            terminate(procs)
        finally:
            if remove_dir is not None:
                for p in procs:  # log() still answers after close
                    try:
                        p.final_log = p.log_path.read_text(errors="replace")
                    except OSError:
                        p.final_log = ""
                shutil.rmtree(remove_dir, ignore_errors=True)


def _set_niceness(niceness: int) -> None:
    """In a child before exec: take this niceness if allowed (else keep the inherited one)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError:
        pass


def spawn(
    role: str,
    module: str,
    args: list[str],
    log_dir: Path,
    procs: list[Proc],
    timeout_s: float,
    niceness: int | None = None,
) -> Proc:
    """Start ``python -m module *args`` and wait for its ``READY {json}`` line.

    Args:
        role: names the process and its log file ``log_dir/{role}.log``.
        module, args: what to run.
        log_dir: where the log goes.
        procs: the started process is appended here first, so that it is
            stopped with the others even if it fails to start.
        timeout_s: the longest wait for READY.
        niceness: the child's scheduling niceness (None: inherited).

    Returns:
        The process, with the JSON of its READY line in ``info``.

    Raises:
        RuntimeError: it exited or was not ready in time (the message holds its log's tail).
    """
    log_path = log_dir / f"{role}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = _PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    with open(log_path, "wb") as log_fh:
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=log_fh,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=None if niceness is None else functools.partial(_set_niceness, niceness),
        )
    proc = Proc(role, popen, log_path)
    procs.append(proc)
    assert popen.stdout is not None  # internal: stdout=PIPE above
    deadline = time.monotonic() + timeout_s
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if popen.poll() is not None or left <= 0:
            tail = log_path.read_text(errors="replace")[-2000:]
            what = "exited" if popen.poll() is not None else f"was not ready within {timeout_s:g} s"
            raise RuntimeError(f"{role} {what}; its log ({log_path}):\n{tail}")
        ready, _, _ = select.select([popen.stdout], [], [], min(left, 0.2))
        if ready:
            ch = os.read(popen.stdout.fileno(), 1)
            if not ch:
                continue
            line += ch
    text = line.decode(errors="replace").strip()
    if not text.startswith("READY "):
        raise RuntimeError(f"{role} printed {text[:200]!r} instead of READY")
    proc.info = json.loads(text[len("READY ") :])
    return proc
