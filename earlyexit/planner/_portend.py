"""The search for the ``portend`` estimator: a Pareto-label dynamic program.

Kept whole (about 430 lines): one algorithm's forward pass, whose methods share one
search's state; its bound tables are apart in :mod:`earlyexit.planner._portend_bounds`.

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

What keeps fine granularity (N up to 1000 blocks, M up to 8 tiers) tractable:

- Large P_lat problems (``ACC_GRID_MIN`` or more (transition, threshold) pairs)
  add the accuracy-grid bound of :meth:`PortendBounds._acc_grid`: the least
  latency of a completion that reaches the accuracy a label still needs, exact
  in the accuracy up to a grid whose needs are always rounded down, relaxed in
  the tiers. It closes the duality gap of the multipliers where the accuracy
  bound bites (end now: cheap but not accurate enough; carry on: accurate but
  slow), which left millions of labels alive at N=500, M=8; there it replaces
  the grid of multipliers that smaller problems used to narrow that gap.
- A label at a block from which ER is exactly 1 at every later block (nobody
  is left) is not extended when it may end there: every extension adds exactly
  0 to both objectives and a partition to the tie key, so its own ending,
  collected at that layer, beats them all.
- Cut points are packed in several int64 words (:class:`~earlyexit.planner._labels.CutCodes`),
  so the tie key encodes any N and L.
- The first layer is filtered after its own exact one-partition completions
  have lowered the incumbent (to the best configuration with <= 2 partitions),
  and a layer's candidates are made per (label, tier) pair and then repeated
  over the next blocks (few fancy-index gathers).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np

from earlyexit.planner._labels import SLACK as _SLACK
from earlyexit.planner._labels import Collector, CutCodes, Labels, dominance_filter, empty_labels
from earlyexit.planner._portend_bounds import PortendBounds
from earlyexit.planner._select import ACC_ATOL, LAT_ATOL
from earlyexit.planner.latency import CostModel
from earlyexit.planner.space import SearchSpace

__all__ = ["ACC_GRID_MIN", "PROBE_SIZE", "PortendSearch"]

Probe = Callable[[list[tuple[int, tuple[int, ...], tuple[int, ...]]], bool], float]
"""Configurations as (threshold position, tiers, cut points), and whether they complete
the last layer's labels (no bar yet) -> the least true value."""
Ident = Callable[[int], tuple[tuple[int, ...], tuple[int, ...]]]
PROBE_SIZE = 4  # completions handed to a probe at a time

_CHUNK = 1 << 20
_SMALL_LISTING = 5_000  # (transition, threshold) pairs: the listing under load without multiplier
_SMALL_PLAT = 200_000  # P_lat below this many (transition, threshold, tier) triples: one multiplier
ACC_GRID_MIN = (
    100_000  # P_lat from this many (transition, threshold) pairs: the accuracy grid bound
)


class PortendSearch(PortendBounds):
    """The label DP for the portend estimator (see the module docstring)."""

    def __init__(
        self,
        cm: CostModel,
        space: SearchSpace,
        objective: str = "pareto",
        bound: float | None = None,
        n_lambdas: int = 6,
        codes: CutCodes | None = None,
        extra: Sequence[np.ndarray | None] | None = None,
        fixed_inc: float | None = None,
        probe: Probe | None = None,
    ) -> None:
        self.cm, self.space = cm, space
        # extra: three (nt, M, N+1, N+1) tables >= 0 (the queueing bound of planning under
        # load): an edge (b, v) -> (c, w) adds (1 - ER_b) extra[0][t, w, b, c], and
        # (1 - ER_b) times extra[1] (the partition is followed by another) or extra[2] (it
        # is the last) once that is known (None: 0). The one-partition completions add
        # extra[0] (q1x), the other bounds ignore the tables, so they stay lower bounds;
        # with extra[1] and extra[2] None those completions are real configurations'
        # values, incumbents as without the tables.
        # fixed_inc: keep every final label with latency <= it (no dominance, no incumbent
        # lowering): the enumeration of the configurations that may beat it.
        # probe (with fixed_inc): a bar that falls as the search goes: the labels' best
        # completions by at most one more partition (the strict ones of _complete1, real
        # configurations meeting the bound), a few at a time, are handed to it, and it
        # returns the least value that one of them truly has (e.g. under load; >= its
        # value here; inf: none), which becomes the bar if lower.
        self.extra, self.fixed_inc, self.probe = extra, fixed_inc, probe
        n, m = cm.n, cm.m
        self.n, self.m = n, m
        self.codes = codes if codes is not None else CutCodes(n, m, space.max_parts)
        self.er = cm.er[space.t_idx]  # (nt, N+1)
        self.nt = self.er.shape[0]
        # tail1[t, c]: ER is exactly 1 at c and at every later block (nobody is left)
        self.tail1 = np.logical_and.accumulate(self.er[:, ::-1] == 1.0, axis=1)[:, ::-1]
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
        self.gtab: np.ndarray | None = None
        grid = scale * np.logspace(-2, 1.5, n_lambdas - 1) if n_lambdas > 1 else np.zeros(0)
        if objective == "min_latency":
            self._tables()
            # P_lat: the multiplier that is best for the problem restricted to <= 2 partitions;
            # on large problems (where the bound pass is cheap next to the labels) the grid too
            # (the listing under load of a small problem: the bar prunes, the multiplier's
            # pass would cost more than the labels it saves)
            small_listing = extra is not None and self.allc.size * self.nt < _SMALL_LISTING
            skip_lam = bound is None or self.lmax < 3 or small_listing
            lam = None if skip_lam else self._pick_lambda(bound)
            lams = [0.0] if lam is None else [0.0, lam]
            if bound is not None and bound >= 1e-6 and self.allc.size * self.nt >= ACC_GRID_MIN:
                # large problems: the accuracy grid closes most of the duality gap that the
                # grid of multipliers narrowed, at a fraction of its cost
                self._acc_grid(bound)
            elif self.allc.size * self.nt * m > _SMALL_PLAT and bound is not None:
                lams += grid.tolist()
            self.lams = np.array(lams)
            self.skip0 = len(lams) == 2
        else:
            self.lams = np.concatenate([[0.0], grid])
        self._backward()

    def unloaded(self) -> PortendSearch:
        """This search without the load (extra tables, bar, probe), sharing its bound
        tables, which do not depend on them: today's search of the same problem (same
        cost model, objective and bound), without building them again."""
        out = copy.copy(self)
        out.extra = out.fixed_inc = out.probe = None
        out.q1x = out.q1xf = None
        return out

    @property
    def exact_inc(self) -> bool:
        """The one-partition completions are real configurations' values (incumbents)."""
        extra = self.extra
        return self.fixed_inc is None and (extra is None or extra[1] is extra[2] is None)

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
        col: Collector,
        update: bool = True,
        ident: Ident | None = None,
    ) -> np.ndarray:
        """Mask of labels that may still lead to (a tie of) the answer.

        For ``min_latency``, the exact one-partition completion also lowers the
        incumbent ``col.inc`` (if ``update``; it is the latency of a real feasible
        configuration), and with one partition left it is the bound itself. With a
        probe (and ``update``), the best of those completions go to :meth:`_probe_best`
        (``ident(i)``: label i's tiers and cut points).
        """
        if self.extra is not None:  # inf: a tier that alone loses too much (even if the bar is)
            live = np.flatnonzero(lat < np.inf)
            if live.size < lat.size:  # the bounds of the others only
                keep = np.zeros(lat.size, dtype=bool)
                if live.size:
                    sub = None if ident is None else (lambda i: ident(int(live[i])))
                    keep[live] = self._keep(
                        t[live], c[live], w[live], u[live], lat[live], acc[live], r,
                        objective, bound, col, update, sub,
                    )  # fmt: skip
                return keep
        inc, front = col.inc, col.front
        k = self.lmax - r
        probing = update and self.probe is not None and ident is not None
        update = update and self.exact_inc
        if objective == "min_latency" and (update or probing) and r >= 2 and t.size:
            # more partitions may follow: the exact <= 1-partition completions only lower the incumbent
            st = self._complete1(t, c, w, u, acc, k, bound, strict=True)
            if probing:
                inc = self._probe_best(lat + st, t, c, w, u, acc, k, bound, col, ident)
            else:
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
                if self.gtab is not None:
                    np.maximum(lb, self._acc_grid_lb(t, c, w, need, k), out=lb)
            else:
                lb = hh[0]
            keep &= lat + lb <= inc + LAT_ATOL + _SLACK * (1 + abs(inc) if np.isfinite(inc) else 1)
            if r == 1 and keep.any():
                # one partition left: the exact best completion is the bound (and an incumbent)
                idx = np.flatnonzero(keep)
                ti, ci, wi, ui, li, ai = t[idx], c[idx], w[idx], u[idx], lat[idx], acc[idx]
                tot = li + self._complete1(ti, ci, wi, ui, ai, k, bound, strict=False)
                probing = probing and not np.isfinite(inc)  # the last layer: see below
                if update or probing:
                    b = np.flatnonzero(tot < inc)
                    if probing and b.size > 4 * PROBE_SIZE:
                        # the probe takes a few: the strict values of the least loose ones
                        # (a strict value is never below the loose one; any real ones will do)
                        b = b[np.argpartition(tot[b], 4 * PROBE_SIZE - 1)[: 4 * PROBE_SIZE]]
                    if b.size:
                        st = self._complete1(
                            ti[b], ci[b], wi[b], ui[b], ai[b], k, bound, strict=True
                        )
                        if probing:
                            # the last layer: only while there is no bar yet (its best
                            # completions are listed and evaluated by then anyway)
                            vals = np.full(t.size, np.inf)
                            vals[idx[b]] = li[b] + st
                            inc = self._probe_best(
                                vals, t, c, w, u, acc, k, bound, col, ident, last=True
                            )
                        elif update:
                            v = float((li[b] + st).min())
                            if v < inc:
                                col.inc = inc = v
                # inf: no completion meets the bound (or every one loses too much at a
                # tier), dropped also when the bar is infinite
                keep[idx] = np.isfinite(tot) & (
                    tot <= inc + LAT_ATOL + _SLACK * (1 + abs(inc) if np.isfinite(inc) else 1)
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

    def _probe_best(
        self, vals: np.ndarray, t: np.ndarray, c: np.ndarray, w: np.ndarray, u: np.ndarray,
        acc: np.ndarray, k: int, bound: float | None, col: Collector, ident: Ident,
        last: bool = False,
    ) -> float:  # fmt: skip
        """Hand the (up to :data:`PROBE_SIZE`) least completions ``vals`` below the bar to
        the probe; lower the bar ``col.inc`` to what it returns. Returns the bar."""
        live = np.flatnonzero(vals < col.inc)
        if live.size == 0:
            return col.inc
        if live.size > PROBE_SIZE:
            live = live[np.argpartition(vals[live], PROBE_SIZE - 1)[:PROBE_SIZE]]
        configs = []
        for i in live[np.argsort(vals[live], kind="stable")].tolist():
            v, w2, d = self._completion_of(
                int(t[i]), int(c[i]), int(w[i]), int(u[i]), float(acc[i]), k, bound
            )
            if not np.isfinite(v):  # pragma: no cover - vals are finite completions
                continue
            tiers, cuts = ident(i)
            if w2 >= 0:
                tiers, cuts = (*tiers, w2), (*cuts, d)
            configs.append((int(t[i]), tiers, cuts))
        if configs:
            col.inc = min(col.inc, float(self.probe(configs, last)))
        return col.inc

    # ------------------------------------------------------------------ forward

    def _expand(
        self, lab: Labels, k: int, objective: str, bound: float | None, col: Collector
    ) -> Labels:
        """All labels with partition k added (1-based k), bound-pruned."""
        sp, m = self.space, self.m
        er, a, ct, x, r = self.er, self.a, self.ct, self.x, self.r
        rem = self.lmax - k
        out: list[Labels] = []
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
            if self.extra is not None and self.extra[1] is not None and lab.pb is not None:
                pbp = lab.pb[li]
                base = base + np.where(
                    pbp < bp, (1.0 - er[tp, pbp]) * self.extra[1][tp, lab.w[li], pbp, bp], 0.0
                )
            rep = np.repeat(li, cc)
            w = np.repeat(wp, cc)
            b = np.repeat(bp, cc)
            t = np.repeat(tp, cc)
            c = self.allc[np.repeat(self.start[bp] - (np.cumsum(cc) - cc), cc) + np.arange(tot)]
            erc = er[t, c]
            dec = erc - np.repeat(erp, cc)
            lat = np.repeat(base, cc) + np.repeat(mbp, cc) * ct[w, b, c] + dec * r[w]
            if self.extra is not None:
                lat = lat + np.repeat(mbp, cc) * self.extra[0][t, w, b, c]
            acc = np.repeat(lab.acc[li], cc) + a[c] * dec
            uu = np.repeat(lab.u[li] | (1 << wp), cc)
            if self.extra is not None and objective == "min_latency" and not col.fixed:
                self._end_now(t, b, c, w, lat, acc, mbp, cc, k, bound, col)
            ident = None
            if self.probe is not None:

                def ident(i: int, rep=rep, w=w, c=c, k=k) -> tuple[tuple, tuple]:
                    j, codes = int(rep[i]), self.codes
                    return (
                        (*codes.decode_tiers(int(lab.dcode[j]), k - 1), int(w[i])),
                        (*codes.decode(lab.pcode[j], k - 1), int(c[i])),
                    )

            keep = self._keep(t, c, w, uu, lat, acc, rem, objective, bound, col, ident=ident)
            if self.extra is not None:  # inf: a tier that alone loses more than the bound
                keep &= np.isfinite(lat)
            if not keep.any():
                continue
            sel = rep[keep]
            wk, ck = w[keep], c[keep]
            out.append(
                Labels(
                    t[keep],
                    ck,
                    wk,
                    uu[keep],
                    lat[keep],
                    acc[keep],
                    lab.dcode[sel] * m + wk,
                    self.codes.push(lab.pcode[sel], k - 1, ck),
                    b[keep],
                )
            )
        if not out:
            return empty_labels(self.codes.words)
        return Labels.concat(out) if len(out) > 1 else out[0]

    def _end_now(
        self, t: np.ndarray, b: np.ndarray, c: np.ndarray, w: np.ndarray, lat: np.ndarray,
        acc: np.ndarray, mbp: np.ndarray, cc: np.ndarray, k: int, bound: float | None,
        col: Collector,
    ) -> None:  # fmt: skip
        """With the extra tables (no exact one-partition incumbent): lower ``col.inc`` to
        the best candidate that may end here, a real configuration that meets the bound
        strictly (its own value, as :meth:`run` collects it), before the bounds prune."""
        if k < self.space.min_parts:
            return
        end = self.space.end_ok[c] & np.isfinite(lat)
        if not end.any():
            return
        erc = self.er[t, c]
        tot = lat + (1.0 - erc) * self.r[w]
        if self.extra[2] is not None:
            tot = tot + np.repeat(mbp, cc) * self.extra[2][t, w, b, c]
        if bound is not None:
            end &= acc + self.a[c] * (1.0 - erc) >= bound - ACC_ATOL + 2.0 * _SLACK
        if end.any():
            col.inc = min(col.inc, float(tot[end].min()))

    def run(self, objective: str, bound: float | None) -> tuple[Labels, np.ndarray]:
        """Run the DP; return the final candidates (and their number of partitions)."""
        sp, nt = self.space, self.nt
        lab = Labels(
            np.arange(nt),
            np.zeros(nt, np.int64),
            np.full(nt, self.cm.source, np.int64),
            np.zeros(nt, np.int64),
            np.zeros(nt),
            np.zeros(nt),
            np.zeros(nt, np.int64),
            self.codes.zeros(nt),
            np.zeros(nt, np.int64),
        )
        col = Collector(objective, bound, self.codes.words)
        self.stats = []
        if self.fixed_inc is not None:
            col.inc, col.fixed = float(self.fixed_inc), True
            if self.probe is not None and objective == "min_latency" and self.lmax == 1:
                st = self._complete1(lab.t, lab.c, lab.w, lab.u, lab.acc, 0, bound, strict=True)
                self._probe_best(
                    st, lab.t, lab.c, lab.w, lab.u, lab.acc, 0, bound, col, lambda i: ((), ())
                )
        elif objective == "min_latency" and self.exact_inc:
            st = self._complete1(lab.t, lab.c, lab.w, lab.u, lab.acc, 0, bound, strict=True)
            col.inc = float(st.min())  # the best single-partition configuration
        for k in range(1, self.lmax + 1):
            cand = self._expand(lab, k, objective, bound, col)
            if k > 1 and self.fixed_inc is None:  # the root reaches each (t, block, tier) once
                cand = dominance_filter(cand, self.n, self.m)
            self.stats.append(len(cand))
            if k >= sp.min_parts and len(cand):
                fin = cand.take(np.flatnonzero(sp.end_ok[cand.c]))
                if len(fin):
                    erc = self.er[fin.t, fin.c]
                    fin.lat = fin.lat + (1.0 - erc) * self.r[fin.w]
                    if self.extra is not None and self.extra[2] is not None:
                        fin.lat = (
                            fin.lat
                            + (1.0 - self.er[fin.t, fin.pb])
                            * self.extra[2][fin.t, fin.w, fin.pb, fin.c]
                        )
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
                if k >= sp.min_parts:
                    # every sample has left and none comes back (ER = 1 from here on): each
                    # extension adds exactly 0 to both objectives and one partition to the tie
                    # key, so the label's own ending (collected above) beats all of them
                    keep &= ~(self.tail1[cand.t, cand.c] & sp.end_ok[cand.c])
                lab = cand.take(np.flatnonzero(keep))
            else:
                break
            if len(lab) == 0:
                break
        self.inc = col.inc  # the bar (or incumbent) at the end
        return col.result()
