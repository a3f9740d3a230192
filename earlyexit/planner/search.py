"""Exact and fast search of the optimization problems of docs/spec.md (P_lat, P_acc, Pareto).

Algorithm (``portend`` estimator): a Pareto-label dynamic program.

For a fixed threshold, PORTEND's fractions telescope: S_{k-1} = S_k + E_k =
1 - ER_{P_{k-1}} (ER_{P_0} = 0), and E_L = 1 - ER_{P_{L-1}}. Splitting the last
partition's exit term (1 - ER_{P_{L-1}}) Rs into (ER_{P_L} - ER_{P_{L-1}}) Rs
plus an end cost (1 - ER_{P_L}) Rs makes every term depend on one hop only:

  edge (b, v) -> (c, w):  latency  (1 - ER_b) [x(v -> w, O_b) + CT^w_{b+1..c}]
                                   + (ER_c - ER_b) r(w -> destination)
                          accuracy A_c (ER_c - ER_b)
  end at (c, w):          latency  (1 - ER_c) r(w -> destination), accuracy A_c (1 - ER_c)

so a configuration is a path from (0, source) through states (last block,
tier, set of tiers used) and both objectives are sums along it. Labels
(latency, accuracy) are extended layer by layer (one partition per layer,
all thresholds at once, numpy-vectorized). A label is dropped only when that
cannot change the answer:

- dominance at the same state: another label at the same (threshold, block,
  tier, tier set) is better or equal in both objectives (the future is the
  same, and adding the same numbers keeps the order, also in floating point),
  with the tie key deciding exact ties;
- bounds from a backward pass: a relaxed completion cost (tiers only need to
  differ from the previous one, at most the remaining number of partitions)
  gives, for every state, the exact minimum of ``latency - lambda * accuracy``
  for some lambda >= 0 and the maximum accuracy. For P_lat a label whose
  every feasible completion provably has latency above the best feasible
  answer found so far (or that can no longer reach the accuracy bound) is
  dropped; symmetrically for P_acc; for the frontier, a label whose ideal
  completion point is beaten by a point already found.

These are valid lower/upper bounds (Lagrangian weak duality on a relaxation:
for any lambda >= 0 and any completion reaching accuracy ``need``, its latency
is at least ``H_lambda + lambda * need``), so the result is the true optimum
of the model of docs/spec.md; the property tests compare it with
:mod:`earlyexit.planner.bruteforce` on random small problems.

What makes P_lat fast (ResNet-110 scale, N=55, M=3: a few ms):

- One partition left is solved exactly by a table. With the end split off,
  the last partition d on tier w' after block c costs (1 - ER_c) [x(w -> w', O_c)
  + CT^{w'}_{c+1..d} + r(w')] and adds accuracy A_d (1 - ER_c). So for each
  (tier, block c), ``q1`` holds the least CT over the blocks d whose accuracy
  is at least each value (a cumulative minimum over blocks sorted by
  accuracy, threshold-free); the best completion of a label meeting the bound
  is one ``searchsorted``. This gives (i) with one partition left, the exact
  bound (no label with a completion that could tie the optimum is dropped:
  the bound is computed with the accuracy bound loosened by a slack); and
  (ii) an incumbent: the latency of a real configuration that meets the
  bound strictly (tightened by the slack, whatever the rounding), taken from
  the root (one partition) and from every layer, before the labels of that
  layer are filtered. The optimum is then usually known after the first
  layer, and the search only proves it.
- The same algebra gives the relaxed bound with one partition left as a
  threshold-free table (no pass over pairs of blocks per threshold); the
  bounds with two or more partitions left come from one pass over the
  packed transitions (c -> c') per round, ``reduceat`` along the leading axis.
- One multiplier instead of a grid: the lambda that maximizes the Lagrangian
  dual of the problem restricted to at most two partitions (computed from the
  same tables on a coarse grid, in single precision; it is only a heuristic,
  any lambda >= 0 gives valid bounds). With two or more partitions left only
  its bound is computed (lambda = 0 is kept with one left, where it is free).
  Large problems (where the bound pass is cheap next to the labels) use the
  grid too.
- The first layer is filtered after its own exact one-partition completions
  have lowered the incumbent (to the best configuration with <= 2 partitions),
  and a layer's candidates are made per (label, tier) pair and then repeated
  over the next blocks (few fancy-index gathers).

Algorithm (``exact`` estimator): E_k depends on every earlier exit, so the
states do not telescope. Cut sequences are enumerated level by level; the
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

Ties and tolerances: see :mod:`earlyexit.planner._select`.

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
from itertools import permutations

import numpy as np

from earlyexit.planner._select import ACC_ATOL, LAT_ATOL, OBJECTIVES, pareto_select, select_best
from earlyexit.planner.latency import CostModel
from earlyexit.planner.space import SearchSpace

__all__ = ["Candidate", "search"]

_CHUNK = 1 << 20
_SLACK = 1e-12
_SMALL = 4_000_000  # elements of the one-shot backward pass
_SMALL_PLAT = 200_000  # P_lat below this many (transition, threshold, tier) triples: one multiplier


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


class _Labels:
    """Columns of a set of labels (partial configurations)."""

    __slots__ = ("t", "c", "w", "u", "lat", "acc", "dcode", "pcode")

    def __init__(self, t, c, w, u, lat, acc, dcode, pcode):  # noqa: ANN001
        self.t, self.c, self.w, self.u = t, c, w, u
        self.lat, self.acc, self.dcode, self.pcode = lat, acc, dcode, pcode

    def __len__(self) -> int:
        return int(self.lat.size)

    def take(self, idx: np.ndarray) -> _Labels:
        return _Labels(*(getattr(self, s)[idx] for s in self.__slots__))

    @staticmethod
    def concat(parts: list[_Labels]) -> _Labels:
        return _Labels(*(np.concatenate([getattr(p, s) for p in parts]) for s in _Labels.__slots__))


class _LazyKeys:
    """Tie keys decoded on demand from the packed codes."""

    def __init__(self, n_parts, dcode, pcode, t, m, n, thresholds):  # noqa: ANN001
        self.n_parts, self.dcode, self.pcode, self.t = n_parts, dcode, pcode, t
        self.m, self.n, self.thresholds = m, n, thresholds

    def __getitem__(self, i: int) -> tuple:
        n_parts = int(self.n_parts[i])
        return (
            n_parts,
            _decode(int(self.dcode[i]), self.m, n_parts),
            _decode(int(self.pcode[i]), self.n + 1, n_parts),
            float(self.thresholds[self.t[i]]),
        )


def _decode(code: int, base: int, length: int) -> tuple[int, ...]:
    out = []
    for _ in range(length):
        code, digit = divmod(code, base)
        out.append(digit)
    return tuple(reversed(out))


class _PortendSearch:
    """The label DP for the portend estimator (see the module docstring)."""

    def __init__(
        self,
        cm: CostModel,
        space: SearchSpace,
        objective: str = "pareto",
        bound: float | None = None,
        n_lambdas: int = 6,
    ) -> None:
        self.cm, self.space = cm, space
        n, m = cm.n, cm.m
        self.n, self.m = n, m
        if float(n + 1) ** space.max_parts >= 2.0**62 or float(m) ** space.max_parts >= 2.0**62:
            raise ValueError(
                f"search space too large to encode ({n} blocks, {space.max_parts} partitions)"
            )
        self.er = cm.er[space.t_idx]  # (nt, N+1)
        self.nt = self.er.shape[0]
        self.a = cm.acc
        self.ct, self.x, self.r = cm.ct, cm.x, cm.r
        b = np.arange(n + 1)[:, None]
        c = np.arange(n + 1)[None, :]
        valid = (c > b) & (c <= space.next_required[:, None]) & space.cut_allowed[None, :]
        self.valid = valid
        self.cnt = valid.sum(1)
        self.start = np.concatenate([[0], np.cumsum(self.cnt)[:-1]])
        self.allc = np.nonzero(valid)[1]
        self.lmax = space.max_parts
        self.tier_pen = np.where(space.tier_allowed.any(0), 0.0, np.inf)  # (M,)
        self.ctm = np.where(
            (valid & space.end_ok[None, :])[None], self.ct, np.inf
        )  # (M, c, d): may end at d
        # lambda grid (units: seconds per unit of accuracy)
        full = [cm.x[cm.source, w, 0] + cm.ct[w, 0, n] + cm.r[w] for w in range(m)]
        scale = float(min(full)) / max(float(np.ptp(cm.acc[1:])), 1e-3)
        self.scale = scale
        self.skip0 = False
        grid = scale * np.logspace(-2, 1.5, n_lambdas - 1) if n_lambdas > 1 else np.zeros(0)
        if objective == "min_latency":
            self._tables()
            # P_lat: the multiplier that is best for the problem restricted to <= 2 partitions;
            # on large problems (where the bound pass is cheap next to the labels) the grid too
            lam = None if bound is None or self.lmax < 3 else self._pick_lambda(bound)
            lams = [0.0] if lam is None else [0.0, lam]
            if self.allc.size * self.nt * m > _SMALL_PLAT and bound is not None:
                lams += grid.tolist()
            self.lams = np.array(lams)
            self.skip0 = len(lams) == 2
        else:
            self.lams = np.concatenate([[0.0], grid])
        self._backward()

    def _h1_parts(self, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Relaxed bound with at most one more partition, before the factor (1 - ER_c).

        With one partition left the edge and end terms sum to (1 - ER_c) [x(w -> w', O_c)
        + CT^{w'}_{c+1..d} + r(w') - lambda A_d] (ending at c: (1 - ER_c) [r(w) - lambda A_c]),
        so the minimum over d is a threshold-free table; no (c, d) pass per threshold.

        Returns:
            (best, pen), both ``(c, lambda, w)``: the bound is ``(1 - ER_c) best + pen`` with
            ``best`` finite and ``pen`` 0 or inf (no completion; 0 * inf would be nan).
        """
        m = self.m
        rr = (self.ctm[None] - lams[:, None, None, None] * self.a).min(-1)  # (l, w', c)
        rr = (rr + (self.r + self.tier_pen)[None, :, None]).transpose(2, 0, 1)  # (c, l, w')
        end = self.r[None, None, :] - lams[None, :, None] * self.a[:, None, None]  # (c, l, w)
        best = np.where(self.space.end_ok[:, None, None], end, np.inf)
        for w in range(m):
            for w2 in range(m):
                if w2 != w:
                    np.minimum(
                        best[:, :, w], self.x[w, w2][:, None] + rr[:, :, w2], out=best[:, :, w]
                    )
        fin = np.isfinite(best)
        return np.where(fin, best, 0.0), np.where(fin, 0.0, np.inf)

    def _h1(self, lams: np.ndarray) -> np.ndarray:
        """:meth:`_h1_parts` times (1 - ER_c) >= 0, ``(c, lambda, t, w)``."""
        best, pen = self._h1_parts(lams)
        mc = (1.0 - self.er).T  # (c, t)
        return mc[:, None, :, None] * best[:, :, None, :] + pen[:, :, None, :]

    def _pick_lambda(self, bound: float) -> float | None:
        """The multiplier maximizing the Lagrangian dual of P_lat restricted to <= 2 partitions.

        Any lambda >= 0 gives valid bounds; this one makes them tight near the optimum.
        """
        src, er, a, m = self.cm.source, self.er, self.a, self.m
        f4 = np.float32  # a heuristic: single precision is plenty (any lambda >= 0 is valid)
        grid = (self.scale * np.logspace(-2.5, 2.0, 10)).astype(f4)
        # one more partition after block b on tier u, ignoring (1 - ER_b): (g, b, u)
        rr = (self.ctm.astype(f4)[None] - grid[:, None, None, None] * a.astype(f4)).min(
            -1
        )  # (g, w', c)
        rr += (self.r + self.tier_pen).astype(f4)[None, :, None]
        best = np.where(
            self.space.end_ok[None, :, None],
            self.r.astype(f4)[None, None, :] - grid[:, None, None] * a.astype(f4)[None, :, None],
            np.inf,
        ).astype(f4)  # (g, b, u): end at b
        xf = self.x.astype(f4)
        for w in range(m):
            for w2 in range(m):
                if w2 != w:
                    np.minimum(best[:, :, w], xf[w, w2][None, :] + rr[:, w2, :], out=best[:, :, w])
        lat1 = (self.x[src, :, 0] + self.ct[:, 0, :].T)[:, None, :] + er.T[
            :, :, None
        ] * self.r  # (b, t, u)
        ok = self.valid[0][:, None, None] & self.space.tier_allowed[0][None, None, :]
        lat1 = np.where(ok, lat1, np.inf).astype(f4)
        mc = (1.0 - er).T.astype(f4)[None, :, :, None]  # (1, b, t, 1)
        acc1 = (a[:, None] * er.T).astype(f4)[None, :, :, None]
        with np.errstate(invalid="ignore"):  # 0 * inf: no completion, nan, skipped by fmin
            val = (
                lat1[None] + mc * best[:, :, None, :] - grid[:, None, None, None] * acc1
            )  # (g, b, t, u)
        dual = np.fmin.reduce(val.reshape(grid.size, -1), axis=1) + grid * f4(bound)
        if not np.isfinite(dual).any():
            return None
        return float(grid[int(np.argmax(np.where(np.isfinite(dual), dual, -np.inf)))])

    # ------------------------------------------------------------------ bounds

    def _backward(self) -> None:
        """H[l, t, r, c, w] = min over relaxed completions with <= r more partitions of
        latency - lams[l] * accuracy; aub[t, r, c] = max accuracy of those completions."""
        n, nt, m = self.n, self.nt, self.m
        if self.lams.size * nt * (n + 1) ** 2 * m <= _SMALL:
            self._backward_small()
        else:
            self._backward_sweep()

    def _backward_small(self) -> None:
        """:meth:`_backward` for small problems: every transition (c -> c') at once, one round per r.

        The transitions are packed row by row (by c), so a minimum over c' is a
        ``reduceat`` over the leading axis; arrays are ``(pair, lambda, t, w)``.
        """
        sp, n, m, nt = self.space, self.n, self.m, self.nt
        lams = self.lams
        nl, rn = lams.size, self.lmax
        er, a, ct, x, r = self.er, self.a, self.ct, self.x, self.r
        mc = (1.0 - er).T  # (c, t)
        enda = a[:, None] * mc  # (c, t)
        # bounds are laid out (w, c, l, t) here, so that every per-tier slice is contiguous
        h0 = (
            mc[None, :, None, :] * r[:, None, None, None]
            - lams[None, None, :, None] * enda[None, :, None, :]
        )
        h0[:, ~sp.end_ok] = np.inf
        aub0 = np.where(sp.end_ok[:, None], enda, -np.inf)  # (c, t)
        hs, aubs = [h0], [aub0]
        rows = np.flatnonzero(self.cnt)  # blocks c with a transition
        if rn > 1 and rows.size:
            pc = np.repeat(np.arange(n + 1), self.cnt)  # (P,) from c
            pn = self.allc  # (P,) to c'
            heads = self.start[rows]
            ert = er.T
            der = ert[pn] - ert[pc]  # (P, t)
            acc_e = a[pn, None] * der  # (P, t)

            def amax(prev: np.ndarray) -> np.ndarray:
                out = aub0.copy()
                out[rows] = np.maximum(
                    aub0[rows], np.maximum.reduceat(acc_e + prev[pn], heads, axis=0)
                )
                return out

            # one partition left: a threshold-free table, no pair pass
            hs.append(np.minimum(h0, self._h1(lams).transpose(3, 0, 1, 2)))
            aubs.append(amax(aub0))
        if rn > 2 and rows.size:
            # per tier w, (pair, l, t): (1 - ER_c) CT^w_{c+1..c'} + (ER_c' - ER_c)(r(w) - lambda A_c') + next
            mct = mc[pc][None] * ct[:, pc, pn][:, :, None]  # (w, P, t)
            kk = r[:, None, None] - lams[None, :, None] * a[pn][None, None, :]  # (w, l, P)
            hop = mc[None, None] * x.transpose(0, 1, 2)[..., None]  # (w, w', c, t)
            live = np.flatnonzero(np.isfinite(self.tier_pen))
            # P_lat with [0, lambda]: two or more partitions left, the lambda = 0 bound is not
            # computed (-inf: no information), the multiplier's does the pruning
            l0 = 1 if self.skip0 else 0
            for _ in range(2, rn):
                prev = hs[-1]
                g = np.full((m, n + 1, nl, nt), np.inf)
                for w in live:
                    tot = np.multiply(der[:, None, :], kk[w][l0:].T[:, :, None])
                    tot += mct[w][:, None, :]
                    tot += prev[w][pn, l0:]
                    g[w, rows, l0:] = np.minimum.reduceat(tot, heads, axis=0)
                    g[w, rows, :l0] = -np.inf
                best = np.full(g.shape, np.inf)
                for w in range(m):
                    for w2 in live:
                        if w2 != w:
                            np.minimum(best[w], hop[w, w2][:, None, :] + g[w2], out=best[w])
                hs.append(np.minimum(h0, best))
                aubs.append(amax(aubs[-1]))
        while len(hs) < rn:  # no transition anywhere: only ending
            hs.append(h0)
            aubs.append(aub0)
        self.h = np.ascontiguousarray(np.stack(hs).transpose(3, 4, 0, 2, 1))  # (l, t, r, c, w)
        self.aub = np.ascontiguousarray(np.stack(aubs).transpose(2, 0, 1))  # (t, r, c)

    def _backward_sweep(self) -> None:
        """:meth:`_backward` for large problems: one block c at a time, from the last."""
        sp, n, m, nt = self.space, self.n, self.m, self.nt
        lams = self.lams
        nl, rn = lams.size, self.lmax
        er, a, ct, x, r = self.er, self.a, self.ct, self.x, self.r
        endl = (1.0 - er)[:, :, None] * r[None, None, :]  # (nt, N+1, M)
        enda = a[None, :] * (1.0 - er)  # (nt, N+1)
        h0 = endl[None] - lams[:, None, None, None] * enda[None, :, :, None]
        h0[:, :, ~sp.end_ok, :] = np.inf
        aub0 = np.where(sp.end_ok[None, :], enda, -np.inf)
        h = np.full((nl, nt, rn, n + 1, m), np.inf)
        aub = np.full((nt, rn, n + 1), -np.inf)
        h[:, :, 0] = h0
        aub[:, 0] = aub0
        union = sp.tier_allowed.any(0)
        tier_pen = np.where(union, 0.0, np.inf)  # (M,) over w'
        diag = np.where(np.eye(m, dtype=bool), np.inf, 0.0)
        for c in range(n, 0, -1):
            cs = self.allc[self.start[c] : self.start[c] + self.cnt[c]]
            if cs.size and cs[-1] - cs[0] + 1 == cs.size:
                cs = slice(int(cs[0]), int(cs[-1]) + 1)  # contiguous: views instead of copies
            if rn == 1 or (isinstance(cs, np.ndarray) and cs.size == 0):
                h[:, :, 1:, c, :] = h0[:, :, None, c, :]
                aub[:, 1:, c] = aub0[:, c][:, None]
                continue
            mc = 1.0 - er[:, c]  # (nt,)
            der = er[:, cs] - er[:, c][:, None]  # (nt, q)
            base = (
                mc[:, None, None] * ct[:, c, cs].T[None] + der[:, :, None] * r[None, None, :]
            )  # (nt,q,M)
            lam_t = lams[:, None, None] * (a[cs][None, :] * der)[None]  # (nl, nt, q)
            tot = (
                base[None, :, None] - lam_t[:, :, None, :, None] + h[:, :, : rn - 1][:, :, :, cs, :]
            )
            g = tot.min(axis=3) + tier_pen  # (nl, nt, rn-1, M[w'])
            hop = mc[:, None, None] * x[:, :, c][None] + diag[None]  # (nt, M[w], M[w'])
            best = (hop[None, :, None] + g[:, :, :, None, :]).min(-1)  # (nl, nt, rn-1, M[w])
            h[:, :, 1:, c, :] = np.minimum(h0[:, :, None, c, :], best)
            acc_e = a[cs][None, :] * der  # (nt, q)
            cont = (acc_e[:, None, :] + aub[:, : rn - 1][:, :, cs]).max(-1)  # (nt, rn-1)
            aub[:, 1:, c] = np.maximum(aub0[:, c][:, None], cont)
        self.h, self.aub = h, aub

    def _tables(self) -> None:
        """q1[w, c, j]: the least CT^w of blocks c+1..d over the blocks d that may end a
        configuration after block c and whose accuracy is at least the (j+1)-th largest."""
        order = np.argsort(-self.a[1:], kind="stable") + 1
        self.asc = np.sort(self.a[1:])
        self.q1 = np.minimum.accumulate(self.ctm[:, :, order], axis=2)

    def _complete1(
        self,
        t: np.ndarray,
        c: np.ndarray,
        w: np.ndarray,
        u: np.ndarray,
        acc: np.ndarray,
        k: int,
        bound: float | None,
        strict: bool,
    ) -> np.ndarray:
        """The exact best completion of labels (with k partitions) by at most one more partition.

        Ending at c costs (1 - ER_c) r(w); one more partition d on tier w' costs
        (1 - ER_c) [x(w -> w', O_c) + CT^{w'}_{c+1..d} + r(w')] and adds accuracy
        A_d (1 - ER_c) (the edge and end terms of the DP, summed), so the fastest
        one meeting the accuracy bound is a lookup in :attr:`q1`.

        Returns:
            The least added latency (inf if none) over the completions whose accuracy
            reaches the bound loosely (``strict=False``: a lower bound, for pruning) or
            strictly (``strict=True``: values of real feasible configurations whatever
            the rounding, for the incumbent).
        """
        sp, n = self.space, self.n
        s = 1.0 - self.er[t, c]
        best = np.full(t.size, np.inf)
        slack = 2.0 * _SLACK if strict else -2.0 * _SLACK
        need = None if bound is None else bound - ACC_ATOL - acc + slack
        if k >= sp.min_parts:  # end now
            end = np.where(sp.end_ok[c], s * self.r[w], np.inf)
            best = end.copy() if need is None else np.where(self.a[c] * s >= need, end, np.inf)
        if sp.min_parts <= k + 1 <= self.lmax:
            if need is None:
                j = np.full(t.size, n - 1)
            else:
                pos = s > 0
                thr = np.where(
                    pos, need / np.where(pos, s, 1.0), np.where(need <= 0, -np.inf, np.inf)
                )
                j = n - 1 - np.searchsorted(self.asc, thr)  # accuracies >= thr: the j+1 largest
            jj = np.maximum(j, 0)
            has = j >= 0
            for w2 in range(self.m):
                if not sp.tier_allowed[k, w2]:
                    continue
                q = self.q1[w2, c, jj]
                ok = has & np.isfinite(q) & (((u >> w2) & 1) == 0)
                val = s * (self.x[w, w2, c] + np.where(ok, q, 0.0) + self.r[w2])
                np.minimum(best, np.where(ok, val, np.inf), out=best)
        return best

    def _keep(
        self,
        t: np.ndarray,
        c: np.ndarray,
        w: np.ndarray,
        u: np.ndarray,
        lat: np.ndarray,
        acc: np.ndarray,
        r: int,
        objective: str,
        bound: float | None,
        col: _Collector,
        update: bool = True,
    ) -> np.ndarray:
        """Mask of labels that may still lead to (a tie of) the answer.

        For ``min_latency``, the exact one-partition completion also lowers the
        incumbent ``col.inc`` (if ``update``; it is the latency of a real feasible
        configuration), and with one partition left it is the bound itself.
        """
        inc, front = col.inc, col.front
        k = self.lmax - r
        if objective == "min_latency" and update and r >= 2 and t.size:
            # more partitions may follow: the exact <= 1-partition completions only lower the incumbent
            st = self._complete1(t, c, w, u, acc, k, bound, strict=True)
            v = float((lat + st).min())
            if v < inc:
                col.inc = inc = v
        hh = self.h[:, t, r, c, w]  # (nl, n)
        aub = self.aub[t, r, c]
        keep = hh[-1] < np.inf  # inf: no completion at all
        if objective == "min_latency":
            if bound is not None:
                keep &= acc + aub >= bound - ACC_ATOL - _SLACK
                need = bound - ACC_ATOL - _SLACK - acc  # a feasible completion adds at least this
                lb = (hh + self.lams[:, None] * need[None]).max(0)
            else:
                lb = hh[0]
            keep &= lat + lb <= inc + LAT_ATOL + _SLACK * (1 + abs(inc) if np.isfinite(inc) else 1)
            if r == 1 and keep.any():
                # one partition left: the exact best completion is the bound (and an incumbent)
                idx = np.flatnonzero(keep)
                ti, ci, wi, ui, li, ai = t[idx], c[idx], w[idx], u[idx], lat[idx], acc[idx]
                tot = li + self._complete1(ti, ci, wi, ui, ai, k, bound, strict=False)
                if update:
                    b = np.flatnonzero(tot < inc)
                    if b.size:
                        st = self._complete1(
                            ti[b], ci[b], wi[b], ui[b], ai[b], k, bound, strict=True
                        )
                        v = float((li[b] + st).min())
                        if v < inc:
                            col.inc = inc = v
                keep[idx] = tot <= inc + LAT_ATOL + _SLACK * (
                    1 + abs(inc) if np.isfinite(inc) else 1
                )
        elif objective == "max_accuracy":
            ub = aub
            if bound is not None:
                room = bound - lat
                keep &= hh[0] <= room + LAT_ATOL + _SLACK
                if self.lams.size > 1:
                    lam = self.lams[1:, None]
                    ub = np.minimum(ub, ((room[None] - hh[1:]) / lam).min(0))
            keep &= acc + ub >= inc - ACC_ATOL - _SLACK
        else:  # pareto: the ideal completion must not be beaten by a point found already
            if front is not None and front[0].size:
                fl, pm_acc, _ = front
                il, ia = lat + hh[0], acc + aub
                i1 = np.searchsorted(fl, il - LAT_ATOL - _SLACK, side="left") - 1
                beaten = (i1 >= 0) & (pm_acc[np.maximum(i1, 0)] >= ia - ACC_ATOL + _SLACK)
                i2 = np.searchsorted(fl, il + LAT_ATOL - _SLACK, side="right") - 1
                beaten |= (i2 >= 0) & (pm_acc[np.maximum(i2, 0)] > ia + ACC_ATOL + _SLACK)
                keep &= ~beaten
        return keep

    # ------------------------------------------------------------------ forward

    def _expand(
        self, lab: _Labels, k: int, objective: str, bound: float | None, col: _Collector
    ) -> _Labels:
        """All labels with partition k added (1-based k), bound-pruned."""
        sp, m, n = self.space, self.m, self.n
        er, a, ct, x, r = self.er, self.a, self.ct, self.x, self.r
        rem = self.lmax - k
        out: list[_Labels] = []
        # every (label, tier) pair the next partition may use, then every next block
        free = (((lab.u[:, None] >> np.arange(m)[None, :]) & 1) == 0) & sp.tier_allowed[k - 1][
            None, :
        ]
        pi, pw = np.nonzero(free)
        cnt = self.cnt[lab.c[pi]]
        csum = np.cumsum(cnt)
        lo = 0
        while lo < pi.size:
            base_tot = csum[lo - 1] if lo else 0
            hi = max(int(np.searchsorted(csum, base_tot + _CHUNK, side="right")), lo + 1)
            cc = cnt[lo:hi]
            tot = int(csum[hi - 1] - base_tot)
            pp = np.arange(lo, hi)
            lo = hi
            if tot == 0:
                continue
            # per (label, tier) pair first, then repeated over its next blocks
            li, wp = pi[pp], pw[pp]
            bp, tp = lab.c[li], lab.t[li]
            erp = er[tp, bp]
            mbp = 1.0 - erp
            base = lab.lat[li] + mbp * x[lab.w[li], wp, bp]
            rep = np.repeat(li, cc)
            w = np.repeat(wp, cc)
            b = np.repeat(bp, cc)
            t = np.repeat(tp, cc)
            c = self.allc[np.repeat(self.start[bp] - (np.cumsum(cc) - cc), cc) + np.arange(tot)]
            erc = er[t, c]
            dec = erc - np.repeat(erp, cc)
            lat = np.repeat(base, cc) + np.repeat(mbp, cc) * ct[w, b, c] + dec * r[w]
            acc = np.repeat(lab.acc[li], cc) + a[c] * dec
            uu = np.repeat(lab.u[li] | (1 << wp), cc)
            keep = self._keep(t, c, w, uu, lat, acc, rem, objective, bound, col)
            if not keep.any():
                continue
            sel = rep[keep]
            wk, ck = w[keep], c[keep]
            out.append(
                _Labels(
                    t[keep],
                    ck,
                    wk,
                    uu[keep],
                    lat[keep],
                    acc[keep],
                    lab.dcode[sel] * m + wk,
                    lab.pcode[sel] * (n + 1) + ck,
                )
            )
        if not out:
            return _empty()
        return _Labels.concat(out) if len(out) > 1 else out[0]

    def _dominance(self, lab: _Labels) -> _Labels:
        """Drop labels dominated at the same (threshold, block, tier, tier set)."""
        if len(lab) < 2:
            return lab
        m = self.m
        gid = ((lab.t * (self.n + 1) + lab.c) * m + lab.w) * (1 << m) + lab.u
        order = np.lexsort((lab.pcode, lab.dcode, -lab.acc, lab.lat, gid))
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
            smaller = (dc[:-s] < dc[s:]) | ((dc[:-s] == dc[s:]) & (pc[:-s] < pc[s:]))
            dom[s:] |= same & (sa[:-s] >= sa[s:]) & (sl[:-s] <= sl[s:]) & smaller
        return lab.take(order[~dom])

    def run(self, objective: str, bound: float | None) -> tuple[_Labels, np.ndarray]:
        """Run the DP; return the final candidates (and their number of partitions)."""
        sp, nt = self.space, self.nt
        lab = _Labels(
            np.arange(nt),
            np.zeros(nt, np.int64),
            np.full(nt, self.cm.source, np.int64),
            np.zeros(nt, np.int64),
            np.zeros(nt),
            np.zeros(nt),
            np.zeros(nt, np.int64),
            np.zeros(nt, np.int64),
        )
        col = _Collector(objective, bound)
        self.stats = []
        if objective == "min_latency":
            st = self._complete1(lab.t, lab.c, lab.w, lab.u, lab.acc, 0, bound, strict=True)
            col.inc = float(st.min())  # the best single-partition configuration
        for k in range(1, self.lmax + 1):
            cand = self._expand(lab, k, objective, bound, col)
            if k > 1:  # from the root every (threshold, block, tier) is reached once
                cand = self._dominance(cand)
            self.stats.append(len(cand))
            if k >= sp.min_parts and len(cand):
                fin = cand.take(np.flatnonzero(sp.end_ok[cand.c]))
                if len(fin):
                    erc = self.er[fin.t, fin.c]
                    fin.lat = fin.lat + (1.0 - erc) * self.r[fin.w]
                    fin.acc = fin.acc + self.a[fin.c] * (1.0 - erc)
                    col.add(fin, k)
            if k < self.lmax and len(cand):
                keep = self._keep(
                    cand.t,
                    cand.c,
                    cand.w,
                    cand.u,
                    cand.lat,
                    cand.acc,
                    self.lmax - k,
                    objective,
                    bound,
                    col,
                    update=False,
                )
                lab = cand.take(np.flatnonzero(keep))
            else:
                break
            if len(lab) == 0:
                break
        return col.result()


class _Collector:
    """Collects final candidates, keeping only those that may be (a tie of) the answer."""

    def __init__(self, objective: str, bound: float | None) -> None:
        self.objective, self.bound = objective, bound
        self.inc = np.inf if objective == "min_latency" else -np.inf
        self.front: tuple | None = None
        self.parts: list[_Labels] = []
        self.nparts: list[np.ndarray] = []

    def add(self, fin: _Labels, nparts: int | np.ndarray) -> None:
        obj, bound = self.objective, self.bound
        n = len(fin)
        if obj == "min_latency":
            ok = fin.acc >= bound - ACC_ATOL if bound is not None else np.ones(n, bool)
            if ok.any():
                self.inc = min(self.inc, float(fin.lat[ok].min()))
            ok &= fin.lat <= self.inc + LAT_ATOL + _SLACK * (1 + abs(self.inc))
        elif obj == "max_accuracy":
            ok = fin.lat <= bound + LAT_ATOL if bound is not None else np.ones(n, bool)
            if ok.any():
                self.inc = max(self.inc, float(fin.acc[ok].max()))
            ok &= fin.acc >= self.inc - ACC_ATOL - _SLACK
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
        allf = _Labels.concat(self.parts)
        nparts = np.concatenate(self.nparts)
        if self.objective == "pareto":
            # keep the points no other point beats beyond tolerance (ties included)
            o = np.lexsort((-allf.acc, allf.lat))
            sl, sa = allf.lat[o], allf.acc[o]
            pm = np.maximum.accumulate(sa)
            i1 = np.searchsorted(sl, sl - LAT_ATOL, side="left") - 1
            beaten = (i1 >= 0) & (pm[np.maximum(i1, 0)] >= sa - ACC_ATOL)
            i2 = np.searchsorted(sl, sl + LAT_ATOL, side="right") - 1
            beaten |= pm[i2] > sa + ACC_ATOL
            keep = o[~beaten]
            allf, nparts = allf.take(keep), nparts[keep]
            o = np.argsort(allf.lat, kind="stable")
            self.front = (allf.lat[o], np.maximum.accumulate(allf.acc[o]), o)
        elif self.objective == "min_latency":
            keep = np.flatnonzero(allf.lat <= self.inc + LAT_ATOL + _SLACK * (1 + abs(self.inc)))
            allf, nparts = allf.take(keep), nparts[keep]
        else:
            keep = np.flatnonzero(allf.acc >= self.inc - ACC_ATOL - _SLACK)
            allf, nparts = allf.take(keep), nparts[keep]
        self.parts, self.nparts = [allf], [nparts]

    def result(self) -> tuple[_Labels, np.ndarray]:
        if not self.parts:
            return _empty(), np.zeros(0, np.int64)
        self._compact()
        return self.parts[0], self.nparts[0]


def _empty() -> _Labels:
    z = np.zeros(0, np.int64)
    return _Labels(z, z, z, z, np.zeros(0), np.zeros(0), z, z)


# ---------------------------------------------------------------------- exact estimator


def _exact_candidates(
    cm: CostModel, space: SearchSpace, objective: str, bound: float | None
) -> tuple[_Labels, np.ndarray]:
    """Every cut sequence with its fastest placements, for the exact estimator.

    Placements of one cut sequence share E_k, S_k and the accuracy, so only the
    fastest (and its exact ties) can matter for any objective.
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
    col = _Collector(objective, bound)
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
                    lab = _place(cm, child_seqs[fin], e_all, acc, placements[level], ti_pos)
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
    cm: CostModel, seqs: np.ndarray, e: np.ndarray, acc: np.ndarray, places: np.ndarray, ti_pos: int
) -> _Labels:
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
    m, n = cm.m, cm.n
    dcode = np.zeros(pi.size, np.int64)
    pcode = np.zeros(pi.size, np.int64)
    for k in range(L):
        dcode = dcode * m + d[di, k]
        pcode = pcode * (n + 1) + seqs[pi, k]
    lab = _Labels(
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


# ---------------------------------------------------------------------- entry point


def search(
    cm: CostModel, space: SearchSpace, estimator: str, objective: str, bound: float | None
) -> list[Candidate]:
    """Solve P_lat (``"min_latency"``), P_acc (``"max_accuracy"``) or the frontier (``"pareto"``).

    Args:
        cm: the cost model of the profile and topology.
        space: the search space (:func:`~earlyexit.planner.space.make_space`).
        estimator: ``"portend"`` or ``"exact"``.
        objective: ``"min_latency"``, ``"max_accuracy"`` or ``"pareto"``.
        bound: the accuracy lower bound (P_lat) or latency upper bound (P_acc).

    Returns:
        ``[best]`` (empty if infeasible) or the frontier sorted by latency.

    Raises:
        ValueError: unknown objective or estimator.
    """
    if objective not in (*OBJECTIVES, "pareto"):
        raise ValueError(f"objective: expected one of {[*OBJECTIVES, 'pareto']}, got {objective!r}")
    if estimator == "portend":
        fin, nparts = _PortendSearch(cm, space, objective, bound).run(objective, bound)
    elif estimator == "exact":
        fin, nparts = _exact_candidates(cm, space, objective, bound)
    else:
        raise ValueError(f"estimator: expected 'portend' or 'exact', got {estimator!r}")
    thr_sorted = cm.thresholds[space.t_idx]
    keys = _LazyKeys(nparts, fin.dcode, fin.pcode, fin.t, cm.m, cm.n, thr_sorted)
    if objective == "pareto":
        idx = pareto_select(fin.lat, fin.acc, keys)
    else:
        best = select_best(fin.lat, fin.acc, keys, objective, bound)
        idx = [] if best is None else [best]
    out = []
    for i in idx:
        key = keys[i]
        out.append(
            Candidate(
                latency=float(fin.lat[i]),
                accuracy=float(fin.acc[i]),
                threshold_index=int(space.t_idx[fin.t[i]]),
                threshold=key[3],
                cuts=key[2],
                tiers=key[1],
            )
        )
    return out
