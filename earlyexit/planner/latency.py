"""The latency model (docs/spec.md): transfers, the cost arrays, and ``evaluate`` of one configuration.

  transfer(a -> b, bits) = ST^a(bits) + DT^b(bits) + H_{a,b}
                         + [a != b] (propagation over the path + L_{a->b}(bits))
  H_{a,b} = (hop_s^a + hop_s^b) / 2      the runtime's own cost of one hand-off
          + [a != b] (link_hop_s^a + link_hop_s^b) / 2   and of crossing links
  C^w_{b..c} = slowdown_w CT_{b..c} + c^w, c^w = (slowdown_w - 1) hop_cpu_s^w
                                 (the runtime's CPU per partition run, stretched)
  CT^w = CT_busy^w f_w(I) + s_w k_w(I) + h_w(I) + (f_w(I) - 1) s_w hop_cpu_s^w
                                 where the device has busy times and an idle curve
                                 (its link curve where I holds wire time): I, the
                                 least idle one sample at a time, a fixed point
                                 (docs/spec.md#idle-between-samples)
  L_{a->b}(bits) = sum_{links on path} min(bits, MTU)/BW_link + max(0, bits - MTU)/BW_eff
  Lat = transfer(source -> D_1, O_0)
      + sum_k [(S_k + E_k) C^{D_k}_{P_{k-1}+1..P_k} + S_k transfer(D_k -> D_{k+1}, O_{P_k})
               + E_k transfer(D_k -> destination, Rs)]

Device times are multiplied by the tier's ``slowdown``. The runtime's own costs
(docs/spec.md#runtime-overhead) are ``hop_s`` per hand-off, not stretched, and
``hop_cpu_s`` per partition run, of which a slower tier adds ``(slowdown - 1)``
times (at least ``-hop_s``: a faster tier can save at most what one run's two
half hand-offs cost); both 0 when the profile has none, and then this is
PORTEND's model exactly. :class:`CostModel` precomputes every term as
numpy arrays (used by the search) and evaluates one configuration literally
(used by :func:`evaluate`, the brute force and the tests). The breakdown splits
the latency into compute, serialize (ST + DT), transmit (L), propagate and
overhead (H).

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> est = evaluate(synthetic_profile(10), "portend-aws", 0.5, [4, 10], [0, 2])
    >>> abs(sum(est.breakdown_s.values()) - est.latency_s) < 1e-12
    True
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from earlyexit.formats import BREAKDOWN_KEYS, BREAKDOWN_OPTIONAL_KEYS, Estimate, Profile, Topology
from earlyexit.planner.estimators import check_cuts, check_estimator, exit_fractions
from earlyexit.planner.topology import resolve_profile, resolve_topology, tier_index

__all__ = ["CostModel", "evaluate", "path_links"]

IDLE_ITERATIONS = 100
"""At most this many steps to a tier's idle between samples, a fixed point (docs/spec.md#idle-between-samples)."""


def path_links(a: int, b: int) -> range:
    """Links on the path between tiers a and b: ``min(a,b) .. max(a,b)-1``.

    Example:
        >>> list(path_links(2, 0))
        [0, 1]
    """
    return range(min(a, b), max(a, b))


class CostModel:
    """Every cost term of docs/spec.md's latency model for one (profile, topology) pair.

    Arrays (M tiers, N blocks, index 0 of a block axis = the model input):
        ct[w, b, c]: compute time of blocks b+1..c on tier w (inf unless b < c),
            with the runtime's stretched CPU per partition run ``run_cpu[w]``;
            ``compute[w, b, c]``: without it. ``ct_busy``: the same run right
            after another (the device's ``partition_time_busy_s``, at most ``ct``;
            ``ct`` itself where no device has one nor an ``idle_curve``, ``has_busy``
            False); ``compute_busy`` without ``run_cpu``; ``idle_curves[w]``: the
            tier's (gaps, factors, wake times) with (0, 1, 0) first, or None;
            ``link_idle_curves[w]`` the same of its ``link_idle_curve``.
            Where a tier has busy times and a curve, ``compute`` is its busy time
            after the least idle of one sample at a time, ``idle_gap[w, a]`` (a:
            the block before), on the link curve where that idle holds wire time.
        ser[v, w, i], txm[v, w, i]: serialize+deserialize and transmit time of
            O_i from tier v to tier w; prop[v, w]: propagation.
        hop[v, w]: H_{v,w}, the runtime's cost of one hand-off from tier v to w.
        x[v, w, i] = ser + txm + prop + hop: transfer(v -> w, O_i).
        rser[v], rtxm[v], rprop[v], rhop[v], r[v]: the same for the result Rs
            from v to the destination.
        er[t, i] (i = 0..N, er[:, 0] = 0) and acc[i] (acc[0] = 0).

    Raises:
        ValueError: a tier's device is not in the profile.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> cm = CostModel(synthetic_profile(5), resolve_topology("portend-aws"))
        >>> cm.ct.shape, cm.x.shape
        ((3, 6, 6), (3, 3, 6))
    """

    def __init__(self, profile: Profile, topology: Topology) -> None:
        self.profile = profile
        self.topology = topology
        n, m = profile.num_blocks, topology.num_tiers
        self.n, self.m = n, m
        self.source, self.destination = topology.source, topology.destination
        for j, tier in enumerate(topology.tiers):
            if tier.device not in profile.devices:
                raise ValueError(
                    f"topology.tiers[{j}] ({tier.name!r}): device {tier.device!r} is not in the profile; "
                    f"profile devices: {sorted(profile.devices)}. Rebind with bind_devices() or "
                    f"`--device {tier.device}=<device>`"
                )
        slow = np.array([t.slowdown for t in topology.tiers])
        devs = [profile.devices[t.device] for t in topology.tiers]
        self.slowdown = slow

        ct = np.full((m, n + 1, n + 1), np.inf)
        iu = np.triu_indices(n)  # (a, b) 0-based with a <= b: blocks a+1..b+1 -> ct[w, a, b+1]
        for w, dev in enumerate(devs):
            ct[w, iu[0], iu[1] + 1] = dev.partition_time_s[iu] * slow[w]
        self.compute = ct
        # the runtime's own costs (docs/spec.md#runtime-overhead): hop_s per hand-off,
        # half to each end; per partition run, the CPU part a slower tier stretches
        h = np.array([0.0 if d.hop_s is None else float(d.hop_s) for d in devs])
        cpu = np.array([0.0 if d.hop_cpu_s is None else float(d.hop_cpu_s) for d in devs])
        self.hop_cpu = cpu
        self.run_cpu = np.maximum((slow - 1.0) * cpu, -h)
        self.ct = ct + self.run_cpu[:, None, None]
        # under load (docs/spec.md#load): a partition run that follows another at once;
        # never above the time after an idle gap
        busy = ct  # a copy only where some device has busy times (N = 500: 16 MB a model)
        if any(dev.partition_time_busy_s is not None for dev in devs):
            busy = ct.copy()
        for w, dev in enumerate(devs):
            if dev.partition_time_busy_s is not None:
                busy[w, iu[0], iu[1] + 1] = np.minimum(
                    dev.partition_time_busy_s[iu] * slow[w], ct[w, iu[0], iu[1] + 1]
                )
        # after an idle gap g, a run takes f(g) times the busy one (the device's idle_curve)
        # and a message that finds its worker idle pays h(g) more, not stretched (wake_s)
        quiet = [_curve(d.idle_curve) for d in devs]  # with the cold CPU, one at a time
        self.idle_curves = [None if c is None else c[:3] for c in quiet]
        # one sample at a time, an idle that holds wire time: the device's link_idle_curve
        self.link_idle_curves = [_curve(d.link_idle_curve) for d in devs]
        self.has_busy = bool(np.any(busy < ct)) or any(
            c is not None for c in (*self.idle_curves, *self.link_idle_curves)
        )
        self.compute_busy = busy
        self.ct_busy = busy + self.run_cpu[:, None, None] if self.has_busy else self.ct

        bits = profile.output_bits_with_input  # O_0..O_N
        self.bits = bits
        st = np.array([d.serialize_s for d in devs]) * slow[:, None]  # (M, N+1)
        dt = np.array([d.deserialize_s for d in devs]) * slow[:, None]
        self.st, self.dt = st, dt
        mtu = 8.0 * topology.mtu_bytes
        self.mtu_bits = mtu
        bw = np.array([lk.bandwidth_mbps for lk in topology.links]) * 1e6
        pd = np.array([lk.propagation_ms for lk in topology.links]) * 1e-3
        self.bw, self.pd = bw, pd
        prop = np.zeros((m, m))
        txm = np.zeros((m, m, n + 1))
        for a in range(m):
            for b in range(m):
                if a == b:
                    continue
                links = list(path_links(a, b))
                prop[a, b] = sum(pd[j] for j in links)
                txm[a, b] = self._frag(bits, links)
        self.prop = prop
        self.txm = txm
        self.ser = st[:, None, :] + dt[None, :, :]
        self.hop_tier = h  # per tier: its own cost of handling one message (unstretched)
        # a hand-off across links also costs each end half its link_hop_s (the relay)
        lk = np.array([0.0 if d.link_hop_s is None else float(d.link_hop_s) for d in devs])
        self.hop = (h[:, None] + h[None, :]) / 2.0 + (lk[:, None] + lk[None, :]) / 2.0 * (
            1.0 - np.eye(m)
        )
        self.x = self.ser + txm + prop[:, :, None] + self.hop[:, :, None]

        rs = float(profile.result_bits)
        rst = np.array([d.result_serialize_s for d in devs]) * slow
        rdt = np.array([d.result_deserialize_s for d in devs]) * slow
        self.rst, self.rdt = rst, rdt
        dst = self.destination
        self.rser = rst + rdt[dst]
        self.rprop = prop[:, dst].copy()
        self.rtxm = np.array(
            [
                0.0 if v == dst else float(self._frag(np.array([rs]), list(path_links(v, dst)))[0])
                for v in range(m)
            ]
        )
        self.rhop = self.hop[:, dst].copy()
        self.r = self.rser + self.rtxm + self.rprop + self.rhop
        self.idle_gap = self._apply_idle_gaps(devs, quiet)
        # the client's CPU grows with its wait (docs/spec.md#the-client): the source's
        # curve for the input it encodes, the destination's for the result it decodes
        self.client_curves = (_client_curve(devs[self.source].client_curve, "encode_s"),
                              _client_curve(devs[dst].client_curve, "decode_s"))  # fmt: skip

        er = np.zeros((len(profile.thresholds), n + 1))
        er[:, 1:] = profile.exit_rate
        self.er = er
        self.acc = np.concatenate([[0.0], profile.branch_accuracy])
        self.thresholds = profile.thresholds

    def _apply_idle_gaps(
        self, devs: Sequence[Any], quiet: Sequence[tuple[np.ndarray, ...] | None]
    ) -> np.ndarray:
        """One sample at a time (docs/spec.md#idle-between-samples): a tier with busy
        times and an idle curve runs a partition after idling at least g, the time the
        previous sample's answer and the next input spend on the wire before it can
        start, plus the sleep that emulates a slowdown s after the previous run of
        the same partition, (s - 1) times its cooled CPU (a fixed point I); its
        ``ct`` becomes busy CT f(I) + s k(I) + h(I) + (f(I) - 1) s hop_cpu_s + run_cpu
        (the runtime's CPU cools too; k: the curve's cold CPU), read on the
        ``link_idle_curve`` where g > 0 if the device has one. Returns the wire's
        part of I (M, N + 1): ``g[w, 0]``
        for the first partition (``ct[w, 0]``), ``g[w, a]`` for a later one that
        starts after block a (``ct[w, a]``, reached from another tier).
        """
        src, dst, m, n = self.source, self.destination, self.m, self.n
        prop, txm = self.prop, self.txm
        back = prop[:, dst] + self.rtxm  # the answer's way from each tier to the destination
        gaps = np.zeros((m, n + 1))
        for w in range(m):
            gaps[w, 0] = prop[src, w] + txm[src, w, 0] + back[w]
            ways = [prop[src, v] + txm[src, v, 0] + prop[v, w] + txm[v, w, 1:]
                    for v in range(m) if v != w]  # fmt: skip
            gaps[w, 1:] = (np.min(ways, axis=0) if ways else gaps[w, 0]) + back[w]
        for w, dev in enumerate(devs):
            linked = self.link_idle_curves[w]
            if (quiet[w] is None and linked is None) or dev.partition_time_busy_s is None:
                continue
            # the idle curve (without one, the profiled time), and the link curve where
            # the idle holds wire time
            base = self.compute[w] if quiet[w] is None else self._cooled(w, gaps[w], quiet[w])
            if linked is not None:
                base = np.where((gaps[w] > 0)[:, None], self._cooled(w, gaps[w], linked), base)
            self.compute[w] = base
            self.ct[w] = self.compute[w] + self.run_cpu[w]
        return gaps

    def _cooled(self, w: int, gaps: np.ndarray, curve: tuple[np.ndarray, ...]) -> np.ndarray:
        """Tier ``w``'s compute (N + 1, N + 1) after the wire's idle ``gaps`` (N + 1) on ``curve``."""
        gs, fs, hs, cs = curve
        s, busy = self.slowdown[w], self.compute_busy[w]
        # the worker's CPU per message, stretched: the partition's and the
        # runtime's (s hop_cpu_s); both run on caches that cooled while it idled,
        # f times longer, and a message pays the cold CPU c once, stretched too
        runtime = max(s * self.hop_cpu[w], 0.0)
        cpu = np.where(np.isfinite(busy), busy, 0.0) + runtime
        # a slowdown is emulated by sleeping (s - 1) times the CPU after each run:
        # idle for the caches too, before the next sample's run of that partition.
        # The sleep stretches the cooled CPU, so the idle is a fixed point
        # g + (s - 1)/s (cpu f(idle) + s c(idle)); f and c are non-decreasing, the
        # iteration rises to it
        k = max(s - 1.0, 0.0) / s  # a faster tier (s < 1) does not sleep
        idle = gaps[:, None] + k * cpu
        for _ in range(IDLE_ITERATIONS):
            f, c = np.interp(idle, gs, fs), np.interp(idle, gs, cs)
            idle, before = gaps[:, None] + k * (cpu * f + s * c), idle
            if np.max(idle - before, initial=0.0) <= 1e-12:
                break
        f, c, h = np.interp(idle, gs, fs), np.interp(idle, gs, cs), np.interp(idle, gs, hs)
        return busy * f + s * c + h + (f - 1.0) * runtime

    def client_cooling(self, wait_s: float | np.ndarray) -> float | np.ndarray:
        """The client's CPU beyond its back-to-back CPU after waiting ``wait_s``, stretched.

        s_src (enc(W) - enc(w_1)) + s_dst (dec(W) - dec(w_1)) from the source's and the
        destination's ``client_curve`` (docs/spec.md#the-client); 0 without them.
        Non-decreasing in the wait, so Lat = R + client_cooling(R) is increasing in R.
        """
        out = np.zeros_like(np.asarray(wait_s, dtype=np.float64))
        for tier, curve in zip((self.source, self.destination), self.client_curves, strict=True):
            if curve is not None:
                waits, cpu = curve
                out = out + self.slowdown[tier] * (np.interp(wait_s, waits, cpu) - cpu[0])
        return float(out) if np.ndim(wait_s) == 0 else out

    def client_wait_within(self, latency_s: float) -> float:
        """The largest R whose R + :meth:`client_cooling` (R) is at most ``latency_s``
        (a latency bound on the search's sums; ``latency_s`` itself without a client curve)."""
        knots = sorted({float(w) for c in self.client_curves if c is not None for w in c[0]})
        if not knots:
            return float(latency_s)
        r = np.array([0.0, *knots])
        lat = r + np.asarray(self.client_cooling(r))
        if latency_s >= lat[-1]:  # beyond the last point the cooling is constant
            return float(latency_s - (lat[-1] - r[-1]))
        return float(np.interp(latency_s, lat, r)) if latency_s >= 0 else float(latency_s)

    def busy_view(self) -> CostModel:
        """This model with ``ct`` set to ``ct_busy`` (itself without busy times): the
        least compute a partition run can take, for lower bounds under load."""
        if not self.has_busy:
            return self
        view = copy.copy(self)
        view.ct = self.ct_busy
        return view

    def _frag(self, bits: np.ndarray, links: Sequence[int]) -> np.ndarray:
        """PORTEND's fragment pipelining, without charging partial fragments as full."""
        if not links:
            return np.zeros_like(bits, dtype=np.float64)
        first = np.minimum(bits, self.mtu_bits)
        out = np.zeros_like(bits, dtype=np.float64)
        for j in links:
            out = out + first / self.bw[j]
        bw_eff = min(self.bw[j] for j in links)
        return out + np.maximum(0.0, bits - self.mtu_bits) / bw_eff

    # ------------------------------------------------------------------ one configuration

    def transfer_parts(
        self, a: int, b: int, block: int | None
    ) -> tuple[float, float, float, float]:
        """(serialize, transmit, propagate, overhead) of O_block from tier a to b.

        ``block=None``: the result Rs to b.
        """
        hop = float(self.hop[a, b])
        if block is None:
            ser = float(self.rst[a] + self.rdt[b])
            if a == b:
                return ser, 0.0, 0.0, hop
            rs = np.array([float(self.profile.result_bits)])
            txm = float(self._frag(rs, list(path_links(a, b)))[0])
            return ser, txm, float(self.prop[a, b]), hop
        return (float(self.ser[a, b, block]), float(self.txm[a, b, block]),
                float(self.prop[a, b]), hop)  # fmt: skip

    def latency(
        self, cuts: Sequence[int], tiers: Sequence[int], e: Sequence[float], s: Sequence[float]
    ) -> tuple[float, dict[str, float]]:
        """Lat of (P, D) given exit and stay fractions, with its breakdown.

        Returns:
            (latency_s, {compute, serialize, transmit, propagate, overhead}).
        """
        parts = {k: 0.0 for k in BREAKDOWN_KEYS + BREAKDOWN_OPTIONAL_KEYS}

        def add(weight: float, four: tuple[float, float, float, float]) -> float:
            parts["serialize"] += weight * four[0]
            parts["transmit"] += weight * four[1]
            parts["propagate"] += weight * four[2]
            parts["overhead"] += weight * four[3]
            return weight * (four[0] + four[1] + four[2] + four[3])

        lat = add(1.0, self.transfer_parts(self.source, tiers[0], 0))
        prev = 0
        n_parts = len(cuts)
        for k in range(n_parts):
            comp = (s[k] + e[k]) * float(self.compute[tiers[k], prev, cuts[k]])
            run = (s[k] + e[k]) * float(self.run_cpu[tiers[k]])
            parts["compute"] += comp
            parts["overhead"] += run
            lat += comp + run
            if k < n_parts - 1:
                lat += add(s[k], self.transfer_parts(tiers[k], tiers[k + 1], cuts[k]))
            lat += add(e[k], self.transfer_parts(tiers[k], self.destination, None))
            prev = cuts[k]
        cooling = self.client_cooling(lat)  # the client waited for all of it
        parts["overhead"] += cooling
        return lat + cooling, parts


def _curve(raw: Mapping[str, Any] | None) -> tuple[np.ndarray, ...] | None:
    """An idle curve's (gaps, factors, wake times, cold CPU), from (0, 1, 0, 0); None stays None."""
    if raw is None:
        return None
    zeros = [0.0] * len(raw["gap_s"])
    return (np.array([0.0, *raw["gap_s"]]), np.array([1.0, *raw["factor"]]),
            np.array([0.0, *raw.get("wake_s", zeros)]),
            np.array([0.0, *raw.get("cold_s", zeros)]))  # fmt: skip


def _client_curve(raw: Mapping[str, Any] | None, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A ``client_curve``'s (waits, CPU times) of ``key``; None stays None."""
    if raw is None:
        return None
    return np.array(raw["wait_s"], dtype=np.float64), np.array(raw[key], dtype=np.float64)


def _check_tiers(tiers: Sequence[int | str], topology: Topology, n_parts: int) -> list[int]:
    if isinstance(tiers, (str, bytes)) or not isinstance(tiers, Sequence):
        raise TypeError(f"tiers: expected a list of tier indices or names, got {tiers!r}")
    out = [tier_index(topology, t) for t in tiers]
    if len(out) != n_parts:
        raise ValueError(f"tiers: expected {n_parts} tiers (one per partition), got {len(out)}")
    if len(set(out)) != len(out):
        raise ValueError(f"tiers: must be distinct (one partition per tier), got {out}")
    return out


def evaluate(
    profile: Profile | str | os.PathLike[str] | Mapping[str, Any],
    topology: Topology | str | os.PathLike[str] | Mapping[str, Any],
    threshold: float,
    partitions: Sequence[int],
    tiers: Sequence[int | str],
    estimator: str = "portend",
    *,
    cost_model: CostModel | None = None,
) -> Estimate:
    """Estimate latency, accuracy, exit fractions and latency breakdown of one configuration.

    Args:
        profile: a Profile or a path to its JSON.
        topology: a Topology, a built-in name or a YAML path.
        threshold: T (one of the profile's for ``portend``; 0 = no early exit).
        partitions: P, the last block (1-based) of each partition.
        tiers: D, the tier (index or name) of each partition.
        estimator: ``"portend"`` or ``"exact"``.
        cost_model: a prebuilt :class:`CostModel` of the same inputs (speed).

    Returns:
        An :class:`~earlyexit.formats.Estimate`.

    Raises:
        ValueError / TypeError: bad inputs, named.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> evaluate(synthetic_profile(8), "portend-aws", 0.0, [8], ["edge"]).exit_fractions
        (1.0,)
    """
    profile = resolve_profile(profile)
    topology = resolve_topology(topology)
    check_estimator(estimator, profile)
    cuts = check_cuts(partitions, profile.num_blocks)
    d = _check_tiers(tiers, topology, len(cuts))
    cm = cost_model if cost_model is not None else CostModel(profile, topology)
    e, s, acc = exit_fractions(profile, threshold, cuts, estimator)
    lat, parts = cm.latency(cuts, d, e, s)
    return Estimate(latency_s=lat, accuracy=acc, exit_fractions=tuple(e), breakdown_s=parts)
