"""Link traces (docs/spec.md#link-traces): a link's bandwidth and delay over time.

A trace is a list of steps ``(time_s, bandwidth_mbps, propagation_ms)``: from
each step's time until the next one, the link has that bandwidth and delay
(piecewise constant; before the first step, the first step's values). It applies
to one link of a topology (``link``: link j joins tier j and j+1). The same
emulator that ``validate`` and the demo use follows it
(:class:`earlyexit.runtime.link.DirectedLink`), and the planner can be asked
what the best plan is at any instant (:meth:`LinkTrace.topology_at`).

Files are YAML (or JSON, a subset)::

    schema: earlyexit.trace/1
    name: step-50-2-50
    link: 0
    steps:                    # time_s, bandwidth_mbps, propagation_ms
      - [0, 50, 20]
      - [10, 2, 20]
      - [20, 50, 20]

or CSV with the header ``time_s,bandwidth_mbps,propagation_ms``. Named
scenarios (:data:`BUILTIN_TRACES`) need no file.

Example:
    >>> tr = LinkTrace.builtin("step-50-2-50")
    >>> tr.at(5.0).bandwidth_mbps, tr.at(12.0).bandwidth_mbps, tr.at(25.0).bandwidth_mbps
    (50.0, 2.0, 50.0)
    >>> tr.scaled(0.1).change_times
    (1.0, 2.0)
"""

from __future__ import annotations

import bisect
import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from earlyexit.formats._common import (
    _float,
    _header,
    _int,
    _list,
    _mapping,
    _parse_mapping,
    _titles,
    atomic_write_text,
)
from earlyexit.formats.topology import Link, Topology

__all__ = ["TRACE_SCHEMA", "BUILTIN_TRACES", "TraceStep", "LinkTrace"]

TRACE_SCHEMA = "earlyexit.trace/1"
_CSV_HEADER = ("time_s", "bandwidth_mbps", "propagation_ms")
_MAX_STEPS = 100_000


@dataclass(frozen=True)
class TraceStep:
    """From ``time_s`` on (until the next step), the link has these values."""

    time_s: float
    bandwidth_mbps: float
    propagation_ms: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_s", _float(self.time_s, "step.time_s", lo=0.0))
        object.__setattr__(self, "bandwidth_mbps", _float(self.bandwidth_mbps, "step.bandwidth_mbps",
                                                          lo=0.0, lo_open=True))  # fmt: skip
        object.__setattr__(self, "propagation_ms", _float(self.propagation_ms, "step.propagation_ms",
                                                          lo=0.0))  # fmt: skip

    @property
    def link(self) -> Link:
        """The step's values as a topology :class:`~earlyexit.formats.Link`."""
        return Link(self.bandwidth_mbps, self.propagation_ms)


def _ramp(start: float, stop: float, seconds: float, delay: float, every: float = 1.0) -> list[list[float]]:
    n = int(round(seconds / every))
    return [[i * every, start + (stop - start) * i / n, delay] for i in range(n + 1)]


# name -> (description, steps); the wifi/4G figures are typical medians (Ookla
# Speedtest Global Index 2024: fixed broadband ~50-90 Mb/s down, mobile 4G
# ~10-30 Mb/s with 30-60 ms latency), used as scenarios, not as measurements.
BUILTIN_TRACES: dict[str, tuple[str, list[list[float]]]] = {
    "step-50-2-50": (
        "a step from 50 to 2 Mb/s at 10 s and back at 20 s (20 ms delay throughout)",
        [[0, 50, 20], [10, 2, 20], [20, 50, 20]],
    ),
    "wifi-to-4g": (
        "Wi-Fi (50 Mb/s, 5 ms) to 4G (10 Mb/s, 40 ms) at 10 s, back to Wi-Fi at 20 s",
        [[0, 50, 5], [10, 10, 40], [20, 50, 5]],
    ),
    "ramp-50-2-50": (
        "a slow ramp from 50 down to 2 Mb/s over 20 s, then back up over 20 s (20 ms delay)",
        _ramp(50, 2, 20, 20)[:-1] + [[20 + t, b, d] for t, b, d in _ramp(2, 50, 20, 20)],
    ),
}


@dataclass(frozen=True)
class LinkTrace:
    """One link's bandwidth and delay over time (``earlyexit.trace/1``).

    Args:
        steps: at least one :class:`TraceStep`, times strictly increasing.
        link: the topology link it applies to (link j joins tier j and j+1).
        name, description: for reports.

    Raises:
        ValueError, TypeError: for an empty or unordered list, or a bad value
            (the message names the field).

    Example:
        >>> LinkTrace((TraceStep(0, 10, 5), TraceStep(2, 1, 5))).at(3).bandwidth_mbps
        1.0
    """

    steps: tuple[TraceStep, ...]
    link: int = 0
    name: str = ""
    description: str = ""

    schema = TRACE_SCHEMA

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        if not steps:
            raise ValueError("trace.steps: needs at least one step [time_s, bandwidth_mbps, propagation_ms]")
        if len(steps) > _MAX_STEPS:
            raise ValueError(f"trace.steps: at most {_MAX_STEPS} steps, got {len(steps)}")
        for i, s in enumerate(steps):
            if not isinstance(s, TraceStep):
                raise TypeError(f"trace.steps[{i}]: expected a TraceStep, got {type(s).__name__}")
        times = [s.time_s for s in steps]
        bad = next((i for i in range(1, len(times)) if times[i] <= times[i - 1]), None)
        if bad is not None:
            raise ValueError(f"trace.steps[{bad}]: times must increase strictly, got {times[bad - 1]:g} "
                             f"then {times[bad]:g}")  # fmt: skip
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "link", _int(self.link, "trace.link", 0))
        object.__setattr__(self, "_times", times)

    # ------------------------------------------------------------------ queries
    def at(self, t: float) -> TraceStep:
        """The step in force at ``t`` seconds from the trace's start (the first before 0)."""
        i = bisect.bisect_right(self._times, t) - 1  # type: ignore[attr-defined]
        return self.steps[max(i, 0)]

    @property
    def change_times(self) -> tuple[float, ...]:
        """Times (s) at which the link changes (every step but the first)."""
        return tuple(s.time_s for s in self.steps[1:])

    @property
    def duration_s(self) -> float:
        """Time of the last step (the trace stays at its last values after it)."""
        return self.steps[-1].time_s

    def phases(self, end_s: float | None = None) -> list[tuple[float, float, TraceStep]]:
        """``(start, end, step)`` per step, the last one ending at ``end_s``.

        Args:
            end_s: end of the last phase (default: its start + the previous
                phase's length, or 10 s for a one-step trace).

        Returns:
            One tuple per step.
        """
        starts = [s.time_s for s in self.steps]
        if end_s is None:
            end_s = starts[-1] + (starts[-1] - starts[-2] if len(starts) > 1 else 10.0)
        ends = [*starts[1:], float(end_s)]
        return [(a, b, s) for a, b, s in zip(starts, ends, self.steps, strict=True)]

    def scaled(self, time_factor: float) -> LinkTrace:
        """The same trace with every time multiplied by ``time_factor`` (> 0)."""
        f = _float(time_factor, "time_factor", lo=0.0, lo_open=True)
        return replace(self, steps=tuple(replace(s, time_s=s.time_s * f) for s in self.steps))

    def topology_at(self, topology: Topology, t: float) -> Topology:
        """``topology`` with this trace's link set to its values at ``t``.

        Raises:
            ValueError: if the topology has no link ``self.link``.
        """
        if self.link >= len(topology.links):
            raise ValueError(f"trace.link: {self.link} but the topology has {len(topology.links)} "
                             f"link(s) (0..{len(topology.links) - 1})")  # fmt: skip
        links = list(topology.links)
        links[self.link] = self.at(t).link
        return replace(topology, links=tuple(links))

    # ------------------------------------------------------------------ files
    @classmethod
    def builtin(cls, name: str, link: int = 0) -> LinkTrace:
        """A named scenario of :data:`BUILTIN_TRACES`.

        Raises:
            ValueError: for an unknown name (the message lists the valid ones).
        """
        if name not in BUILTIN_TRACES:
            raise ValueError(f"unknown trace {name!r}; built-in traces: {', '.join(BUILTIN_TRACES)} "
                             "(or a .yaml/.json/.csv file)")  # fmt: skip
        desc, steps = BUILTIN_TRACES[name]
        return cls.from_dict({"schema": TRACE_SCHEMA, "name": name, "description": desc,
                              "link": link, "steps": steps})  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinkTrace:
        """Build from a mapping as in docs/spec.md#link-traces, checking every field."""
        _mapping(data, "trace")
        if data.get("schema") != TRACE_SCHEMA:
            raise ValueError(f"trace.schema: expected {TRACE_SCHEMA!r}, got {data.get('schema')!r}")
        unknown = set(data) - {"schema", "name", "description", "link", "steps"}
        if unknown:
            raise ValueError(f"trace: unknown field(s) {sorted(unknown)}; valid: name, description, "
                             "link, steps")  # fmt: skip
        raw = _list(data.get("steps"), "trace.steps", "[time_s, bandwidth_mbps, propagation_ms]")
        steps = []
        for i, s in enumerate(raw):
            try:
                if isinstance(s, Mapping):
                    unknown = set(s) - set(_CSV_HEADER)
                    if unknown:
                        raise ValueError(f"unknown field(s) {sorted(unknown)}; valid: {', '.join(_CSV_HEADER)}")
                    steps.append(TraceStep(*(s.get(k) for k in _CSV_HEADER)))
                elif isinstance(s, list | tuple) and len(s) == 3:
                    steps.append(TraceStep(*s))
                else:
                    raise TypeError("expected [time_s, bandwidth_mbps, propagation_ms] or a mapping")
            except (TypeError, ValueError) as err:
                raise type(err)(f"trace.steps[{i}]: {err}") from err
        return cls(steps=tuple(steps), link=data.get("link", 0), **_titles(data))

    def to_dict(self) -> dict[str, Any]:
        """The mapping of docs/spec.md#link-traces."""
        out = _header(TRACE_SCHEMA, self.name, self.description)
        out["link"] = self.link
        out["steps"] = [[s.time_s, s.bandwidth_mbps, s.propagation_ms] for s in self.steps]
        return out

    @classmethod
    def from_csv(cls, text: str, link: int = 0, name: str = "") -> LinkTrace:
        """Parse CSV with the header ``time_s,bandwidth_mbps,propagation_ms``.

        Raises:
            ValueError: for another header or a bad row (the message names the row).
        """
        rows = list(csv.reader(io.StringIO(text)))
        rows = [r for r in rows if r and any(c.strip() for c in r)]
        if not rows or tuple(c.strip() for c in rows[0]) != _CSV_HEADER:
            raise ValueError(f"trace CSV: the first line must be {','.join(_CSV_HEADER)}")
        steps = []
        for n, r in enumerate(rows[1:], start=2):
            try:
                steps.append(TraceStep(*(float(c) for c in r)) if len(r) == 3 else None)
            except ValueError as err:
                raise ValueError(f"trace CSV line {n}: {err}") from err
            if steps[-1] is None:
                raise ValueError(f"trace CSV line {n}: expected 3 values, got {len(r)}")
        return cls(steps=tuple(steps), link=link, name=name)

    @classmethod
    def load(cls, path: str | os.PathLike[str], link: int | None = None) -> LinkTrace:
        """Read a ``.yaml``/``.yml``/``.json`` or ``.csv`` trace, or a built-in name.

        Args:
            path: a file, or a name of :data:`BUILTIN_TRACES`.
            link: override the file's link index.

        Raises:
            ValueError, TypeError: for a bad file (naming the field), or a
                path that is neither a file nor a built-in name.
        """
        p = Path(path)
        if not p.is_file():
            if str(path) in BUILTIN_TRACES:
                return cls.builtin(str(path), link or 0)
            raise ValueError(f"trace {str(path)!r}: no such file, and not a built-in trace "
                             f"({', '.join(BUILTIN_TRACES)})")  # fmt: skip
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() == ".csv":
            tr = cls.from_csv(text, name=p.stem)
        else:
            tr = cls.from_dict(_parse_mapping(text, f"trace {p}", "YAML"))
        return tr if link is None else replace(tr, link=_int(link, "link", 0))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write YAML (``.csv``: the CSV form, without name and link) atomically."""
        if Path(path).suffix.lower() == ".csv":
            lines = [",".join(_CSV_HEADER)] + [f"{s.time_s:g},{s.bandwidth_mbps:g},{s.propagation_ms:g}"
                                               for s in self.steps]  # fmt: skip
            atomic_write_text(path, "\n".join(lines) + "\n")
            return
        import yaml

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _as_trace(value: LinkTrace | Mapping[str, Any] | str | Sequence[Any]) -> LinkTrace:
    """A trace from a LinkTrace, its dict, a file or built-in name."""
    if isinstance(value, LinkTrace):
        return value
    if isinstance(value, Mapping):
        return LinkTrace.from_dict(value)
    if isinstance(value, str | os.PathLike):
        return LinkTrace.load(value)
    raise TypeError(f"expected a LinkTrace, a trace mapping, a file or a built-in name, got "
                    f"{type(value).__name__}")  # fmt: skip
