"""Online exit policies a tier worker can apply (docs/spec.md#load): pure numpy, no I/O.

Every policy answers one question for one sample at one exit,
``should_exit(k, entropy, waiting=0)`` (k: 0-based index of the partition's exit
among the plan's, entropy: the sample's normalized entropy there, waiting:
samples queued at this worker now). The last exit always says yes.

- :class:`ThresholdPolicy`: today's rule, leave when entropy < T.
- :class:`AdaEE`: Pacheco et al., ICC 2023. A UCB multi-armed bandit over a
  grid of thresholds for the first exit, rewarded without labels: a sample
  that leaves early earns 0; one that goes on earns its confidence gain (the
  final exit's confidence minus the first exit's) minus ``cost_weight`` times
  the extra time it took. Arm choice: argmax_a Q_a + c sqrt(ln n / N_a)
  (c = ``exploration``), every arm once first. ``discount`` < 1 forgets old
  rewards (discounted UCB), so that it follows a stream whose difficulty changes.
- :class:`ExitProbabilityPolicy`: the LP scheduler's exit probabilities
  (:func:`earlyexit.planner.schedulers.lp_schedule`), confidence ignored: at
  exit k a sample leaves with probability p_k / (p_k + .. + p_L).
- :class:`KnapsackPolicy`: the knapsack scheduler; the budget from the
  arrival rate and the queue picks the exit.

What the worker calls (the first tier's, for AdaEE): per sample,
``T = policy.choose_threshold()`` before its first exit, keep T with the
sample; ``policy.should_exit(0, entropy)`` (AdaEE uses the T just chosen); when
a sample that went on comes back with its final confidence,
``policy.update(conf_final - conf_first, extra_time_s, threshold=T)``; a
sample that left early: ``policy.update(0.0, 0.0, threshold=T)``; one whose
reward will never come: ``policy.cancel(threshold=T)``. An arm chosen for samples
whose rewards are still to come counts as played in the UCB bonus, so that
delayed feedback does not send a burst of samples to one arm.

Example:
    >>> bandit = AdaEE([0.2, 0.5, 0.8], exploration=0.5, cost_weight=1.0, seed=0)
    >>> t = bandit.choose_threshold()
    >>> bandit.update(0.3, 0.05, threshold=t)
    0.25
"""

from __future__ import annotations

from earlyexit.runtime._online_policies import (
    AdaEE,
    ExitPolicy,
    ExitProbabilityPolicy,
    KnapsackPolicy,
    ThresholdPolicy,
    confidence,
)
from earlyexit.runtime._policy_spec import (
    POLICIES,
    REPORT_BYTES,
    compact_report,
    make_policy,
    merge_policy_reports,
    parse_policy,
    policy_text,
)

__all__ = [
    "POLICIES",
    "ExitPolicy",
    "ThresholdPolicy",
    "AdaEE",
    "ExitProbabilityPolicy",
    "KnapsackPolicy",
    "parse_policy",
    "policy_text",
    "make_policy",
    "merge_policy_reports",
    "compact_report",
    "confidence",
    "REPORT_BYTES",
]
