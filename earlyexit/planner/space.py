"""The search space of the optimization of docs/spec.md and the user hints that restrict it.

Hints are keyword arguments of :func:`earlyexit.plan` and :func:`earlyexit.pareto`,
declared once, as the parameters of :func:`make_space` (whose ``Args:`` say
what each one means; ``earlyexit plan --help`` shows the same lines).

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> from earlyexit.planner.latency import CostModel
    >>> from earlyexit.planner.topology import resolve_topology
    >>> cm = CostModel(synthetic_profile(6), resolve_topology("portend-aws"))
    >>> sp = make_space(cm, exits=[6], tiers=["edge", "cloud"])
    >>> sp.max_parts, sp.required
    (2, (6,))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from earlyexit.planner.estimators import threshold_index
from earlyexit.planner.latency import CostModel
from earlyexit.planner.topology import tier_index

__all__ = ["HINTS", "SearchSpace", "make_space"]

HINTS: tuple[str, ...] = (
    "num_partitions",
    "max_partitions",
    "tiers",
    "placement",
    "cut_points",
    "exits",
    "thresholds",
)


@dataclass(frozen=True)
class SearchSpace:
    """A normalized search space.

    Attributes:
        t_idx: indices into ``profile.thresholds`` to search, by increasing threshold.
        min_parts / max_parts: the range of L.
        tier_allowed: (max_parts, M) booleans, tier allowed for partition k.
        cut_allowed: (N+1,) booleans (index 0 is False), block allowed as P_k.
        required: blocks that must be among P, sorted.
        next_required: (N+1,) for each block b the largest block a partition
            starting after b may end at (the next required exit, else N).
        end_ok: (N+1,) booleans, block allowed as P_L.
    """

    t_idx: np.ndarray
    min_parts: int
    max_parts: int
    tier_allowed: np.ndarray
    cut_allowed: np.ndarray
    required: tuple[int, ...]
    next_required: np.ndarray
    end_ok: np.ndarray

    def transition_ok(self, b: int, c: int) -> bool:
        """Whether a partition may span blocks b+1..c."""
        return b < c <= self.next_required[b] and bool(self.cut_allowed[c])


def _ints(value: Any, name: str) -> list[Any]:
    if isinstance(value, (str, bytes, int)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"{name}: expected a list, got {value!r}")
    return list(value)


def _blocks(value: Any, name: str, n: int) -> list[int]:
    out = []
    for b in _ints(value, name):
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise TypeError(f"{name}: expected block indices (integers 1..{n}), got {b!r}")
        if not 1 <= int(b) <= n:
            raise ValueError(f"{name}: block {b} out of range; blocks are 1..{n}")
        out.append(int(b))
    return sorted(set(out))


def make_space(
    cm: CostModel,
    *,
    num_partitions: int | None = None,
    max_partitions: int | None = None,
    tiers: Sequence[int | str] | None = None,
    placement: Sequence[int | str] | None = None,
    cut_points: Sequence[int] | None = None,
    exits: Sequence[int] | None = None,
    thresholds: Sequence[float] | None = None,
) -> SearchSpace:
    """Normalize the hints into a :class:`SearchSpace`.

    Args:
        cm: the cost model (profile and topology) the space is for.
        num_partitions: a fixed number of partitions L.
        max_partitions: an upper bound on L (default M, one partition per tier).
        tiers: the tiers (indices or names) partitions may use.
        placement: a fixed placement D, the tier of each partition (implies L).
        cut_points: the blocks (1-based) allowed as the last block of a partition.
        exits: blocks that must be exits (last blocks of partitions); ``[N]``
            asks for the full DNN.
        thresholds: the thresholds to search (a subset of the profile's).

    Returns:
        The normalized :class:`SearchSpace`.

    Raises:
        ValueError / TypeError: a bad hint, or hints that leave nothing to search.
    """
    n, m = cm.n, cm.m
    topo = cm.topology
    prof = cm.profile
    if thresholds is None:
        t_idx = np.argsort(prof.thresholds, kind="stable")
    else:
        idx = []
        for t in _ints(thresholds, "thresholds"):
            if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)):
                raise TypeError(f"thresholds: expected numbers, got {t!r}")
            i = threshold_index(prof, float(t))
            if i is None:
                raise ValueError(
                    f"thresholds: {t} is not one of the profile's thresholds "
                    f"{prof.thresholds.tolist()}"
                )
            idx.append(i)
        if not idx:
            raise ValueError("thresholds: needs at least one threshold")
        t_idx = np.array(sorted(set(idx), key=lambda i: prof.thresholds[i]))

    allowed_tiers = np.ones(m, dtype=bool)
    if tiers is not None:
        allowed_tiers[:] = False
        for t in _ints(tiers, "tiers"):
            allowed_tiers[tier_index(topo, t)] = True
    lo, hi = 1, m
    fixed: list[int] | None = None
    if placement is not None:
        fixed = [tier_index(topo, t) for t in _ints(placement, "placement")]
        if not fixed or len(set(fixed)) != len(fixed):
            raise ValueError(f"placement: expected distinct tiers, one per partition, got {fixed}")
        if not all(allowed_tiers[d] for d in fixed):
            raise ValueError(f"placement {fixed} uses tiers outside tiers={list(tiers or [])}")
        lo = hi = len(fixed)
    if num_partitions is not None:
        if isinstance(num_partitions, bool) or not isinstance(num_partitions, (int, np.integer)):
            raise TypeError(f"num_partitions: expected an integer, got {num_partitions!r}")
        if not 1 <= num_partitions <= m:
            raise ValueError(
                f"num_partitions: must be in 1..{m} (one partition per tier), got {num_partitions}"
            )
        if fixed is not None and num_partitions != len(fixed):
            raise ValueError(f"num_partitions={num_partitions} contradicts placement {fixed}")
        lo = hi = int(num_partitions)
    if max_partitions is not None:
        if isinstance(max_partitions, bool) or not isinstance(max_partitions, (int, np.integer)):
            raise TypeError(f"max_partitions: expected an integer, got {max_partitions!r}")
        if max_partitions < 1:
            raise ValueError(f"max_partitions: must be >= 1, got {max_partitions}")
        hi = min(hi, int(max_partitions))
    hi = min(hi, int(allowed_tiers.sum()))

    cut_allowed = np.zeros(n + 1, dtype=bool)
    if cut_points is None:
        cut_allowed[1:] = True
    else:
        cut_allowed[_blocks(cut_points, "cut_points", n)] = True
    required = tuple(_blocks(exits, "exits", n)) if exits is not None else ()
    for r in required:
        if not cut_allowed[r]:
            raise ValueError(f"exits: block {r} is required as an exit but not in cut_points")
    lo = max(lo, len(required))
    hi = min(hi, int(cut_allowed.sum()))
    if lo > hi:
        raise ValueError(
            f"hints leave no configuration: need between {lo} and {hi} partitions "
            f"(tiers allowed: {int(allowed_tiers.sum())}, cut points allowed: "
            f"{int(cut_allowed.sum())}, required exits: {list(required)})"
        )
    tier_allowed = np.tile(allowed_tiers, (hi, 1))
    if fixed is not None:
        tier_allowed[:] = False
        for k, d in enumerate(fixed):
            tier_allowed[k, d] = True
    next_required = np.full(n + 1, n, dtype=np.int64)
    for b in range(n + 1):
        later = [r for r in required if r > b]
        if later:
            next_required[b] = later[0]
    end_ok = cut_allowed.copy()
    if required:
        end_ok[: required[-1]] = False
    return SearchSpace(
        t_idx=t_idx,
        min_parts=lo,
        max_parts=hi,
        tier_allowed=tier_allowed,
        cut_allowed=cut_allowed,
        required=required,
        next_required=next_required,
        end_ok=end_ok,
    )
