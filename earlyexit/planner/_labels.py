"""Labels (partial configurations) as numpy columns, their packed tie keys, and the collector.

Shared by both searches (:mod:`earlyexit.planner._portend` and
:mod:`earlyexit.planner._exact`).

A label carries its placement D as one integer (base M digits, ``dcode``) and
its cut points P as a few int64 words (``pcode``, shape ``(labels, words)``):
base N+1 digits, as many per word as fit below 2**62, the first cut in the
most significant digit of word 0. Codes of the same length compare like the
tuples they encode (word by word, then digit by digit), which is what the tie
key ``(L, D, P, T)`` of :mod:`earlyexit.planner._select` needs; several words
lift the old limit of one word ((N+1)**L < 2**62, N=500 and L=8 did not fit).
"""

from __future__ import annotations

import math

import numpy as np

from earlyexit.planner._select import ACC_ATOL, LAT_ATOL, unbeaten

__all__ = [
    "CutCodes",
    "Collector",
    "Labels",
    "LazyKeys",
    "SLACK",
    "dominance_filter",
    "empty_labels",
    "rank_keys",
]

SLACK = 1e-12


class CutCodes:
    """Packs cut sequences of up to ``max_len`` blocks in ``0..n`` into int64 words.

    Raises:
        ValueError: placements do not fit one word (M**L >= 2**62: far beyond M <= 8).
    """

    def __init__(self, n: int, m: int, max_len: int) -> None:
        if float(m) ** max_len >= 2.0**62:
            raise ValueError(f"search space too large to encode ({m} tiers, {max_len} partitions)")
        self.base = n + 1
        self.m = m
        self.per_word = max(1, int(62 // math.log2(self.base))) if self.base > 1 else 62
        while float(self.base) ** self.per_word >= 2.0**62:  # guard the float log
            self.per_word -= 1
        self.words = max(1, -(-max_len // self.per_word))

    def zeros(self, rows: int) -> np.ndarray:
        """``rows`` empty codes."""
        return np.zeros((rows, self.words), np.int64)

    def push(self, codes: np.ndarray, depth: int, digits: np.ndarray) -> np.ndarray:
        """New codes with ``digits`` appended to codes holding ``depth`` cuts."""
        out = codes.copy()
        j = depth // self.per_word
        out[:, j] = out[:, j] * self.base + digits
        return out

    def decode(self, row: np.ndarray, length: int) -> tuple[int, ...]:
        """The cut tuple of one code of ``length`` cuts."""
        out: list[int] = []
        for j in range(self.words):
            k = min(self.per_word, length - j * self.per_word)
            if k <= 0:
                break
            out.extend(_digits(int(row[j]), self.base, k))
        return tuple(out)

    def decode_tiers(self, code: int, length: int) -> tuple[int, ...]:
        """The tier tuple of one placement code."""
        return _digits(int(code), self.m, length)


def _digits(code: int, base: int, length: int) -> tuple[int, ...]:
    out = []
    for _ in range(length):
        code, digit = divmod(code, base)
        out.append(digit)
    return tuple(reversed(out))


def lex_less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise lexicographic ``a < b`` of two ``(rows, words)`` code arrays."""
    less = np.zeros(a.shape[0], bool)
    eq = np.ones(a.shape[0], bool)
    for j in range(a.shape[1]):
        less |= eq & (a[:, j] < b[:, j])
        eq &= a[:, j] == b[:, j]
    return less


def code_keys(pcode: np.ndarray) -> tuple[np.ndarray, ...]:
    """``np.lexsort`` keys (least significant first) of ``(rows, words)`` codes."""
    return tuple(pcode[:, j] for j in range(pcode.shape[1] - 1, -1, -1))


class Labels:
    """Columns of a set of labels (partial configurations).

    ``pb`` (optional): the block after which the label's last partition starts.
    """

    __slots__ = ("t", "c", "w", "u", "lat", "acc", "dcode", "pcode", "pb")

    def __init__(self, t, c, w, u, lat, acc, dcode, pcode, pb=None):  # noqa: ANN001
        self.t, self.c, self.w, self.u = t, c, w, u
        self.lat, self.acc, self.dcode, self.pcode = lat, acc, dcode, pcode
        self.pb = pb

    def __len__(self) -> int:
        return int(self.lat.size)

    def take(self, idx: np.ndarray) -> Labels:
        return Labels(
            *(None if getattr(self, s) is None else getattr(self, s)[idx] for s in self.__slots__)
        )

    @staticmethod
    def concat(parts: list[Labels]) -> Labels:
        def cat(s: str) -> np.ndarray | None:
            cols = [getattr(p, s) for p in parts]
            return None if any(x is None for x in cols) else np.concatenate(cols)

        return Labels(*(cat(s) for s in Labels.__slots__))


def empty_labels(words: int = 1) -> Labels:
    """No labels."""
    z = np.zeros(0, np.int64)
    return Labels(z, z, z, z, np.zeros(0), np.zeros(0), z, np.zeros((0, words), np.int64))


class LazyKeys:
    """Tie keys ``(L, D, P, T)`` decoded on demand from the packed codes."""

    def __init__(self, n_parts, dcode, pcode, t, codes: CutCodes, thresholds):  # noqa: ANN001
        self.n_parts, self.dcode, self.pcode, self.t = n_parts, dcode, pcode, t
        self.codes, self.thresholds = codes, thresholds

    def __getitem__(self, i: int) -> tuple:
        n_parts = int(self.n_parts[i])
        return (
            n_parts,
            self.codes.decode_tiers(int(self.dcode[i]), n_parts),
            self.codes.decode(self.pcode[i], n_parts),
            float(self.thresholds[self.t[i]]),
        )


def rank_keys(
    n_parts: np.ndarray, dcode: np.ndarray, pcode: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Each candidate's rank in tie-key order (an int per candidate, same order as the keys).

    Codes of the same length compare like their tuples and ``t`` indexes thresholds sorted
    increasingly, so sorting (L, dcode, pcode words, t) sorts the keys ``(L, D, P, T)``.
    """
    order = np.lexsort((t, *code_keys(pcode), dcode, n_parts))
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    return rank


class Collector:
    """Collects final candidates, keeping only those that may be (a tie of) the answer."""

    def __init__(self, objective: str, bound: float | None, words: int = 1) -> None:
        self.objective, self.bound, self.words = objective, bound, words
        self.inc = np.inf if objective == "min_latency" else -np.inf
        self.fixed = False  # True: inc is a given bar, the labels found do not lower it
        self.front: tuple | None = None
        self.parts: list[Labels] = []
        self.nparts: list[np.ndarray] = []

    def add(self, fin: Labels, nparts: int | np.ndarray) -> None:
        obj, bound = self.objective, self.bound
        n = len(fin)
        if obj == "min_latency":
            ok = fin.acc >= bound - ACC_ATOL if bound is not None else np.ones(n, bool)
            if ok.any() and not self.fixed:
                self.inc = min(self.inc, float(fin.lat[ok].min()))
            ok &= fin.lat <= self.inc + LAT_ATOL + SLACK * (1 + abs(self.inc))
        elif obj == "max_accuracy":
            ok = fin.lat <= bound + LAT_ATOL if bound is not None else np.ones(n, bool)
            if ok.any():
                self.inc = max(self.inc, float(fin.acc[ok].max()))
            ok &= fin.acc >= self.inc - ACC_ATOL - SLACK
        else:
            ok = np.ones(n, bool)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return
        self.parts.append(fin.take(idx))
        self.nparts.append(np.broadcast_to(np.asarray(nparts, np.int64), (n,))[idx])
        if obj == "pareto" or len(self.parts) > 8:
            self._compact()

    def _compact(self) -> None:
        allf = Labels.concat(self.parts)
        nparts = np.concatenate(self.nparts)
        if self.objective == "pareto":
            # keep the points no other point beats beyond tolerance (ties included)
            keep = unbeaten(allf.lat, allf.acc)
            allf, nparts = allf.take(keep), nparts[keep]
            o = np.argsort(allf.lat, kind="stable")
            self.front = (allf.lat[o], np.maximum.accumulate(allf.acc[o]), o)
        elif self.objective == "min_latency":
            keep = np.flatnonzero(allf.lat <= self.inc + LAT_ATOL + SLACK * (1 + abs(self.inc)))
            allf, nparts = allf.take(keep), nparts[keep]
        else:
            keep = np.flatnonzero(allf.acc >= self.inc - ACC_ATOL - SLACK)
            allf, nparts = allf.take(keep), nparts[keep]
        self.parts, self.nparts = [allf], [nparts]

    def result(self) -> tuple[Labels, np.ndarray]:
        if not self.parts:
            return empty_labels(self.words), np.zeros(0, np.int64)
        self._compact()
        return self.parts[0], self.nparts[0]


def dominance_filter(lab: Labels, n_blocks: int, m: int) -> Labels:
    """Drop labels dominated at the same (threshold, block, tier, tier set).

    A label is dropped when another one at the same state is better or equal in both
    objectives (beyond the tolerances, or exactly with a smaller tie key): the future
    is the same, and adding the same numbers keeps the order, also in floating point.
    """
    if len(lab) < 2:
        return lab
    gid = ((lab.t * (n_blocks + 1) + lab.c) * m + lab.w) * (1 << m) + lab.u
    order = np.lexsort((*code_keys(lab.pcode), lab.dcode, -lab.acc, lab.lat, gid))
    g, sl, sa = gid[order], lab.lat[order], lab.acc[order]
    n = g.size
    newg = np.ones(n, dtype=bool)
    newg[1:] = g[1:] != g[:-1]
    gr = np.cumsum(newg) - 1
    uniq, rank = np.unique(sa, return_inverse=True)
    span = uniq.size + 1
    cmv = np.maximum.accumulate(gr * span + rank)
    incl = uniq[cmv - gr * span]  # groupwise inclusive max accuracy
    excl = np.full(n, -np.inf)
    excl[1:] = np.where(newg[1:], -np.inf, incl[:-1])
    dom = excl > sa + ACC_ATOL  # (ii) better accuracy beyond tolerance, latency <=
    # (i) latency lower beyond tolerance, accuracy >=
    tiedprev = np.zeros(n, dtype=bool)
    tiedprev[1:] = ~newg[1:] & (sl[1:] - sl[:-1] <= LAT_ATOL)
    run_start = np.maximum.accumulate(np.where(tiedprev, 0, np.arange(n)))
    q = run_start - 1
    ok_q = (q >= 0) & (gr[np.maximum(q, 0)] == gr)
    dom |= ok_q & (incl[np.maximum(q, 0)] >= sa)
    # (iii) equal or better in both with a smaller tie key (exact ties sit next to each other)
    dc, pc = lab.dcode[order], lab.pcode[order]
    for s in (1, 2, 3):
        if s >= n:
            break
        same = g[s:] == g[:-s]
        smaller = (dc[:-s] < dc[s:]) | ((dc[:-s] == dc[s:]) & lex_less(pc[:-s], pc[s:]))
        dom[s:] |= same & (sa[:-s] >= sa[s:]) & (sl[:-s] <= sl[s:]) & smaller
    return lab.take(order[~dom])
