"""Exact and fast search of the optimization problems of docs/spec.md (P_lat, P_acc, Pareto).

Two algorithms, one per estimator (docs/spec.md#estimators), each in its own module:

- ``portend`` (:mod:`earlyexit.planner._portend`, bounds in
  :mod:`earlyexit.planner._portend_bounds`): PORTEND's fractions telescope, so a
  configuration is a path through states (block, tier, tiers used) along which
  latency and accuracy are sums; a Pareto-label dynamic program with exact
  dominance and bounds from a backward pass (Lagrangian lower bounds, an
  accuracy-aware lower bound on a discretized accuracy grid, one-partition
  completion tables).
- ``exact`` (:mod:`earlyexit.planner._exact`): E_k depends on every earlier exit;
  cut sequences are enumerated level by level over per-sample bitsets, with
  prefix bounds for P_lat.

Both return every candidate that may be (a tie of) the answer; the choice among
them (tolerances and the tie key ``(L, D, P, T)``) is :mod:`earlyexit.planner._select`'s,
shared with the brute force (:mod:`earlyexit.planner.bruteforce`) that the property
tests compare against. Labels and their packed tie keys: :mod:`earlyexit.planner._labels`.

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> from earlyexit.planner.latency import CostModel
    >>> from earlyexit.planner.space import make_space
    >>> from earlyexit.planner.topology import resolve_topology
    >>> cm = CostModel(synthetic_profile(12), resolve_topology("portend-aws"))
    >>> best = search(cm, make_space(cm), "portend", "min_latency", 0.6)
    >>> best[0].accuracy >= 0.6
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from earlyexit.planner._exact import exact_candidates
from earlyexit.planner._labels import CutCodes, LazyKeys, rank_keys
from earlyexit.planner._portend import PortendSearch
from earlyexit.planner._select import OBJECTIVES, pareto_select, select_best
from earlyexit.planner.latency import CostModel
from earlyexit.planner.space import SearchSpace

__all__ = ["Candidate", "search"]


@dataclass(frozen=True)
class Candidate:
    """One configuration with its estimated objectives.

    Attributes:
        latency / accuracy: the estimates of docs/spec.md (as summed by the search).
        threshold_index: index into ``profile.thresholds``.
        threshold: T.
        cuts: P (1-based last blocks).
        tiers: D.
    """

    latency: float
    accuracy: float
    threshold_index: int
    threshold: float
    cuts: tuple[int, ...]
    tiers: tuple[int, ...]

    @property
    def key(self) -> tuple:
        """The tie key ``(L, D, P, T)``."""
        return (len(self.cuts), self.tiers, self.cuts, self.threshold)


def search(
    cm: CostModel, space: SearchSpace, estimator: str, objective: str, bound: float | None,
    *, searcher: PortendSearch | None = None,
) -> list[Candidate]:  # fmt: skip
    """Solve P_lat (``"min_latency"``), P_acc (``"max_accuracy"``) or the frontier (``"pareto"``).

    Args:
        cm: the cost model of the profile and topology.
        space: the search space (:func:`~earlyexit.planner.space.make_space`).
        estimator: ``"portend"`` or ``"exact"``.
        objective: ``"min_latency"``, ``"max_accuracy"`` or ``"pareto"``.
        bound: the accuracy lower bound (P_lat) or latency upper bound (P_acc).
        searcher: (``portend``) a label DP built for this problem, whose bound tables
            are reused (:meth:`~earlyexit.planner._portend.PortendSearch.unloaded`).

    Returns:
        ``[best]`` (empty if infeasible) or the frontier sorted by latency.

    Raises:
        ValueError: unknown objective or estimator.
    """
    if objective not in (*OBJECTIVES, "pareto"):
        raise ValueError(f"objective: expected one of {[*OBJECTIVES, 'pareto']}, got {objective!r}")
    if objective == "max_accuracy" and bound is not None:
        # the search sums R; the client's cooling makes Lat = R + cooling(R), increasing in R
        bound = cm.client_wait_within(bound)
    codes = CutCodes(cm.n, cm.m, space.max_parts) if searcher is None else searcher.codes
    if estimator == "portend":
        if searcher is None:
            searcher = PortendSearch(cm, space, objective, bound, codes=codes)
        fin, nparts = searcher.run(objective, bound)
    elif estimator == "exact":
        fin, nparts = exact_candidates(cm, space, objective, bound, codes)
    else:
        raise ValueError(f"estimator: expected 'portend' or 'exact', got {estimator!r}")
    thr_sorted = cm.thresholds[space.t_idx]
    # ties are broken on ranks in key order (one lexsort), keys decoded only for the answer
    ranks = rank_keys(nparts, fin.dcode, fin.pcode, fin.t)
    if objective == "pareto":
        idx = pareto_select(fin.lat, fin.acc, ranks)
    else:
        best = select_best(fin.lat, fin.acc, ranks, objective, bound)
        idx = [] if best is None else [best]
    keys = LazyKeys(nparts, fin.dcode, fin.pcode, fin.t, codes, thr_sorted)
    out = []
    for i in idx:
        key = keys[i]
        out.append(
            Candidate(
                latency=float(fin.lat[i] + cm.client_cooling(float(fin.lat[i]))),
                accuracy=float(fin.acc[i]),
                threshold_index=int(space.t_idx[fin.t[i]]),
                threshold=key[3],
                cuts=key[2],
                tiers=key[1],
            )
        )
    return out
