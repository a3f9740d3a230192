"""The search for the ``exact`` estimator: cut sequences over per-sample bitsets.

E_k depends on every earlier exit, so the states do not telescope. Cut sequences are enumerated level by level; the
samples still running after each prefix form a bitset (uint64 words), and the
popcounts of its ANDs with the per-branch "exits here", "right here" and
"right at some later branch" bitsets count E_k, S_k, the hits and an accuracy
bound for every extension (exact integers; no BLAS, whose threads spin on a
busy machine). The best placement of each cut sequence is found by
a vectorized enumeration of the injective tier tuples. For P_lat the
configurations with at most two partitions are evaluated first, for every
threshold (an incumbent); a longer prefix is then dropped only if every
completion provably misses the accuracy bound (upper bound: every running
sample counted right if any later branch is right) or has a latency above the
incumbent (lower bound: the prefix's own terms with its exact fractions, which
are all >= 0 with this estimator, at its best placement, plus the cheapest way
for the running samples to carry on). Otherwise it is exhaustive, hence exact.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from earlyexit.planner._labels import SLACK as _SLACK
from earlyexit.planner._labels import Collector, CutCodes, Labels
from earlyexit.planner._select import ACC_ATOL, LAT_ATOL
from earlyexit.planner.latency import CostModel
from earlyexit.planner.space import SearchSpace

__all__ = ["exact_candidates"]


def exact_candidates(
    cm: CostModel, space: SearchSpace, objective: str, bound: float | None, codes: CutCodes
) -> tuple[Labels, np.ndarray]:
    """Every cut sequence with its fastest placements, for the exact estimator.

    Placements of one cut sequence share E_k, S_k and the accuracy, so only the
    fastest (and its exact ties) can matter for any objective.

    Returns:
        (candidates, number of partitions of each).

    Raises:
        ValueError: the profile has no per-sample record.
    """
    samples = cm.profile.samples
    if samples is None:
        raise ValueError("estimator 'exact' needs profile.samples")
    n, m = cm.n, cm.m
    ns = samples.num_samples
    # sample sets as bitsets (rows of uint64 words): counts are popcounts of ANDs, exact
    # integers, and no BLAS threads (which spin on a busy machine)
    corr_b = _bits(samples.correct)  # (N, W)
    full = _bits(np.ones((1, ns), bool))  # (1, W)
    placements = {
        L: np.array(
            [
                d
                for d in permutations(range(m), L)
                if all(space.tier_allowed[k, d[k]] for k in range(L))
            ],
            dtype=np.int64,
        ).reshape(-1, L)
        for L in range(1, space.max_parts + 1)
    }
    col = Collector(objective, bound, codes.words)
    cols = np.arange(n + 1)
    chunk = max(1, (1 << 22) // full.shape[1])
    prune = objective == "min_latency"
    any_after = np.zeros((n + 1, full.shape[1]), np.uint64)
    if prune:
        # any_after[c]: the samples right at some branch after block c (an accuracy bound)
        any_after[:n] = np.bitwise_or.accumulate(corr_b[::-1], axis=0)[::-1]
        # the cheapest way to carry on from block c on tier v: a hop to another tier w and at
        # least one more block there, plus the cheapest result transfer
        cont = np.full((m, n + 1), np.inf)
        for v in range(m):
            for w in range(m):
                if w != v and space.tier_allowed[1:, w].any():
                    np.minimum(cont[v], cm.x[v, w] + cm.ct[w].min(1), out=cont[v])
        cont += cm.r.min()

    def bound_keep(
        seqs: np.ndarray, e: np.ndarray, s_k: np.ndarray, ub: np.ndarray | None
    ) -> np.ndarray:
        """Prefixes (that continue) whose every completion might still be (a tie of) the optimum.

        Lower bound on the latency: the terms of docs/spec.md of the prefix's partitions with their
        exact fractions (all >= 0 with this estimator), the cheapest placement, plus the
        cheapest continuation for the samples still running. Upper bound on the accuracy:
        every running sample counted right if any later branch gets it right.
        """
        keep = np.ones(seqs.shape[0], bool)
        if ub is not None:
            keep &= ub >= bound - ACC_ATOL - _SLACK
        inc = col.inc
        if np.isfinite(inc) and keep.any():
            idx = np.flatnonzero(keep)
            sq, ee = seqs[idx], e[idx]
            k = sq.shape[1]
            places = placements[k]
            reach = 1.0 - np.concatenate([np.zeros((idx.size, 1)), np.cumsum(ee, 1)[:, :-1]], 1)
            stay = 1.0 - np.cumsum(ee, 1)
            stay[:, -1] = s_k[idx]
            prevs = np.concatenate([np.zeros((idx.size, 1), np.int64), sq[:, :-1]], 1)
            lat = np.broadcast_to(
                cm.x[cm.source, places[:, 0], 0][None], (idx.size, places.shape[0])
            ).copy()
            for j in range(k):
                d = places[None, :, j]
                lat += (
                    reach[:, j, None] * cm.ct[d, prevs[:, j, None], sq[:, j, None]]
                    + ee[:, j, None] * cm.r[d]
                )
                if j < k - 1:
                    lat += stay[:, j, None] * cm.x[d, places[None, :, j + 1], sq[:, j, None]]
            rest = cont[places[None, :, -1], sq[:, -1, None]]
            fin = np.isfinite(rest)  # inf: no way to carry on
            lat += stay[:, -1, None] * np.where(fin, rest, 0.0)
            lb = np.where(fin, lat, np.inf).min(1)
            keep[idx] = lb <= inc + LAT_ATOL + _SLACK * (1 + abs(inc))
        return keep

    def grow(
        alive: np.ndarray,
        seqs: np.ndarray,
        e_prev: np.ndarray,
        hits_prev: np.ndarray,
        sets: tuple[np.ndarray, np.ndarray, np.ndarray],
        ti_pos: int,
        final_from: int,
        cap: int,
    ) -> None:
        lp = seqs.shape[1]
        last = seqs[:, -1] if lp else np.zeros(alive.shape[0], np.int64)
        ok = (
            (cols[None, :] > last[:, None])
            & (cols[None, :] <= space.next_required[last][:, None])
            & space.cut_allowed[None, :]
        )
        par, nxt = np.nonzero(ok)
        if par.size == 0:
            return
        level = lp + 1
        child_seqs = np.concatenate([seqs[par], nxt[:, None]], 1)
        n_alive = _popcount(alive)
        if level >= max(space.min_parts, final_from) and placements[level].size:
            fin = np.flatnonzero(space.end_ok[nxt])
            if fin.size:
                pf, cf = par[fin], nxt[fin]
                frac = n_alive[pf] / ns
                hits_last = _popcount(alive[pf] & corr_b[cf - 1])
                e_all = np.concatenate([e_prev[pf], frac[:, None]], 1)
                acc = (hits_prev[pf] + hits_last) / ns
                if prune and bound is not None:  # infeasible ones need no placement (loosely: the
                    ok = np.flatnonzero(
                        acc >= bound - ACC_ATOL - _SLACK
                    )  # collector decides exactly)
                    fin, e_all, acc = fin[ok], e_all[ok], acc[ok]
                if fin.size:
                    lab = _place(cm, child_seqs[fin], e_all, acc, placements[level], ti_pos, codes)
                    col.add(lab, level)
        if level == cap:
            return
        ex_b, exc_b, stay_b = sets
        for lo in range(0, par.size, chunk):
            p, c = par[lo : lo + chunk], nxt[lo : lo + chunk]
            al = alive[p]
            eh = _popcount(al & ex_b[c - 1]).astype(np.float64)  # exit at branch c
            hits_new = hits_prev[p] + _popcount(al & exc_b[c - 1])  # ... and right there
            e_new = np.concatenate([e_prev[p], (eh / ns)[:, None]], 1)
            nxt_alive = al & stay_b[c - 1]
            sq = child_seqs[lo : lo + chunk]
            if prune:
                s_k = (n_alive[p] - eh) / ns
                ub = (
                    None if bound is None else (hits_new + _popcount(nxt_alive & any_after[c])) / ns
                )
                kp = np.flatnonzero(bound_keep(sq, e_new, s_k, ub))
                if kp.size == 0:
                    continue
                if kp.size < p.size:
                    nxt_alive, sq, e_new, hits_new = nxt_alive[kp], sq[kp], e_new[kp], hits_new[kp]
            grow(nxt_alive, sq, e_new, hits_new, sets, ti_pos, final_from, cap)

    all_sets = []
    for ti in space.t_idx:
        ex = _bits(samples.entropy < float(cm.thresholds[ti]))  # exits at branch i+1
        all_sets.append((ex, ex & corr_b, ~ex & full))
    start = (full, np.zeros((1, 0), np.int64), np.zeros((1, 0)), np.zeros(1))
    first = 1
    if prune and space.max_parts >= 3:
        # the configurations with at most two partitions first, for every threshold: the
        # incumbent that prunes the longer ones
        for ti_pos, sets in enumerate(all_sets):
            grow(*start, sets, ti_pos, 1, 2)
        first = 3
    for ti_pos, sets in enumerate(all_sets):
        grow(*start, sets, ti_pos, first, space.max_parts)
    return col.result()


def _bits(mask: np.ndarray) -> np.ndarray:
    """Rows of booleans as bitsets: ``(rows, ceil(S / 64))`` uint64 words, padding bits 0."""
    mask = np.asarray(mask, bool)
    packed = np.packbits(mask, axis=1, bitorder="little")
    words = -(-mask.shape[1] // 64)
    out = np.zeros((mask.shape[0], words * 8), np.uint8)
    out[:, : packed.shape[1]] = packed
    return out.view(np.uint64)


if hasattr(np, "bitwise_count"):  # numpy >= 2.0

    def _popcount(words: np.ndarray) -> np.ndarray:
        """Set bits per row of a bitset array (as float64: exact below 2**53)."""
        return np.bitwise_count(words).sum(-1, dtype=np.int64).astype(np.float64)

else:  # pragma: no cover - numpy 1.26
    _BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.uint8)

    def _popcount(words: np.ndarray) -> np.ndarray:
        """Set bits per row of a bitset array (as float64: exact below 2**53)."""
        b = np.ascontiguousarray(words).view(np.uint8)
        return _BYTE_BITS[b].sum(-1, dtype=np.int64).astype(np.float64)


def _place(
    cm: CostModel,
    seqs: np.ndarray,
    e: np.ndarray,
    acc: np.ndarray,
    places: np.ndarray,
    ti_pos: int,
    codes: CutCodes,
) -> Labels:
    """Latency of every (cut sequence, placement), the formula of docs/spec.md, keep the fastest per sequence."""
    n_seq, L = seqs.shape
    ct, x, r, src = cm.ct, cm.x, cm.r, cm.source
    s = 1.0 - np.cumsum(e, 1)
    s[:, -1] = 0.0
    prevs = np.concatenate([np.zeros((n_seq, 1), np.int64), seqs[:, :-1]], 1)
    d = places  # (nd, L)
    lat = np.broadcast_to(x[src, d[:, 0], 0][None, :], (n_seq, d.shape[0])).copy()
    for k in range(L):
        lat += (s[:, k] + e[:, k])[:, None] * ct[
            d[None, :, k], prevs[:, k][:, None], seqs[:, k][:, None]
        ]
        if k < L - 1:
            lat += s[:, k][:, None] * x[d[None, :, k], d[None, :, k + 1], seqs[:, k][:, None]]
        lat += e[:, k][:, None] * r[d[None, :, k]]
    best = lat.min(1, keepdims=True)
    pi, di = np.nonzero(lat <= best + LAT_ATOL)
    dcode = np.zeros(pi.size, np.int64)
    pcode = codes.zeros(pi.size)
    for k in range(L):
        dcode = dcode * cm.m + d[di, k]
        pcode = codes.push(pcode, k, seqs[pi, k])
    lab = Labels(
        np.full(pi.size, ti_pos, np.int64),
        seqs[pi, -1],
        d[di, -1],
        np.zeros(pi.size, np.int64),
        lat[pi, di],
        acc[pi],
        dcode,
        pcode,
    )
    return lab
