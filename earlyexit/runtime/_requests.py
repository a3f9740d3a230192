"""The client's request bookkeeping: the result of each sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Result"]


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
