"""One direction of an emulated link: three threads that receive, transmit and deliver.

The link model (fragments, a virtual link clock, store-and-forward, time stamps)
is described in :mod:`earlyexit.runtime.link`.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import queue
import threading
import time

import zmq

from earlyexit.formats.trace import LinkTrace
from earlyexit.runtime._routing import RouteSender, check_address
from earlyexit.runtime._shaping import LinkClock, stamped_arrival

__all__ = ["DirectedLink"]

log = logging.getLogger("earlyexit.runtime.link")

_MAX_ROUTE_HEADER = 4096
_POLL_MS = 100


class DirectedLink:
    """One direction of an emulated link, run by three threads.

    ``rx`` receives messages or fragments, ``tx`` occupies the link for each
    fragment's transmission time, ``deliver`` releases each fragment after the
    propagation delay to the next hop (or reassembles and delivers the message
    at the end of its path). Internal queues are bounded: when full, the link
    stops reading and ZeroMQ's high-water marks push back on the senders.

    Args:
        context: the ZeroMQ context.
        bind: address to bind (``tcp://host:port``, ``tcp://127.0.0.1:*`` picks a port).
        bandwidth_mbps: link rate in megabits per second (10**6 bit/s).
        propagation_ms: one-way propagation delay.
        mtu_bytes: largest fragment.
        name: for log lines.
        max_queue: bound on fragments waiting for the link.
        hwm: ZeroMQ high-water marks (messages).
        max_message_bytes: larger incoming messages are rejected with a log line.
        trace: makes bandwidth and delay follow a :class:`~earlyexit.formats.trace.LinkTrace`
            (a fragment gets the bandwidth in force when its transmission starts
            and the delay in force when it has been sent); ``bandwidth_mbps`` and
            ``propagation_ms`` are then unused.
        epoch: the ``time.monotonic()`` at which the trace starts (default:
            now). Links of one deployment share it, so that they change together.

    Raises:
        ValueError: non-positive bandwidth or MTU, negative delay.
    """

    def __init__(
        self,
        context: zmq.Context,
        bind: str,
        bandwidth_mbps: float,
        propagation_ms: float,
        mtu_bytes: int,
        name: str = "link",
        max_queue: int = 4096,
        hwm: int = 256,
        max_message_bytes: int = 256 * 1024 * 1024,
        trace: LinkTrace | None = None,
        epoch: float | None = None,
    ) -> None:
        if trace is not None and not isinstance(trace, LinkTrace):
            raise TypeError(f"trace must be a LinkTrace, got {type(trace).__name__}")
        self.trace = trace
        self.epoch = time.monotonic() if epoch is None else float(epoch)
        if trace is not None:
            bandwidth_mbps, propagation_ms = trace.at(0).bandwidth_mbps, trace.at(0).propagation_ms
        if not bandwidth_mbps > 0:
            raise ValueError(f"bandwidth_mbps must be > 0, got {bandwidth_mbps}")
        if not propagation_ms >= 0:
            raise ValueError(f"propagation_ms must be >= 0, got {propagation_ms}")
        if int(mtu_bytes) < 1:
            raise ValueError(f"mtu_bytes must be >= 1, got {mtu_bytes}")
        self.name = name
        self.bits_per_s = float(bandwidth_mbps) * 1e6
        self.propagation_s = float(propagation_ms) / 1000.0
        self.mtu = int(mtu_bytes)
        self.max_message_bytes = int(max_message_bytes)
        self._ctx = context
        self._hwm = hwm
        self._rx = context.socket(zmq.PULL)
        self._rx.setsockopt(zmq.RCVHWM, hwm)
        self._rx.setsockopt(zmq.LINGER, 0)
        self._rx.bind(bind)
        self._rx_poller = zmq.Poller()  # one for the link's life (Socket.poll makes one a call)
        self._rx_poller.register(self._rx, zmq.POLLIN)
        self.address: str = self._rx.getsockopt_string(zmq.LAST_ENDPOINT)
        self._txq: queue.Queue = queue.Queue(maxsize=max_queue)
        self._heap: list = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self.stats = {
            "messages_in": 0,
            "fragments": 0,
            "delivered": 0,
            "dropped": 0,
            "rejected": 0,
            "bytes": 0,
        }

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> DirectedLink:
        """Start the threads; returns self."""
        for target in (self._rx_loop, self._tx_loop, self._deliver_loop):
            t = threading.Thread(target=target, name=f"{self.name}-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the threads and close the sockets."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout_s)
        self._rx.close(linger=0)

    # ----------------------------------------------------------------- threads
    def _put(self, item: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._txq.put(item, timeout=_POLL_MS / 1000)
                return True
            except queue.Full:
                continue
        return False

    def _rx_loop(self) -> None:
        msg_ids = itertools.count()
        while not self._stop.is_set():
            if not self._rx_poller.poll(_POLL_MS):
                continue
            frames = self._rx.recv_multipart()
            arrival = time.monotonic()
            size = sum(len(f) for f in frames)
            if (
                len(frames) != 2
                or len(frames[0]) > _MAX_ROUTE_HEADER
                or size > self.max_message_bytes
            ):
                self.stats["rejected"] += 1
                log.warning(
                    "%s: rejected a message of %d frame(s), %d bytes (expected a route "
                    "header and a payload of at most %d bytes)",
                    self.name,
                    len(frames),
                    size,
                    self.max_message_bytes,
                )
                continue
            try:
                head = json.loads(frames[0])
                route = [check_address(a) for a in head["route"]]
                if not route:
                    raise ValueError("empty route")
                arrival = stamped_arrival(head.get("t"), arrival)
                frag = head.get("frag")
                if frag is not None:
                    key, i, n = str(frag[0]), int(frag[1]), int(frag[2])
                    if not 0 <= i < n:
                        raise ValueError(f"fragment {i} of {n}")
            except (ValueError, KeyError, TypeError, IndexError) as err:
                self.stats["rejected"] += 1
                log.warning("%s: rejected a message with a bad route header: %s", self.name, err)
                continue
            payload = frames[1]
            if frag is None:  # a whole message enters the network here: fragment it
                self.stats["messages_in"] += 1
                key = f"{self.name}/{os.getpid()}/{next(msg_ids)}"
                n = max(1, -(-len(payload) // self.mtu))
                for i in range(n):
                    chunk = payload[i * self.mtu : (i + 1) * self.mtu]
                    if not self._put((route, key, i, n, chunk, arrival)):
                        return
            elif not self._put((route, key, i, n, payload, arrival)):
                return

    def _tx_loop(self) -> None:
        clock = LinkClock(self.bits_per_s, self.propagation_s, self.trace, self.epoch)
        while not self._stop.is_set():
            try:
                route, key, i, n, chunk, arrival = self._txq.get(timeout=_POLL_MS / 1000)
            except queue.Empty:
                continue
            # store-and-forward: the fragment is whole here; it occupies the link
            free_at, due = clock.transmit(arrival, len(chunk))
            delay = free_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.stats["fragments"] += 1
            self.stats["bytes"] += len(chunk)
            with self._cond:
                heapq.heappush(
                    self._heap,
                    (due, next(self._seq), (route, key, i, n, chunk)),
                )
                self._cond.notify()

    def _deliver_loop(self) -> None:
        sender = RouteSender(self._ctx, hwm=self._hwm, send_timeout_s=0.5)
        partial: dict[str, list[bytes]] = {}
        try:
            while not self._stop.is_set():
                with self._cond:
                    if not self._heap:
                        self._cond.wait(_POLL_MS / 1000)
                        continue
                    due = self._heap[0][0] - time.monotonic()
                    if due > 0:
                        self._cond.wait(due)
                        continue
                    due, _, (route, key, i, n, chunk) = heapq.heappop(self._heap)
                if len(route) > 1:  # the next hop is another link: forward the fragment
                    head = json.dumps({"route": route[1:], "frag": [key, i, n], "t": due})
                    head = head.encode()
                    ok = self._send(sender, route[0], [head, chunk])
                else:  # the end of the path: reassemble, then deliver the whole message
                    parts = partial.setdefault(key, [])
                    parts.append(chunk)
                    if len(parts) < n:
                        continue
                    del partial[key]
                    ok = self._send(sender, route[0], [b"".join(parts)])
                    if ok:
                        self.stats["delivered"] += 1
                if not ok:
                    self.stats["dropped"] += 1
                    log.warning(
                        "%s: dropped a message for %s (no live receiver or its queue is full)",
                        self.name,
                        route[0],
                    )
        finally:
            sender.close()

    @staticmethod
    def _send(sender: RouteSender, addr: str, frames: list[bytes]) -> bool:
        try:
            sender.socket(addr).send_multipart(frames, copy=False)
        except zmq.Again:
            return False
        return True
