"""A link's timing, apart from its sockets and threads: when each fragment leaves and arrives.

Pure arithmetic on ``time.monotonic()`` values, so that it is tested without
sleeping; :class:`~earlyexit.runtime.link.DirectedLink` sleeps until the times
computed here. The model is described in :mod:`earlyexit.runtime.link`.
"""

from __future__ import annotations

from typing import Any

from earlyexit.formats.trace import LinkTrace

__all__ = ["LinkClock", "stamped_arrival"]

_MAX_STAMP_AGE_S = 0.5


def stamped_arrival(stamp: Any, now: float) -> float:
    """The arrival time of a message: its sender's stamp if plausible here, else ``now``."""
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        if 0.0 <= now - float(stamp) <= _MAX_STAMP_AGE_S:
            return float(stamp)
    return now


class LinkClock:
    """One direction of a link, transmitting one fragment at a time (a virtual link clock).

    A fragment starts when it has arrived and the link is free, occupies the
    link for ``8 * bytes / rate`` seconds, and reaches the far end one
    propagation delay after its last bit left. With a trace, the fragment gets
    the rate in force when it starts and the delay in force when it has been sent.

    Args:
        bits_per_s: the rate (unused with a trace).
        propagation_s: the one-way delay (unused with a trace).
        trace: makes rate and delay follow it.
        epoch: the ``time.monotonic()`` at which the trace starts.

    Example:
        >>> clock = LinkClock(bits_per_s=12e6, propagation_s=0.010)
        >>> [round(t, 6) for t in clock.transmit(arrival=1.0, nbytes=1500)]  # 1 ms, then 10 ms
        [1.001, 1.011]
        >>> [round(t, 6) for t in clock.transmit(arrival=1.0, nbytes=1500)]  # after the first
        [1.002, 1.012]
    """

    def __init__(
        self,
        bits_per_s: float,
        propagation_s: float,
        trace: LinkTrace | None = None,
        epoch: float = 0.0,
    ) -> None:
        self.bits_per_s = float(bits_per_s)
        self.propagation_s = float(propagation_s)
        self.trace = trace
        self.epoch = float(epoch)
        self.free_at = 0.0

    def transmit(self, arrival: float, nbytes: int) -> tuple[float, float]:
        """Send a fragment of ``nbytes`` that reached this link at ``arrival``.

        Returns:
            When its last bit leaves (the link is free again) and when it
            reaches the far end.
        """
        start = max(arrival, self.free_at)
        bits_per_s, propagation_s = self.bits_per_s, self.propagation_s
        if self.trace is not None:
            bits_per_s = self.trace.at(start - self.epoch).bandwidth_mbps * 1e6
        self.free_at = start + 8 * nbytes / bits_per_s
        if self.trace is not None:
            propagation_s = self.trace.at(self.free_at - self.epoch).propagation_ms / 1000.0
        return self.free_at, self.free_at + propagation_s
