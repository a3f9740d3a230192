"""A tier worker's outgoing data: results, features, failed samples, emulated slowdown.

Mixed into :class:`~earlyexit.runtime.worker.Worker`, whose ``__init__`` sets the
state used here.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import zmq

from earlyexit.runtime.wire import encode, encode_batch, encode_result

__all__: list[str] = []

log = logging.getLogger("earlyexit.runtime.worker")


def _zero() -> float:
    return 0.0


_COPY_BELOW = 1 << 20
_SEND = zmq.backend.Socket.send  # pyzmq's Cython send, without the Python wrapper


def _copy_small_messages(sock: zmq.Socket) -> None:
    """Let ZeroMQ copy messages below 1 MiB instead of sending them zero-copy.

    A zero-copy send hands the buffer's release to pyzmq's garbage-collector
    thread, which then wakes and takes the GIL once per message: measured on a
    busy 2-core host, a 64 KiB features message spent about 0.4 ms in ``send``
    that way and under 0.05 ms copied. Above 1 MiB the copy costs more than that.
    """
    sock.copy_threshold = _COPY_BELOW


class _DataOut:
    """Send results and features on, pay the emulated slowdown before each message."""

    def _emulate(self, cpu_t0: float) -> None:
        """Owe ``(slowdown - 1)`` times the CPU time spent since ``cpu_t0`` (thread time).

        The CPU time itself is summed in ``stats["cpu_s"]``: what the emulation
        stretches, per message (see :func:`earlyexit.profiling.overhead.measure_hop_cpu`).
        """
        if self.slowdown > 1.0:
            spent = self._cpu() - cpu_t0
            self._owed_s += (self.slowdown - 1.0) * spent
            self.stats["cpu_s"] += spent

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

    def _send(self, route: list[str], msg: bytes) -> bool:
        """One send attempt along ``route``; False if it timed out (peer dead or full).

        :meth:`RouteSender.send`'s, with a direct route's message handed to
        pyzmq's Cython ``send`` (copied below 1 MiB, as the socket's threshold
        says) without the Python wrapper's checks.
        """
        if len(route) != 1:
            return self._data.send(route, msg)
        try:
            _SEND(self._data.socket(route[0]), msg, 0, len(msg) < _COPY_BELOW, False)
        except zmq.Again:
            return False
        return True

    def _send_until(self, route: list[str], msg: bytes, n: int) -> bool:
        """Send a result message, retrying for a while; False (logged) if it is lost."""
        if self._send(route, msg):
            return True
        deadline = time.monotonic() + max(5.0, self.dead_after_s)
        while not self._send(route, msg):
            if time.monotonic() > deadline:
                log.error(
                    "partition %d: the destination does not accept results; %d lost",
                    self.partition,
                    n,
                )
                return False
        return True

    def _forward(
        self, ids: list[int], feats: np.ndarray, logits: np.ndarray, entropy: np.ndarray
    ) -> None:
        if self._down_heard is None:
            self._down_heard = time.monotonic()
        if not self.downstream_dead:
            for i, row, e in zip(ids, logits, entropy, strict=True):
                self._pending[i] = (np.array(row, np.float32), float(e))
            c0 = self._cpu()
            msg = encode_batch(feats, "features", ids, self.control_address)  # copies if need be
            self._emulate(c0)
            self._pay()
            assert self.next_route is not None  # internal invariant: checked in __init__
            while True:
                if self._send(self.next_route, msg):
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
        self._drop_awaiting(ids)
        self._send_results(ids, logits, entropy, degraded=True)

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
