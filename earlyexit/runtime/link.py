"""Emulated network links: real bytes, paced in MTU-sized fragments, store-and-forward.

This machine has no ``tc netem``, so a link between two tiers is a small relay
that moves the real bytes of every message and enforces the topology's
bandwidth and propagation delay:

* A message entering the first link of its path is cut into fragments of at
  most ``mtu_bytes`` bytes (the real message bytes, nothing is invented).
* Each direction of a link transmits one fragment at a time: a fragment of
  ``b`` bytes occupies the link for ``8 b / bandwidth`` seconds (a virtual
  link clock, so oversleeping one fragment does not slow the next ones).
* A fragment arrives at the far end ``propagation_ms`` after its last bit left,
  and is only then handed to the next link of the path (store-and-forward at
  every hop). Fragments of one message therefore pipeline over several hops for
  real, as packets do in a network.
* The last link of the path reassembles the message and delivers it, as one
  ZeroMQ frame, to its endpoint (a tier worker or the destination client).
* Time stamps, not wake-ups, drive the schedule. A sender stamps a message
  (``"t"``, ``time.monotonic()``) as it hands it to the first link, and a link
  stamps each fragment it forwards with the time the fragment reached the far
  end. A link takes a fragment's arrival from that stamp, so the emulator's own
  delays (a ZeroMQ hop between processes, a thread waking up on a busy machine)
  are not added to every hop as if the wire were slower: a fragment leaves a
  hop when the link model says, or as soon as the emulator can if it is late.
  A stamp that is not plausible on this host (in the future, or more than
  ``_MAX_STAMP_AGE_S`` old, as across machines whose monotonic clocks differ)
  is ignored and the receive time is used.

The relay never looks inside the payload and shares no code with the planner's
latency formulas: validation compares the planner against this, so it must not
replay the planner's equations.

Routing. A sender that targets an endpoint through links sends a two-frame
message ``[route header, payload]`` to the first link's address, where the route
header is JSON ``{"route": [next addresses..., endpoint]}``; see
:func:`send_routed` and :class:`RouteSender`. Endpoints only ever receive the
plain wire message.

Example:
    >>> import zmq
    >>> ctx = zmq.Context.instance()
    >>> link = DirectedLink(ctx, "tcp://127.0.0.1:*", bandwidth_mbps=100, propagation_ms=1,
    ...                     mtu_bytes=1500).start()
    >>> sink = ctx.socket(zmq.PULL); port = sink.bind_to_random_port("tcp://127.0.0.1")
    >>> sender = RouteSender(ctx)
    >>> sender.send([link.address, f"tcp://127.0.0.1:{port}"], b"x" * 4000)
    True
    >>> sink.poll(2000) and len(sink.recv())
    4000
    >>> link.stop(); sender.close(); sink.close(linger=0)
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from earlyexit.formats.trace import LinkTrace

__all__ = ["DirectedLink", "RouteSender", "send_routed", "run_links", "time_through_links", "main"]

log = logging.getLogger("earlyexit.runtime.link")

_MAX_ROUTE_HEADER = 4096
_POLL_MS = 100
_MAX_STAMP_AGE_S = 0.5


def _arrival(stamp: Any, now: float) -> float:
    """The arrival time of a message: its sender's stamp if plausible here, else ``now``."""
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        if 0.0 <= now - float(stamp) <= _MAX_STAMP_AGE_S:
            return float(stamp)
    return now


def _check_address(addr: Any) -> str:
    if not isinstance(addr, str) or not addr.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"address {addr!r} must be a ZeroMQ endpoint like 'tcp://127.0.0.1:5555'")
    return addr


def _push_socket(ctx: zmq.Context, addr: str, hwm: int, send_timeout_s: float) -> zmq.Socket:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on live connections: a dead peer times out
    sock.setsockopt(zmq.SNDTIMEO, max(0, int(send_timeout_s * 1000)))
    sock.connect(addr)
    return sock


def send_routed(sock: zmq.Socket, route: Sequence[str], payload: bytes) -> None:
    """Send ``payload`` on ``sock`` (connected to ``route[0]``) with the rest of the route.

    Args:
        sock: a PUSH socket connected to ``route[0]``.
        route: the addresses the message visits; the last one is the endpoint.
        payload: the wire message.

    Raises:
        zmq.Again: the send timed out (no live peer, or its queue is full).

    Example:
        >>> # send_routed(sock, ["tcp://link0", "tcp://worker1"], msg)
    """
    if len(route) <= 1:
        sock.send(payload, copy=False)
    else:
        header = json.dumps({"route": list(route[1:]), "t": time.monotonic()}).encode()
        sock.send_multipart([header, payload], copy=False)


class RouteSender:
    """Sends wire messages along routes, caching one PUSH socket per first hop.

    A socket belongs to the thread that uses it: use one RouteSender per thread.

    Args:
        context: the ZeroMQ context.
        hwm: send high-water mark (messages) of each socket: the backpressure bound.
        send_timeout_s: how long a send may block before it gives up.

    Example:
        >>> s = RouteSender(zmq.Context.instance(), send_timeout_s=0.01)
        >>> s.send(["tcp://127.0.0.1:9"], b"nobody listens")
        False
        >>> s.close()
    """

    def __init__(self, context: zmq.Context, hwm: int = 64, send_timeout_s: float = 1.0) -> None:
        if hwm < 1:
            raise ValueError(f"hwm must be >= 1, got {hwm}")
        self._ctx = context
        self._hwm = int(hwm)
        self._timeout = float(send_timeout_s)
        self._socks: dict[str, zmq.Socket] = {}

    def socket(self, addr: str) -> zmq.Socket:
        """The PUSH socket connected to ``addr`` (created on first use)."""
        sock = self._socks.get(addr)
        if sock is None:
            if len(self._socks) >= 64:
                raise ValueError("too many distinct destinations (64) for one RouteSender")
            sock = self._socks[addr] = _push_socket(
                self._ctx, _check_address(addr), self._hwm, self._timeout
            )
        return sock

    def connect(self, addr: str) -> None:
        """Connect to ``addr`` ahead of the first send (errors wait for that send).

        A ZeroMQ connection completes in the background; made early, its
        handshake does not delay the first message.
        """
        try:
            self.socket(addr)
        except (ValueError, zmq.ZMQError) as err:
            log.debug("cannot connect to %s yet: %s", addr, err)

    def send(self, route: Sequence[str], payload: bytes) -> bool:
        """Send ``payload`` along ``route``; False if it timed out (peer dead or full)."""
        if not route:
            raise ValueError("route must name at least the endpoint address")
        try:
            send_routed(self.socket(route[0]), route, payload)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        """Close every socket."""
        for sock in self._socks.values():
            sock.close(linger=0)
        self._socks.clear()


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
            if not self._rx.poll(_POLL_MS):
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
                route = [_check_address(a) for a in head["route"]]
                if not route:
                    raise ValueError("empty route")
                arrival = _arrival(head.get("t"), arrival)
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
        free_at = 0.0
        while not self._stop.is_set():
            try:
                route, key, i, n, chunk, arrival = self._txq.get(timeout=_POLL_MS / 1000)
            except queue.Empty:
                continue
            # store-and-forward: the fragment is whole here; it occupies the link
            start = max(arrival, free_at)
            bits_per_s, propagation_s = self.bits_per_s, self.propagation_s
            if self.trace is not None:
                bits_per_s = self.trace.at(start - self.epoch).bandwidth_mbps * 1e6
            free_at = start + 8 * len(chunk) / bits_per_s
            if self.trace is not None:
                propagation_s = self.trace.at(free_at - self.epoch).propagation_ms / 1000.0
            delay = free_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.stats["fragments"] += 1
            self.stats["bytes"] += len(chunk)
            with self._cond:
                heapq.heappush(
                    self._heap,
                    (free_at + propagation_s, next(self._seq), (route, key, i, n, chunk)),
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


def time_through_links(
    hops: Sequence[tuple[float, float]], sizes: Sequence[int], mtu: int = 1500
) -> list[float]:
    """Send messages of ``sizes`` bytes through in-process emulated links, one at a time.

    Args:
        hops: ``(bandwidth_mbps, propagation_ms)`` of each link, in order.
        sizes: message sizes in bytes.
        mtu: fragment size of every link.

    Returns:
        Seconds from each send to its arrival after the last link.

    Raises:
        RuntimeError: if a message is not accepted, does not arrive within 10 s, or
            arrives altered (the bytes are checked).

    Example:
        >>> [t >= 0.010 for t in time_through_links([(100.0, 10.0)], [1000])]
        [True]
    """
    ctx = zmq.Context()
    links = [
        DirectedLink(ctx, "tcp://127.0.0.1:*", bw, prop, mtu, name=f"l{j}").start()
        for j, (bw, prop) in enumerate(hops)
    ]
    sink = ctx.socket(zmq.PULL)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    sender = RouteSender(ctx)
    route = [lk.address for lk in links] + [f"tcp://127.0.0.1:{port}"]
    try:
        out = []
        for size in sizes:
            payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            t0 = time.perf_counter()
            if not sender.send(route, payload):
                raise RuntimeError("the first link did not accept the message")
            if not sink.poll(10_000):
                raise RuntimeError(f"a message of {size} bytes did not arrive within 10 s")
            got = sink.recv()
            out.append(time.perf_counter() - t0)
            if got != payload:  # real bytes, reassembled in order
                raise RuntimeError(f"a message of {size} bytes arrived altered")
        return out
    finally:
        sender.close()
        sink.close(linger=0)
        for lk in links:
            lk.stop()
        ctx.term()


def run_links(
    specs: Sequence[dict[str, Any]], stop: threading.Event | None = None, ready: Any = None
) -> None:
    """Run several directed links in this process until ``stop`` is set (or SIGTERM).

    Args:
        specs: one mapping per directed link: ``bind``, ``bandwidth_mbps``,
            ``propagation_ms``, ``mtu_bytes`` and optional ``name``, ``trace``
            (a trace mapping, docs/spec.md#link-traces) and ``epoch`` (the
            ``time.monotonic()`` at which the trace starts; one host's clock).
        stop: an event that ends the run (default: SIGTERM/SIGINT end it).
        ready: called with the list of bound addresses once every link listens.

    Raises:
        ValueError: a bad spec.
    """
    ctx = zmq.Context()
    stop = stop or threading.Event()
    links = [
        DirectedLink(
            ctx,
            s["bind"],
            s["bandwidth_mbps"],
            s["propagation_ms"],
            s.get("mtu_bytes", 1500),
            name=s.get("name", f"link{i}"),
            trace=LinkTrace.from_dict(s["trace"]) if s.get("trace") is not None else None,
            epoch=s.get("epoch"),
        ).start()
        for i, s in enumerate(specs)
    ]
    if ready is not None:
        ready([lk.address for lk in links])
    try:
        while not stop.wait(0.2):
            pass
    finally:
        for lk in links:
            lk.stop()
        ctx.term()


def main(argv: Sequence[str] | None = None) -> int:
    """Process entry point: ``python -m earlyexit.runtime.link --spec JSON``.

    Prints ``READY {"addresses": [...]}`` on stdout once listening; SIGTERM stops it.
    """
    parser = argparse.ArgumentParser(prog="python -m earlyexit.runtime.link")
    parser.add_argument("--spec", required=True, help="JSON list of directed link specs")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s link[%(process)d] %(levelname)s %(message)s",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def ready(addresses: list[str]) -> None:
        print("READY " + json.dumps({"addresses": addresses}), flush=True)

    run_links(json.loads(args.spec), stop, ready)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
