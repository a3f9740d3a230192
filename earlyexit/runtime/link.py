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
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from earlyexit.formats.trace import LinkTrace
from earlyexit.runtime._emulator import DirectedLink
from earlyexit.runtime._routing import RouteSender, send_routed

__all__ = ["DirectedLink", "RouteSender", "send_routed", "run_links", "time_through_links", "main"]


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
