"""Tier workers: one partition of a bundle, in its own process, behind ZeroMQ.

A worker pulls wire messages (``kind`` ``"input"`` or ``"features"``, a batch of
samples with their ``ids``), runs its partition, and for every sample:

* if its normalized entropy is below the threshold (or this is the last
  partition), sends only its result (the exit's logits) to the destination;
* otherwise sends its features to the next partition's worker.

The exit rule is :func:`earlyexit.runtime.chain.exit_step`, the one every
chain of partitions uses. A worker takes one :class:`~earlyexit.runtime.options.WorkerOptions`.

Exit policies (``options.policy``, docs/load.md): the threshold rule by
default, on a vectorized path; ``probabilities`` and ``knapsack`` decide per
sample at this worker's exit; ``adaee`` runs a bandit in the first tier's
worker, which picks each sample's threshold and learns from the destination's
``feedback`` messages on its control socket (``_worker_policy``). Every
heartbeat reports the policy (``describe()``) of this worker and of those
downstream (``policies``), so the client holds them all.

Micro-batching is optional (``max_batch``, ``batch_timeout_s``). Everything is
bounded: ZeroMQ high-water marks on every socket, at most ``max_batch``
messages held for a batch, at most ``pending_limit`` samples in flight
downstream; a full downstream blocks the worker, which stops reading, so
backpressure travels back to the client.

Faults. Each worker keeps, for the samples it forwarded, the result of its own
exit until the next worker acknowledges them (an ack is sent once the next
worker has sent the sample's result or forwarded it in turn; acks are gathered
and sent every ``ack_interval_s``, so that they do not double the messages of
a hop). Workers send heartbeats to their upstream. When the next worker stops answering for
``dead_after_s`` (killed, crashed), the samples it still owed finish at the
last exit they passed: their kept result goes to the destination marked
``degraded``, as does every later sample that would need it. Malformed or
oversized messages are rejected with a log line and the worker keeps serving.
A partition that raises on a batch answers its samples at once as ``failed``
results (no logits; the client does not wait for them to time out); with
micro-batching, the messages of a failed batch are run again one by one, so
only the samples of the message that fails are failed.

The hot path is lean: frames are received without a copy and a single
message's array goes to the partition as a view of the frame; messages use the
wire's compact binary header (no JSON); results and features are encoded by
:func:`~earlyexit.runtime.wire.encode_result` / ``encode_batch``; messages
under 1 MiB are copied by ZeroMQ rather than sent zero-copy (pyzmq's zero-copy
path wakes its garbage-collector thread for every message); acks are gathered
for ``ack_interval_s``; the CPU clock is read only when a slowdown is emulated;
a bundle's session runs once before ``READY`` so the first sample does not pay
for ONNX Runtime's first-run allocations. A worker that sleeps between samples
wakes with cold caches, where every step costs several times what it costs
warm, so the path from receive to send has few steps: the worker sleeps in
the input socket's receive itself (no poll of two sockets: control messages
are read when an ack, heartbeat or check is due, or as they come when the
worker measures its link), housekeeping runs only when something is due, and
the process's long-lived objects are frozen out of the garbage collector's
sweeps (``gc.freeze`` before ``READY``).
Control messages (acks, heartbeats) are wire messages too and travel directly,
not over emulated links.

Link measurement (docs/adaptive.md). Acks carry ``held``, how long this worker
held each sample, so that the sender can time its own transfers (send to ack,
minus ``held``) into a :class:`~earlyexit.runtime.monitor.LinkEstimator`. A
worker whose options name the next tier (``next_tier``, set by adaptive
deployments) also sends ``probe`` messages of another size when its estimator
asks, while it carries samples, and reports its estimate, with those reported
from downstream, in its heartbeats (``links``). A ``probe`` is acknowledged, not run.

A tier's ``slowdown`` is emulated on top of real computation: after the
worker spends ``t`` seconds of CPU on a step that the profile times on a device
(deserializing an incoming message and copying it out, running the partition,
serializing an outgoing message) it owes ``(slowdown - 1) t`` seconds, and it
pays what it owes with one sleep just before each message leaves (one sleep,
not one per step: every sleep overshoots a little). The basis is the thread's
CPU time, not the wall time, so that a preemption by another process on a busy
machine is not multiplied by the slowdown (on an idle machine the two are the
same).

Example:
    >>> from earlyexit.runtime.synthetic import SyntheticModel
    >>> model = SyntheticModel(num_partitions=1)
    >>> opts = WorkerOptions(partition=0, num_partitions=1, threshold=0.5,
    ...                      result_route=("tcp://127.0.0.1:9",))
    >>> w = Worker(model.runner(0), opts)
    >>> w.input_address.startswith("tcp://127.0.0.1:")
    True
    >>> w.close()
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import zmq

from earlyexit.runtime._cpuclock import emulation_cpu
from earlyexit.runtime._sockets import readable
from earlyexit.runtime._worker_batch import _MicroBatch
from earlyexit.runtime._worker_control import _ControlPlane
from earlyexit.runtime._worker_policy import _Policy
from earlyexit.runtime._worker_recv import _Receive
from earlyexit.runtime._worker_runner import make_runner
from earlyexit.runtime._worker_send import _copy_small_messages, _DataOut, _zero
from earlyexit.runtime.chain import PartitionRunner, StepResult, exit_step
from earlyexit.runtime.cpus import hold_cpu_latency, pin_to_cpus
from earlyexit.runtime.link import RouteSender
from earlyexit.runtime.monitor import runtime_estimator
from earlyexit.runtime.options import WorkerOptions
from earlyexit.runtime.policies import AdaEE, make_policy

__all__ = ["PartitionRunner", "Worker", "WorkerOptions", "make_runner", "main", "serve_config"]

log = logging.getLogger("earlyexit.runtime.worker")

_RECV = zmq.backend.Socket.recv  # pyzmq's Cython receive, without the Python wrapper
_SET = zmq.backend.Socket.set
_RCVTIMEO = int(zmq.RCVTIMEO)


class Worker(_Receive, _MicroBatch, _ControlPlane, _DataOut, _Policy):
    """Serve one partition: receive, run, exit or forward, with faults handled.

    Args:
        runner: the partition, ``run(x) -> (logits, entropy, features | None)``.
        options: the worker's settings (addresses, routes, threshold, batching,
            bounds, fault detection), checked when they were made.
        context: ZeroMQ context (default: a new one).

    Raises:
        TypeError: ``options`` is not a :class:`WorkerOptions`.
    """

    def __init__(
        self,
        runner: PartitionRunner,
        options: WorkerOptions,
        *,
        context: zmq.Context | None = None,
    ) -> None:
        if not isinstance(options, WorkerOptions):
            raise TypeError(
                f"options must be an earlyexit.runtime.options.WorkerOptions, got {options!r}"
            )
        o = self.options = options
        partition, num_partitions, hwm = o.partition, o.num_partitions, o.hwm
        last = o.is_last
        self.runner = runner
        self.partition, self.num_partitions, self.is_last = partition, num_partitions, last
        self.threshold = o.threshold
        self.result_route = list(o.result_route)
        self.next_route = list(o.next_route) or None
        self.tier, self.last_block = o.tier, o.last_block
        self.slowdown = o.slowdown
        self.max_batch, self.batch_timeout_s = o.max_batch, o.batch_timeout_s
        self.send_timeout_s = o.send_timeout_s
        self.max_message_bytes = o.max_message_bytes
        self.heartbeat_s, self.dead_after_s = o.heartbeat_s, o.dead_after_s
        self.pending_limit = o.pending_limit
        # acks well inside the upstream's patience, whatever was asked
        self.ack_interval_s = min(o.ack_interval_s, o.dead_after_s / 4)
        self._acks: dict[str, list[int]] = {}  # upstream control address -> ids to ack
        self._next_ack = 0.0
        self._next_beat = 0.0
        self._next_tick = 0.0  # the next ack flush, heartbeat or downstream check due
        # the CPU clock is read only when a slowdown is emulated
        # (without the garbage collector's: the host process's housekeeping, not the work)
        self._cpu: Callable[[], float] = emulation_cpu if self.slowdown > 1.0 else _zero
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._in = self._ctx.socket(zmq.PULL)
        self._in.setsockopt(zmq.RCVHWM, hwm)
        self._in.setsockopt(zmq.LINGER, 0)
        self._in.bind(o.bind)
        self._ctl = self._ctx.socket(zmq.PULL)
        self._ctl.setsockopt(zmq.RCVHWM, 100_000)
        self._ctl.setsockopt(zmq.LINGER, 0)
        self._ctl.bind(o.control_bind)
        self.input_address: str = self._in.getsockopt_string(zmq.LAST_ENDPOINT)
        self.control_address: str = o.advertise or self._ctl.getsockopt_string(zmq.LAST_ENDPOINT)
        self._data = RouteSender(self._ctx, hwm=hwm, send_timeout_s=self.send_timeout_s)
        self._control = RouteSender(self._ctx, hwm=100_000, send_timeout_s=0.0)
        # connect to the first hops now, so that the handshakes are done before the first sample
        for r in (self.result_route, self.next_route):
            if r:
                self._data.connect(r[0])
                with contextlib.suppress(ValueError, zmq.ZMQError):  # reported at the first send
                    _copy_small_messages(self._data.socket(r[0]))
        self._upstreams: set[str] = set()
        # forwarded, not yet acknowledged: id -> (logits row, entropy)
        self._pending: dict[int, tuple[np.ndarray, float]] = {}
        self._down_heard: float | None = None
        self.downstream_dead = False
        self._owed_s = 0.0  # emulated slowdown not yet slept
        # link measurement (docs/adaptive.md): when each id arrived (for the ``held``
        # time acks report), when each forwarded message left and its size
        self._recv_at: dict[int, float] = {}
        self._sent: dict[int, tuple[float, int]] = {}
        self._probe_ids = itertools.count(1)
        self._last_input = -math.inf  # when a sample last arrived: only a busy worker probes
        self.link_estimator = runtime_estimator()
        # newest estimate per (tier, next tier): own and reported from downstream
        self.link_reports: dict[tuple[int, int], list[float]] = {}
        # the exit policy: None is the threshold rule (exit_step's vectorized path); others
        # decide per sample (docs/load.md). AdaEE learns in the first tier's worker only.
        # (the last partition reports its policy but decides nothing: every sample leaves)
        self.policy = make_policy(o.policy, partition, num_partitions, o.threshold)
        self._decide = None if self.policy is None or last else self._policy_mask
        self._bandit = self.policy if isinstance(self.policy, AdaEE) and not last else None
        self._arms = self._conf = np.empty(0)  # per sample of the batch just decided (AdaEE)
        # forwarded under AdaEE, awaiting feedback: id -> (threshold, confidence, forwarded at)
        self._awaiting: dict[int, tuple[float, float, float]] = {}
        # newest policy report per partition: this worker's and those from downstream
        self.policy_reports: dict[int, dict[str, Any]] = {}
        self.stats = {
            "received": 0,
            "samples": 0,
            "exited": 0,
            "forwarded": 0,
            "degraded": 0,
            "failed": 0,
            "rejected": 0,
            "batches": 0,
            "compute_s": 0.0,
            "cpu_s": 0.0,  # thread CPU time stretched by the emulated slowdown (0 without one)
            "feedback": 0,
            "feedback_unknown": 0,
            "feedback_rejected": 0,
            "feedback_lost": 0,
        }

    # ----------------------------------------------------------------- compute
    def process(self, x: np.ndarray, ids: list[int]) -> None:
        """Run the partition on a batch and route every sample (exit or forward).

        Raises:
            Exception: whatever the runner raises (nothing has been sent then).
        """
        self._route(ids, self._compute(x))

    def _compute(self, x: np.ndarray) -> StepResult:
        t0, c0 = time.perf_counter(), self._cpu()
        step = exit_step(self.runner, x, self.threshold, self.is_last, self._decide)
        self._emulate(c0)
        self.stats["compute_s"] += time.perf_counter() - t0
        self.stats["batches"] += 1
        self.stats["samples"] += len(x)
        return step

    def _route(self, ids: list[int], step: StepResult) -> None:
        """Send the samples that leave to the destination, the others' features on."""
        if self._bandit is not None:
            self._note_policy(ids, step)
        n_leave = len(step.leave)
        if n_leave == len(ids):  # all leave (always so at batch 1): no indexing, no copies
            self._send_results(ids, step.logits, step.entropy, degraded=False)
            return
        if n_leave:
            idx = step.leave
            self._send_results(
                [ids[i] for i in idx], step.logits[idx], step.entropy[idx], degraded=False
            )
        assert step.features is not None  # internal: exit_step gives the stayers' features
        if n_leave == 0:
            self._forward(ids, step.features, step.logits, step.entropy)
        else:
            idx = step.stay
            self._forward([ids[i] for i in idx], step.features, step.logits[idx], step.entropy[idx])

    def _serve_one(self, frame: zmq.Frame) -> None:
        """Run one received message alone: :meth:`serve`'s path at ``max_batch`` 1.

        The same steps as a batch of one message (parse, run, route, ack), with
        fewer calls: a sleeping worker wakes with cold caches, where every call
        on the way from the receive to the send costs microseconds.
        """
        item = self._take(frame)
        if item is None:
            return
        x, ids, ack = item
        try:
            step = self._compute(x)
        except Exception as err:  # a bad tensor or a broken partition must not stop the worker
            self._fail(ids, err)
        else:
            self._route(ids, step)
        if ack is not None:
            self._ack_later(ack, ids)
            if self.ack_interval_s <= 0.0:
                self._flush_acks()

    # ----------------------------------------------------------------- loop
    def serve(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set.

        Args:
            stop: the event that ends the loop (checked at least every heartbeat).
        """
        stop = stop or threading.Event()
        inp = self._in
        timeout_ms = -1
        poller = None
        if self.options.next_tier is not None or self._bandit is not None:
            # link measurement times acks, AdaEE its feedback, as they arrive: wait on both sockets
            poller = zmq.Poller()
            poller.register(self._ctl, zmq.POLLIN)
            poller.register(inp, zmq.POLLIN)
        self._next_beat = self._next_tick = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= self._next_tick:
                self._tick(now)
            if len(self._pending) >= self.pending_limit:  # backpressure: stop reading input
                self._on_control()
                time.sleep(0.005)
                continue
            ms = max(1, math.ceil((self._next_tick - now) * 1000))
            if poller is not None:
                events = dict(poller.poll(ms))
                if self._ctl in events:
                    self._on_control()
                if inp not in events:
                    continue
                ms = 0
            # wait in the receive itself (one system call to sleep, none when a message
            # waits) until a message comes or something is due; control messages are
            # read when something is due (acks, heartbeats: none is urgent)
            if ms != timeout_ms:
                _SET(inp, _RCVTIMEO, ms)
                timeout_ms = ms
            try:
                frame = _RECV(inp, 0, False, False)
            except zmq.Again:
                continue
            if self.max_batch == 1:
                self._serve_one(frame)
                continue
            first = self._take(frame)
            batch = [] if first is None else [first]
            deadline = time.monotonic() + self.batch_timeout_s if self.batch_timeout_s > 0 else 0.0
            while len(batch) < self.max_batch:
                if not readable(inp):
                    left = deadline - time.monotonic()
                    if left <= 0 or not inp.poll(int(left * 1000)):
                        break
                    continue
                # no copy: the payload is copied once, by _run_batch
                item = self._take(_RECV(inp, 0, False, False))
                if item is not None:
                    batch.append(item)
            if batch:
                self._run_batch(batch)

    def close(self) -> None:
        """Close the sockets (and the context if this worker made it)."""
        self._data.close()
        self._control.close()
        self._in.close(linger=0)
        self._ctl.close(linger=0)
        if self._own_ctx:
            self._ctx.term()


def main(argv: Sequence[str] | None = None) -> int:
    """Process entry point: ``python -m earlyexit.runtime.worker --config JSON``.

    The config is ``{"runner": spec, "options": WorkerOptions.to_dict()}`` (see
    :func:`make_runner` and :class:`WorkerOptions`). Prints
    ``READY {"input": ..., "control": ...}`` on stdout once bound; SIGTERM stops it.
    """
    parser = argparse.ArgumentParser(prog="python -m earlyexit.runtime.worker")
    parser.add_argument("--config", required=True, help="JSON: runner spec and worker options")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    return serve_config(config["runner"], WorkerOptions.from_dict(config["options"]))


def serve_config(runner_spec: dict[str, Any], options: WorkerOptions) -> int:
    """Build a worker, print READY and serve until SIGTERM or SIGINT.

    The runner is built, and a bundle's session run once, before READY, so the
    first sample pays for nothing but itself.

    Args:
        runner_spec: see :func:`make_runner`.
        options: the worker's settings.

    Returns:
        The exit code (0).

    Raises:
        TypeError, ValueError: a bad runner spec or options.
    """
    if not isinstance(options, WorkerOptions):
        raise TypeError(f"options must be a WorkerOptions, got {type(options).__name__}")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s worker[{options.partition}] %(levelname)s %(message)s",
    )
    runner = make_runner(runner_spec)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = Worker(runner, options)
    # the serving thread only: ZeroMQ's I/O thread, started above, stays free to take the
    # next message on another core while this one computes (measured faster here, docs/deployment.md)
    cpus = pin_to_cpus(options.cpu_affinity)
    # what the imports and the session made lives as long as the process: kept out of
    # the collector's sweeps, which otherwise traverse it all again and again while serving
    gc.collect()
    gc.freeze()
    with hold_cpu_latency(options.cpu_latency_us) as qos:  # released when serving ends
        ready = {"input": worker.input_address, "control": worker.control_address,
                 "cpu_latency": {"requested_us": qos.requested_us, "active": qos.active,
                                 "reason": qos.reason},
                 "cpus": list(cpus)}  # fmt: skip
        print("READY " + json.dumps(ready), flush=True)
        try:
            worker.serve(stop)
        finally:
            log.info("partition %d stops: %s", worker.partition, json.dumps(worker.stats))
            worker.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
