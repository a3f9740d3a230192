"""Which configurations a validation deploys, their clusters, and what both estimators say of them.

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> cfgs = choose_configs(synthetic_profile(6), "portend-aws", 6, seed=0)
    >>> len(cfgs), sum(c.pareto for c in cfgs) >= 1
    (6, True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from earlyexit.formats import Estimate, Profile, Topology

__all__ = [
    "ESTIMATORS",
    "CLUSTERS",
    "Config",
    "cluster_of",
    "choose_configs",
    "chosen_config",
    "estimate",
    "estimates",
    "resolve",
]

ESTIMATORS: tuple[str, ...] = ("portend", "exact")
"""The estimators a validation compares, in this order."""

CLUSTERS: tuple[str, ...] = ("edge-only", "multi-tier", "cloud")
"""Clusters of configurations: one partition on the source tier, two or more
partitions, one partition on another tier (``cloud``: whatever that tier is)."""


@dataclass(frozen=True)
class Config:
    """One configuration (T, P, D) and whether it is on the estimated Pareto frontier."""

    threshold: float
    cuts: tuple[int, ...]
    tiers: tuple[int, ...]
    pareto: bool = False

    @property
    def key(self) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
        """(threshold, cuts, tiers): what makes two configurations the same deployment."""
        return (self.threshold, self.cuts, self.tiers)

    def to_dict(self) -> dict[str, Any]:
        """The mapping of ``validation.json`` (docs/spec.md#validation-results)."""
        return {"threshold": float(self.threshold), "cuts": list(self.cuts),
                "tiers": list(self.tiers), "pareto": bool(self.pareto)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Read the mapping :meth:`to_dict` writes.

        Raises:
            TypeError: not a mapping. KeyError: a field missing.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a configuration must be a mapping, got {type(data).__name__}")
        return cls(float(data["threshold"]), tuple(int(c) for c in data["cuts"]),
                   tuple(int(t) for t in data["tiers"]), bool(data.get("pareto", False)))  # fmt: skip


def cluster_of(config: Config | Mapping[str, Any], source: int = 0) -> str:
    """The cluster of a configuration: ``edge-only``, ``multi-tier`` or ``cloud``.

    Args:
        config: a :class:`Config` or its mapping (as in ``validation.json``).
        source: the topology's source tier.

    Returns:
        One of :data:`CLUSTERS`.

    Example:
        >>> cluster_of(Config(0.5, (3, 9), (0, 2))), cluster_of(Config(0.0, (9,), (2,)))
        ('multi-tier', 'cloud')
    """
    tiers = config["tiers"] if isinstance(config, Mapping) else config.tiers
    if len(tiers) > 1:
        return "multi-tier"
    return "edge-only" if int(tiers[0]) == int(source) else "cloud"


def resolve(
    profile: Profile | str | os.PathLike[str], topology: Topology | str | os.PathLike[str]
) -> tuple[Profile, Topology]:
    """The profile and topology objects (read from paths, or a built-in topology's name)."""
    from earlyexit.planner.topology import resolve_profile, resolve_topology

    return resolve_profile(profile), resolve_topology(topology)


def choose_configs(
    profile: Profile | str | os.PathLike[str],
    topology: Topology | str | os.PathLike[str],
    k: int,
    *,
    seed: int = 0,
    estimator: str = "portend",
    pareto_share: float = 0.5,
) -> list[Config]:
    """Pick ``k`` distinct configurations: Pareto-optimal ones and random others.

    The random ones take the clusters in turn (edge-only, multi-tier, cloud;
    :func:`cluster_of`), so that each has configurations to fit a line through;
    a single partition gets threshold 0 (its exit is the last: T changes nothing).
    A single-tier cluster's first two are its ends, block 1 alone and the whole
    network (where they are not chosen already): its latencies span little (the
    demo's cloud cluster about 1 ms around 12 ms), and a slope is best
    measured between the ends.

    Args:
        profile: as for the planner (a Profile or its JSON path).
        topology: as for the planner (a Topology, a built-in name or a YAML path).
        k: how many.
        seed: for the random ones.
        estimator: the estimator whose Pareto frontier is sampled.
        pareto_share: at most this fraction comes from the frontier (evenly spread).

    Returns:
        The configurations (Pareto ones first).

    Raises:
        ValueError: ``k < 1``.
    """
    from earlyexit.planner import pareto

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    prof, topo = resolve(profile, topology)
    rng = np.random.default_rng(seed)
    front = pareto(prof, topo, estimator=estimator)
    n_front = min(len(front), max(1, round(k * pareto_share)))
    picks = np.unique(np.linspace(0, len(front) - 1, n_front).round().astype(int)) if front else []
    out: list[Config] = []
    seen: set[tuple] = set()
    for i in picks:
        p = front[int(i)]
        c = Config(float(p.threshold), tuple(p.cut_points), tuple(p.tier_indices), True)
        out.append(c)
        seen.add(c.key)
    n, m = prof.num_blocks, topo.num_tiers
    thresholds = [float(t) for t in prof.thresholds]
    src = int(topo.source)
    # the random ones take the clusters in turn (edge-only, multi-tier, cloud), so
    # that each cluster has configurations to fit a line through
    wanted = [c for c in CLUSTERS if c != "multi-tier" or min(m, n) > 1]
    if m == 1:
        wanted = ["edge-only"]
    # a single-tier cluster's line rests on its ends: its first two are the shortest
    # (block 1) and the whole network, unless already chosen, then random lengths
    ends = {c: [(1,), (n,)] if n > 1 else [(1,)] for c in wanted if c != "multi-tier"}
    turn = 0
    for _ in range(1000 * k):
        if len(out) >= k:
            break
        cluster = wanted[turn % len(wanted)]
        length = 1 if cluster != "multi-tier" else int(rng.integers(2, min(m, n) + 1))
        cuts = (
            tuple(sorted(rng.choice(np.arange(1, n), size=length - 1, replace=False).tolist()))
            + (n,)
            if length > 1
            else (int(rng.integers(1, n + 1)),)
        )
        cuts = tuple(int(c) for c in cuts)
        if ends.get(cluster):
            cuts = ends[cluster].pop(0)
        if cluster == "edge-only":
            tiers: tuple[int, ...] = (src,)
        elif cluster == "cloud":
            tiers = (int(rng.choice([t for t in range(m) if t != src])),)
        else:
            tiers = tuple(int(t) for t in rng.choice(m, size=length, replace=False))
        threshold = float(rng.choice(thresholds)) if length > 1 else 0.0
        key = (threshold, cuts, tiers)
        if key not in seen:
            seen.add(key)
            out.append(Config(*key))
            turn += 1
    return out


def chosen_config(prof: Profile, topo: Topology, accuracy_drop: float | None) -> Config | None:
    """P_lat's plan with accuracy at least the final exit's minus ``accuracy_drop`` (as the demo plans).

    The ``exact`` estimator plans when the profile has per-sample records.

    Returns:
        The configuration, or None when ``accuracy_drop`` is None.
    """
    from earlyexit.planner import plan

    if accuracy_drop is None:
        return None
    p = plan(
        prof,
        topo,
        min_accuracy=float(prof.branch_accuracy[-1]) - accuracy_drop,
        estimator="exact" if prof.samples is not None else "portend",
    )
    return Config(float(p.threshold), tuple(p.cut_points), tuple(p.tier_indices), True)


def estimates(profile: Profile, topology: Topology, config: Config) -> dict[str, Estimate]:
    """Both estimators' :class:`~earlyexit.formats.Estimate` of ``config``.

    Returns:
        ``{"portend": Estimate, "exact": Estimate}`` (``exact`` only if the
        profile has per-sample records).
    """
    from earlyexit.planner import evaluate

    out = {}
    for name in ESTIMATORS:
        if name == "exact" and profile.samples is None:
            continue
        out[name] = evaluate(
            profile, topology, config.threshold, list(config.cuts), list(config.tiers), name
        )
    return out


def estimate(profile: Profile, topology: Topology, config: Config) -> dict[str, dict[str, Any]]:
    """:func:`estimates` as JSON-able mappings (the demo's report carries them).

    Returns:
        ``{"portend": {...}, "exact": {...}}``, each with ``latency_s``,
        ``accuracy``, ``exit_fractions`` and ``breakdown_s``.
    """
    return {name: e.to_dict() for name, e in estimates(profile, topology, config).items()}
