"""The backward pass of the portend label DP: bounds on every completion of a label.

Used by :class:`earlyexit.planner._portend.PortendSearch` (see its module for the
algorithm). For every state (threshold, partitions left r, block c, tier w):

- ``h[l, t, r, c, w]``: the exact minimum of ``latency - lams[l] * accuracy`` over the
  relaxed completions (tiers only need to differ from the previous one, at most r
  more partitions), a lower bound by Lagrangian weak duality;
- ``aub[t, r, c]``: the maximum accuracy of those completions;
- ``q1``: the one-partition table (least CT over the blocks whose accuracy is at
  least each value), the exact best completion by one more partition
  (:meth:`PortendBounds._complete1`).
"""

from __future__ import annotations

import math

import numpy as np

from earlyexit.planner._labels import SLACK as _SLACK
from earlyexit.planner._select import ACC_ATOL

__all__ = ["ACC_LEVELS", "PortendBounds", "SMALL"]

SMALL = 4_000_000  # elements of the one-shot backward pass
ACC_LEVELS = 32  # levels of the accuracy grid bound


class PortendBounds:
    """Mixin: the bound tables of :class:`~earlyexit.planner._portend.PortendSearch`.

    Expects the attributes that ``PortendSearch.__init__`` sets (``cm``, ``space``,
    ``er``, ``a``, ``ct``, ``x``, ``r``, ``ctm``, ``valid``, ``cnt``, ``start``,
    ``allc``, ``lmax``, ``tier_pen``, ``lams``, ``skip0``, ``scale``).
    """

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
        if self.lams.size * nt * (n + 1) ** 2 * m <= SMALL:
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
            acc_e = a[cs][None, :] * der  # (nt, q)
            hop = mc[:, None, None] * x[:, :, c][None] + diag[None]  # (nt, M[w], M[w'])
            # every lambda here (unlike _backward_small's skip0: on large problems lambda = 0
            # with several partitions left prunes labels that the other bounds keep)
            tot = h[:, :, : rn - 1][:, :, :, cs, :] + base[None, :, None]
            tot -= (lams[:, None, None] * acc_e[None])[:, :, None, :, None]
            g = tot.min(axis=3)  # (nl, nt, rn-1, M[w'])
            g += tier_pen
            best = (hop[None, :, None] + g[:, :, :, None, :]).min(-1)  # (nl, nt, rn-1, M[w])
            h[:, :, 1:, c, :] = np.minimum(h0[:, :, None, c, :], best)
            cont = (acc_e[:, None, :] + aub[:, : rn - 1][:, :, cs]).max(-1)  # (nt, rn-1)
            aub[:, 1:, c] = np.maximum(aub0[:, c][:, None], cont)
        self.h, self.aub = h, aub

    def _tables(self) -> None:
        """q1[w, c, j]: the least CT^w of blocks c+1..d over the blocks d that may end a
        configuration after block c and whose accuracy is at least the (j+1)-th largest."""
        order = np.argsort(-self.a[1:], kind="stable") + 1
        self.order = order  # blocks by decreasing accuracy (q1's last axis)
        self.asc = np.sort(self.a[1:])
        self.q1 = np.minimum.accumulate(self.ctm[:, :, order], axis=2)
        self.q1f = self.q1.reshape(-1)  # flat views for _complete1 (contiguous arrays)
        self.xf = np.ascontiguousarray(self.x).reshape(-1)
        # with the extra (load) tables: q1x[j, t, w, c] the same least CT plus the extra
        # wait bound the partition c+1..d adds (both per unit of 1 - ER_c), per threshold
        # (a running minimum over the leading axis: one contiguous slab per block)
        extra = getattr(self, "extra", None)
        self.q1x = None
        if extra is not None:
            e0, ctm = extra[0], self.ctm
            q = np.empty((order.size, *e0.shape[:3]))
            q[0] = ctm[None, :, :, order[0]] + e0[..., order[0]]
            for j, d in enumerate(order[1:].tolist(), start=1):
                np.minimum(q[j - 1], ctm[None, :, :, d] + e0[..., d], out=q[j])
            self.q1x, self.q1xf = q, q.reshape(-1)

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
            # flat indices (one ``take`` per tier): q1[w2, c, jj] or q1x[jj, t, w2, c], and
            # x[w, w2, c], at the offset of tier w2
            m, n1 = self.m, n + 1
            if self.q1x is None:
                qf, q0, qs = self.q1f, c * n + jj, n1 * n
            else:
                qf, q0, qs = self.q1xf, (jj * self.nt + t) * (m * n1) + c, n1
            x0 = w * (m * n1) + c
            for w2 in range(m):
                if not sp.tier_allowed[k, w2]:
                    continue
                q = qf.take(q0 + w2 * qs)
                ok = has & np.isfinite(q) & (((u >> w2) & 1) == 0)
                val = s * (self.xf.take(x0 + w2 * n1) + np.where(ok, q, 0.0) + self.r[w2])
                np.minimum(best, np.where(ok, val, np.inf), out=best)
        return best

    def _completion_of(
        self, t: int, c: int, w: int, u: int, acc: float, k: int, bound: float | None
    ) -> tuple[float, int, int]:
        """Which completion gives one label's :meth:`_complete1` value (``strict=True``).

        Returns:
            (the value, the tier of the one more partition or -1 to end now, its last
            block or -1); (inf, -1, -1) when none completes the label.
        """
        sp, n = self.space, self.n
        s = 1.0 - self.er[t, c]
        need = None if bound is None else bound - ACC_ATOL - acc + 2.0 * _SLACK
        best: tuple[float, int, int] = (math.inf, -1, -1)
        if k >= sp.min_parts and sp.end_ok[c] and (need is None or self.a[c] * s >= need):
            best = (float(s * self.r[w]), -1, -1)
        if not sp.min_parts <= k + 1 <= self.lmax:
            return best
        if need is None:
            j = n - 1
        else:
            thr = need / s if s > 0 else (-math.inf if need <= 0 else math.inf)
            j = n - 1 - int(np.searchsorted(self.asc, thr))
        if j < 0:
            return best
        ds = self.order[: j + 1]  # the blocks accurate enough
        for w2 in range(self.m):
            if not sp.tier_allowed[k, w2] or (u >> w2) & 1:
                continue
            cost = self.ctm[w2, c, ds]
            if self.q1x is not None:
                cost = cost + self.extra[0][t, w2, c, ds]
            i = int(np.argmin(cost))  # the fastest of them (q1's entry)
            if np.isfinite(cost[i]):
                v = float(s * (self.x[w, w2, c] + cost[i] + self.r[w2]))
                if v < best[0]:
                    best = (v, w2, int(ds[i]))
        return best

    # ------------------------------------------------------------------ accuracy grid

    def _acc_grid(self, bound: float, levels: int = ACC_LEVELS) -> None:
        """P_lat: a lower bound on the latency of completions that reach a needed accuracy.

        The Lagrangian bounds of :meth:`_backward` leave a duality gap exactly where the
        accuracy bound bites (ending now is cheap but not accurate enough, carrying on
        is accurate but slow: their mix is cheap on paper). This one is exact in the
        accuracy up to a grid and relaxed in the tiers: any tier computes at the
        cheapest tier's CT, a hop costs the cheapest transfer of O_c, any number of
        partitions. Levels are accuracies ``j * delta`` (``delta = bound / levels``);
        level 0 asks nothing. Needs are always rounded down (a completion needing
        ``need`` looks up level ``floor(need / delta)``; a step gaining ``g`` moves down
        ``ceil(g / delta)`` levels), so the table is a valid lower bound:

          F[t, c, j] = min(end: (1 - ER_c) min r if A_c (1 - ER_c) >= j delta,
                           (1 - ER_c) min x(., ., O_c) + G[t, c, j])
          G[t, c, j] = min over c' of (1 - ER_c) min CT_{c+1..c'} + (ER_c' - ER_c) r(+-)
                       + F[t, c', j - ceil(A_c' (ER_c' - ER_c) / delta)]

        Sets ``gtab`` (G, ``(t, c, level)``), ``gdelta`` and ``xmin_w`` (the cheapest
        first hop from each tier, ``(w, c)``).
        """
        sp, n, m = self.space, self.n, self.m
        er, a, ct, x, r = self.er, self.a, self.ct, self.x, self.r
        nt = self.nt
        live = np.flatnonzero(np.isfinite(self.tier_pen))
        ctmin = ct[live].min(0)  # (c, c')
        off = ~np.eye(m, dtype=bool)
        off[:, np.isinf(self.tier_pen)] = False
        xw = np.where(off[:, :, None], x, np.inf)
        self.xmin_w = xw.min(1)  # (w, c): the cheapest hop to another usable tier
        xmin = self.xmin_w.min(0)  # (c,)
        rmin, rmax = float(r[live].min()), float(r[live].max())
        delta = float(bound) / levels
        self.gdelta = delta
        lv = np.arange(levels + 1)
        thr = lv * delta - 1e-9  # loosened: ending must reach j * delta
        f = np.full((nt, n + 1, levels + 1), np.inf)
        g = np.full((nt, n + 1, levels + 1), np.inf)
        for c in range(n, -1, -1):
            s = 1.0 - er[:, c]  # (t,)
            if sp.end_ok[c]:
                endv = np.where((a[c] * s)[:, None] >= thr[None, :], (s * rmin)[:, None], np.inf)
            else:
                endv = np.full((nt, levels + 1), np.inf)
            cs = self.allc[self.start[c] : self.start[c] + self.cnt[c]]
            if cs.size:
                der = er[:, cs] - er[:, c][:, None]  # (t, q)
                base = s[:, None] * ctmin[c, cs][None] + np.where(der > 0, der * rmin, der * rmax)
                steps = np.clip(a[cs][None] * der / delta + 1e-9, -levels - 1, levels + 1)
                shift = np.ceil(steps).astype(np.int64)  # (t, q)
                jj = np.clip(lv[None, None, :] - shift[:, :, None], 0, levels)  # (t, q, lv)
                fut = f[np.arange(nt)[:, None, None], cs[None, :, None], jj]
                g[:, c] = (base[:, :, None] + fut).min(1)
            if np.isfinite(xmin[c]):
                hop = s[:, None] * xmin[c] + g[:, c]
            else:
                hop = np.full((nt, levels + 1), np.inf)  # no other tier to hop to
            f[:, c] = np.minimum(endv, hop)
        self.gtab = g

    def _acc_grid_lb(
        self, t: np.ndarray, c: np.ndarray, w: np.ndarray, need: np.ndarray, k: int
    ) -> np.ndarray:
        """The :meth:`_acc_grid` lower bound of labels (k partitions done) needing ``need`` more."""
        sp = self.space
        s = 1.0 - self.er[t, c]
        lvl = self.gtab.shape[2] - 1
        j = np.clip(np.floor(need / self.gdelta), 0, lvl).astype(np.int64)
        lb = np.full(t.size, np.inf)
        if k >= sp.min_parts:
            ok = sp.end_ok[c] & (self.a[c] * s >= j * self.gdelta - 1e-9)
            lb = np.where(ok, s * self.r[w], np.inf)
        if k < self.lmax:
            gg = self.gtab[t, c, j]
            xw = self.xmin_w[w, c]
            fin = np.isfinite(gg) & np.isfinite(xw)
            hop = np.where(fin, s * np.where(fin, xw, 0.0) + np.where(fin, gg, 0.0), np.inf)
            lb = np.minimum(lb, hop)
        return lb
