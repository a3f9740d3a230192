"""ZeroMQ helpers for the hot path of workers and the client. No torch, no numpy.

``readable(sock)`` asks a socket whether a message waits, without a system
call and without pyzmq's enum wrapping of ``getsockopt(EVENTS)`` (several
microseconds per call through ``zmq.sugar``, a third of that through the
backend), which the worker and the client ask once or twice per message.
"""

from __future__ import annotations

import zmq
from zmq.backend import Socket as _Backend

__all__ = ["readable"]

_GET = _Backend.get
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def readable(sock: zmq.Socket) -> bool:
    """Whether ``sock`` holds a message that a receive would return at once."""
    return bool(_GET(sock, _EVENTS) & _POLLIN)
