"""A link's bandwidth and delay, estimated by a sender from its own transfers.

No side channel: the sender only knows what it sent (bytes) and how long each
transfer took by its own clock (for instance from sending a message until the
next tier's acknowledgement, minus the time the receiver reports it held it).
Transfer time grows linearly with size, ``t = d + 8 b / B``, so the line
through transfers of different sizes gives the bandwidth ``B`` (its slope) and
the delay ``d`` (its intercept). Queueing only adds time, so per size the
estimator keeps a low quantile of the recent times, as packet-pair and
pathload-style tools do, and fits the line through those. Messages of one cut
all have the same size; a line needs two sizes, so :meth:`LinkEstimator.probe_size`
asks for a probe of another size when the window lacks one, or when the link
has been idle for a while.

Example:
    >>> est = LinkEstimator()
    >>> for i in range(20):
    ...     for n in (100, 20_000):
    ...         est.observe(n, 0.010 + 8 * n / 4e6, now=float(i))   # 4 Mb/s, 10 ms
    >>> e = est.estimate()
    >>> round(e.bandwidth_mbps, 3), round(e.propagation_ms, 3)
    (4.0, 10.0)
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LinkEstimate",
    "LinkEstimator",
    "merge_link_report",
    "runtime_estimator",
    "transfer_times",
]


@dataclass(frozen=True)
class LinkEstimate:
    """One estimate of a link.

    Attributes:
        bandwidth_mbps: estimated bandwidth (10**6 bit/s).
        propagation_ms: estimated one-way delay.
        samples: transfers in the window it was fitted on.
        sizes: distinct size groups it was fitted on (at least 2).
        at: the sender's clock at the last transfer used.
    """

    bandwidth_mbps: float
    propagation_ms: float
    samples: int
    sizes: int
    at: float


def _check_positive(value: float, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class LinkEstimator:
    """Windowed estimate of one link's bandwidth and delay from transfer times.

    Args:
        window: transfers kept (the oldest leave first).
        quantile: per size group, the quantile of times that stands for the
            unqueued time (0.1: the fastest tenth).
        min_samples: transfers needed before an estimate.
        size_ratio: two sizes belong to different groups when they differ by
            at least this factor.
        idle_probe_s: ask for a probe after this long without a transfer.
        round_trip: the times are round trips (``2 d + 8 b / B``): the
            intercept is halved.
        probe_bytes: (small, large) probe sizes.
        max_age_s: transfers older than this (by the clock of the last one)
            leave the window (None: only the window's length bounds it), so
            that an estimate follows a link that changed within that time.

    Raises:
        ValueError: for a non-positive or out-of-range argument.
    """

    def __init__(
        self,
        window: int = 128,
        quantile: float = 0.1,
        min_samples: int = 8,
        size_ratio: float = 2.0,
        idle_probe_s: float = 2.0,
        round_trip: bool = False,
        probe_bytes: tuple[int, int] = (64, 65_536),
        max_age_s: float | None = None,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 4:
            raise ValueError(f"window must be an int >= 4, got {window!r}")
        if not isinstance(quantile, int | float) or not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile!r}")
        if (
            isinstance(min_samples, bool)
            or not isinstance(min_samples, int)
            or not 2 <= min_samples <= window
        ):
            raise ValueError(f"min_samples must be an int in [2, window], got {min_samples!r}")
        if _check_positive(size_ratio, "size_ratio") <= 1.0:
            raise ValueError(f"size_ratio must be > 1, got {size_ratio!r}")
        _check_positive(idle_probe_s, "idle_probe_s")
        small, large = probe_bytes
        if not 1 <= small < large:
            raise ValueError(
                f"probe_bytes must be (small, large) with 1 <= small < large, got {probe_bytes!r}"
            )
        self.window, self.quantile, self.min_samples = window, float(quantile), min_samples
        self.size_ratio, self.idle_probe_s = float(size_ratio), float(idle_probe_s)
        self.round_trip, self.probe_bytes = bool(round_trip), (int(small), int(large))
        self.max_age_s = None if max_age_s is None else _check_positive(max_age_s, "max_age_s")
        self._obs: deque[tuple[float, int, float]] = deque(maxlen=window)

    def observe(self, nbytes: int, seconds: float, now: float | None = None) -> None:
        """Record one transfer of ``nbytes`` bytes that took ``seconds``.

        Raises:
            ValueError: for a negative size or a non-positive time.
        """
        if isinstance(nbytes, bool) or not isinstance(nbytes, int | np.integer) or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
        _check_positive(seconds, "seconds")
        at = time.monotonic() if now is None else float(now)
        self._obs.append((at, int(nbytes), float(seconds)))
        if self.max_age_s is not None:
            while self._obs and self._obs[0][0] < at - self.max_age_s:
                self._obs.popleft()

    def _groups(self) -> list[tuple[float, float]]:
        """(size, quantile time) per size group, smallest size first."""
        sizes = np.array([o[1] for o in self._obs], dtype=float)
        times = np.array([o[2] for o in self._obs], dtype=float)
        order = np.argsort(sizes, kind="stable")
        groups: list[list[int]] = []
        for i in order:
            if groups and sizes[i] <= max(sizes[groups[-1][0]], 1.0) * self.size_ratio:
                groups[-1].append(int(i))
            else:
                groups.append([int(i)])
        return [
            (float(np.median(sizes[g])), float(np.quantile(times[g], self.quantile)))
            for g in groups
        ]

    def estimate(self) -> LinkEstimate | None:
        """The current estimate, or ``None`` while it is not identifiable.

        It needs ``min_samples`` transfers in at least two size groups, and a
        positive slope (larger transfers taking longer).
        """
        if len(self._obs) < self.min_samples:
            return None
        groups = self._groups()
        if len(groups) < 2:
            return None
        x = np.array([g[0] for g in groups])
        y = np.array([g[1] for g in groups])
        slope, intercept = np.polyfit(x, y, 1)
        if not slope > 0:
            return None
        delay = max(float(intercept), 0.0) / (2.0 if self.round_trip else 1.0)
        return LinkEstimate(
            bandwidth_mbps=float(8.0 / slope / 1e6),
            propagation_ms=delay * 1e3,
            samples=len(self._obs),
            sizes=len(groups),
            at=self._obs[-1][0],
        )

    def probe_size(self, now: float | None = None) -> int | None:
        """The size of a probe the sender should send now, or ``None``.

        A probe is due when the window has transfers of one size group only
        (the line is not identifiable), or when the link has been idle for
        ``idle_probe_s``; its size is far from the sizes seen.
        """
        now = time.monotonic() if now is None else float(now)
        small, large = self.probe_bytes
        if not self._obs:
            return small
        idle = now - self._obs[-1][0] >= self.idle_probe_s
        groups = self._groups()
        if len(groups) >= 2 and not idle:
            return None
        typical = groups[-1][0]
        return small if typical >= math.sqrt(small * large) else large


def runtime_estimator() -> LinkEstimator:
    """The estimator the runtime's senders keep (workers for their next link, the client).

    A short memory (32 transfers, none older than 2 s), so that an estimate
    follows a link within about 2 s of a change; a probe after 0.2 s of
    silence (workers probe at most once per heartbeat), so that an idle link
    stays measured; probes of 64 B and 32 KiB (32 KiB holds a 2 Mb/s link for
    131 ms, a 50 Mb/s one for 5 ms; a large probe is due only when no transfer
    of another size than the small probes is left in the window).
    """
    return LinkEstimator(window=32, min_samples=4, idle_probe_s=0.2, max_age_s=2.0,
                         probe_bytes=(64, 32_768))  # fmt: skip


def merge_link_report(reports: dict[tuple[int, int], list[float]], report: object) -> None:
    """Keep, per link, the newest of the estimates in a heartbeat's ``links`` field.

    Args:
        reports: ``(tier, next_tier) -> [bandwidth_mbps, propagation_ms, at]``, updated.
        report: the field as received, ``[[tier, next_tier, mbps, ms, at], ...]``;
            malformed rows (from a peer that does not follow the format) are skipped.
    """
    if not isinstance(report, list):
        return
    for row in report[:64]:
        if (
            isinstance(row, list)
            and len(row) == 5
            and all(type(v) is int for v in row[:2])
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in row[2:])
        ):
            key = (row[0], row[1])
            old = reports.get(key)
            if old is None or row[4] > old[2]:
                reports[key] = [float(v) for v in row[2:]]


def transfer_times(
    sent: dict[int, tuple], ids: list, held: object, now: float
) -> list[tuple[tuple, float]]:
    """The transfers an ack closes: ``(sent entry, seconds)`` per id the sender timed.

    A transfer's time is from its send (``sent[id][0]``) to the ack's receipt
    (``now``) minus the time the receiver reports it held the message (``held``).
    The entries are removed from ``sent``.
    """
    if not isinstance(held, list) or len(held) != len(ids) or not sent:
        return []
    out = []
    for i, h in zip(ids, held, strict=True):
        entry = sent.pop(i, None) if type(i) is int else None
        if entry is None or not isinstance(h, (int, float)) or isinstance(h, bool):
            continue
        dt = now - entry[0] - float(h)
        if dt > 0:
            out.append((entry, dt))
    return out
