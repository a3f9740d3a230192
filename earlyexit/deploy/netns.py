"""A plan's tiers as local processes: on loopback, or each in its own Linux network namespace.

With ``netns=True`` (root only) every tier's ``earlyexit serve`` and the
application (the probe, :mod:`earlyexit.deploy.probe`) run in network
namespaces of their own, each joined by a veth pair to a bridge in a hub
namespace (addresses ``10.231.0.0/24``: the source .1, tier k at .(k+2)), so
every sample crosses real kernel network stacks (veth, bridge, TCP) instead
of loopback. Links stay unshaped (bandwidth emulation is the runtime's; this
kernel has no netem). The namespaces are deleted on close, at exit, and when
setting up fails half-way.

Example:
    >>> netns_unavailable() is None or isinstance(netns_unavailable(), str)
    True
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit.deploy.tiers import (
    CONTROL_PORT,
    INPUT_PORT,
    RESULTS_PORT,
    TierWorker,
    plan_workers,
    serve_argv,
)

__all__ = ["SUBNET", "LocalChain", "netns_unavailable", "earlyexit_program", "start_serve"]

_COUNT = itertools.count()
SUBNET = "10.231.0"
"""The /24 the namespaces share (isolated from the host's own addresses)."""


def earlyexit_program() -> list[str]:
    """The command that runs ``earlyexit`` with this interpreter (the console script if installed)."""
    script = Path(sys.executable).with_name("earlyexit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "earlyexit.cli"]


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here (None: they can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    name = f"eeprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add fails: {made.stderr.strip() or made.returncode}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    log: Path | None = None,
    timeout_s: float = 60.0,
) -> subprocess.Popen[str]:
    """Start one ``earlyexit serve`` command (in a namespace if given) and wait for its READY line.

    Args:
        argv: the command line.
        netns: the network namespace to run it in (``ip netns exec``).
        log: where its stderr goes (default: discarded).
        timeout_s: the longest wait for READY.

    Returns:
        The running process (its stdout drained by a thread).

    Raises:
        RuntimeError: it exits or stays silent before READY (its log's tail in the message).
    """
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    err = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the child holds it)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    if log:
        err.close()
    ready = threading.Event()

    def drain() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("READY"):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not ready.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = log.read_text()[-400:] if log and log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} did not get READY (exit {proc.wait()}): {tail}")
    return proc


class LocalChain:
    """Run a bundle's tiers with the same ``serve`` command lines as the manifests, locally.

    Args:
        bundle: the bundle directory.
        workers: the tiers (default: :func:`~earlyexit.deploy.tiers.plan_workers` of the bundle).
        netns: each tier and the source in its own network namespace (root only).
        threads: ONNX Runtime threads per worker.
        program: the command that runs ``earlyexit`` (default :func:`earlyexit_program`).

    Raises:
        RuntimeError: namespaces asked for but unavailable, or a worker that does not start.

    Use it as a context manager; :meth:`run` sends samples from the source.
    """

    def __init__(
        self,
        bundle: str | os.PathLike[str],
        workers: Sequence[TierWorker] | None = None,
        *,
        netns: bool = False,
        threads: int = 1,
        program: Sequence[str] | None = None,
    ) -> None:
        self.bundle = str(Path(bundle).resolve())
        self.workers = list(workers) if workers is not None else plan_workers(bundle)
        self.netns = bool(netns)
        self.threads = threads
        self.program = list(program) if program else earlyexit_program()
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self._dir = Path(tempfile.mkdtemp(prefix="earlyexit-chain-"))
        self._closed = False
        self._uid = f"{os.getpid() % 100000}x{next(_COUNT) % 100}"
        tag = f"ee{self._uid}"
        self.source_ns = f"{tag}s" if netns else None
        self.tier_ns = [f"{tag}t{k}" for k in range(len(self.workers))] if netns else []
        self._hub = f"{tag}h"
        if netns:
            self.source_host = f"{SUBNET}.1"
            hosts = [f"{SUBNET}.{k + 2}" for k in range(len(self.workers))]
            self._ports = [(INPUT_PORT, CONTROL_PORT)] * len(self.workers)
            self._results_port, self._control_port = RESULTS_PORT, RESULTS_PORT + 1
        else:
            self.source_host = "127.0.0.1"
            hosts = ["127.0.0.1"] * len(self.workers)
            self._ports = [(_free_port(), _free_port()) for _ in self.workers]
            self._results_port, self._control_port = _free_port(), _free_port()
        self.hosts = hosts
        self.results_address = f"tcp://{self.source_host}:{self._results_port}"
        atexit.register(self.close)

    # ------------------------------------------------------------- namespaces
    def _make_namespaces(self) -> None:
        reason = netns_unavailable()
        if reason:
            raise RuntimeError(f"deploy --netns: {reason}")
        _ip("netns", "add", self._hub)
        self.namespaces.append(self._hub)
        _ip("-n", self._hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self._hub, "link", "set", "br0", "up")
        pairs = [(self.source_ns, self.source_host)] + list(
            zip(self.tier_ns, self.hosts, strict=True)
        )
        for i, (ns, host) in enumerate(pairs):
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            inner, outer = f"e{self._uid}{i}a", f"e{self._uid}{i}b"  # <= 15 characters
            _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            try:
                _ip("link", "set", inner, "netns", ns)
                _ip("link", "set", outer, "netns", self._hub)
            except RuntimeError:
                subprocess.run(["ip", "link", "del", inner], capture_output=True)
                raise
            _ip("-n", ns, "link", "set", inner, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{host}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self._hub, "link", "set", outer, "master", "br0")
            _ip("-n", self._hub, "link", "set", outer, "up")

    # ----------------------------------------------------------------- start
    def argv(self, k: int) -> list[str]:
        """The ``earlyexit serve`` command line of partition ``k`` here."""
        w = self.workers[k]
        host, (inp, ctl) = self.hosts[k], self._ports[k]
        nxt = None
        if k + 1 < len(self.workers):
            nxt = f"tcp://{self.hosts[k + 1]}:{self._ports[k + 1][0]}"
        return serve_argv(w, bundle=self.bundle, bind=f"tcp://{host}:{inp}",
                          control_bind=f"tcp://{host}:{ctl}", next_address=nxt,
                          results=self.results_address, threads=self.threads, program=self.program)  # fmt: skip

    @property
    def input_address(self) -> str:
        """The first worker's input address."""
        return f"tcp://{self.hosts[0]}:{self._ports[0][0]}"

    def start(self) -> LocalChain:
        """Make the namespaces (if asked) and start every worker, the last tier first.

        Returns:
            self.

        Raises:
            RuntimeError: as the class says; everything made so far is removed.
        """
        try:
            if self.netns:
                self._make_namespaces()
            for k in reversed(range(len(self.workers))):
                ns = self.tier_ns[k] if self.netns else None
                self.procs.append(
                    start_serve(self.argv(k), netns=ns, log=self._dir / f"worker{k}.log")
                )
        except BaseException:
            self.close()
            raise
        return self

    def run(self, x: np.ndarray, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Send each sample of ``x`` alone from the source (its own namespace) and return the results.

        Args:
            x: a batch of inputs.
            timeout_s: the longest wait for one sample.

        Returns:
            What :func:`earlyexit.deploy.probe.probe` returns, one mapping per sample.

        Raises:
            RuntimeError: the probe failed (its stderr in the message).
        """
        inputs, out = self._dir / "inputs.npy", self._dir / "results.json"
        np.save(inputs, np.ascontiguousarray(x, dtype=np.float32))
        cmd = [sys.executable, "-m", "earlyexit.deploy.probe", "--route", self.input_address,
               "--results-bind", self.results_address,
               "--control-bind", f"tcp://{self.source_host}:{self._control_port}",
               "--inputs", str(inputs), "--out", str(out), "--timeout", str(timeout_s)]  # fmt: skip
        if self.source_ns:
            cmd = ["ip", "netns", "exec", self.source_ns, *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s * (len(x) + 2))
        if done.returncode != 0:
            raise RuntimeError(
                f"the probe failed ({done.returncode}): {done.stderr.strip()[-600:]}"
            )
        return json.loads(out.read_text())

    def log(self, k: int) -> str:
        """Worker ``k``'s stderr so far."""
        path = self._dir / f"worker{k}.log"
        return path.read_text() if path.exists() else ""

    # ----------------------------------------------------------------- close
    def close(self) -> None:
        """Stop the workers and delete the namespaces (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
        shutil.rmtree(self._dir, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> LocalChain:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
