"""A tier worker's exit policy other than the threshold, and AdaEE's feedback.

Mixed into :class:`~earlyexit.runtime.worker.Worker`, whose ``__init__`` sets the
state used here: ``policy`` (None: the threshold rule, whose vectorized path
never comes here), ``_bandit`` (the AdaEE policy of the first tier, or None)
and ``_awaiting``.

AdaEE (docs/load.md): per sample the first tier's worker picks a threshold,
exits or forwards; a sample that leaves rewards its arm with 0 at once; one
that goes on is kept here as ``id -> (threshold, first-exit confidence,
forwarded at)`` until the destination's ``feedback`` message brings its final
exit's confidence: its reward is the confidence gain minus ``cost_weight``
times the time from its forwarding to the feedback's arrival (the destination
sits beside the first tier in the source-device setting, so that time is the
extra time the sample took). Feedback that is malformed is counted and
ignored; feedback for an id not awaited (late, duplicated, forged) is counted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from earlyexit.runtime._sockets import readable
from earlyexit.runtime.chain import StepResult
from earlyexit.runtime.policies import REPORT_BYTES, KnapsackPolicy, compact_report, confidence
from earlyexit.runtime.wire import WireError, feedback_fields

__all__: list[str] = []

log = logging.getLogger("earlyexit.runtime.worker")

_MAX_AWAITING = 100_000


class _Policy:
    """Per-sample exit decisions of a policy; AdaEE's rewards from feedback; the policy report."""

    def _policy_mask(self, logits: np.ndarray, entropy: np.ndarray) -> np.ndarray:
        """Which samples of the batch leave here (``exit_step``'s ``decide``)."""
        n = len(entropy)
        bandit = self._bandit
        if bandit is not None:
            arms = np.fromiter((bandit.choose_threshold() for _ in range(n)), np.float64, n)
            self._arms, self._conf = arms, confidence(logits)
            ent = entropy if entropy.dtype.kind == "f" else entropy.astype(np.float64)
            return ent < arms.astype(ent.dtype)  # compared in the entropy's dtype, as leaves()
        pol, k = self.policy, self.partition
        # waiting: the samples of this batch after each one, and one more if another
        # message is queued already (ZeroMQ does not say how many)
        more = int(readable(self._in)) if isinstance(pol, KnapsackPolicy) else 0
        return np.fromiter(
            (pol.should_exit(k, float(e), n - 1 - i + more) for i, e in enumerate(entropy)),
            bool,
            n,
        )

    def _note_policy(self, ids: list[int], step: StepResult) -> None:
        """AdaEE: reward the arms of the samples that left; keep those that go on for feedback."""
        bandit, arms, conf = self._bandit, self._arms, self._conf
        for i in step.leave:
            bandit.update(0.0, 0.0, threshold=arms[i])
        if len(step.stay):
            now = time.monotonic()
            awaiting = self._awaiting
            for i in step.stay:
                awaiting[ids[i]] = (float(arms[i]), float(conf[i]), now)
            while len(awaiting) > _MAX_AWAITING:  # feedback that never comes: forget the oldest
                bandit.cancel(awaiting.pop(next(iter(awaiting)))[0])
                self.stats["feedback_lost"] += 1

    def _drop_awaiting(self, ids: list[int]) -> None:
        """Samples that finish degraded at this exit: no feedback will come for them."""
        if self._bandit is not None:
            for i in ids:
                entry = self._awaiting.pop(i, None)
                if entry is not None:
                    self._bandit.cancel(entry[0])
                    self.stats["feedback_lost"] += 1

    def _on_feedback(self, head: dict[str, Any]) -> None:
        """A ``feedback`` message from the destination: reward the arms of the samples it names."""
        if self._bandit is None:
            self.stats["feedback_rejected"] += 1
            self._reject("feedback, but this worker runs no AdaEE policy")
            return
        try:
            ids, conf = feedback_fields(head)
        except WireError as err:
            self.stats["feedback_rejected"] += 1
            self._reject(f"feedback: {err}")
            return
        now = time.monotonic()
        awaiting, bandit = self._awaiting, self._bandit
        for i, c in zip(ids, conf, strict=True):
            entry = awaiting.pop(i, None)
            if entry is None:
                self.stats["feedback_unknown"] += 1
                continue
            threshold, first, at = entry
            bandit.update(c - first, max(now - at, 0.0), threshold=threshold)
            self.stats["feedback"] += 1

    def _policy_report(self) -> dict[str, Any]:
        """What this worker's heartbeats say of its policy: ``describe()``, with AdaEE's feedback.

        At most :data:`~earlyexit.runtime.policies.REPORT_BYTES` of JSON (a grid of
        many arms is reported without its per-arm lists).
        """
        if self.policy is None:
            return {"policy": "threshold", "threshold": self.threshold}
        report = compact_report(self.policy.describe(), REPORT_BYTES - 512)  # room for counts
        if self._bandit is not None:
            s = self.stats
            report.update(awaiting=len(self._awaiting), forwarded=s["forwarded"],
                          **{k: s[k] for k in ("feedback", "feedback_unknown",
                                               "feedback_rejected", "feedback_lost")})  # fmt: skip
        return report
