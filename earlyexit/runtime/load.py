"""An open-loop Poisson load generator for a deployment (docs/load.md#load-for-real).

Samples arrive at the source as a Poisson stream: the inter-arrival times are
exponential with mean ``1 / rate``, drawn once, before the run
(:func:`poisson_schedule`), and every sample is sent at its scheduled time
whatever the replies (open loop: a slow deployment does not slow the
arrivals). The first tier holds at most ``queue_capacity`` samples, waiting
or in service, as the M/GI/1/K model of docs/spec.md#load assumes: the
generator knows that tier's number in system from the first worker's acks
(``Client.unacknowledged``; a deployment started here acks at once) and drops a
sample that arrives when it is full, counting it. Every sample is therefore
answered, dropped, or (past the drain timeout) unanswered, and the counts add
up to the samples offered.

A sample's latency runs from its scheduled arrival (not from when the
generator managed to send it) to its result, deserialized at the destination.

Pure runtime: numpy and ZeroMQ, no torch. Loopback and ``ipc://`` only: the
generator refuses addresses of other hosts (it is a test tool, not a traffic
source for networks it does not own).

Example:
    >>> t = poisson_schedule(100.0, 2.0, seed=0)
    >>> bool(t[-1] < 2.0 and np.all(np.diff(t) > 0))
    True
"""

from __future__ import annotations

import gc
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from earlyexit.runtime.client import Client

__all__ = ["LoadResult", "check_local", "open_loop", "poisson_schedule", "run_load"]

MAX_SAMPLES = 1_000_000
"""The most samples one run may offer."""
MAX_DURATION_S = 3600.0
"""The longest arrival window of one run (seconds)."""
_LOCAL_HOSTS = ("127.", "localhost", "[::1]", "::1")


def _positive(name: str, v: Any, hi: float) -> float:
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    if not ok or not math.isfinite(float(v)) or not 0 < float(v) <= hi:
        raise ValueError(f"{name} must be a finite number in (0, {hi:g}], got {v!r}")
    return float(v)


def _count(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def check_local(address: str) -> str:
    """Refuse a ZeroMQ address that is not on this host.

    Args:
        address: ``ipc://...``, ``inproc://...`` or ``tcp://`` on a loopback
            host (127.0.0.0/8, ``localhost``, ``[::1]``).

    Returns:
        The address.

    Raises:
        ValueError: another host, a wildcard bind, or not a ZeroMQ address.

    Example:
        >>> check_local("tcp://127.0.0.1:5555")
        'tcp://127.0.0.1:5555'
    """
    if not isinstance(address, str):
        raise TypeError(f"address must be a string, got {type(address).__name__}")
    if address.startswith(("ipc://", "inproc://")):
        return address
    if address.startswith("tcp://"):
        host = address[len("tcp://") :].rsplit(":", 1)[0]
        if host.startswith(_LOCAL_HOSTS):
            return address
        raise ValueError(
            f"address {address!r} is not on this host; the load generator drives only "
            "loopback (tcp://127.0.0.1:PORT, tcp://localhost:PORT, tcp://[::1]:PORT) or ipc:// "
            "deployments"
        )
    raise ValueError(
        f"address {address!r} is not a ZeroMQ address (ipc:// or tcp://127.0.0.1:PORT)"
    )


def poisson_schedule(
    rate: float, duration_s: float, max_samples: int | None = None, seed: int = 0
) -> np.ndarray:
    """Arrival times of a Poisson stream: exponential inter-arrival times, cumulated.

    Args:
        rate: arrivals per second (> 0).
        duration_s: the arrival window; every arrival falls in ``[0, duration_s)``.
        max_samples: at most this many arrivals (None: as many as the window holds).
        seed: the random seed (the same seed, the same schedule).

    Returns:
        The arrival times in seconds from the start, increasing, float64.

    Raises:
        ValueError: a rate, duration or count out of range.

    Example:
        >>> len(poisson_schedule(10.0, 100.0, max_samples=5))
        5
    """
    lam = _positive("rate", rate, 1e6)
    dur = _positive("duration_s", duration_s, MAX_DURATION_S)
    cap = MAX_SAMPLES if max_samples is None else _count("max_samples", max_samples, 1, MAX_SAMPLES)
    if lam * dur > 10 * MAX_SAMPLES and max_samples is None:
        raise ValueError(f"rate x duration_s = {lam * dur:g} samples; at most {MAX_SAMPLES}")
    rng = np.random.default_rng(seed)
    want = min(cap, int(lam * dur + 6 * math.sqrt(lam * dur) + 16))
    t = np.cumsum(rng.exponential(1.0 / lam, size=want))
    return t[t < dur][:cap]


@dataclass
class LoadResult:
    """What one open-loop run measured.

    Attributes:
        rate: the arrival rate asked for (samples/s).
        duration_s: the arrival window asked for.
        queue_capacity: K, the first tier's bound (waiting plus in service).
        offered: samples scheduled (= answered + dropped + unanswered).
        answered: samples whose result arrived (degraded and failed ones included).
        dropped: samples that found the first tier full and were not sent.
        unanswered: sent samples with no result by the end of the drain.
        failed / degraded: answered samples that failed, or finished without
            their tier (a fault).
        elapsed_s: from the first scheduled arrival to the last result.
        latency_s: mean, p50, p95, p99 and max of the answered samples' latency
            (failed ones left out), from the scheduled arrival to the result.
        throughput: answered samples per second of ``elapsed_s``.
        loss_ratio: (dropped + unanswered) / offered.
        exit_counts: answered samples per exit partition (0-based; -1: none).
        lateness_s: how late the generator sent the samples it sent (p50, p99, max).
        max_in_system: the most samples the first tier held, as the generator saw it.
        latencies: every answered sample's latency (s), in arrival order (failed ones left out).
        exits: the exit partition of each of those samples.
        ahead: how many samples the first tier held when each of them arrived.
        policies: the exit policy each worker reported (0-based partition ->
            its ``describe()``, AdaEE's arm counts included), for a deployment
            started here; empty otherwise.
    """

    rate: float
    duration_s: float
    queue_capacity: int
    offered: int
    answered: int
    dropped: int
    unanswered: int
    failed: int
    degraded: int
    elapsed_s: float
    latency_s: dict[str, float]
    throughput: float
    loss_ratio: float
    exit_counts: dict[int, int]
    lateness_s: dict[str, float]
    max_in_system: int
    latencies: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    exits: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, np.int64))
    ahead: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, np.int64))
    policies: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (without the per-sample latencies)."""
        out = {
            k: getattr(self, k)
            for k in self.__dataclass_fields__
            if k not in ("latencies", "exits", "ahead")
        }
        out["exit_counts"] = {str(k): v for k, v in sorted(self.exit_counts.items())}
        return out


def _stats(x: np.ndarray, quantiles: Sequence[tuple[str, float]]) -> dict[str, float]:
    if x.size == 0:
        return {name: math.nan for name, _ in quantiles}
    return {
        name: float(np.mean(x)) if q < 0 else float(np.percentile(x, q)) for name, q in quantiles
    }


def open_loop(
    client: Client,
    inputs: np.ndarray,
    rate: float,
    duration_s: float,
    *,
    max_samples: int | None = None,
    queue_capacity: int = 20,
    seed: int = 0,
    drain_timeout_s: float = 10.0,
) -> LoadResult:
    """Drive a deployment's client with an open-loop Poisson stream; drop at a full first tier.

    Args:
        client: the deployment's client, its input route set; its first worker
            should ack at once (``deploy(ack_interval_s=0)``), else the number
            in system it sees lags, and more samples are dropped than must be.
        inputs: ``[n, ...]`` inputs, sent in turn (cycled).
        rate, duration_s, max_samples, seed: the schedule (:func:`poisson_schedule`).
        queue_capacity: K: a sample that arrives when the first tier holds K is dropped.
        drain_timeout_s: after the last arrival, the longest wait for results.

    Returns:
        The :class:`LoadResult`.

    Raises:
        ValueError: bad arguments, or samples of the client already in flight.
    """
    k_cap = _count("queue_capacity", queue_capacity, 1, 100_000)
    drain = _positive("drain_timeout_s", drain_timeout_s, 3600.0)
    x = np.asarray(inputs)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"inputs must be a non-empty batch [n, ...], got shape {x.shape}")
    if client.in_flight or client.unacknowledged:
        raise ValueError(f"the client has {client.in_flight} sample(s) in flight; start idle")
    sched = poisson_schedule(rate, duration_s, max_samples, seed)
    # the process's heap so far (torch, numpy, ...) is left out of collections during
    # the run: a full one took 0.13 s here, and the generator would fall behind by as much
    frozen = gc.get_freeze_count()  # a caller's own frozen heap stays frozen
    gc.collect()
    gc.freeze()
    try:
        return _drive(client, x, float(rate), float(duration_s), sched, k_cap, drain)
    finally:
        if not frozen:
            gc.unfreeze()


def _drive(
    client: Client, x: np.ndarray, rate: float, duration_s: float, sched: np.ndarray,
    k_cap: int, drain: float,
) -> LoadResult:  # fmt: skip
    """:func:`open_loop`'s run: send on schedule, drop at a full first tier, gather."""
    n = len(sched)
    sent_at = np.full(n, np.nan)
    ahead = np.zeros(n, np.int64)
    lat = np.full(n, np.nan)
    answered: dict[int, Any] = {}
    dropped = max_in = 0
    t0 = time.perf_counter()

    index: dict[int, int] = {}  # the client's sample id -> position in the schedule

    def take(results: list[Any]) -> None:
        for r in results:
            i = index.get(r.id)
            if i is not None and i not in answered:
                answered[i] = r
                lat[i] = r.latency_s + (sent_at[i] - (t0 + sched[i]))

    for i in range(n):
        due = t0 + sched[i]
        while True:
            left = due - time.perf_counter()
            if left <= 0:
                break
            if left > 0.002:
                take(client.poll(left - 0.0015))
            else:
                time.sleep(left)
        take(client.poll(0))  # acks and results that came in: the first tier's count is fresh
        in_system = client.unacknowledged
        max_in = max(max_in, in_system)
        ahead[i] = in_system
        if in_system >= k_cap:
            dropped += 1
            continue
        sent_at[i] = time.perf_counter()
        (sid,) = client.submit(x[i % len(x)][None])  # fresh ids: never one the client knows
        index[sid] = i
    end = time.perf_counter() + drain
    while client.in_flight and time.perf_counter() < end:
        take(client.poll(min(0.1, end - time.perf_counter())))
    take(client.poll(0))
    unanswered = client.in_flight
    last = max((t0 + sched[i] + lat[i] for i in answered), default=t0)
    elapsed = max(last - t0 - (sched[0] if n else 0.0), 1e-9)
    kept = [(i, r) for i, r in sorted(answered.items()) if not r.failed]
    ok = np.array([lat[i] for i, _ in kept])
    quant = (("mean", -1), ("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
    late = sent_at[~np.isnan(sent_at)] - (t0 + sched[~np.isnan(sent_at)])
    return LoadResult(
        rate=float(rate),
        duration_s=float(duration_s),
        queue_capacity=k_cap,
        offered=n,
        answered=len(answered),
        dropped=dropped,
        unanswered=unanswered,
        failed=sum(r.failed for r in answered.values()),
        degraded=sum(r.degraded and not r.failed for r in answered.values()),
        elapsed_s=float(elapsed),
        latency_s=_stats(ok, quant),
        throughput=len(answered) / elapsed,
        loss_ratio=(dropped + unanswered) / n if n else 0.0,
        exit_counts=dict(Counter(int(r.partition) for r in answered.values())),
        lateness_s=_stats(late, (("p50", 50), ("p99", 99), ("max", 100))),
        max_in_system=max_in,
        latencies=ok,
        exits=np.array([r.partition for _, r in kept], np.int64),
        ahead=ahead[[i for i, _ in kept]],
    )


def run_load(
    rate: float,
    duration_s: float,
    bundle: str | None = None,
    *,
    synthetic: dict[str, Any] | None = None,
    topology: str | None = None,
    connect: Sequence[str] = (),
    results_bind: str = "tcp://127.0.0.1:*",
    control_bind: str = "tcp://127.0.0.1:*",
    inputs: np.ndarray | None = None,
    max_samples: int | None = 100_000,
    queue_capacity: int = 20,
    seed: int = 0,
    drain_timeout_s: float = 10.0,
    threshold: float | None = None,
    policy: str | dict[str, Any] | None = None,
    cpu_latency_us: int | None = None,
    cpu_affinity: str | None = None,
) -> LoadResult:
    """Offer a deployment an open-loop Poisson load and measure it.

    Either starts a deployment on this host (``bundle`` or ``synthetic``, as
    :func:`~earlyexit.runtime.deployment.deploy`, every worker acking at once)
    or drives a running one whose first worker ``connect`` reaches (its workers
    send results to ``results_bind``).

    Args:
        rate: arrivals per second (> 0).
        duration_s: seconds of arrivals (the run adds the drain).
        bundle: a bundle directory to deploy on this host.
        synthetic: instead, keyword arguments of the runtime's SyntheticModel (tests).
        topology: the topology to emulate (links, slowdowns) for ``bundle`` or ``synthetic``.
        connect: the route to a running deployment's first worker (link hops
            first); loopback or ipc:// only.
        results_bind: where a running deployment's workers send results (with ``connect``).
        control_bind: where its first worker sends acks (with ``connect``).
        inputs: ``[n, ...]`` inputs sent in turn (default: random ones of the input shape).
        max_samples: at most this many arrivals.
        queue_capacity: K of the first tier: an arrival that finds K samples there is dropped.
        seed: the schedule's seed.
        drain_timeout_s: after the last arrival, the longest wait for results.
        threshold: the exit threshold of a deployment started here (default: the bundle's).
        policy: the exit policy of a deployment started here (a spec as
            :func:`~earlyexit.runtime.policies.parse_policy` reads it: a name,
            JSON, a JSON/YAML file or a mapping; default: the threshold).
        cpu_latency_us: the CPU wake-up latency its workers request while
            serving (``deploy(cpu_latency_us=)``; 0: idle CPUs poll; None: none).
        cpu_affinity: ``"spread"`` gives the slowest tiers' workers a core each,
            the rest of the deployment the cores left (``deploy(cpu_affinity=)``);
            None pins nothing.

    Returns:
        The :class:`LoadResult`.

    Raises:
        ValueError: bad arguments, none or several of bundle, synthetic and
            connect, or an address of another host.
        RuntimeError: a process of the deployment failed to start.
    """
    _positive("rate", rate, 1e6)
    _positive("duration_s", duration_s, MAX_DURATION_S)
    k_cap = _count("queue_capacity", queue_capacity, 1, 100_000)
    given = [
        n for n, v in (("bundle", bundle), ("synthetic", synthetic), ("connect", connect)) if v
    ]
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of bundle (a bundle directory), synthetic or connect (a running "
            f"deployment's first worker), got {given or 'none'}"
        )
    kw = {"max_samples": max_samples, "queue_capacity": k_cap, "seed": seed,
          "drain_timeout_s": drain_timeout_s}  # fmt: skip
    if connect:
        if isinstance(connect, str):
            connect = [connect]
        route = [check_local(a) for a in connect]
        for a in (results_bind, control_bind):
            check_local(a)
        if inputs is None:
            raise ValueError("inputs are required with connect (the deployment's input shape)")
        with Client(route, results_bind=results_bind, control_bind=control_bind,
                    hwm=max(64, k_cap)) as client:  # fmt: skip
            return open_loop(client, inputs, rate, duration_s, **kw)
    from earlyexit.runtime.deployment import deploy

    with deploy(bundle, synthetic=synthetic, topology=topology, threshold=threshold,
                hwm=max(64, k_cap), ack_interval_s=0.0, policy=policy,
                cpu_latency_us=cpu_latency_us, cpu_affinity=cpu_affinity) as d:  # fmt: skip
        x = d.inputs(min(1000, max_samples or 1000)) if inputs is None else inputs
        res = open_loop(d.client, x, rate, duration_s, **kw)
        end = time.monotonic() + 1.0  # every worker's heartbeat (0.2 s) has reported its policy
        while len(d.client.policies) < d.num_partitions and time.monotonic() < end:
            d.client.poll(0.05)
        return replace(res, policies={str(k): v for k, v in sorted(d.client.policies.items())})
