"""Re-planning when the network moves: estimates in, a plan switch out.

A :class:`Replanner` holds the plan in force and the link values it was made
for. Link estimates (from :class:`~earlyexit.runtime.monitor.LinkEstimator`)
come in; when one moves by more than ``change`` (relative) from those values
and the plan has been in force for ``dwell_s``, it re-plans on the topology
with the estimated links. It switches only if the new optimum is a different
configuration that the model says is at least ``min_gain`` faster than the
plan in force on the same estimated network (hysteresis), so that noise does
not make plans flap. The links it re-planned for become the new reference in
either case.

Re-planning is exact: either the planner's search over the whole space
(:func:`earlyexit.planner.plan`), or, when the deployment can only run a set of
candidate plans (those its bundle carries), the best of those candidates,
evaluated one by one. :func:`candidate_plans` gives the plans that are optimal
over a range of bandwidths, which is what a bundle should carry.

Torch-free: it calls the planner only.

Example:
    >>> from earlyexit.planner import plan
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> prof = synthetic_profile(8)
    >>> start = plan(prof, "portend-aws", min_accuracy=0.5)
    >>> r = Replanner(prof, "portend-aws", start, min_accuracy=0.5, dwell_s=0.0)
    >>> r.observe(0, bandwidth_mbps=10.0, propagation_ms=20.0, now=1.0) is None  # no change
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from earlyexit.formats import Link, Plan, Profile, Topology
from earlyexit.planner import evaluate, plan, resolve_profile, resolve_topology

__all__ = ["Switch", "Replanner", "candidate_plans", "same_configuration"]


def same_configuration(a: Plan, b: Plan) -> bool:
    """Whether two plans run the same cuts, tiers and threshold."""
    key = lambda p: (p.threshold, tuple((q.last_block, q.tier) for q in p.partitions))  # noqa: E731
    return key(a) == key(b)


@dataclass(frozen=True)
class Switch:
    """A decision to change plans.

    Attributes:
        at: the caller's clock when it was decided.
        old, new: the plans.
        links: the estimated links it was decided for (link index -> Link).
        old_latency_s, new_latency_s: both plans' estimated latency on those links.
        replan_s: wall-clock time the re-planning took (``stats.replan_cpu_s``
            keeps this thread's CPU time, which a busy host does not inflate).
    """

    at: float
    old: Plan
    new: Plan
    links: Mapping[int, Link]
    old_latency_s: float
    new_latency_s: float
    replan_s: float


@dataclass
class _Stats:
    replans: int = 0
    switches: int = 0
    replan_s: list[float] = field(default_factory=list)
    replan_cpu_s: list[float] = field(default_factory=list)


def _check_fraction(value: float, name: str, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < upper:
        raise ValueError(f"{name} must be a number in [0, {upper:g}), got {value!r}")
    return float(value)


class Replanner:
    """Decides when to switch plans as link estimates move.

    Args:
        profile: the profile the plans are made from (object or path).
        topology: the topology (object, built-in name or path); its links are
            the starting reference.
        current: the plan in force.
        min_accuracy, max_latency: the planning constraint (as :func:`earlyexit.planner.plan`).
        estimator: ``"portend"`` or ``"exact"``.
        change: relative move of a link's bandwidth or delay that triggers re-planning.
        dwell_s: minimum time between switches (and before the first one).
        min_gain: a new plan must be this much faster (relative) to switch.
        candidates: re-plan among these plans only (those the deployment can
            run); ``None``: the whole search space.
        hints: search-space hints passed to the planner (``tiers``, ...).

    Raises:
        ValueError, TypeError: for bad arguments.
    """

    def __init__(
        self,
        profile: Profile | str,
        topology: Topology | str,
        current: Plan,
        *,
        min_accuracy: float | None = None,
        max_latency: float | None = None,
        estimator: str = "portend",
        change: float = 0.2,
        dwell_s: float = 2.0,
        min_gain: float = 0.05,
        candidates: Sequence[Plan] | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(current, Plan):
            raise TypeError(f"current must be a Plan, got {type(current).__name__}")
        self.profile = resolve_profile(profile)
        self.topology = resolve_topology(topology)
        self.change = _check_fraction(change, "change", math.inf)
        if isinstance(dwell_s, bool) or not isinstance(dwell_s, int | float) or not dwell_s >= 0:
            raise ValueError(f"dwell_s must be a number >= 0, got {dwell_s!r}")
        self.dwell_s = float(dwell_s)
        self.min_gain = _check_fraction(min_gain, "min_gain")
        self.constraint = {"min_accuracy": min_accuracy, "max_latency": max_latency}
        self.estimator = estimator
        self.hints = dict(hints or {})
        self.candidates = list(candidates) if candidates is not None else None
        if self.candidates is not None and not self.candidates:
            raise ValueError("candidates must hold at least one plan (or be None for the whole space)")
        self.current = current
        self.reference: dict[int, Link] = dict(enumerate(self.topology.links))
        self.latest: dict[int, Link] = dict(self.reference)
        self.since: float | None = None
        self.stats = _Stats()

    # ------------------------------------------------------------------ model
    def topology_now(self) -> Topology:
        """The topology with the latest estimated links."""
        links = tuple(self.latest[j] for j in range(len(self.topology.links)))
        return replace(self.topology, links=links)

    def _latency(self, p: Plan, topo: Topology) -> float:
        return evaluate(self.profile, topo, p.threshold, [q.last_block for q in p.partitions],
                        [q.tier for q in p.partitions], p.estimator).latency_s  # fmt: skip

    def best(self, topo: Topology) -> Plan:
        """The optimal plan on ``topo`` (over the candidates, if given).

        Raises:
            ValueError: if no candidate meets the constraint.
        """
        if self.candidates is None:
            return plan(self.profile, topo, estimator=self.estimator, **self.constraint, **self.hints)
        min_acc, max_lat = self.constraint["min_accuracy"], self.constraint["max_latency"]
        scored = []
        for c in self.candidates:
            est = evaluate(self.profile, topo, c.threshold, [q.last_block for q in c.partitions],
                           [q.tier for q in c.partitions], c.estimator)  # fmt: skip
            if min_acc is not None and est.accuracy < min_acc - 1e-12:
                continue
            if max_lat is not None and est.latency_s > max_lat + 1e-12:
                continue
            key = (est.latency_s, -est.accuracy) if max_lat is None else (-est.accuracy, est.latency_s)
            scored.append((key, c, est))
        if not scored:
            raise ValueError("no candidate plan meets the constraint on the estimated network")
        _, c, est = min(scored, key=lambda t: t[0])
        return replace(c, estimate=est, topology_digest=topo.digest())

    # ------------------------------------------------------------------ input
    def _moved(self) -> bool:
        for j, now in self.latest.items():
            ref = self.reference[j]
            if abs(now.bandwidth_mbps - ref.bandwidth_mbps) > self.change * ref.bandwidth_mbps:
                return True
            if abs(now.propagation_ms - ref.propagation_ms) > self.change * max(ref.propagation_ms, 1.0):
                return True
        return False

    def observe(
        self, link: int, bandwidth_mbps: float, propagation_ms: float, now: float | None = None
    ) -> Switch | None:
        """Take a new estimate of ``link``; return a :class:`Switch` if the plan should change.

        Args:
            link: the link index (link j joins tier j and j+1).
            bandwidth_mbps, propagation_ms: the estimate.
            now: the caller's clock (default ``time.monotonic()``).

        Returns:
            The switch (already applied: :attr:`current` is the new plan), or ``None``.

        Raises:
            ValueError: for an unknown link or a bad estimate.
        """
        if isinstance(link, bool) or not isinstance(link, int) or not 0 <= link < len(self.topology.links):
            raise ValueError(f"link must be an index in 0..{len(self.topology.links) - 1}, got {link!r}")
        self.latest[link] = Link(bandwidth_mbps, propagation_ms)  # checks the values
        now = time.monotonic() if now is None else float(now)
        if self.since is None:
            self.since = now
        if not self._moved() or now - self.since < self.dwell_s:
            return None
        topo = self.topology_now()
        t0, c0 = time.perf_counter(), time.thread_time()
        new = self.best(topo)
        took = time.perf_counter() - t0
        self.stats.replan_cpu_s.append(time.thread_time() - c0)  # without other processes' turns
        self.stats.replans += 1
        self.stats.replan_s.append(took)
        self.reference = dict(self.latest)
        if same_configuration(new, self.current):
            return None
        old_lat = self._latency(self.current, topo)
        new_lat = new.estimate.latency_s
        if not new_lat < (1.0 - self.min_gain) * old_lat:
            return None
        sw = Switch(at=now, old=self.current, new=new, links=dict(self.latest),
                    old_latency_s=old_lat, new_latency_s=new_lat, replan_s=took)  # fmt: skip
        self.current, self.since = new, now
        self.stats.switches += 1
        return sw


def candidate_plans(
    profile: Profile | str,
    topology: Topology | str,
    link: int,
    bandwidths_mbps: Sequence[float],
    *,
    min_accuracy: float | None = None,
    max_latency: float | None = None,
    estimator: str = "portend",
    **hints: Any,
) -> list[Plan]:
    """The distinct optimal plans as one link's bandwidth sweeps ``bandwidths_mbps``.

    What a bundle should carry so that a deployment can switch between them.

    Args:
        profile, topology: the planner's inputs.
        link: the link that varies.
        bandwidths_mbps: the bandwidths to plan for.
        min_accuracy, max_latency, estimator, hints: as :func:`earlyexit.planner.plan`.

    Returns:
        The plans in order of first appearance along ``bandwidths_mbps``.

    Raises:
        ValueError: for an unknown link or an empty sweep.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> ps = candidate_plans(synthetic_profile(8), "portend-aws", 0, [0.5, 5, 50, 500])
        >>> 1 <= len(ps) <= 4
        True
    """
    prof = resolve_profile(profile)
    topo = resolve_topology(topology)
    if isinstance(link, bool) or not isinstance(link, int) or not 0 <= link < len(topo.links):
        raise ValueError(f"link must be an index in 0..{len(topo.links) - 1}, got {link!r}")
    if not len(bandwidths_mbps):
        raise ValueError("bandwidths_mbps must hold at least one bandwidth")
    out: list[Plan] = []
    for bw in bandwidths_mbps:
        links = list(topo.links)
        links[link] = Link(bw, links[link].propagation_ms)
        p = plan(prof, replace(topo, links=tuple(links)), min_accuracy=min_accuracy,
                 max_latency=max_latency, estimator=estimator, **hints)  # fmt: skip
        if not any(same_configuration(p, q) for q in out):
            out.append(p)
    return out
