"""Routes: the addresses a message visits from one tier to another, and sending along them.

A sender that targets an endpoint through emulated links sends a two-frame
message ``[route header, payload]`` to the first link's address, where the route
header is JSON ``{"route": [next addresses..., endpoint], "t": stamp}``
(:mod:`earlyexit.runtime.link`). Endpoints only ever receive the plain wire message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import zmq

__all__ = ["RouteSender", "check_address", "route", "send_routed"]

log = logging.getLogger("earlyexit.runtime.link")


def route(
    a: int, b: int, endpoint: str, up: Sequence[str] = (), down: Sequence[str] = ()
) -> list[str]:
    """The addresses a message visits from tier ``a`` to an endpoint on tier ``b``.

    Args:
        a, b: tiers.
        endpoint: the receiving socket's address.
        up, down: ``up[j]`` / ``down[j]`` is the address of link ``j`` in the
            direction of higher / lower tiers; empty when links are not emulated.

    Returns:
        The route, ending with ``endpoint``.

    Example:
        >>> route(0, 2, "E", up=["u0", "u1"], down=["d0", "d1"])
        ['u0', 'u1', 'E']
        >>> route(2, 0, "E", up=["u0", "u1"], down=["d0", "d1"])
        ['d1', 'd0', 'E']
    """
    if a == b or not (up or down):
        return [endpoint]
    if a < b:
        return [up[j] for j in range(a, b)] + [endpoint]
    return [down[j] for j in range(a - 1, b - 1, -1)] + [endpoint]


def check_address(addr: Any) -> str:
    """``addr`` if it is a ZeroMQ endpoint (tcp, ipc or inproc).

    Raises:
        ValueError: anything else.
    """
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
                self._ctx, check_address(addr), self._hwm, self._timeout
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
