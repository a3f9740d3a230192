"""Deploy a whole bundle on this machine: tier workers and emulated links as subprocesses.

For tests, demos, benchmarks and validation: every tier worker and every
emulated link runs in a process of its own on loopback (``127.0.0.1`` only),
wired as the plan says, and a :class:`~earlyexit.runtime.client.Client` in the
calling process plays the source application and the destination consumer.
Across real machines, run ``earlyexit serve`` on each instead.

Start-up waits for each process's ``READY`` line with a bounded timeout; ``close``
(or leaving the ``with`` block, or the interpreter exiting) terminates every
process, killing those that do not stop within a few seconds, and removes the
temporary folder of the process logs (``earlyexit-deploy-*``) unless
``keep_logs=True`` or a ``log_dir`` of the caller's was given.

Example:
    ```python
    with deploy(synthetic={"num_partitions": 3}, threshold=0.6) as d:
        results = d.run(d.inputs(20))
    sorted({r.partition for r in results})  # [0, 1, 2]
    ```
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit.formats import Manifest, Topology
from earlyexit.runtime._launch import (
    Running,
    check_settings,
    fit_topology,
    runner_specs,
    start_client,
    synthetic_size,
    worker_template,
)
from earlyexit.runtime._procs import Proc
from earlyexit.runtime._routing import route
from earlyexit.runtime.chain import check_threshold
from earlyexit.runtime.client import Client, Result
from earlyexit.runtime.cpus import check_cpu_affinity, pin_thread, rest_cpus, spread_tiers
from earlyexit.runtime.options import MAX_MESSAGE_BYTES
from earlyexit.runtime.policies import policy_text

__all__ = ["Deployment", "deploy", "route"]


class Deployment(Running):
    """A running deployment: its processes and its client.

    Attributes:
        client: submits inputs and collects results.
        tiers: the tier of each partition.
        threshold: the exit threshold.
        log_dir: where each process writes its log (a temporary folder is
            removed by :meth:`close` unless the deployment was made with ``keep_logs``).
    """

    def __init__(
        self,
        client: Client,
        procs: list[Proc],
        workers: list[Proc],
        tiers: list[int],
        threshold: float,
        log_dir: Path,
        input_shape: tuple[int, ...],
        cleanup: Callable[[], Any],
    ) -> None:
        super().__init__(client, log_dir, input_shape, cleanup)
        self._procs = procs
        self._workers = workers
        self.tiers = tiers
        self.threshold = threshold

    @property
    def num_partitions(self) -> int:
        """L, the number of partitions (one worker each)."""
        return len(self._workers)

    @property
    def cpus(self) -> list[list[int]]:
        """Per worker, the CPUs its process may run on (as it reported at start-up)."""
        return [list(w.info.get("cpus", [])) for w in self._workers]

    @property
    def cpu_latency(self) -> list[dict[str, Any]]:
        """Per worker, its CPU latency request as it reported at start-up.

        Each is ``{"requested_us": int | None, "active": bool, "reason": str}``
        (see :mod:`earlyexit.runtime.cpus`).
        """
        none = {"requested_us": None, "active": False, "reason": "not reported"}
        return [dict(w.info.get("cpu_latency", none)) for w in self._workers]

    def worker_address(self, partition: int) -> str:
        """The input address of the worker of ``partition`` (0-based)."""
        return str(self._workers[partition].info["input"])

    def worker_alive(self, partition: int) -> bool:
        """Whether the worker of ``partition`` (0-based) is running."""
        return self._workers[partition].popen.poll() is None

    def kill(self, partition: int) -> None:
        """Kill the worker of ``partition`` (SIGKILL, as a crash would), for fault tests."""
        p = self._workers[partition].popen
        if p.poll() is None:
            p.kill()
            p.wait(5.0)

    def pause(self, partition: int) -> None:
        """Freeze the worker of ``partition`` (SIGSTOP): it reads nothing until :meth:`resume`.

        A frozen tier is the slowest tier there is: tests use it to show that
        backpressure reaches the client whatever the machine's load.
        """
        p = self._workers[partition].popen
        if p.poll() is None:
            p.send_signal(signal.SIGSTOP)

    def resume(self, partition: int) -> None:
        """Let a worker frozen by :meth:`pause` run again (SIGCONT)."""
        p = self._workers[partition].popen
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)

    def final_stats(self, partition: int) -> dict[str, Any]:
        """The counters a stopped worker of ``partition`` logged (after :meth:`close`).

        The worker writes them as one JSON line when it stops: ``received``,
        ``samples``, ``exited``, ``forwarded``, ``compute_s`` (wall time in the
        partition), ``cpu_s`` (thread CPU time its slowdown emulation stretched;
        0 without one) and the feedback counters.

        Raises:
            RuntimeError: the worker has not stopped, or died without logging them.
        """
        for line in reversed(self._workers[partition].log_text().splitlines()):
            head, sep, tail = line.partition(" stops: ")
            if sep and head.endswith(f"partition {partition}"):
                return dict(json.loads(tail))
        raise RuntimeError(f"worker {partition} has not logged its final counters (is it closed?)")

    def log(self, partition: int | None = None) -> str:
        """The log text of a worker (or of every process if ``partition`` is None)."""
        procs = self._procs if partition is None else [self._workers[partition]]
        return "".join(p.log_text() for p in procs)

    def run(
        self, x: np.ndarray, one_at_a_time: bool = False, timeout_s: float = 60.0
    ) -> list[Result]:
        """Submit every sample of ``x`` and return their results in order.

        Args:
            x: a batch of inputs.
            one_at_a_time: wait for each result before sending the next input
                (no queueing: the latency of each sample alone).
            timeout_s: the longest wait for all results (or for each one).
        """
        if one_at_a_time:
            return [self.client.infer(xi, timeout_s) for xi in x]
        ids = self.client.submit(x)
        return self.client.gather(ids, timeout_s)


def deploy(
    bundle: str | os.PathLike[str] | None = None,
    *,
    synthetic: dict[str, Any] | None = None,
    tiers: Sequence[int] | None = None,
    threshold: float | None = None,
    topology: Topology | str | os.PathLike[str] | None = None,
    emulate_links: bool | None = None,
    apply_slowdown: bool = True,
    max_batch: int = 1,
    batch_timeout_s: float = 0.0,
    hwm: int = 64,
    precision: str = "fp32",
    heartbeat_s: float = 0.2,
    dead_after_s: float = 2.0,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    start_timeout_s: float = 60.0,
    log_dir: str | os.PathLike[str] | None = None,
    niceness: int | None = None,
    keep_logs: bool = False,
    transport: str = "ipc",
    ack_interval_s: float = 0.05,
    policy: str | dict[str, Any] | None = None,
    cpu_latency_us: int | None = None,
    cpu_affinity: str | Mapping[int, Sequence[int]] | None = None,
) -> Deployment:
    """Start a deployment on loopback and return it with its client.

    Args:
        bundle: a bundle directory (its plan gives partitions, tiers, threshold).
        synthetic: instead of a bundle, keyword arguments of
            :class:`~earlyexit.runtime.synthetic.SyntheticModel` (tests, demos).
        tiers: the tier of each partition (default: the plan's, or 0..L-1).
        threshold: the exit threshold (default: the bundle's; required with ``synthetic``).
        topology: a Topology, built-in name or YAML path; gives links, MTU,
            slowdowns, source and destination. None: every tier on loopback with
            no emulation, source and destination 0.
        emulate_links: run link emulators (default: True when a topology is given).
        apply_slowdown: emulate each tier's ``slowdown`` on top of real compute.
        max_batch, batch_timeout_s: micro-batching of each worker.

            These and the settings below that concern workers become each
            partition's :class:`~earlyexit.runtime.options.WorkerOptions`.
        hwm: ZeroMQ high-water marks (messages).
        precision: bundle precision for each worker's session.
        heartbeat_s, dead_after_s: fault detection.
        max_message_bytes: workers reject larger messages.
        start_timeout_s: bound on each process's start-up.
        log_dir: where process logs go (default: a new temporary directory,
            ``earlyexit-deploy-*``, removed when the deployment closes unless ``keep_logs``;
            a directory given here is kept).
        niceness: the scheduling niceness of every worker and link process
            (``-20`` .. ``19``; below the caller's needs ``CAP_SYS_NICE``, and is
            silently not applied without it). On a machine shared with other
            work, a negative one keeps the emulated tiers' wake-ups prompt, as on
            dedicated devices; None inherits the caller's.
        keep_logs: keep the temporary log folder after the deployment closes.
        transport: ``"ipc"`` (Unix domain sockets in the log folder: every process
            is on this host, and a hop costs less than over TCP) or ``"tcp"``
            (loopback TCP); ``"ipc"`` falls back to TCP where socket paths would be
            too long.
        ack_interval_s: each worker gathers its acks to upstream for this long
            (0: one ack per batch, at once: the client then knows the first
            tier's number in system, as a load generator needs).
        policy: the exit policy of every worker (docs/load.md): None or
            ``"threshold"`` (the threshold rule), a name, a spec such as
            ``{"policy": "adaee", "grid": [0.2, 0.5]}``, its JSON or a file. With
            ``adaee`` the first tier's worker learns, and the client sends it
            feedback. The workers report it in their heartbeats (``client.policies``).
        cpu_latency_us: every worker asks Linux to keep idle CPUs able to wake
            within this many microseconds while it serves (0: they poll; see
            :mod:`earlyexit.runtime.cpus`); on one host this covers the
            links and the client too. Each worker's READY info says whether the
            request is held (``d.cpu_latency``). None: no request.
        cpu_affinity: pin each tier's worker to CPUs of this host: ``"spread"``
            gives the slowest tiers one CPU each alone, as many as leave one CPU
            over, and the other tiers share that rest in turn, with the link
            emulators, the client's I/O thread and each worker's ZeroMQ I/O
            thread (:func:`~earlyexit.runtime.cpus.spread_tiers`). The calling
            thread, which runs the client, is pinned to that rest too until
            the deployment closes, then gets its CPUs back: on separate
            devices a client never runs on a tier's CPU (one that did woke
            where the far tier had just run and spent more CPU the longer that
            tier had computed; docs/deployment.md#on-the-demos-topology); a
            mapping gives tier -> CPUs (the caller keeps its CPUs); None pins
            nothing. ``d.cpus`` says where each worker runs.

    Returns:
        The running :class:`Deployment` (use it as a context manager).

    Raises:
        ValueError: neither or both of ``bundle`` and ``synthetic``, bad tiers or
            threshold, a count, time or niceness out of range.
        RuntimeError: a process failed to start (the message holds its log).
    """
    check_settings(start_timeout_s, precision, niceness)
    template = worker_template(
        max_batch=max_batch, batch_timeout_s=batch_timeout_s, hwm=hwm, heartbeat_s=heartbeat_s,
        dead_after_s=dead_after_s, max_message_bytes=max_message_bytes,
        ack_interval_s=ack_interval_s, cpu_latency_us=cpu_latency_us,
    )  # fmt: skip
    policy = policy_text(policy)
    if transport not in ("ipc", "tcp"):
        raise ValueError(f"transport must be 'ipc' or 'tcp', got {transport!r}")
    if (bundle is None) == (synthetic is None):
        raise ValueError("give exactly one of bundle= (a bundle directory) or synthetic= (kwargs)")
    if bundle is not None:
        manifest = Manifest.load(bundle)
        plan_tiers = list(manifest.plan.tier_indices)
        blocks: list[int | None] = list(manifest.plan.cut_points)
        threshold = manifest.threshold if threshold is None else threshold
        input_shape = tuple(manifest.input_shape)
    else:
        assert synthetic is not None  # internal: checked above
        num, input_shape = synthetic_size(synthetic)
        plan_tiers = list(range(num))
        blocks = [None] * num
        if threshold is None:
            raise ValueError("threshold is required with synthetic=")
    specs = runner_specs(bundle, synthetic, len(plan_tiers), precision)
    tiers = list(plan_tiers if tiers is None else tiers)
    if len(tiers) != len(specs) or len(set(tiers)) != len(tiers):
        raise ValueError(f"tiers must give {len(specs)} distinct tiers, got {tiers}")
    threshold = check_threshold(threshold)
    # the policy checked against the plan's exits before any process starts
    template = dataclasses.replace(template, partition=len(specs) - 1, num_partitions=len(specs),
                                   threshold=threshold, policy=policy)  # fmt: skip
    topo = fit_topology(topology, [tiers])
    slowdowns = {t: topo.tiers[t].slowdown for t in tiers} if topo and apply_slowdown else {}
    affinity = _affinity(cpu_affinity, tiers, slowdowns)
    emulate = (topo is not None) if emulate_links is None else bool(emulate_links)
    if emulate and topo is None:
        raise ValueError("emulate_links=True needs a topology")

    # "spread": the processes, the client's I/O thread and the calling thread, which runs
    # the client, stay off the CPUs a tier has alone; the caller gets its CPUs back on close
    release = pin_thread(rest_cpus(tiers) if cpu_affinity == "spread" else ())
    with contextlib.ExitStack() as undo:  # on a failed start: stop what started, then unpin
        undo.callback(release)
        st = start_client(topo, apply_slowdown=apply_slowdown, log_dir=log_dir,
                          keep_logs=keep_logs, prefix="earlyexit-deploy-",
                          start_timeout_s=start_timeout_s, niceness=niceness,
                          transport=transport, hwm=hwm, dead_after_s=dead_after_s)  # fmt: skip
        undo.callback(st.cleanup)
        if emulate:
            st.start_links()
        workers, st.client.input_route = st.start_chain(specs, tiers, blocks, threshold,
                                                        template, affinity=affinity)  # fmt: skip
        if json.loads(template.policy)["policy"] == "adaee":  # AdaEE learns from the destination
            st.client.feedback_address = str(workers[0].info["control"])
        undo.pop_all()

    def close() -> None:
        st.cleanup()
        release()

    return Deployment(
        st.client,
        st.procs,
        workers,
        tiers,
        float(threshold),
        st.log_path,
        input_shape,
        close,
    )


def _affinity(
    spec: str | Mapping[int, Sequence[int]] | None, tiers: Sequence[int],
    slowdowns: Mapping[int, float],
) -> dict[int, tuple[int, ...]]:
    """``deploy(cpu_affinity=)`` as tier -> CPUs, checked before any process starts."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        if spec != "spread":
            raise ValueError(
                f"cpu_affinity must be None, 'spread' or a mapping tier -> CPUs, got {spec!r}"
            )
        return spread_tiers(list(tiers), slowdowns)
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"cpu_affinity must be None, 'spread' or a mapping tier -> CPUs, got {spec!r}"
        )
    unknown = sorted(set(spec) - set(tiers))
    if unknown:
        raise ValueError(
            f"cpu_affinity names tier {unknown[0]!r}, not one of the plan's {list(tiers)}"
        )
    return {int(t): check_cpu_affinity(list(c), f"cpu_affinity[{t}]") for t, c in spec.items()}
