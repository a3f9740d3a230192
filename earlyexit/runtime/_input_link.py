"""The link the client's inputs cross, measured from the client's side (docs/adaptive.md).

The client is the sender of the inputs: it keeps each input message's send
time and size until the first worker acknowledges it; the time between, minus
what the worker reports it held the message (the ack's ``held``), feeds the
estimator of the tiers the input route joined then. It probes with messages of
another size when the estimator asks for them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

from earlyexit.runtime.monitor import LinkEstimator, runtime_estimator, transfer_times

__all__ = ["InputLink"]

_MAX_SENT = 100_000  # acks lost to a dead first worker: forget rather than grow


class InputLink:
    """Send times, estimators and the newest estimate of each input link.

    Attributes:
        estimators: one per ``(tier, next tier)``.
        reports: the newest estimate per ``(tier, next tier)``:
            ``[bandwidth_mbps, propagation_ms, at]`` (the client's own; the
            workers' reports are merged into the same mapping).
    """

    def __init__(self) -> None:
        self.estimators: dict[tuple[int, int], LinkEstimator] = {}
        self.reports: dict[tuple[int, int], list[float]] = {}
        self._sent: dict[int, tuple[float, int, tuple[int, int]]] = {}
        self._probe_ids = itertools.count(1)

    def sent(self, tiers: tuple[int, int] | None, first_id: int, nbytes: int) -> None:
        """A message of ``nbytes`` (its first sample ``first_id``) left over the link of ``tiers``.

        Nothing is timed without tiers or when both are the same (no link).
        """
        if tiers is None or tiers[0] == tiers[1]:
            return
        if len(self._sent) > _MAX_SENT:
            self._sent.clear()
        self._sent[first_id] = (time.monotonic(), nbytes, tiers)

    def acked(self, ids: Sequence[object], held: object, now: float) -> None:
        """The first worker acknowledged ``ids`` at ``now``, having held them ``held`` seconds."""
        for (_, nbytes, tiers), dt in transfer_times(self._sent, list(ids), held, now):
            est = self.estimators.setdefault(tiers, runtime_estimator())
            est.observe(nbytes, dt, now)
            e = est.estimate()
            if e is not None:
                self.reports[tiers] = [e.bandwidth_mbps, e.propagation_ms, e.at]

    def probe(self, tiers: tuple[int, int] | None) -> tuple[int, int] | None:
        """The id and size of a probe to send over the link of ``tiers`` now, or None.

        Probe ids are negative and far below any sample's, so that they never clash.
        """
        if tiers is None or tiers[0] == tiers[1]:
            return None
        size = self.estimators.setdefault(tiers, runtime_estimator()).probe_size()
        if size is None:
            return None
        return -(2**62) - next(self._probe_ids), size
