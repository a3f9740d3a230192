"""The settings of one tier worker, as one typed, frozen, checked object.

:class:`WorkerOptions` is what a :class:`~earlyexit.runtime.worker.Worker`
takes: built by ``deploy()`` for each partition it starts, by ``earlyexit
serve`` from its flags, or by hand. It is checked once, when made, and crosses
into a worker process as JSON (:meth:`WorkerOptions.to_dict` /
:meth:`WorkerOptions.from_dict`). No ZeroMQ, no ONNX Runtime.

Example:
    >>> o = WorkerOptions(partition=0, num_partitions=1, threshold=0.5,
    ...                   result_route=("tcp://127.0.0.1:9",))
    >>> o.max_batch, WorkerOptions.from_dict(o.to_dict()) == o
    (1, True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from earlyexit.runtime.cpus import check_cpu_affinity, check_cpu_latency_us
from earlyexit.runtime.policies import make_policy, policy_text
from earlyexit.runtime.wire import MAX_MESSAGE_BYTES

__all__ = ["MAX_HWM", "MAX_MESSAGE_BYTES", "WorkerOptions"]

MAX_HWM = 1_000_000
"""The largest ZeroMQ high-water mark a worker takes (messages queued per socket)."""
_ENDPOINTS = ("tcp://", "ipc://", "inproc://")


def _int(name: str, v: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {rng}, got {v!r}")
    return int(v)


def _seconds(name: str, v: Any, positive: bool) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (v <= 0 if positive else v < 0):
        raise ValueError(
            f"{name} must be a finite number of seconds {'> 0' if positive else '>= 0'}, got {v!r}"
        )
    return float(v)


def _route(name: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        raise TypeError(f"{name} must be a list of ZeroMQ addresses, got {v!r}")
    bad = [a for a in v if not isinstance(a, str) or not a.startswith(_ENDPOINTS)]
    if bad:
        raise ValueError(
            f"{name}: {bad[0]!r} is not a ZeroMQ endpoint like 'tcp://127.0.0.1:5555' or 'ipc://...'"
        )
    return tuple(v)


@dataclass(frozen=True)
class WorkerOptions:
    """Everything a tier worker needs besides its partition runner.

    Attributes:
        partition: its 0-based index in the plan.
        num_partitions: L; the last partition sends every sample to the destination.
        threshold: exit when the normalized entropy is below it, in [0, 1].
        result_route: addresses from here to the destination (emulated links,
            then the client's results address).
        next_route: addresses from here to the next partition's worker (empty
            for the last partition).
        bind: input address (``tcp://host:port``; ``*`` as port picks one).
        control_bind: address for acks and heartbeats from downstream.
        advertise: the control address as others reach it (None: the bound one).
        tier: the tier index, reported in results.
        next_tier: the tier of the next partition (None: the last partition, or
            unknown); the link estimate this worker measures is reported for
            ``(tier, next_tier)``.
        last_block: the 1-based block of this partition's exit, reported in results.
        slowdown: emulated slowdown factor (> 0; above 1 adds sleep).
        max_batch: largest micro-batch, in messages.
        batch_timeout_s: how long to wait for more messages to fill a batch.
        hwm: ZeroMQ high-water mark (messages) on data sockets.
        send_timeout_s: one blocked send attempt; retried while the peer lives.
        max_message_bytes: larger messages are rejected.
        heartbeat_s: period of heartbeats to upstream.
        dead_after_s: silence after which the next worker is considered dead.
        pending_limit: most samples forwarded but not yet acknowledged.
        ack_interval_s: acks to upstream are gathered and sent at this period
            (0: one ack message per batch); capped at ``dead_after_s / 4``.
        policy: the exit policy: a name (threshold, probabilities, knapsack,
            adaee), a JSON object such as {"policy": "adaee", "grid": [0.2, 0.5]},
            or a JSON/YAML file holding one (docs/load.md); kept as canonical JSON.
        cpu_latency_us: while serving, ask Linux to keep idle CPUs able to wake
            within this many microseconds (0: they poll instead of sleeping; see
            :mod:`earlyexit.runtime.cpus`); None asks nothing. Where the
            request is not allowed, the worker logs why and serves without it.
        cpu_affinity: the CPUs the worker's process runs on, pinned before its
            session and sockets start their threads (empty: not pinned; see
            :mod:`earlyexit.runtime.cpus`).

    Raises:
        TypeError, ValueError: any setting out of range, or routes that do not
            fit the partition (a next route for the last one, none for another).
    """

    partition: int
    num_partitions: int
    threshold: float
    result_route: tuple[str, ...]
    next_route: tuple[str, ...] = ()
    bind: str = "tcp://127.0.0.1:*"
    control_bind: str = "tcp://127.0.0.1:*"
    advertise: str | None = None
    tier: int | None = None
    next_tier: int | None = None
    last_block: int | None = None
    slowdown: float = 1.0
    max_batch: int = 1
    batch_timeout_s: float = 0.0
    hwm: int = 64
    send_timeout_s: float = 0.2
    max_message_bytes: int = MAX_MESSAGE_BYTES
    heartbeat_s: float = 0.2
    dead_after_s: float = 2.0
    pending_limit: int = 4096
    ack_interval_s: float = 0.05
    policy: str = "threshold"
    cpu_latency_us: int | None = None
    cpu_affinity: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = _int("num_partitions", self.num_partitions, 1)
        _int("partition", self.partition, 0, n - 1)
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1], got {t!r}")
        object.__setattr__(self, "threshold", float(t))
        result = _route("result_route", self.result_route)
        if not result:
            raise ValueError("result_route must name at least the destination address")
        nxt = _route("next_route", self.next_route or ())
        last = self.partition == n - 1
        if not last and not nxt:
            raise ValueError(f"partition {self.partition} of {n} needs a next_route")
        if last and nxt:
            raise ValueError(f"partition {self.partition} is the last one: it has no next_route")
        object.__setattr__(self, "result_route", result)
        object.__setattr__(self, "next_route", nxt)
        for name in ("bind", "control_bind", "advertise"):
            v = getattr(self, name)
            if v is not None or name != "advertise":
                _route(name, [v])
        for name in ("tier", "next_tier", "last_block"):
            v = getattr(self, name)
            if v is not None:
                _int(name, v, 1 if name == "last_block" else 0)
        s = self.slowdown
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf:
            raise ValueError(f"slowdown must be a finite number > 0, got {s!r}")
        object.__setattr__(self, "slowdown", float(s))
        _int("max_batch", self.max_batch, 1, 4096)
        _int("hwm", self.hwm, 1, MAX_HWM)
        _int("max_message_bytes", self.max_message_bytes, 1024, 2**31 - 1)
        _int("pending_limit", self.pending_limit, 1)
        for name, positive in (("batch_timeout_s", False), ("send_timeout_s", False),
                               ("heartbeat_s", True), ("dead_after_s", True),
                               ("ack_interval_s", False)):  # fmt: skip
            object.__setattr__(self, name, _seconds(name, getattr(self, name), positive))
        object.__setattr__(self, "cpu_latency_us", check_cpu_latency_us(self.cpu_latency_us))
        object.__setattr__(self, "cpu_affinity", check_cpu_affinity(self.cpu_affinity))
        # the spec read and checked once (a file is read here), then kept as canonical JSON
        text = policy_text(self.policy)
        make_policy(text, self.partition, n, self.threshold)  # lengths against the plan's exits
        object.__setattr__(self, "policy", text)
        if self.dead_after_s <= self.heartbeat_s:
            raise ValueError(
                f"dead_after_s ({self.dead_after_s:g}) must exceed heartbeat_s ({self.heartbeat_s:g})"
            )

    @property
    def is_last(self) -> bool:
        """Whether this is the last partition."""
        return self.partition == self.num_partitions - 1

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-able dict (routes as lists)."""
        out = dataclasses.asdict(self)
        out["result_route"], out["next_route"] = list(self.result_route), list(self.next_route)
        out["cpu_affinity"] = list(self.cpu_affinity)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerOptions:
        """Options from :meth:`to_dict`'s form (what a worker process receives).

        Raises:
            TypeError: an unknown field or not a mapping.
            ValueError: a value out of range.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"worker options must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TypeError(f"unknown worker option(s) {unknown}; valid: {sorted(known)}")
        kw = dict(data)
        for name in ("result_route", "next_route", "cpu_affinity"):
            if isinstance(kw.get(name), list):
                kw[name] = tuple(kw[name])
        if kw.get("next_route") is None:
            kw["next_route"] = ()
        return cls(**kw)
