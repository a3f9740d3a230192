"""The runtime's own cost per hand-off, measured through real tier workers on this machine.

The latency model charges every hand-off of a sample between two processes
(the source application to the first worker, one worker to the next, a worker
to the destination) its serialization, deserialization, transmission and
propagation. What it did not charge is what the runtime itself costs per
message: a ZeroMQ send and receive, a worker's poll waking up, the Python of
the worker loop, the acknowledgement bookkeeping. That is the per-hop term
``hop_s`` of a device profile (``docs/spec.md``, "Runtime overhead").

How it is measured, honestly: :func:`measure_hop_overhead` deploys chains of
``L = 1 .. max_partitions`` real tier workers (:func:`earlyexit.runtime.deploy`,
one process per partition, Unix sockets or loopback TCP, no emulated links, no
slowdown) running a tiny numpy model (:class:`earlyexit.runtime.synthetic.SyntheticModel`, 8
features) with threshold 0, so that every sample makes exactly ``L + 1``
hand-offs: input, ``L - 1`` forwards, result. It sends samples one at a time
and takes each sample's end-to-end latency. In this process it then times the
same work without any process boundary: encoding the input, and for each
partition decoding, copying, running and encoding, then decoding the result
(the steps the profile already charges). The excess of the measured latency
over that in-process time is what the model lacked; a least-squares line of the
excess against the number of hand-offs ``L + 1``, through the origin (no
hand-off, no cost), gives the per-hand-off cost ``hop_s``. The free line's
intercept is reported as well: measured here it came out between -0.4 and
+0.4 ms from run to run, with no consistent sign, so a separate per-sample cost
is not called for (a sample's entry and exit are already two hand-offs, the
input's and the result's).

Medians, not means, are compared, and the samples are split into rounds of
which the quietest is kept: on a shared machine a preempted sample, or a burst
of other work, adds milliseconds that belong to the load of the moment, not to
the runtime (on the 2-core development machine at load average 10-12, single
estimates ranged from 0.26 to 1.4 ms per hand-off, their quietest rounds from
0.21 to 0.33 ms, with rare runs of 0.4-0.5 ms when every round was loaded).

Example:
    ```python
    m = measure_hop_overhead(samples=30, max_partitions=2)
    0 < m.hop_s < 0.01  # True
    ```
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from earlyexit.formats import Link, Tier, Topology
from earlyexit.profiling.timing import IDLE_GAPS_S  # the gaps of the one-process curve

__all__ = [
    "HopOverhead",
    "measure_hop_overhead",
    "measure_hop_cpu",
    "measure_link_hop",
    "fit_hops",
    "in_process_time",
    "measure_idle_curve",
]

_MODEL = {"in_dim": 8, "hidden": 8, "num_classes": 10, "seed": 0}


@dataclass(frozen=True)
class HopOverhead:
    """The measured per-hand-off cost of the runtime on this machine.

    Attributes:
        hop_s: seconds per hand-off of one sample between two processes (least
            squares through the origin): the device's ``hop_s``.
        slope_s / per_sample_s: slope and intercept of the free line (diagnostic:
            a clearly positive intercept would be a per-sample cost).
        r2: R² of the free line.
        partitions: the chain lengths L deployed.
        hops: the hand-offs per sample of each chain (``L + 1``).
        measured_s: median end-to-end latency of each chain.
        in_process_s: median time of the same work in one process.
        samples: timed samples per chain.
        extra: more about the measurement (``rounds_hop_s``: every round's estimate).
    """

    hop_s: float
    slope_s: float
    per_sample_s: float
    r2: float
    partitions: tuple[int, ...]
    hops: tuple[int, ...]
    measured_s: tuple[float, ...]
    in_process_s: tuple[float, ...]
    samples: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (what a device profile stores as its ``hop`` field)."""
        out = asdict(self)
        out.update({k: list(v) for k, v in out.items() if isinstance(v, tuple)})
        return out


def fit_hops(hops: Sequence[float], excess_s: Sequence[float]) -> tuple[float, float, float, float]:
    """The cost per hand-off: least squares of ``excess = hop * hops``, and the free line.

    The model's term is the line through the origin (no hand-off, no runtime
    cost). The free line ``excess = per_sample + slope * hops`` is returned too,
    as a diagnostic: a clearly positive intercept would be a per-sample cost that
    the per-hop term misses.

    Args:
        hops: hand-offs per sample of each measurement (at least two distinct values).
        excess_s: measured minus in-process latency of each.

    Returns:
        ``(hop_s, slope_s, per_sample_s, r2)``: the cost per hand-off (through
        the origin, clipped at 0: a cost is never negative), the free line's
        slope and intercept, and the free line's R².

    Raises:
        ValueError: fewer than two distinct hop counts, or lengths that differ.

    Example:
        >>> fit_hops([2, 3, 4], [0.002, 0.003, 0.004])
        (0.001, 0.001, 0.0, 1.0)
    """
    h = np.asarray(hops, np.float64)
    y = np.asarray(excess_s, np.float64)
    if h.shape != y.shape or h.ndim != 1:
        raise ValueError(
            f"hops and excess_s must be two lists of one length, got {h.shape} and {y.shape}"
        )
    if np.unique(h).size < 2 or (h <= 0).any():
        raise ValueError(
            f"fit_hops needs positive hop counts with at least two distinct values, got {h.tolist()}"
        )
    through_origin = float((h * y).sum() / (h * h).sum())
    slope, intercept = np.polyfit(h, y, 1)
    pred = intercept + slope * h
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0

    def r(v: float) -> float:
        return round(float(v), 12) + 0.0  # no -0.0

    return r(max(0.0, through_origin)), r(slope), r(intercept), r(r2)


def in_process_time(num_partitions: int, x: np.ndarray, reps: int = 200) -> float:
    """Median time of one sample's work through ``num_partitions`` partitions, in one process.

    The steps are those the profile charges and the workers run: encode the
    input, then per partition decode, copy, run, encode (features, or the result
    at the last), and decode the result at the destination.

    Args:
        num_partitions: L.
        x: one input, ``[1, in_dim]`` float32.
        reps: repetitions (the median is returned).

    Returns:
        Seconds.
    """
    from earlyexit.runtime.synthetic import SyntheticModel
    from earlyexit.runtime.wire import decode, encode

    model = SyntheticModel(num_partitions=num_partitions, **_MODEL)
    runners = [model.runner(k) for k in range(num_partitions)]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        msg = encode(x, kind="input", ids=[0], ack="tcp://127.0.0.1:1")
        for k, run in enumerate(runners):
            arr, _ = decode(msg)
            arr = np.array(arr)
            logits, ent, feats = run(arr)
            if k < num_partitions - 1:
                msg = encode(
                    np.ascontiguousarray(feats), kind="features", ids=[0], ack="tcp://127.0.0.1:1"
                )
            else:
                msg = encode(np.ascontiguousarray(logits, np.float32), kind="result", ids=[0],
                             partition=k, block=None, tier=k, entropy=[float(e) for e in ent],
                             degraded=False)  # fmt: skip
        arr, _ = decode(msg)
        np.array(arr, np.float32)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _check_rounds(samples: Any, rounds: Any, warmup: Any) -> None:
    """Raise ValueError unless rounds >= 1, warmup >= 0 and samples >= 5 per round (ints)."""
    for name, value, lo in (("rounds", rounds, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 5 * rounds:
        raise ValueError(
            f"samples must be an int >= 5 per round ({5 * rounds} for {rounds} rounds), got {samples!r}"
        )


def measure_hop_overhead(
    samples: int = 200,
    max_partitions: int = 3,
    warmup: int = 20,
    rounds: int = 5,
    niceness: int | None = None,
    transport: str = "ipc",
) -> HopOverhead:
    """Measure the runtime's per-hand-off cost through real workers on this machine.

    The timed samples are split into ``rounds`` consecutive rounds; each round
    gives its own estimate (medians of that round), and the quietest round (the
    smallest estimate) is kept: the cost on a dedicated device, not the load of
    the moment on a shared one. Every round's estimate is kept in ``extra``.

    Args:
        samples: timed samples per chain (one at a time), over all rounds.
        max_partitions: the longest chain; chains of 1 .. max_partitions workers are deployed.
        warmup: untimed samples sent first through each chain.
        rounds: how many rounds the samples are split into (at least 5 samples each).
        niceness: scheduling niceness of the workers (see :func:`earlyexit.runtime.deploy`).
        transport: the sockets between the processes, ``"ipc"`` (Unix domain
            sockets, as :func:`earlyexit.runtime.deploy` and so ``earlyexit
            validate`` run by default) or ``"tcp"`` (loopback TCP, as ``earlyexit
            serve`` binds across machines).

    Returns:
        A :class:`HopOverhead` (its ``measured_s`` are the kept round's medians).

    Raises:
        ValueError: ``samples`` < 5 per round, ``rounds`` < 1 or ``max_partitions`` < 2.
    """
    from earlyexit.runtime.deployment import deploy

    _check_rounds(samples, rounds, warmup)
    if (
        isinstance(max_partitions, bool)
        or not isinstance(max_partitions, int)
        or max_partitions < 2
    ):
        raise ValueError(
            f"max_partitions must be an int >= 2 (a line needs two chain lengths), got {max_partitions!r}"
        )
    parts = tuple(range(1, max_partitions + 1))
    latencies: dict[int, list[float]] = {num: [] for num in parts}
    with contextlib.ExitStack() as stack:
        chains = {
            num: stack.enter_context(
                deploy(
                    synthetic={"num_partitions": num, **_MODEL},
                    threshold=0.0,
                    niceness=niceness,
                    transport=transport,
                )
            )
            for num in parts
        }
        x = chains[1].inputs(warmup + samples, seed=1)
        # interleaved, one sample at a time: a burst of load on a shared machine
        # hits every chain alike instead of inflating one of them
        for i in range(warmup + samples):
            for num, d in chains.items():
                res = d.client.infer(x[i], timeout_s=30.0)
                if res.degraded or res.partition != num - 1:
                    raise RuntimeError(
                        f"the {num}-worker chain did not run a sample to its last partition"
                    )
                if i >= warmup:
                    latencies[num].append(res.latency_s)
    inproc = [in_process_time(num, x[:1], reps=max(samples, 50)) for num in parts]
    hops = tuple(n + 1 for n in parts)
    fits = []
    for chunk in np.array_split(np.arange(samples), rounds):
        measured = [float(np.median(np.asarray(latencies[num])[chunk])) for num in parts]
        excess = [m - i for m, i in zip(measured, inproc, strict=True)]
        fits.append((fit_hops(hops, excess), measured))
    (hop_s, slope_s, per_sample_s, r2), measured = min(fits, key=lambda f: f[0][0])
    return HopOverhead(hop_s, slope_s, per_sample_s, r2, parts, hops, tuple(measured),
                       tuple(inproc), samples,
                       {"rounds_hop_s": [f[0][0] for f in fits], "transport": transport})  # fmt: skip


def measure_hop_cpu(
    samples: int = 100,
    max_partitions: int = 3,
    slowdown: float = 10.0,
    warmup: int = 10,
    niceness: int | None = None,
    cpu_affinity: str | None = None,
) -> dict[str, Any]:
    """The runtime's CPU time per partition run that a slower tier stretches (``hop_cpu_s``).

    The runtime emulates a tier's ``slowdown`` by stretching the thread CPU time
    a worker spends on a message (decoding it, running the partition, encoding
    what it sends) by that factor, as a slower processor would; the latency
    model already stretches the profiled compute and (de)serialization, and
    charges the rest, once per partition run, as ``(slowdown - 1) hop_cpu_s``
    (docs/spec.md#runtime-overhead). This deploys chains of 1 .. ``max_partitions``
    workers of a tiny numpy model at ``slowdown`` on every tier (no links,
    threshold 0, so each sample runs every partition), sends samples one at a
    time through each chain in turn, back to back (as `earlyexit validate` runs
    a configuration), and reads from each worker the CPU time its emulation stretched
    (``cpu_s`` of :meth:`~earlyexit.runtime.deployment.Deployment.final_stats`).
    The excess of that CPU time per sample over the in-process time of the same
    steps (:func:`in_process_time`, which the profile charges) is fitted on the
    number of partitions through the origin (:func:`fit_hops`): the slope is
    ``cpu_hop_s``. What it measures is what the emulation stretches; what a
    longer idle adds (caches gone cold while other processes ran) is the
    device's ``idle_curve`` (docs/spec.md#idle-between-samples). Interleaving
    the chains sample by sample (until stop 27) made every worker idle while the
    others ran and measured 0.13-0.22 ms where back to back gives 0.07-0.12 ms.

    Args:
        samples: timed samples per chain.
        max_partitions: the longest chain (at least 2).
        slowdown: the emulated slowdown of every tier (> 1): how long the workers
            sleep between messages, which sets how cold they start; a
            Raspberry-Pi-class tier is about 10.
        warmup: untimed samples first (their CPU time is counted too: the
            workers' counters cover every message).
        niceness: of the workers (see :func:`earlyexit.runtime.deploy`).
        cpu_affinity: ``deploy(cpu_affinity=)``: ``"spread"`` pins the workers
            as the deployments they stand for run.

    Returns:
        ``{"cpu_hop_s", "partitions", "cpu_per_sample_s" (per chain),
        "in_process_s", "slowdown", "cpu_affinity", "method"}``.

    Raises:
        ValueError: ``slowdown`` <= 1, ``max_partitions`` < 2 or ``samples`` < 5.
    """
    from earlyexit.runtime.deployment import deploy

    if not (isinstance(slowdown, (int, float)) and slowdown > 1.0):
        raise ValueError(f"slowdown must be a number > 1, got {slowdown!r}")
    if (
        isinstance(max_partitions, bool)
        or not isinstance(max_partitions, int)
        or max_partitions < 2
    ):
        raise ValueError(f"max_partitions must be an int >= 2, got {max_partitions!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 5:
        raise ValueError(f"samples must be an int >= 5, got {samples!r}")
    parts = tuple(range(1, max_partitions + 1))
    chains = {}
    with contextlib.ExitStack() as stack:
        for num in parts:
            topo = Topology(tuple(Tier(f"t{j}", "cpu", float(slowdown)) for j in range(num)),
                            tuple(Link(1e5, 0.0) for _ in range(num - 1)), mtu_bytes=9000)  # fmt: skip
            chains[num] = stack.enter_context(deploy(
                synthetic={"num_partitions": num, **_MODEL}, threshold=0.0, topology=topo,
                tiers=list(range(num)), emulate_links=False, niceness=niceness,
                cpu_affinity=cpu_affinity))  # fmt: skip
        x = chains[1].inputs(warmup + samples, seed=1)
        for num, d in chains.items():  # each chain back to back, as one sample at a time runs
            for i in range(warmup + samples):
                res = d.client.infer(x[i], timeout_s=30.0)
                if res.degraded or res.partition != num - 1:
                    raise RuntimeError(
                        f"the {num}-worker chain did not run a sample to its last partition"
                    )
    cpu = []
    for num, d in chains.items():  # closed: each worker has logged its counters
        stats = [d.final_stats(k) for k in range(num)]
        cpu.append(sum(float(st["cpu_s"]) / max(1, int(st["received"])) for st in stats))
    inproc = [in_process_time(num, x[:1], reps=max(samples, 50)) for num in parts]
    excess = [c - ip for c, ip in zip(cpu, inproc, strict=True)]
    cpu_hop_s = fit_hops(list(parts), excess)[0]  # clipped at 0 there
    return {"cpu_hop_s": cpu_hop_s, "partitions": list(parts), "cpu_per_sample_s": cpu,
            "in_process_s": inproc, "slowdown": float(slowdown), "cpu_affinity": cpu_affinity,
            "method": "worker thread CPU per partition run, each chain back to back"}  # fmt: skip


def measure_link_hop(
    samples: int = 100,
    propagation_ms: float = 5.0,
    rounds: int = 5,
    warmup: int = 10,
    niceness: int | None = None,
    cpu_affinity: str | None = None,
) -> dict[str, Any]:
    """The runtime's cost of a hand-off that crosses a link, beyond ``hop_s`` (``link_hop_s``).

    A message between tiers goes through the link emulator's relay (a process
    that receives it, holds it for the link's time and delivers it), which a
    hand-off inside one tier does not: one more local hand-off and the relay's
    timed wake-up (docs/spec.md#runtime-overhead). This deploys one worker of a
    tiny numpy model on the far tier of a two-tier topology whose link has
    ``propagation_ms`` and 100 Gb/s (transmission about 0), twice: with the
    link emulated and without. It sends samples one at a time, alternating
    between the two deployments, so that each sample crosses the link twice
    (its input and its answer). Per round (the samples split into ``rounds``),
    ``(median with - median without - 2 propagation) / 2`` is the cost per
    crossing; the quietest round is kept, as :func:`measure_hop_overhead` does.

    Args:
        samples: timed samples per deployment, over all rounds.
        propagation_ms: the link's one-way delay (> 0: the relay sleeps for it).
        rounds: how many rounds the samples are split into (at least 5 samples each).
        warmup: untimed samples first, per deployment.
        niceness: of the workers and links (see :func:`earlyexit.runtime.deploy`).
        cpu_affinity: ``deploy(cpu_affinity=)``: ``"spread"`` pins them as the
            deployments they stand for run.

    Returns:
        ``{"link_hop_s", "rounds_s" (every round's estimate), "linked_s",
        "unlinked_s" (the kept round's medians), "propagation_s", "cpu_affinity",
        "method"}``.

    Raises:
        ValueError: bad counts or a propagation that is not > 0.

    Example:
        ```python
        m = measure_link_hop(samples=25)
        0 <= m["link_hop_s"] < 0.01  # True
        ```
    """
    from earlyexit.runtime.deployment import deploy

    _check_rounds(samples, rounds, warmup)
    if not (isinstance(propagation_ms, (int, float)) and 0 < propagation_ms <= 1000):
        raise ValueError(f"propagation_ms must be a number in (0, 1000], got {propagation_ms!r}")
    prop_s = float(propagation_ms) * 1e-3
    topo = Topology((Tier("near", "cpu", 1.0), Tier("far", "cpu", 1.0)),
                    (Link(1e5, float(propagation_ms)),), mtu_bytes=9000)  # fmt: skip
    lat: dict[bool, list[float]] = {True: [], False: []}
    with contextlib.ExitStack() as stack:
        kw = {"synthetic": {"num_partitions": 1, **_MODEL}, "threshold": 0.0, "topology": topo,
              "tiers": [1], "niceness": niceness, "cpu_affinity": cpu_affinity}  # fmt: skip
        runs = {e: stack.enter_context(deploy(emulate_links=e, **kw)) for e in (True, False)}
        x = runs[True].inputs(warmup + samples, seed=1)
        for i in range(warmup + samples):
            for emulate, d in runs.items():
                res = d.client.infer(x[i], timeout_s=30.0)
                if res.degraded:
                    raise RuntimeError("a sample came back degraded through the two-tier chain")
                if i >= warmup:
                    lat[emulate].append(res.latency_s)
    fits = []
    for chunk in np.array_split(np.arange(samples), rounds):
        linked = float(np.median(np.asarray(lat[True])[chunk]))
        unlinked = float(np.median(np.asarray(lat[False])[chunk]))
        fits.append((max(0.0, (linked - unlinked - 2.0 * prop_s) / 2.0), linked, unlinked))
    kept = min(fits)
    return {"link_hop_s": kept[0], "rounds_s": [f[0] for f in fits], "linked_s": kept[1],
            "unlinked_s": kept[2], "propagation_s": prop_s, "cpu_affinity": cpu_affinity,
            "method": "two-tier chain, emulated link against none, per crossing"}  # fmt: skip


def measure_idle_curve(
    bundle: str | Any,
    gaps_s: Sequence[float] = IDLE_GAPS_S,
    samples: int = 30,
    warmup: int = 5,
    cpu_latency_us: int | None = None,
    slowdown: float = 1.01,
    cpu_affinity: str | None = None,
    through_links: bool = False,
    small: str | Any | None = None,
) -> dict[str, Any]:
    """A device's idle curve measured in a real tier worker (``idle_curve``, docs/spec.md#load).

    A worker that idled g before a message spends more CPU on it than back to
    back: its caches went cold while other processes ran, and a slower tier
    stretches all of that. One process timing one ONNX Runtime session (what
    :func:`~earlyexit.profiling.timing.time_onnx_partitions` does) sees only part of it: measured on
    the development machine, the demo's first partition after 20 ms took 40 %
    more in a worker than in one process. This deploys ``bundle``'s partitions
    on one tier each, at the emulated ``slowdown`` so that the worker counts
    its thread CPU (the emulation's basis: decoding, running, encoding; 1.01 by
    default, the host's own cooling), without links, threshold 1 (every sample leaves at the first partition), and sends
    one sample after each idle gap, ``samples`` per gap on a fresh deployment
    (after ``warmup`` back to back, whose CPU is taken out at the back-to-back
    rate). Per gap it reads the first worker's CPU per message and the median
    round trip:

    - ``factor`` f(g) = CPU(g) / CPU(0) (at least 1 and non-decreasing: noise
      only slows a run down);
    - ``wake_s`` h(g) = the round trip's growth beyond that CPU,
      (RTT(g) - s CPU(g)) - (RTT(0) - s CPU(0)) with s the slowdown, at least 0 and non-decreasing:
      wake-ups of the worker and of the client, which a slowdown does not stretch.

    With ``through_links`` the idle is a sample's time on a link, as a far tier
    idles (``link_idle_curve``, docs/spec.md#idle-between-samples): the
    partitions are deployed behind a source tier, the links emulated, and the
    gap is the first link's propagation there and back (g/2 each way), the
    client sending each sample as the previous answer arrives; RTT(g) is taken
    net of g, and g = 0 is measured through the links too, so that the relays'
    own hand-offs (``link_hop_s``) cancel out of h. Measured on the development
    machine (the demo's ResNet-20, slowdown 1.01, pinned), a worker that idled
    10 ms this way spent 1.24 ms of CPU on a message, against 0.90-0.97 ms when
    its client slept as long.

    Args:
        bundle: a bundle directory (its first partition is timed).
        gaps_s: the idle gaps, > 0 and increasing.
        samples: timed samples per gap (>= 3).
        warmup: samples back to back first, per deployment.
        cpu_latency_us: the CPU wake-up latency request to hold meanwhile (see
            :func:`earlyexit.runtime.cpus.hold_cpu_latency`; None: none).
        slowdown: the emulated slowdown of the tiers (> 1; the worker sleeps
            ``slowdown - 1`` times its CPU per message, as a deployment of that
            tier would).
        cpu_affinity: ``deploy(cpu_affinity=)``: ``"spread"`` to measure the
            worker pinned as the deployments it stands for run.
        through_links: make the idle a link's propagation, not the client's sleep.
        small: a second bundle whose first partition is much smaller (one block):
            measured alike, it separates what every message pays once after
            the idle, ``cold_s`` c(g), from what scales with the partition,
            CPU(g) = f(g) CPU(0) + c(g) through both (then f = (CPU(g) -
            CPU_small(g)) / (CPU(0) - CPU_small(0)); both at least their value
            at g = 0 and non-decreasing). Through a link on the development
            machine the cold CPU was most of it: block 1 alone took 0.11 ms of
            CPU back to back and 0.29 ms after 10 ms, the whole ResNet-20 0.75
            and 1.10 ms.

    Returns:
        ``{"gap_s", "factor", "wake_s"}`` (a profile's ``idle_curve``, or
        ``link_idle_curve`` with ``through_links``) and, as measured,
        ``"cpu_s"`` and ``"round_trip_s"`` (index 0: back to back; net of the
        gap through links), ``"method"``; with ``small``, also ``"cold_s"``
        and the small partition's ``"cpu_small_s"``; through links, also
        ``"client_curve"``: the client's own CPU per sample (``encode_s``,
        ``decode_s``; its source tier is slowed down by 1 %, so that it counts
        them) against its whole wait for the answer, ``wait_s``
        (docs/spec.md#the-client).

    Raises:
        ValueError: bad gaps or counts, or ``small`` not faster than ``bundle``.

    Example:
        ```python
        c = measure_idle_curve("bundle", samples=10)
        c["factor"][-1] >= 1.0  # True
        ```
    """
    from earlyexit.formats import Manifest
    from earlyexit.runtime.cpus import hold_cpu_latency
    from earlyexit.runtime.deployment import deploy

    gaps = [float(g) for g in gaps_s]
    if not gaps or gaps[0] <= 0 or any(b <= a for a, b in zip(gaps, gaps[1:], strict=False)):
        raise ValueError(f"gaps_s must be increasing seconds > 0, got {list(gaps_s)!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 3:
        raise ValueError(f"samples must be an int >= 3, got {samples!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if isinstance(slowdown, bool) or not isinstance(slowdown, (int, float)) or not slowdown > 1.0:
        raise ValueError(f"slowdown must be a number > 1, got {slowdown!r}")
    if not isinstance(through_links, bool):
        raise TypeError(f"through_links must be True or False, got {through_links!r}")
    # each bundle's partitions (a bad path fails here, before anything is deployed)
    parts = {p: len(Manifest.load(p).partitions) for p in (bundle, small) if p is not None}

    client: list[tuple[float, float, float]] = []  # through links: (wait, encode, decode)

    def cpu_and_rtt(path: str | Any, gap: float, back_to_back: float | None) -> tuple[float, float]:
        """The first worker's CPU per timed message and the median round trip after ``gap``
        (through links, the client's wait and CPU per sample go to ``client``)."""
        # a tier per partition, slowed down: the workers count the thread CPU they stretch
        num = parts[path]
        tiers = tuple(Tier(f"t{j}", "cpu", float(slowdown)) for j in range(num))
        links = tuple(Link(1e5, 0.0) for _ in range(num - 1))
        first = 0
        if through_links:  # behind a source tier of the client's own, the gap on its link;
            # slowed down by 1 %, so that the client counts the CPU a slowdown stretches
            # (and its stretch adds next to nothing to the round trips, whatever the workers')
            tiers = (Tier("source", "cpu", 1.01), *tiers)
            links = (Link(1e5, gap / 2 * 1e3), *links)
            first = 1
        topo = Topology(tiers, links, mtu_bytes=9000)
        with deploy(path, threshold=1.0, tiers=list(range(first, first + num)), topology=topo,
                    emulate_links=through_links, cpu_affinity=cpu_affinity) as d:  # fmt: skip
            x = d.inputs(warmup + samples, seed=2)
            for i in range(warmup):
                d.client.infer(x[i], timeout_s=30.0)
            lat = []
            cpu0 = dict(d.client.cpu_s)
            for i in range(warmup, warmup + samples):
                if gap and not through_links:
                    time.sleep(gap)
                took = d.client.infer(x[i], timeout_s=30.0).latency_s
                lat.append(took - gap if through_links else took)
            if through_links and path == bundle:
                client.append((float(np.median(lat)) + gap,
                               *((d.client.cpu_s[k] - cpu0[k]) / samples for k in ("encode", "decode"))))  # fmt: skip
        st = d.final_stats(0)
        tot, n = float(st["cpu_s"]), int(st["received"])
        if back_to_back is not None:  # the warm-up ran back to back: take it out at that rate
            tot, n = tot - (n - samples) * back_to_back, samples
        return max(tot, 0.0) / max(1, n), float(np.median(lat))

    cpu: list[float] = []
    rtt: list[float] = []
    cpu_small: list[float] = []
    with hold_cpu_latency(cpu_latency_us, quiet=True):
        for gap in (0.0, *gaps):
            c, r = cpu_and_rtt(bundle, gap, cpu[0] if cpu else None)
            cpu.append(c)
            rtt.append(r)
            if small is not None:
                cpu_small.append(cpu_and_rtt(small, gap, cpu_small[0] if cpu_small else None)[0])
    big = np.array(cpu)
    if small is None:
        fac = np.maximum.accumulate(np.maximum(big[1:] / big[0], 1.0))
        cold = None
    else:
        # CPU(g) = f(g) CPU(0) + c(g) through both partitions: f scales with the partition,
        # c is what every message pays once
        little = np.array(cpu_small)
        if not big[0] > little[0]:
            raise ValueError(
                f"small must be the faster partition: back to back it took {little[0]:.3g} s "
                f"of CPU against {big[0]:.3g} s for bundle"
            )
        fac = np.maximum.accumulate(np.maximum((big[1:] - little[1:]) / (big[0] - little[0]), 1.0))
        cold = np.maximum.accumulate(np.maximum(little[1:] - fac * little[0], 0.0))
    emulated = float(slowdown) * big  # the CPU's wall time, stretched
    wake = np.array(rtt[1:]) - emulated[1:] - (rtt[0] - emulated[0])
    wake = np.maximum.accumulate(np.maximum(wake, 0.0))
    how = "its sample's time on an emulated link" if through_links else "the client's sleep"
    out = {"gap_s": gaps, "factor": fac.tolist(), "wake_s": wake.tolist(),
           "cpu_s": cpu, "round_trip_s": rtt,
           "method": f"a tier worker's CPU per message and round trip after each idle gap ({how})"}  # fmt: skip
    if cold is not None:
        out.update(cold_s=cold.tolist(), cpu_small_s=cpu_small)
        out["method"] += "; the cold CPU every message pays from a second, smaller partition"
    if client:
        waits, enc, dec = (np.array(v) for v in zip(*client, strict=True))
        order = np.argsort(waits)  # the waits grow with the gap; kept increasing
        out["client_curve"] = {"wait_s": waits[order].tolist(),
                               "encode_s": np.maximum.accumulate(enc[order]).tolist(),
                               "decode_s": np.maximum.accumulate(dec[order]).tolist()}  # fmt: skip
    return out
