"""The client's request bookkeeping: samples in flight, acknowledged, answered once; their results."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Ledger", "Result"]


@dataclass(frozen=True)
class Result:
    """The result of one sample.

    Attributes:
        id: the sample id given at submission.
        logits: the exit's logits (None if the sample never passed an exit).
        entropy: normalized entropy at that exit.
        partition: 0-based partition whose exit produced it (-1: none).
        block: 1-based block of that exit, if known.
        tier: the tier that produced it, if known.
        degraded: True if the sample could not go on because a tier failed.
        latency_s: end to end, from submission to the result's arrival.
        failed: True if the partition of ``partition`` raised on the sample
            (no logits; ``error`` says why). Answered at once, not after a timeout.
        error: the failure's reason, for a failed sample.
    """

    id: int
    logits: np.ndarray | None
    entropy: float | None
    partition: int
    block: int | None
    tier: int | None
    degraded: bool
    latency_s: float
    failed: bool = False
    error: str | None = None

    @property
    def prediction(self) -> int | None:
        """The predicted class (argmax of the logits), or None."""
        return None if self.logits is None else int(np.argmax(self.logits))


class Ledger:
    """Which samples are in flight and unacknowledged, which are answered, what is not yet taken.

    Every submitted id is answered exactly once: a result for an id already
    answered, or never submitted, counts as a duplicate and is dropped.

    Attributes:
        t0: ``time.perf_counter()`` at submission of each sample without a result yet.
        unacked: samples the first worker has not acknowledged (queued or in service there).
        heard: when the first worker last spoke (``time.monotonic()``; None before any input).
        ready: results delivered and not yet returned to the caller.
        stats: counts of submitted, delivered, degraded, failed and duplicate samples
            and of rejected messages.
    """

    def __init__(self) -> None:
        self._ids = itertools.count()
        self._done: set[int] = set()
        self.t0: dict[int, float] = {}
        self.unacked: set[int] = set()
        self.heard: float | None = None
        self.ready: list[Result] = []
        self.stats = {"submitted": 0, "delivered": 0, "degraded": 0, "duplicates": 0, "rejected": 0,
                      "failed": 0}  # fmt: skip

    def new_ids(self, n: int, ids: Sequence[int] | None = None) -> list[int]:
        """The ids of ``n`` new samples: ``ids`` checked, or fresh ones.

        Raises:
            ValueError: ``ids`` not of length ``n``, or some already in flight.
        """
        ids = [next(self._ids) for _ in range(n)] if ids is None else [int(i) for i in ids]
        if len(ids) != n:
            raise ValueError(f"got {len(ids)} ids for {n} samples")
        clash = [i for i in ids if i in self.t0]
        if clash:
            raise ValueError(f"ids {clash[:5]} are already in flight")
        return ids

    def sent(self, ids: Sequence[int]) -> None:
        """``ids`` left for the first worker: they wait for its acknowledgement."""
        self.unacked.update(ids)
        if self.heard is None:
            self.heard = time.monotonic()
        self.stats["submitted"] += len(ids)

    def latency(self, i: int, t1: float) -> float:
        """Seconds from sample ``i``'s submission to ``t1`` (0 for an unknown id)."""
        return t1 - self.t0.get(i, t1)

    def deliver(self, result: Result) -> None:
        """Keep ``result`` for the caller, unless its id is answered already or unknown."""
        if result.id in self._done or result.id not in self.t0:
            self.stats["duplicates"] += 1
            return
        self._done.add(result.id)
        del self.t0[result.id]
        self.unacked.discard(result.id)
        self.stats["delivered"] += 1
        self.stats["degraded"] += int(result.degraded)
        self.ready.append(result)

    def answer(
        self, head: Mapping[str, Any], ids: list[Any], logits: np.ndarray, entropy: list[Any],
        t1: float,
    ) -> None:  # fmt: skip
        """Deliver the results of a result message that arrived (deserialized) at ``t1``.

        Args:
            head: the message's header (``partition``, ``block``, ``tier``,
                ``degraded``; ``failed`` and ``error`` for a partition that raised).
            ids: the samples' ids (entries that are not ints are skipped).
            logits: one row per id (none for a failed message).
            entropy: one per id (empty for a failed message).
            t1: when the results became available (``time.perf_counter()``).
        """
        partition = int(head.get("partition", -1))
        block, tier = head.get("block"), head.get("tier")
        if head.get("failed") is True:
            error = str(head.get("error", ""))[:300]
            for i in ids:
                if isinstance(i, int):
                    self.stats["failed"] += 1
                    self.deliver(Result(i, None, None, partition, block, tier, True,
                                        self.latency(i, t1), True, error))  # fmt: skip
            return
        degraded = bool(head.get("degraded", False))
        for j, i in enumerate(ids):
            if isinstance(i, int):
                self.deliver(Result(i, logits[j], float(entropy[j]), partition, block, tier,
                                    degraded, self.latency(i, t1)))  # fmt: skip

    def expire(self, dead_after_s: float) -> int:
        """If the first worker is silent for over ``dead_after_s``, answer its unacknowledged samples.

        They come back degraded, with no exit (``partition == -1``, no logits).

        Returns:
            How many samples were answered so.
        """
        if not self.unacked or self.heard is None:
            return 0
        if time.monotonic() - self.heard <= dead_after_s:
            return 0
        lost = sorted(self.unacked)
        now = time.perf_counter()
        for i in lost:
            self.deliver(Result(i, None, None, -1, None, None, True, now - self.t0[i]))
        self.unacked.clear()
        return len(lost)
