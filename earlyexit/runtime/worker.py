"""Tier workers: one partition of a bundle, in its own process, behind ZeroMQ.

A worker pulls wire messages (``kind`` ``"input"`` or ``"features"``, a batch of
samples with their ``ids``), runs its partition, and for every sample:

* if its normalized entropy is below the threshold (or this is the last
  partition), sends only its result (the exit's logits) to the destination;
* otherwise sends its features to the next partition's worker.

The exit rule is :func:`earlyexit.runtime.chain.exit_step`, the one every
chain of partitions uses. A worker takes one :class:`~earlyexit.runtime.options.WorkerOptions`.

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
for ONNX Runtime's first-run allocations.
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
import importlib
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

from earlyexit.runtime._sockets import readable
from earlyexit.runtime.chain import PartitionRunner, StepResult, exit_step
from earlyexit.runtime.link import RouteSender
from earlyexit.runtime.monitor import merge_link_report, runtime_estimator, transfer_times
from earlyexit.runtime.options import WorkerOptions
from earlyexit.runtime.wire import WireError, decode, encode, encode_batch, encode_result

__all__ = ["PartitionRunner", "Worker", "WorkerOptions", "make_runner", "main", "serve_config"]

log = logging.getLogger("earlyexit.runtime.worker")

_EMPTY = np.empty(0, np.uint8)


def _zero() -> float:
    return 0.0


_MAX_UPSTREAMS = 16
_COPY_BELOW = 1 << 20


def _copy_small_messages(sock: zmq.Socket) -> None:
    """Let ZeroMQ copy messages below 1 MiB instead of sending them zero-copy.

    A zero-copy send hands the buffer's release to pyzmq's garbage-collector
    thread, which then wakes and takes the GIL once per message: measured on a
    busy 2-core host, a 64 KiB features message spent about 0.4 ms in ``send``
    that way and under 0.05 ms copied. Above 1 MiB the copy costs more than that.
    """
    sock.copy_threshold = _COPY_BELOW


def make_runner(spec: dict[str, Any]) -> PartitionRunner:
    """Build a partition runner from a JSON-able spec (what worker processes receive).

    Args:
        spec: ``{"kind": "bundle", "path": DIR, "partition": k, "precision": "fp32",
            "providers": None, "intra_op_threads": 1, "engine": "onnx"}`` runs partition
            ``k`` (0-based) of a bundle with :class:`earlyexit.runtime.session.BundleSession`
            (``engine`` ``"torchscript"`` runs its TorchScript file instead, ``"auto"``
            falls back to it when ONNX Runtime or the ONNX files are missing);
            ``{"kind": "synthetic", "partition": k, **SyntheticModel kwargs}`` a numpy
            model for tests and demos; ``{"kind": "factory", "factory": "module:function",
            "kwargs": {...}}`` calls any factory that returns a runner.

    Returns:
        The runner.

    Raises:
        ValueError: an unknown kind or a malformed spec.

    Example:
        >>> run = make_runner({"kind": "synthetic", "partition": 0, "num_partitions": 2})
        >>> [a.shape for a in run(np.zeros((3, 32), np.float32)) if a is not None]
        [(3, 10), (3,), (3, 64)]
    """
    if not isinstance(spec, dict):
        raise TypeError(f"runner spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind == "bundle" and spec.get("engine", "onnx") != "onnx":
        from earlyexit.runtime.torchscript import choose_engine, torchscript_runner

        if choose_engine(spec["path"], spec["engine"]) == "torchscript":
            return torchscript_runner(
                spec["path"], int(spec["partition"]), int(spec.get("intra_op_threads", 1))
            )
    if kind == "bundle":
        from earlyexit.runtime.session import BundleSession

        k = int(spec["partition"])
        session = BundleSession(
            spec["path"],
            precision=spec.get("precision", "fp32"),
            providers=spec.get("providers"),
            intra_op_threads=int(spec.get("intra_op_threads", 1)),
            partitions=[k],  # a tier reads, checks and loads only its own file
        )
        shape = session.manifest.partitions[k].input_shape
        if all(isinstance(s, int) for s in shape[1:]):
            # warm up before the first sample: ONNX Runtime allocates and picks
            # kernels on its first run, which would land on the first sample
            session.run_partition(k, np.zeros((1, *shape[1:]), np.float32))
        return lambda x: session.run_partition(k, x)
    if kind == "synthetic":
        from earlyexit.runtime.synthetic import SyntheticModel

        kwargs = {k: v for k, v in spec.items() if k not in ("kind", "partition")}
        return SyntheticModel(**kwargs).runner(int(spec["partition"]))
    if kind == "factory":
        module, _, name = str(spec.get("factory", "")).partition(":")
        if not module or not name:
            raise ValueError(f"factory must be 'module:function', got {spec.get('factory')!r}")
        return getattr(importlib.import_module(module), name)(**spec.get("kwargs", {}))
    raise ValueError(f"runner spec kind {kind!r} is not one of 'bundle', 'synthetic', 'factory'")


class Worker:
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
        # the CPU clock is read only when a slowdown is emulated
        self._cpu: Callable[[], float] = time.thread_time if self.slowdown > 1.0 else _zero
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
        }

    # ----------------------------------------------------------------- messages
    def _reject(self, reason: str) -> None:
        self.stats["rejected"] += 1
        log.warning("partition %d: rejected a message: %s", self.partition, reason)

    def _parse(self, frames: list[Any]) -> tuple[np.ndarray, list[int], str | None] | None:
        if len(frames) != 1:
            self._reject(f"{len(frames)} frames; a wire message is one frame")
            return None
        frame = frames[0]
        try:
            arr, head = decode(
                frame.buffer if isinstance(frame, zmq.Frame) else frame,
                max_bytes=self.max_message_bytes,
            )
        except WireError as err:
            self._reject(str(err))
            return None
        ids = head.get("ids")
        if head.get("kind") == "probe":
            self._on_probe(ids, head.get("ack"))
            return None
        if head.get("kind") not in ("input", "features"):
            self._reject(f"kind {head.get('kind')!r} is not 'input' or 'features'")
            return None
        if arr.ndim < 1 or arr.dtype.kind not in "fiu":
            self._reject(f"array of dtype {arr.dtype} and shape {arr.shape} is not a batch")
            return None
        if (
            not isinstance(ids, list)
            or len(ids) != arr.shape[0]
            or not all(type(i) is int for i in ids)  # bool is not int here
        ):
            self._reject(f"ids must be a list of {arr.shape[0]} integers, got {str(ids)[:80]}")
            return None
        ack = head.get("ack")
        if ack is not None and (
            not isinstance(ack, str) or not ack.startswith(("tcp://", "ipc://"))
        ):
            self._reject(f"ack address {str(ack)[:80]!r} is not a ZeroMQ endpoint")
            return None
        return arr, ids, ack

    def _on_probe(self, ids: Any, ack: Any) -> None:
        """A probe from upstream: acknowledge it (with its ``held`` time), run nothing."""
        if not isinstance(ack, str) or not ack.startswith(("tcp://", "ipc://")):
            self._reject(f"a probe without a ZeroMQ ack address: {str(ack)[:80]!r}")
            return
        if not isinstance(ids, list) or not all(type(i) is int for i in ids):
            self._reject(f"a probe's ids must be a list of integers, got {str(ids)[:80]}")
            return
        now = time.monotonic()
        for i in ids:
            self._recv_at[i] = now
        self._acks.setdefault(ack, []).extend(ids)
        # the prober is an upstream: it hears our heartbeats, so that it does not
        # take a link that only carried probes for a dead next worker
        if ack not in self._upstreams and len(self._upstreams) < _MAX_UPSTREAMS:
            self._upstreams.add(ack)

    def _observe_acks(self, ids: list[Any], held: Any, now: float) -> None:
        """Feed the link estimator from an ack: send to ack, minus the time the receiver held it."""
        for (_, nbytes), dt in transfer_times(self._sent, ids, held, now):
            self.link_estimator.observe(nbytes, dt, now)

    def _probe(self, now: float) -> None:
        """Send a probe of the size the link estimator asks for, if it asks (docs/adaptive.md)."""
        if self.next_route is None or self.downstream_dead:
            return
        if now - self._last_input > self.link_estimator.max_age_s:
            return  # no samples here lately (another plan is in use): leave the link alone
        size = self.link_estimator.probe_size(now)
        if size is None:
            return
        pid = -(2**62) - next(self._probe_ids)  # never a client's id
        msg = encode(np.zeros(size, np.uint8), kind="probe", ids=[pid], ack=self.control_address)
        if self._data.send(self.next_route, msg):
            self._sent[pid] = (time.monotonic(), len(msg))

    def _link_report(self) -> list[list[float]]:
        """``[tier, next_tier, bandwidth_mbps, propagation_ms, at]`` of every link known here."""
        if self.tier is not None and self.options.next_tier is not None:
            est = self.link_estimator.estimate()
            if est is not None:
                self.link_reports[(self.tier, self.options.next_tier)] = [
                    est.bandwidth_mbps,
                    est.propagation_ms,
                    est.at,
                ]
        return [[a, b, *v] for (a, b), v in self.link_reports.items()]

    def _send_control(self, addr: str, kind: str, **meta: Any) -> None:
        try:
            self._control.send([addr], encode(_EMPTY, kind=kind, partition=self.partition, **meta))
        except ValueError as err:
            log.warning("partition %d: cannot send %s to %s: %s", self.partition, kind, addr, err)

    def _on_control(self) -> None:
        while readable(self._ctl):
            frames = self._ctl.recv_multipart()
            if not frames:
                continue
            try:
                _, head = decode(frames[-1], max_bytes=1 << 20)
            except WireError as err:
                self._reject(f"control: {err}")
                continue
            if head.get("partition") != self.partition + 1:
                continue
            self._down_heard = time.monotonic()
            if self.downstream_dead:
                log.info("partition %d: the next partition answers again", self.partition)
                self.downstream_dead = False
            if head.get("kind") == "ack" and isinstance(head.get("ids"), list):
                for i in head["ids"]:
                    if type(i) is int:  # anything else (a list, a dict) is no sample id
                        self._pending.pop(i, None)
                self._observe_acks(head["ids"], head.get("held"), self._down_heard)
            if "links" in head:
                merge_link_report(self.link_reports, head["links"])

    def _emulate(self, cpu_t0: float) -> None:
        """Owe ``(slowdown - 1)`` times the CPU time spent since ``cpu_t0`` (thread time)."""
        if self.slowdown > 1.0:
            self._owed_s += (self.slowdown - 1.0) * (self._cpu() - cpu_t0)

    def _pay(self) -> None:
        """Sleep what the emulated slowdown owes, before a message leaves."""
        if self._owed_s > 0.0:
            time.sleep(self._owed_s)
            self._owed_s = 0.0

    def _send_results(
        self,
        ids: list[int],
        logits: np.ndarray,
        entropy: np.ndarray,
        degraded: bool,
        partition: int | None = None,
        block: int | None = None,
    ) -> None:
        c0 = self._cpu()
        msg = encode_result(
            logits,
            ids,
            self.partition if partition is None else partition,
            self.last_block if block is None else block,
            self.tier,
            entropy,
            degraded,
        )
        self._emulate(c0)
        self._pay()
        if self._send_until(self.result_route, msg, len(ids)):
            self.stats["degraded" if degraded else "exited"] += len(ids)

    def _send_until(self, route: list[str], msg: bytes, n: int) -> bool:
        """Send a result message, retrying for a while; False (logged) if it is lost."""
        if self._data.send(route, msg):
            return True
        deadline = time.monotonic() + max(5.0, self.dead_after_s)
        while not self._data.send(route, msg):
            if time.monotonic() > deadline:
                log.error(
                    "partition %d: the destination does not accept results; %d lost",
                    self.partition,
                    n,
                )
                return False
        return True

    def _flush_pending(self, reason: str) -> None:
        if not self._pending:
            return
        log.warning(
            "partition %d: %s; %d in-flight sample(s) finish at this exit, degraded",
            self.partition,
            reason,
            len(self._pending),
        )
        ids = list(self._pending)
        rows = [self._pending.pop(i) for i in ids]
        self._send_results(
            ids, np.stack([r[0] for r in rows]), np.array([r[1] for r in rows]), degraded=True
        )

    def _check_downstream(self) -> None:
        if self.is_last or self._down_heard is None or self.downstream_dead:
            return
        if time.monotonic() - self._down_heard > self.dead_after_s:
            self.downstream_dead = True
            self._flush_pending(f"the next partition is silent for over {self.dead_after_s:g} s")

    def _forward(
        self, ids: list[int], feats: np.ndarray, logits: np.ndarray, entropy: np.ndarray
    ) -> None:
        if self._down_heard is None:
            self._down_heard = time.monotonic()
        if not self.downstream_dead:
            for i, row, e in zip(ids, logits, entropy, strict=True):
                self._pending[i] = (np.array(row, np.float32), float(e))
            c0 = self._cpu()
            msg = encode_batch(np.ascontiguousarray(feats), "features", ids, self.control_address)
            self._emulate(c0)
            self._pay()
            assert self.next_route is not None  # internal invariant: checked in __init__
            while True:
                if self._data.send(self.next_route, msg):
                    self.stats["forwarded"] += len(ids)
                    if len(self._sent) > 100_000:  # acks lost with a dead peer
                        self._sent.clear()
                    self._sent[ids[0]] = (time.monotonic(), len(msg))
                    return
                self._on_control()  # keep listening for acks and heartbeats while blocked
                # and keep acking and beating upstream: a worker blocked by a dead next
                # partition is alive, its upstream must not give up on it
                self._keep_upstream_informed(time.monotonic())
                self._check_downstream()
                if self.downstream_dead:
                    break
            for i in ids:  # already flushed by _check_downstream if it was pending
                self._pending.pop(i, None)
            return
        self._send_results(ids, logits, entropy, degraded=True)

    # ----------------------------------------------------------------- compute
    def process(self, x: np.ndarray, ids: list[int]) -> None:
        """Run the partition on a batch and route every sample (exit or forward).

        Raises:
            Exception: whatever the runner raises (nothing has been sent then).
        """
        self._route(ids, self._compute(x))

    def _compute(self, x: np.ndarray) -> StepResult:
        t0, c0 = time.perf_counter(), self._cpu()
        step = exit_step(self.runner, x, self.threshold, self.is_last)
        self._emulate(c0)
        self.stats["compute_s"] += time.perf_counter() - t0
        self.stats["batches"] += 1
        self.stats["samples"] += len(x)
        return step

    def _route(self, ids: list[int], step: StepResult) -> None:
        """Send the samples that leave to the destination, the others' features on."""
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

    def _fail(self, ids: list[int], err: BaseException) -> None:
        """Answer samples whose partition raised: ``failed`` results, sent at once."""
        reason = f"{type(err).__name__}: {str(err).strip()[:200]}"
        log.warning(
            "partition %d failed on %d sample(s); answered as failed: %s",
            self.partition,
            len(ids),
            reason,
        )
        msg = encode(
            np.zeros((len(ids), 0), np.float32),
            kind="result",
            ids=ids,
            partition=self.partition,
            block=self.last_block,
            tier=self.tier,
            entropy=[],
            degraded=True,
            failed=True,
            error=reason,
        )
        if self._send_until(self.result_route, msg, len(ids)):
            self.stats["failed"] += len(ids)

    def _run_batch(self, batch: list[tuple[np.ndarray, list[int], str | None]]) -> None:
        if len(batch) == 1:  # no grouping at batch 1
            groups = [batch]
        else:  # consecutive messages of one shape and dtype run together
            groups = [batch[:1]]
            for item in batch[1:]:
                head = groups[-1][0][0]
                if head.shape[1:] == item[0].shape[1:] and head.dtype == item[0].dtype:
                    groups[-1].append(item)
                else:
                    groups.append([item])
        for group in groups:
            self._run_group(group)
            for _, gids, ack in group:
                if ack is not None:
                    self._acks.setdefault(ack, []).extend(gids)
        if self.ack_interval_s <= 0.0:
            self._flush_acks()

    def _run_group(self, group: list[tuple[np.ndarray, list[int], str | None]]) -> None:
        """Run messages as one batch; if the partition raises, each alone, failing only those."""
        c0 = self._cpu()
        # a view of the received frame (read-only, no copy) or one concatenation
        x = group[0][0] if len(group) == 1 else np.concatenate([g[0] for g in group])
        self._emulate(c0)
        ids = group[0][1] if len(group) == 1 else [i for g in group for i in g[1]]
        try:
            step = self._compute(x)
        except Exception as err:  # a bad tensor or a broken partition must not stop the worker
            if len(group) == 1:
                self._fail(ids, err)
            else:
                for item in group:
                    self._run_group([item])
            return
        self._route(ids, step)

    def _flush_acks(self) -> None:
        """Send the gathered acks, one message per upstream."""
        acks, self._acks = self._acks, {}
        now = time.monotonic()
        recv = self._recv_at
        for addr, gids in acks.items():
            # how long each sample was here: the sender subtracts it from its round trip
            held = [round(now - recv.pop(i, now), 6) for i in gids]
            self._send_control(addr, "ack", ids=gids, held=held)
        self._next_ack = time.monotonic() + self.ack_interval_s

    # ----------------------------------------------------------------- loop
    def _keep_upstream_informed(self, now: float) -> None:
        """Send the gathered acks and, when due, heartbeats (with link reports) and probes."""
        if self._acks and now >= self._next_ack:
            self._flush_acks()
        if now >= self._next_beat:
            links = self._link_report()
            for addr in self._upstreams:
                if links:
                    self._send_control(addr, "heartbeat", links=links)
                else:
                    self._send_control(addr, "heartbeat")
            if self.options.next_tier is not None:
                self._probe(now)
            self._next_beat = now + self.heartbeat_s

    def serve(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set.

        Args:
            stop: the event that ends the loop (checked at least every heartbeat).
        """
        stop = stop or threading.Event()
        poller = zmq.Poller()
        poller.register(self._ctl, zmq.POLLIN)
        poller.register(self._in, zmq.POLLIN)
        self._next_beat = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            self._keep_upstream_informed(now)
            self._check_downstream()
            if len(self._pending) >= self.pending_limit:  # backpressure: stop reading input
                self._on_control()
                time.sleep(0.005)
                continue
            if readable(self._in):  # busy: no poll syscall
                if readable(self._ctl):
                    self._on_control()
            else:
                wake = min(self._next_beat, self._next_ack) if self._acks else self._next_beat
                events = dict(poller.poll(max(1, math.ceil((wake - now) * 1000))))
                if self._ctl in events:
                    self._on_control()
                if self._in not in events:
                    continue
            batch = []
            deadline = time.monotonic() + self.batch_timeout_s if self.batch_timeout_s > 0 else 0.0
            while len(batch) < self.max_batch:
                if not readable(self._in):
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._in.poll(int(left * 1000)):
                        break
                    continue
                # no copy: the payload is copied once, by _run_batch
                frames = self._in.recv_multipart(copy=False)
                self.stats["received"] += 1
                c0 = self._cpu()
                item = self._parse(frames)
                self._emulate(c0)
                if item is None:
                    continue
                t_in = self._last_input = time.monotonic()
                if item[2] is not None:
                    for i in item[1]:
                        self._recv_at[i] = t_in
                if item[2] is not None and item[2] not in self._upstreams:
                    if len(self._upstreams) >= _MAX_UPSTREAMS:
                        self._reject(f"too many upstreams; ignoring acks to {item[2]}")
                        item = (item[0], item[1], None)
                    else:
                        self._upstreams.add(item[2])
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
    print(
        "READY " + json.dumps({"input": worker.input_address, "control": worker.control_address}),
        flush=True,
    )
    try:
        worker.serve(stop)
    finally:
        log.info("partition %d stops: %s", worker.partition, json.dumps(worker.stats))
        worker.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
