"""Tier workers: one partition of a bundle, in its own process, behind ZeroMQ.

A worker pulls wire messages (``kind`` ``"input"`` or ``"features"``, a batch of
samples with their ``ids``), runs its partition, and for every sample:

* if its normalized entropy is below the threshold (or this is the last
  partition), sends only its result (the exit's logits) to the destination;
* otherwise sends its features to the next partition's worker.

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

The hot path is lean: frames are received without a copy (the one copy of a
message's payload is the receiver's, as profiled), the wire header is the only
JSON, the CPU clock is read only when a slowdown is emulated, a bundle's
session runs once before ``READY`` so the first sample does not pay for ONNX
Runtime's first-run allocations.
Control messages (acks, heartbeats) are wire messages too and travel directly,
not over emulated links.

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
    >>> w = Worker(model.runner(0), partition=0, num_partitions=1, threshold=0.5,
    ...            result_route=["tcp://127.0.0.1:9"])
    >>> w.input_address.startswith("tcp://127.0.0.1:")
    True
    >>> w.close()
"""

from __future__ import annotations

import argparse
import importlib
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

from earlyexit.runtime.link import RouteSender
from earlyexit.runtime.wire import MAX_MESSAGE_BYTES, WireError, decode, encode

__all__ = ["PartitionRunner", "Worker", "make_runner", "main"]

log = logging.getLogger("earlyexit.runtime.worker")

PartitionRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, "np.ndarray | None"]]
"""``run(x) -> (logits [n, C], normalized entropy [n], features [n, ...] or None)``."""

_EMPTY = np.empty(0, np.uint8)


def _zero() -> float:
    return 0.0


_MAX_UPSTREAMS = 16


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
        partition: its 0-based index in the plan.
        num_partitions: L; the last partition sends every sample to the destination.
        threshold: exit when the normalized entropy is below it.
        result_route: addresses from here to the destination (links, then the
            client's results address).
        next_route: addresses from here to the next partition's worker (None for
            the last partition).
        bind: input address (``tcp://host:port``; ``*`` as port picks one).
        control_bind: address for acks and heartbeats from downstream.
        advertise: the control address as others reach it (default: the bound one).
        tier: the tier index, reported in results.
        last_block: the 1-based block of this partition's exit, reported in results.
        slowdown: emulated slowdown factor (>= 1 adds sleep; < 1 cannot be emulated).
        max_batch: largest micro-batch, in messages.
        batch_timeout_s: how long to wait for more messages to fill a batch.
        hwm: ZeroMQ high-water mark (messages) on data sockets.
        send_timeout_s: one blocked send attempt; retried while the peer lives.
        max_message_bytes: larger messages are rejected.
        heartbeat_s: period of heartbeats to upstream.
        dead_after_s: silence after which the next worker is considered dead.
        pending_limit: most samples forwarded but not yet acknowledged.
        ack_interval_s: acks to upstream are gathered and sent at this period
            (0: one ack message per batch).
        context: ZeroMQ context (default: a new one).

    Raises:
        ValueError: inconsistent arguments.
    """

    def __init__(
        self,
        runner: PartitionRunner,
        *,
        partition: int,
        num_partitions: int,
        threshold: float,
        result_route: Sequence[str],
        next_route: Sequence[str] | None = None,
        bind: str = "tcp://127.0.0.1:*",
        control_bind: str = "tcp://127.0.0.1:*",
        advertise: str | None = None,
        tier: int | None = None,
        last_block: int | None = None,
        slowdown: float = 1.0,
        max_batch: int = 1,
        batch_timeout_s: float = 0.0,
        hwm: int = 64,
        send_timeout_s: float = 0.2,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        heartbeat_s: float = 0.2,
        dead_after_s: float = 2.0,
        pending_limit: int = 4096,
        ack_interval_s: float = 0.005,
        context: zmq.Context | None = None,
    ) -> None:
        if not 0 <= partition < num_partitions:
            raise ValueError(f"partition must be in 0..{num_partitions - 1}, got {partition}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        last = partition == num_partitions - 1
        if not last and not next_route:
            raise ValueError(f"partition {partition} of {num_partitions} needs a next_route")
        if not result_route:
            raise ValueError("result_route must name at least the destination address")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if slowdown <= 0:
            raise ValueError(f"slowdown must be > 0, got {slowdown}")
        if not 0.0 <= ack_interval_s < float("inf"):
            raise ValueError(f"ack_interval_s must be a finite number >= 0, got {ack_interval_s}")
        self.runner = runner
        self.partition, self.num_partitions, self.is_last = partition, num_partitions, last
        self.threshold = float(threshold)
        self.result_route = list(result_route)
        self.next_route = list(next_route) if next_route else None
        self.tier, self.last_block = tier, last_block
        self.slowdown = float(slowdown)
        self.max_batch, self.batch_timeout_s = int(max_batch), float(batch_timeout_s)
        self.send_timeout_s = float(send_timeout_s)
        self.max_message_bytes = int(max_message_bytes)
        self.heartbeat_s, self.dead_after_s = float(heartbeat_s), float(dead_after_s)
        self.pending_limit = int(pending_limit)
        # acks well inside the upstream's patience, whatever was asked
        self.ack_interval_s = min(float(ack_interval_s), float(dead_after_s) / 4)
        self._acks: dict[str, list[int]] = {}  # upstream control address -> ids to ack
        self._next_ack = 0.0
        # the CPU clock is read only when a slowdown is emulated
        self._cpu: Callable[[], float] = time.thread_time if self.slowdown > 1.0 else _zero
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._in = self._ctx.socket(zmq.PULL)
        self._in.setsockopt(zmq.RCVHWM, hwm)
        self._in.setsockopt(zmq.LINGER, 0)
        self._in.bind(bind)
        self._ctl = self._ctx.socket(zmq.PULL)
        self._ctl.setsockopt(zmq.RCVHWM, 100_000)
        self._ctl.setsockopt(zmq.LINGER, 0)
        self._ctl.bind(control_bind)
        self.input_address: str = self._in.getsockopt_string(zmq.LAST_ENDPOINT)
        self.control_address: str = advertise or self._ctl.getsockopt_string(zmq.LAST_ENDPOINT)
        self._data = RouteSender(self._ctx, hwm=hwm, send_timeout_s=self.send_timeout_s)
        self._control = RouteSender(self._ctx, hwm=100_000, send_timeout_s=0.0)
        # connect to the first hops now, so that the handshakes are done before the first sample
        for r in (self.result_route, self.next_route):
            if r:
                self._data.connect(r[0])
        self._upstreams: set[str] = set()
        # forwarded, not yet acknowledged: id -> (logits row, entropy)
        self._pending: dict[int, tuple[np.ndarray, float]] = {}
        self._down_heard: float | None = None
        self.downstream_dead = False
        self._owed_s = 0.0  # emulated slowdown not yet slept
        self.stats = {
            "received": 0,
            "samples": 0,
            "exited": 0,
            "forwarded": 0,
            "degraded": 0,
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

    def _send_control(self, addr: str, kind: str, **meta: Any) -> None:
        try:
            self._control.send([addr], encode(_EMPTY, kind=kind, partition=self.partition, **meta))
        except ValueError as err:
            log.warning("partition %d: cannot send %s to %s: %s", self.partition, kind, addr, err)

    def _on_control(self) -> None:
        while self._ctl.getsockopt(zmq.EVENTS) & zmq.POLLIN:
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
        msg = encode(
            np.ascontiguousarray(logits, np.float32),
            kind="result",
            ids=ids,
            partition=self.partition if partition is None else partition,
            block=self.last_block if block is None else block,
            tier=self.tier,
            entropy=np.asarray(entropy, np.float64).tolist(),
            degraded=degraded,
        )
        self._emulate(c0)
        self._pay()
        deadline = time.monotonic() + max(5.0, self.dead_after_s)
        while not self._data.send(self.result_route, msg):
            if time.monotonic() > deadline:
                log.error(
                    "partition %d: the destination does not accept results; %d lost",
                    self.partition,
                    len(ids),
                )
                return
        self.stats["degraded" if degraded else "exited"] += len(ids)

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
            msg = encode(
                np.ascontiguousarray(feats), kind="features", ids=ids, ack=self.control_address
            )
            self._emulate(c0)
            self._pay()
            assert self.next_route is not None  # internal invariant: checked in __init__
            while True:
                if self._data.send(self.next_route, msg):
                    self.stats["forwarded"] += len(ids)
                    return
                self._on_control()  # keep listening for acks and heartbeats while blocked
                self._check_downstream()
                if self.downstream_dead:
                    break
            for i in ids:  # already flushed by _check_downstream if it was pending
                self._pending.pop(i, None)
            return
        self._send_results(ids, logits, entropy, degraded=True)

    # ----------------------------------------------------------------- compute
    def process(self, x: np.ndarray, ids: list[int]) -> None:
        """Run the partition on a batch and route every sample (exit or forward)."""
        t0, c0 = time.perf_counter(), self._cpu()
        logits, entropy, feats = self.runner(x)
        self._emulate(c0)
        self.stats["compute_s"] += time.perf_counter() - t0
        self.stats["batches"] += 1
        self.stats["samples"] += len(ids)
        logits = np.asarray(logits)
        entropy = np.asarray(entropy, dtype=np.float64).reshape(-1)
        if self.is_last or feats is None:
            exits = np.ones(len(ids), bool)
        else:
            exits = entropy < self.threshold
        leaving = int(np.count_nonzero(exits))
        if leaving == len(ids):  # all leave (always so at batch 1): no indexing, no copies
            self._send_results(ids, logits, entropy, degraded=False)
        elif leaving == 0:  # all go on
            self._forward(ids, np.asarray(feats), logits, entropy)
        else:
            idx = np.flatnonzero(exits)
            self._send_results([ids[i] for i in idx], logits[idx], entropy[idx], degraded=False)
            idx = np.flatnonzero(~exits)
            self._forward([ids[i] for i in idx], np.asarray(feats)[idx], logits[idx], entropy[idx])

    def _run_batch(self, batch: list[tuple[np.ndarray, list[int], str | None]]) -> None:
        # consecutive messages of one shape and dtype run together
        groups: list[list[tuple[np.ndarray, list[int], str | None]]] = [batch[:1]]
        for item in batch[1:]:
            head = groups[-1][0][0]
            if head.shape[1:] == item[0].shape[1:] and head.dtype == item[0].dtype:
                groups[-1].append(item)
            else:
                groups.append([item])
        for group in groups:
            c0 = self._cpu()
            # the receiver's one copy, part of deserializing (as profiled)
            x = np.array(group[0][0]) if len(group) == 1 else np.concatenate([g[0] for g in group])
            self._emulate(c0)
            ids = [i for g in group for i in g[1]]
            try:
                self.process(x, ids)
            except Exception as err:  # a bad tensor must not stop the worker
                self._reject(f"partition failed on a batch of shape {x.shape}: {err}")
                continue
            for _, gids, ack in group:
                if ack is not None:
                    self._acks.setdefault(ack, []).extend(gids)
            if self.ack_interval_s <= 0.0:
                self._flush_acks()

    def _flush_acks(self) -> None:
        """Send the gathered acks, one message per upstream."""
        acks, self._acks = self._acks, {}
        for addr, gids in acks.items():
            self._send_control(addr, "ack", ids=gids)
        self._next_ack = time.monotonic() + self.ack_interval_s

    # ----------------------------------------------------------------- loop
    def serve(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set.

        Args:
            stop: the event that ends the loop (checked at least every heartbeat).
        """
        stop = stop or threading.Event()
        poller = zmq.Poller()
        poller.register(self._ctl, zmq.POLLIN)
        poller.register(self._in, zmq.POLLIN)
        next_beat = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if self._acks and now >= self._next_ack:
                self._flush_acks()
            if now >= next_beat:
                for addr in self._upstreams:
                    self._send_control(addr, "heartbeat")
                next_beat = now + self.heartbeat_s
            self._check_downstream()
            if len(self._pending) >= self.pending_limit:  # backpressure: stop reading input
                self._on_control()
                time.sleep(0.005)
                continue
            if self._in.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # busy: no poll syscall
                if self._ctl.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    self._on_control()
            else:
                wake = min(next_beat, self._next_ack) if self._acks else next_beat
                events = dict(poller.poll(max(1, math.ceil((wake - now) * 1000))))
                if self._ctl in events:
                    self._on_control()
                if self._in not in events:
                    continue
            batch = []
            deadline = time.monotonic() + self.batch_timeout_s if self.batch_timeout_s > 0 else 0.0
            while len(batch) < self.max_batch:
                if not self._in.getsockopt(zmq.EVENTS) & zmq.POLLIN:
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

    The config holds a ``runner`` spec (see :func:`make_runner`) and the keyword
    arguments of :class:`Worker`. Prints ``READY {"input": ..., "control": ...}``
    on stdout once bound; SIGTERM stops it.
    """
    parser = argparse.ArgumentParser(prog="python -m earlyexit.runtime.worker")
    parser.add_argument("--config", required=True, help="JSON: runner spec and Worker kwargs")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    return serve_config(config)


def serve_config(config: dict[str, Any]) -> int:
    """Build a worker from a JSON-able config, print READY and serve until SIGTERM.

    Args:
        config: ``{"runner": spec, **Worker kwargs}``.

    Returns:
        The exit code (0).
    """
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s worker[{config.get('partition')}] %(levelname)s %(message)s",
    )
    config = dict(config)
    runner = make_runner(config.pop("runner"))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = Worker(runner, **config)
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
