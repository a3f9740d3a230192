"""Measure configurations for real: a deployment over emulated links, and the accuracy pass.

:func:`measure` deploys one configuration (one process per tier, ZeroMQ,
emulated links and slowdowns: :func:`earlyexit.runtime.deployment.deploy`) and
sends test samples through it one at a time. :func:`accuracy_pass` runs the
same partition files chained in this process for many more samples (which exit
a sample takes, and what it predicts, do not depend on where the partitions
run). :func:`latency_split` deploys a configuration three ways (as is, without
emulated links, and without links or slowdown) so that measured latency splits
into compute and runtime, emulated slowdown, and links, as the estimate's
breakdown does.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earlyexit.formats import Topology
from earlyexit.validation.configs import Config

__all__ = [
    "Measured",
    "LatencySplit",
    "measure",
    "measure_passes",
    "accuracy_pass",
    "latency_split",
    "niceness_allowed",
    "realtime_allowed",
    "thread_niceness",
    "thread_realtime",
]


@dataclass
class Measured:
    """What a deployed configuration did on the test samples.

    Attributes:
        latency_s: per-sample end-to-end latency.
        exit_partition: per-sample 0-based partition of the exit taken.
        correct: per-sample correctness.
        degraded: samples that finished degraded (should be 0).
        prediction: per-sample predicted class (-1: none).
    """

    latency_s: list[float]
    exit_partition: list[int]
    correct: list[bool]
    degraded: int = 0
    prediction: list[int] = field(default_factory=list)

    def exit_fractions(self, num_partitions: int) -> list[float]:
        """Fraction of samples that left at each partition."""
        counts = np.bincount(np.asarray(self.exit_partition, int), minlength=num_partitions)
        return (counts[:num_partitions] / max(1, len(self.exit_partition))).tolist()

    @property
    def accuracy(self) -> float:
        """Fraction of correct predictions."""
        return float(np.mean(self.correct)) if self.correct else float("nan")

    @property
    def mean_latency_s(self) -> float:
        """Mean end-to-end latency."""
        return float(np.mean(self.latency_s))


@dataclass(frozen=True)
class LatencySplit:
    """Mean latency of one configuration deployed three ways, and what each difference stands for.

    Attributes:
        full_s: as validated (emulated links and slowdowns).
        no_links_s: without emulated links (slowdowns still emulated).
        bare_s: neither links nor slowdowns: compute, (de)serialization and the
            runtime's own hand-offs at this machine's speed.
    """

    full_s: float
    no_links_s: float
    bare_s: float

    @property
    def slowdown_s(self) -> float:
        """What emulating the tiers' slowdowns added."""
        return self.no_links_s - self.bare_s

    @property
    def links_s(self) -> float:
        """What the emulated links added (transmission, propagation and the emulator's relays)."""
        return self.full_s - self.no_links_s

    def to_dict(self) -> dict[str, float]:
        """The mapping of ``validation.json``'s ``measured.split_s``."""
        return {"full": self.full_s, "no_links": self.no_links_s, "bare": self.bare_s,
                "slowdown": self.slowdown_s, "links": self.links_s}  # fmt: skip


def measure(
    bundle: str | os.PathLike[str],
    config: Config,
    topology: Topology,
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    warmup: int = 10,
    timeout_s: float = 60.0,
    one_at_a_time: bool = True,
    rounds: int = 1,
    realtime: int | None = None,
    gap_s: float = 0.0,
    **deploy_kwargs: Any,
) -> Measured:
    """Deploy ``bundle`` as ``config`` says and run ``x`` through it one sample at a time.

    With ``rounds`` > 1 the samples go through the deployment that many times
    (all of them, then all again) and each sample's latency is the median of its
    rounds: on a shared machine a burst of other work delays some samples by
    milliseconds, which a dedicated device would not see; it must hit the same
    sample in most rounds to count. Exits and predictions are the first round's
    (every round takes the same exits: they depend only on the files and the threshold).

    With ``one_at_a_time=False`` the samples are submitted all at once, in
    messages of up to 64 samples (which exit a sample takes and what it
    predicts do not depend on timing; only latencies would be blurred by queueing).

    Args:
        bundle: a bundle whose partitions end at ``config.cuts``.
        config: threshold and tiers (the bundle's own are overridden).
        topology: links, MTU and slowdowns to emulate.
        x: test inputs.
        y: their labels (None: correctness is all False).
        warmup: samples run first and not measured (the first few of a fresh
            deployment are slower: caches, lazy allocations, connections).
        timeout_s: per-sample bound (the whole run's bound when not one at a time).
        one_at_a_time: wait for each result before the next input.
        rounds: times each sample is timed (one at a time only; odd keeps the
            median a measured latency).
        realtime: run the deployment's processes and this client under the
            real-time policy ``SCHED_FIFO`` at this priority (1-99; they inherit
            it from this thread): they then never wait behind the machine's
            other processes, as dedicated devices would not (needs
            ``CAP_SYS_NICE``; silently not applied without it, see
            :func:`realtime_allowed`). None: the normal policy.
        gap_s: idle time before each timed sample (one at a time only), so that
            every sample meets an idle deployment, as a lone sample does (and as
            a profile made with the same ``gap_s`` times its partitions).
        **deploy_kwargs: passed to :func:`earlyexit.runtime.deployment.deploy`.

    Returns:
        The per-sample measurements.

    Raises:
        ValueError: ``rounds`` < 1, or > 1 without ``one_at_a_time``.
    """
    from earlyexit.runtime.deployment import deploy

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if rounds > 1 and not one_at_a_time:
        raise ValueError("rounds > 1 times samples one at a time: pass one_at_a_time=True")
    if not (isinstance(gap_s, (int, float)) and not isinstance(gap_s, bool) and 0 <= gap_s <= 10):
        raise ValueError(f"gap_s must be a number of seconds in [0, 10], got {gap_s!r}")
    niceness = deploy_kwargs.get("niceness")
    # the client (this thread and its ZeroMQ threads) at the deployment's niceness, and no
    # pause of this process's garbage collector (whose heap holds the model) in the timings
    gc_was_enabled = gc.isenabled()
    gc.disable()
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: gc.enable() if gc_was_enabled else None)
        stack.enter_context(thread_niceness(niceness))
        stack.enter_context(thread_realtime(realtime))
        with deploy(
            bundle, tiers=config.tiers, threshold=config.threshold, topology=topology,
            **deploy_kwargs,
        ) as d:  # fmt: skip
            d.run(x[:warmup], one_at_a_time=True, timeout_s=timeout_s)
            if one_at_a_time:

                def one_pass() -> list[Any]:
                    out = []
                    for xi in x:
                        if gap_s > 0:
                            time.sleep(gap_s)
                        out.append(d.client.infer(xi, timeout_s))
                    return out

                results = one_pass()
                times = [[r.latency_s for r in results]]
                for _ in range(rounds - 1):
                    times.append([r.latency_s for r in one_pass()])
            else:
                ids = [
                    i
                    for j in range(0, len(x), 64)
                    for i in d.client.submit(x[j : j + 64], batch=True)
                ]
                results = d.client.gather(ids, timeout_s=timeout_s)
                times = [[r.latency_s for r in results]]
    return Measured(
        latency_s=np.median(np.asarray(times), axis=0).tolist(),
        exit_partition=[r.partition for r in results],
        correct=[bool(y is not None and r.prediction == int(y[i])) for i, r in enumerate(results)],
        degraded=sum(r.degraded for r in results),
        prediction=[-1 if r.prediction is None else r.prediction for r in results],
    )


def latency_split(
    bundle: str | os.PathLike[str],
    config: Config,
    topology: Topology,
    x: np.ndarray,
    full: Measured,
    mean: Callable[[Measured], float] | None = None,
    **deploy_kwargs: Any,
) -> LatencySplit:
    """Deploy ``config`` again without links, then without links or slowdowns, on the same samples.

    Args:
        bundle: as for :func:`measure`.
        config: as for :func:`measure`.
        topology: as for :func:`measure`.
        x: the samples ``full`` was measured on.
        full: the configuration's measurement as validated.
        mean: how a measurement's mean latency is taken (default: the plain mean).
        **deploy_kwargs: passed to :func:`measure` (``niceness``, ...).

    Returns:
        The three mean latencies.
    """
    kw = {k: v for k, v in deploy_kwargs.items() if k not in ("emulate_links", "apply_slowdown")}
    no_links = measure(bundle, config, topology, x, None, emulate_links=False, **kw)
    bare = measure(
        bundle, config, topology, x, None, emulate_links=False, apply_slowdown=False, **kw
    )
    mean = mean or (lambda m: m.mean_latency_s)
    return LatencySplit(mean(full), mean(no_links), mean(bare))


def measure_passes(
    runs: Sequence[tuple[str, str | os.PathLike[str], Config, Sequence[int]]],
    topology: Topology,
    x: np.ndarray,
    y: np.ndarray | None,
    passes: int,
    *,
    log_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    **measure_kwargs: Any,
) -> list[Measured]:
    """Measure several configurations side by side: their samples in interleaved passes.

    Each run's samples are split into ``passes`` parts; pass 1 measures part 1 of
    every run in order, pass 2 part 2 in the reverse order, and so on (serpentine),
    each on a fresh deployment (:func:`measure`, with its warm-up). A slow spell
    of a shared host then falls on every configuration alike instead of on those
    measured during it, and a steady drift cancels out of their means.

    Args:
        runs: ``(name, bundle, config, sample indices into x)`` per configuration.
        topology: the topology to emulate.
        x: the inputs.
        y: the labels (None: no accuracy).
        passes: the number of passes (>= 1).
        log_dir: keep each deployment's logs in ``log_dir/name[/pass-k]``.
        progress: called with a line before each pass (when ``passes`` > 1).
        **measure_kwargs: passed on to :func:`measure`.

    Returns:
        One :class:`Measured` per run, its passes joined in the order of its samples.

    Raises:
        ValueError: ``passes`` below 1.

    Example:
        >>> measure_passes([], None, np.zeros((0, 1)), None, passes=2)
        []
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an integer >= 1, got {passes!r}")
    parts: list[list[Measured]] = [[] for _ in runs]
    for p in range(passes if runs else 0):
        if progress and passes > 1:
            progress(f"pass {p + 1}/{passes}: timing {len(runs)} configurations")
        order = range(len(runs)) if p % 2 == 0 else range(len(runs) - 1, -1, -1)
        for i in order:
            name, bundle, cfg, idx = runs[i]
            sel = np.asarray(idx, dtype=np.int64)[np.array_split(np.arange(len(idx)), passes)[p]]
            if len(sel) == 0:
                continue
            logs = None
            if log_dir is not None:
                logs = Path(log_dir) / name
                logs = logs / f"pass-{p + 1}" if passes > 1 else logs
            ys = None if y is None else y[sel]
            parts[i].append(
                measure(bundle, cfg, topology, x[sel], ys, log_dir=logs, **measure_kwargs)
            )
    return [
        Measured(
            latency_s=[v for m in ms for v in m.latency_s],
            exit_partition=[v for m in ms for v in m.exit_partition],
            correct=[v for m in ms for v in m.correct],
            degraded=sum(m.degraded for m in ms),
            prediction=[v for m in ms for v in m.prediction],
        )
        for ms in parts
    ]


def accuracy_pass(
    bundle: str | os.PathLike[str], config: Config, x: np.ndarray, y: np.ndarray | None
) -> Measured:
    """Exits and predictions of many samples: the bundle's files, chained in one process.

    Which exit a sample takes and what it predicts depend only on the partition
    files and the threshold, not on where the partitions run or how long links
    take; :class:`~earlyexit.runtime.session.BundleSession` runs the very files
    the workers run, with the same exit rule. The deployed latency pass checks
    that it agrees with this on every sample they share.

    Args:
        bundle: the bundle.
        config: its threshold is used.
        x: inputs.
        y: labels (None: correctness is all False).

    Returns:
        The exits and predictions (no latencies).
    """
    from earlyexit.runtime.session import BundleSession

    session = BundleSession(bundle, intra_op_threads=1)
    parts, preds = [], []
    for j in range(0, len(x), 256):
        out = session.predict(x[j : j + 256], config.threshold)
        parts += out["exit_partition"].tolist()
        preds += out["prediction"].tolist()
    return Measured(
        latency_s=[],
        exit_partition=parts,
        correct=[bool(y is not None and p == int(y[i])) for i, p in enumerate(preds)],
        prediction=preds,
    )


@contextlib.contextmanager
def thread_niceness(niceness: int | None) -> Iterator[bool]:
    """Run the block at ``niceness`` (this thread, and threads it starts), then restore.

    Yields:
        Whether it was applied (lowering it needs ``CAP_SYS_NICE``).
    """
    if niceness is None:
        yield False
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)  # Linux: the calling thread's
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
        applied = True
    except OSError:
        applied = False
    try:
        yield applied
    finally:
        if applied:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, before)
            except OSError:  # raising it back needs the same capability; keep going
                pass


@contextlib.contextmanager
def thread_realtime(priority: int | None) -> Iterator[bool]:
    """Run the block under ``SCHED_FIFO`` at ``priority`` (this thread and what it starts), then restore.

    Processes and threads started inside inherit the policy, so a deployment
    started here runs real-time. Linux; needs ``CAP_SYS_NICE`` (the kernel
    still keeps 5 % of every second for other tasks: ``sched_rt_runtime_us``).

    Yields:
        Whether it was applied.
    """
    if priority is None or not hasattr(os, "sched_setscheduler"):
        yield False
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        applied = True
    except (OSError, ValueError):
        applied = False
    try:
        yield applied
    finally:
        if applied:
            os.sched_setscheduler(0, policy, param)


def realtime_allowed(priority: int) -> bool:
    """Whether this process may run under ``SCHED_FIFO`` at ``priority`` (tried, then restored)."""
    with thread_realtime(priority) as ok:
        return ok


def niceness_allowed(niceness: int) -> bool:
    """Whether this process may run at ``niceness`` (checked by trying, then restored)."""
    with thread_niceness(niceness) as ok:
        return ok
