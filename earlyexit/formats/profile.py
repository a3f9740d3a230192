"""``profile.json``: accuracy, exit rates and timings of a multi-exit model (``earlyexit.profile/1``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earlyexit.formats._common import (
    PROFILE_SCHEMA,
    _array,
    _check_schema,
    _extra,
    _float,
    _int,
    _json_text,
    _mapping,
    _read_json,
    _req,
    _str,
    _tolist,
    atomic_write_text,
    digest,
)

__all__ = ["DeviceProfile", "ProfileSamples", "Profile"]


@dataclass(eq=False)
class DeviceProfile:
    """Timings of one device (docs/spec.md ``profile.devices[name]``).

    Attributes:
        partition_time_s: N x N; ``[a, b]`` (0-based) is the time of blocks
            ``a+1 .. b+1`` plus exit branch ``b+1`` plus the entropy test. The
            lower triangle (``a > b``) is NaN.
        serialize_s / deserialize_s: N+1 entries; index 0 is the model input,
            index i the output of block i.
        result_serialize_s / result_deserialize_s: the result (``result_bits``).
        meta: free-form: host, cpu, threads, torch version, date, percentile.
        hop_s: the runtime's own cost of one hand-off of a sample between two
            processes of this device (ZeroMQ, wake-ups, the worker loop), measured
            by :func:`earlyexit.profiling.overhead.measure_hop_overhead`. None
            (absent in the file, as in profiles made before it existed) counts as 0.
        hop_cpu_s: the runtime's CPU time per partition run on this device
            beyond the profiled compute and (de)serialization, which a slower
            device stretches (the latency model adds ``(slowdown - 1)`` times it
            per partition run), measured by
            :func:`earlyexit.profiling.overhead.measure_hop_cpu`. None counts as 0.
        partition_time_busy_s: optional N x N like ``partition_time_s``, each
            partition timed right after another run of it (no idle gap): what a
            tier that is never idle spends, where ``partition_time_s`` was timed
            after an idle gap (``meta["gap_s"]``). The load model serves a message
            that finds its tier busy in this time (docs/spec.md#load). None: the
            same as ``partition_time_s``.
        idle_curve: optional ``{"gap_s": [g_1 .. g_J], "factor": [f_1 .. f_J]}``:
            a partition's time after the device idled g, over its busy time
            (f(0) = 1, linear between the points, f_J beyond the last); gaps > 0
            increasing, factors >= 1. Optional ``"wake_s": [h_1 .. h_J]`` (>= 0, h(0)
            = 0): the wall time beyond that CPU that a message finding the device's
            worker idle for g pays (waking up; not stretched by a slowdown).
            Optional ``"cold_s": [c_1 .. c_J]`` (>= 0, c(0) = 0): CPU that such a
            message pays once whatever its partition (stretched by a slowdown;
            the one-sample-at-a-time model reads it, the load model does not). The
            load model runs a message that finds its tier empty at the busy time
            times the mean of f, plus the mean of h, over the idle time before it
            (docs/spec.md#load). None: the idle-gap time ``partition_time_s`` instead.
        link_hop_s: the runtime's cost of a hand-off that crosses a link, beyond
            ``hop_s``, half charged to each end (the emulated link's relay on the
            host that measured it), measured by
            :func:`earlyexit.profiling.overhead.measure_link_hop`. None counts as 0.
        link_idle_curve: optional, as ``idle_curve``, for a worker whose idle is
            a sample's time on a link (a far tier waiting for its input): measured
            through an emulated link (:func:`earlyexit.profiling.overhead.measure_idle_curve`
            with ``through_links``). One sample at a time, the latency model reads
            it for a partition whose idle includes wire time
            (docs/spec.md#idle-between-samples). None: ``idle_curve`` there too.
        client_curve: optional ``{"wait_s": [w_1 .. w_J], "encode_s": [...],
            "decode_s": [...]}``: the CPU time the client application on this
            device spends per sample serializing an input and receiving,
            checking and deserializing its result (what a slowdown stretches),
            after waiting w for the answer one sample at a time (w_1: back to
            back); waits > 0 increasing, times >= 0 and non-decreasing. Measured
            by :func:`earlyexit.profiling.overhead.measure_idle_curve` through
            links. One sample at a time, the latency model charges its growth
            beyond w_1 (docs/spec.md#the-client). None: no such term.
    """

    partition_time_s: np.ndarray
    serialize_s: np.ndarray
    deserialize_s: np.ndarray
    result_serialize_s: float
    result_deserialize_s: float
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    hop_s: float | None = None
    hop_cpu_s: float | None = None
    partition_time_busy_s: np.ndarray | None = None
    idle_curve: dict[str, list[float]] | None = None
    link_hop_s: float | None = None
    link_idle_curve: dict[str, list[float]] | None = None
    client_curve: dict[str, list[float]] | None = None

    _KEYS = ("partition_time_s", "serialize_s", "deserialize_s", "result_serialize_s",
             "result_deserialize_s", "meta", "hop_s", "hop_cpu_s", "partition_time_busy_s",
             "idle_curve", "link_hop_s", "link_idle_curve", "client_curve")

    def __post_init__(self) -> None:
        self.partition_time_s = np.asarray(self.partition_time_s, dtype=np.float64)
        self.serialize_s = np.asarray(self.serialize_s, dtype=np.float64)
        self.deserialize_s = np.asarray(self.deserialize_s, dtype=np.float64)
        self.result_serialize_s = float(self.result_serialize_s)
        self.result_deserialize_s = float(self.result_deserialize_s)
        if self.hop_s is not None:
            self.hop_s = _float(self.hop_s, "device.hop_s", lo=0.0)
        if self.hop_cpu_s is not None:
            self.hop_cpu_s = _float(self.hop_cpu_s, "device.hop_cpu_s", lo=0.0)
        if self.link_hop_s is not None:
            self.link_hop_s = _float(self.link_hop_s, "device.link_hop_s", lo=0.0)
        if self.partition_time_busy_s is not None:
            n = self.partition_time_s.shape[0]
            self.partition_time_busy_s = _times(
                self.partition_time_busy_s, "device.partition_time_busy_s", n
            )
        if self.idle_curve is not None:
            self.idle_curve = _idle_curve(self.idle_curve, "device.idle_curve")
        if self.link_idle_curve is not None:
            self.link_idle_curve = _idle_curve(self.link_idle_curve, "device.link_idle_curve")
        if self.client_curve is not None:
            self.client_curve = _client_curve(self.client_curve, "device.client_curve")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], num_blocks: int, name: str = "device") -> DeviceProfile:
        """Build from a mapping as in docs/spec.md; ``name`` prefixes error messages."""
        _mapping(data, name)
        n = num_blocks
        pt = _times(_req(data, "partition_time_s", name), f"{name}.partition_time_s", n)
        busy = data.get("partition_time_busy_s")
        if busy is not None:
            busy = _times(busy, f"{name}.partition_time_busy_s", n)
        curve = data.get("idle_curve")
        if curve is not None:
            curve = _idle_curve(curve, f"{name}.idle_curve")
        linked = data.get("link_idle_curve")
        if linked is not None:
            linked = _idle_curve(linked, f"{name}.link_idle_curve")
        client = data.get("client_curve")
        if client is not None:
            client = _client_curve(client, f"{name}.client_curve")
        ser = _array(_req(data, "serialize_s", name), f"{name}.serialize_s", (n + 1,), lo=0.0)
        de = _array(_req(data, "deserialize_s", name), f"{name}.deserialize_s", (n + 1,), lo=0.0)
        rs = _float(_req(data, "result_serialize_s", name), f"{name}.result_serialize_s", lo=0.0)
        rd = _float(_req(data, "result_deserialize_s", name), f"{name}.result_deserialize_s", lo=0.0)
        meta = _mapping(data.get("meta", {}) or {}, f"{name}.meta")
        hop = data.get("hop_s")
        if hop is not None:
            hop = _float(hop, f"{name}.hop_s", lo=0.0)
        cpu = data.get("hop_cpu_s")
        if cpu is not None:
            cpu = _float(cpu, f"{name}.hop_cpu_s", lo=0.0)
        link = data.get("link_hop_s")
        if link is not None:
            link = _float(link, f"{name}.link_hop_s", lo=0.0)
        return cls(pt, ser, de, rs, rd, dict(meta), _extra(data, cls._KEYS), hop, cpu, busy,
                   curve, link, linked, client)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The mapping of docs/spec.md (lower triangle of ``partition_time_s`` as ``null``; ``hop_s`` if set)."""
        out = {
            **self.extra,
            "partition_time_s": _tolist(self.partition_time_s),
            "serialize_s": self.serialize_s.tolist(),
            "deserialize_s": self.deserialize_s.tolist(),
            "result_serialize_s": float(self.result_serialize_s),
            "result_deserialize_s": float(self.result_deserialize_s),
            "meta": dict(self.meta),
        }
        if self.hop_s is not None:
            out["hop_s"] = float(self.hop_s)
        if self.hop_cpu_s is not None:
            out["hop_cpu_s"] = float(self.hop_cpu_s)
        if self.partition_time_busy_s is not None:
            out["partition_time_busy_s"] = _tolist(self.partition_time_busy_s)
        if self.idle_curve is not None:
            out["idle_curve"] = {k: list(v) for k, v in self.idle_curve.items()}
        if self.link_hop_s is not None:
            out["link_hop_s"] = float(self.link_hop_s)
        if self.link_idle_curve is not None:
            out["link_idle_curve"] = {k: list(v) for k, v in self.link_idle_curve.items()}
        if self.client_curve is not None:
            out["client_curve"] = {k: list(v) for k, v in self.client_curve.items()}
        return out


def _idle_curve(raw: Any, what: str) -> dict[str, list[float]]:
    """``{"gap_s": [...], "factor": [...], "wake_s": [...], "cold_s": [...]}``: gaps > 0
    increasing, factors >= 1, wake times and cold CPU >= 0 (optional), all of the same length."""
    _mapping(raw, what, "{'gap_s': [...], 'factor': [...]}")
    unknown = set(raw) - {"gap_s", "factor", "wake_s", "cold_s"}
    if unknown:
        raise ValueError(
            f"{what}: unknown field(s) {sorted(unknown)}; valid: gap_s, factor, wake_s, cold_s"
        )
    g = _req(raw, "gap_s", what)
    j = len(g) if isinstance(g, (list, tuple)) else -1
    if j < 1:
        raise ValueError(f"{what}.gap_s: expected a non-empty list of seconds, got {g!r}")
    gaps = _array(g, f"{what}.gap_s", (j,), lo=0.0)
    fac = _array(_req(raw, "factor", what), f"{what}.factor", (j,), lo=1.0)
    if gaps[0] <= 0 or np.any(np.diff(gaps) <= 0):
        raise ValueError(f"{what}.gap_s: expected increasing gaps > 0, got {gaps.tolist()}")
    out = {"gap_s": gaps.tolist(), "factor": fac.tolist()}
    for key in ("wake_s", "cold_s"):
        if raw.get(key) is not None:
            out[key] = _array(raw[key], f"{what}.{key}", (j,), lo=0.0).tolist()
    return out


def _client_curve(raw: Any, what: str) -> dict[str, list[float]]:
    """``{"wait_s": [...], "encode_s": [...], "decode_s": [...]}``: waits > 0 increasing,
    CPU times >= 0 and non-decreasing, all of the same length."""
    keys = ("wait_s", "encode_s", "decode_s")
    _mapping(raw, what, "{'wait_s': [...], 'encode_s': [...], 'decode_s': [...]}")
    unknown = set(raw) - set(keys)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {sorted(unknown)}; valid: {', '.join(keys)}")
    w = _req(raw, "wait_s", what)
    j = len(w) if isinstance(w, (list, tuple)) else -1
    if j < 1:
        raise ValueError(f"{what}.wait_s: expected a non-empty list of seconds, got {w!r}")
    out = {k: _array(_req(raw, k, what), f"{what}.{k}", (j,), lo=0.0) for k in keys}
    if out["wait_s"][0] <= 0 or np.any(np.diff(out["wait_s"]) <= 0):
        raise ValueError(
            f"{what}.wait_s: expected increasing waits > 0, got {out['wait_s'].tolist()}"
        )
    for k in keys[1:]:
        if np.any(np.diff(out[k]) < 0):
            raise ValueError(
                f"{what}.{k}: expected CPU times that never decrease as the wait grows, "
                f"got {out[k].tolist()}"
            )
    return {k: v.tolist() for k, v in out.items()}


def _times(raw: Any, what: str, n: int) -> np.ndarray:
    """An N x N partition-time table: upper triangle complete and >= 0, NaN below it."""
    pt = _array(raw, what, (n, n), lo=0.0, allow_nan=True)
    upper = np.triu(np.ones((n, n), dtype=bool))
    missing = np.isnan(pt) & upper
    if missing.any():
        a, b = np.argwhere(missing)[0]
        raise ValueError(f"{what}[{a}][{b}] (blocks {a + 1}..{b + 1}): "
                         "missing; the upper triangle (a <= b) must be complete")
    return np.where(upper, pt, np.nan)


@dataclass(eq=False)
class ProfileSamples:
    """Per-sample record for the ``exact`` estimator: ``entropy`` and ``correct``, N x S."""

    entropy: np.ndarray
    correct: np.ndarray

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], num_blocks: int, name: str = "profile.samples") -> ProfileSamples:
        """Build from ``{"entropy": N x S, "correct": N x S}``."""
        _mapping(data, name, "with 'entropy' and 'correct'")
        ent_raw = _req(data, "entropy", name)
        try:
            s = len(ent_raw[0]) if len(ent_raw) else 0
        except TypeError as err:
            raise TypeError(f"{name}.entropy: expected an N x S list of numbers") from err
        if s == 0:
            raise ValueError(f"{name}.entropy: needs at least one sample")
        ent = _array(ent_raw, f"{name}.entropy", (num_blocks, s), lo=0.0)
        cor = _array(_req(data, "correct", name), f"{name}.correct", (num_blocks, s), lo=0, hi=1)
        if not np.isin(cor, (0, 1)).all():
            raise ValueError(f"{name}.correct: values must be 0/1 or booleans")
        return cls(ent, cor.astype(bool))

    @property
    def num_samples(self) -> int:
        """S, the number of profiling samples."""
        return int(self.entropy.shape[1])

    def to_dict(self) -> dict[str, Any]:
        """The mapping of docs/spec.md (``correct`` as 0/1 integers)."""
        return {"entropy": self.entropy.tolist(), "correct": self.correct.astype(int).tolist()}


@dataclass(eq=False)
class Profile:
    """A model+dataset profile (docs/spec.md ``earlyexit.profile/1``).

    Arrays are numpy and 0-based (see the module docstring). Unknown top-level
    fields are kept in ``extra`` and written back.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> p = synthetic_profile(num_blocks=4, devices=("edge",))
        >>> Profile.from_dict(p.to_dict()).exit_rate.shape
        (11, 4)
    """

    model: str
    dataset: str
    num_blocks: int
    num_classes: int
    input_bits: int
    output_bits: np.ndarray
    result_bits: int
    thresholds: np.ndarray
    branch_accuracy: np.ndarray
    exit_rate: np.ndarray
    devices: dict[str, DeviceProfile]
    temperatures: np.ndarray | None = None
    samples: ProfileSamples | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    schema = PROFILE_SCHEMA
    _KEYS = ("schema", "model", "dataset", "num_blocks", "num_classes", "input_bits", "output_bits",
             "result_bits", "thresholds", "branch_accuracy", "temperatures", "exit_rate", "samples",
             "devices")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raise ValueError/TypeError naming the field."""
        w = "profile"
        _str(self.model, f"{w}.model")
        _str(self.dataset, f"{w}.dataset")
        n = _int(self.num_blocks, f"{w}.num_blocks", 1)
        _int(self.num_classes, f"{w}.num_classes", 2)
        _int(self.input_bits, f"{w}.input_bits", 0)
        _int(self.result_bits, f"{w}.result_bits", 0)
        self.output_bits = _array(self.output_bits, f"{w}.output_bits", (n,), lo=0)
        if not _is_numbers(self.thresholds) or len(self.thresholds) == 0:
            raise TypeError(f"{w}.thresholds: expected a non-empty list of numbers in [0, 1], "
                            f"got {self.thresholds!r}")
        th = np.asarray(self.thresholds, dtype=np.float64)
        self.thresholds = _array(th, f"{w}.thresholds", (th.size,), lo=0.0, hi=1.0)
        if np.unique(self.thresholds).size != th.size:
            raise ValueError(f"{w}.thresholds: values must be distinct, got {th.tolist()}")
        self.branch_accuracy = _array(self.branch_accuracy, f"{w}.branch_accuracy", (n,), lo=0.0, hi=1.0)
        self.exit_rate = _array(self.exit_rate, f"{w}.exit_rate", (th.size, n), lo=0.0, hi=1.0)
        if self.temperatures is not None:
            self.temperatures = _array(self.temperatures, f"{w}.temperatures", (n,))
            if (self.temperatures <= 0).any():
                raise ValueError(f"{w}.temperatures: values must be > 0")
        if not isinstance(self.devices, Mapping) or not self.devices:
            raise ValueError(f"{w}.devices: expected a non-empty mapping of device name -> timings")
        for name, dev in self.devices.items():
            if not isinstance(dev, DeviceProfile):
                raise TypeError(f"{w}.devices[{name!r}]: expected a DeviceProfile")
            if dev.partition_time_s.shape != (n, n):
                raise ValueError(f"{w}.devices[{name!r}].partition_time_s: expected {n} x {n}")
        if self.samples is not None and self.samples.entropy.shape[0] != n:
            raise ValueError(f"{w}.samples.entropy: expected {n} rows (one per branch)")

    @property
    def output_bits_with_input(self) -> np.ndarray:
        """``[O_0, O_1, .., O_N]`` as float64 (index 0 the model input)."""
        return np.concatenate([[float(self.input_bits)], self.output_bits.astype(np.float64)])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Build from a mapping as in docs/spec.md, checking the schema and every field."""
        w = "profile"
        _check_schema(data, PROFILE_SCHEMA, w)
        n = _int(_req(data, "num_blocks", w), f"{w}.num_blocks", 1)
        thresholds = data.get("thresholds", [round(0.1 * i, 10) for i in range(11)])
        devices_raw = _mapping(_req(data, "devices", w), f"{w}.devices", "of device name -> timings")
        devices = {str(k): DeviceProfile.from_dict(v, n, f"{w}.devices[{k!r}]") for k, v in devices_raw.items()}
        samples = data.get("samples")
        return cls(
            model=_str(_req(data, "model", w), f"{w}.model"),
            dataset=_str(_req(data, "dataset", w), f"{w}.dataset"),
            num_blocks=n,
            num_classes=_int(_req(data, "num_classes", w), f"{w}.num_classes", 2),
            input_bits=_int(_req(data, "input_bits", w), f"{w}.input_bits", 0),
            output_bits=_array(_req(data, "output_bits", w), f"{w}.output_bits", (n,), lo=0),
            result_bits=_int(_req(data, "result_bits", w), f"{w}.result_bits", 0),
            thresholds=thresholds,
            branch_accuracy=_req(data, "branch_accuracy", w),
            exit_rate=_req(data, "exit_rate", w),
            temperatures=data.get("temperatures"),
            samples=None if samples is None else ProfileSamples.from_dict(samples, n),
            devices=devices,
            extra=_extra(data, cls._KEYS),
        )

    def to_dict(self) -> dict[str, Any]:
        """The mapping of docs/spec.md (JSON-compatible)."""
        out: dict[str, Any] = {
            "schema": PROFILE_SCHEMA,
            **self.extra,
            "model": self.model,
            "dataset": self.dataset,
            "num_blocks": int(self.num_blocks),
            "num_classes": int(self.num_classes),
            "input_bits": int(self.input_bits),
            "output_bits": [int(b) if float(b).is_integer() else float(b) for b in self.output_bits],
            "result_bits": int(self.result_bits),
            "thresholds": self.thresholds.tolist(),
            "branch_accuracy": self.branch_accuracy.tolist(),
            "exit_rate": self.exit_rate.tolist(),
        }
        if self.temperatures is not None:
            out["temperatures"] = self.temperatures.tolist()
        if self.samples is not None:
            out["samples"] = self.samples.to_dict()
        out["devices"] = {k: v.to_dict() for k, v in self.devices.items()}
        return out

    def to_json(self) -> str:
        """The profile as JSON text."""
        return _json_text(self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read a profile JSON file.

        Raises:
            FileNotFoundError: no such file. ValueError/TypeError: bad content.
        """
        return cls.from_dict(_read_json(path, "profile"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the profile as JSON, atomically."""
        atomic_write_text(path, self.to_json())

    def digest(self) -> str:
        """sha256 of the canonical JSON (see :func:`digest`)."""
        return digest(self.to_dict())


def _is_numbers(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value)
