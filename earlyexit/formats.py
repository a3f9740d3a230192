"""The files of ``SPEC.md`` as typed dataclasses: Profile, Topology, Plan, Manifest.

Every class has ``from_dict`` / ``to_dict``, ``load(path)`` / ``save(path)`` and
checks the ``schema`` string and every field, raising ``ValueError`` or
``TypeError`` that names the offending field (never ``assert``). Writes are
atomic: a temporary file in the target directory, then ``os.replace``.

Profiles, plans and manifests are JSON; topologies are YAML (JSON is accepted
too, YAML being a superset).

Indexing: SPEC numbers blocks 1..N. In memory, arrays are 0-based:
``Profile.exit_rate[t, i]`` is ER of branch ``i + 1`` at ``thresholds[t]``;
``DeviceProfile.partition_time_s[a, b]`` is the time of blocks ``a + 1 .. b + 1``
(upper triangle, ``a <= b``; the lower triangle is NaN in memory and ``null`` in
JSON); ``serialize_s[i]`` is the time for the output of block ``i`` with index 0
the model input, exactly as in SPEC.

This module imports nothing else of ``earlyexit``: only the standard library,
numpy and (for YAML) pyyaml.

Example:
    >>> from earlyexit.formats import Topology
    >>> topo = Topology.from_dict({"schema": "earlyexit.topology/1",
    ...     "tiers": [{"name": "edge", "device": "pi"}, {"name": "cloud", "device": "gpu"}],
    ...     "links": [{"bandwidth_mbps": 10, "propagation_ms": 20}]})
    >>> topo.num_tiers, topo.mtu_bytes
    (2, 1500)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PROFILE_SCHEMA",
    "TOPOLOGY_SCHEMA",
    "PLAN_SCHEMA",
    "BUNDLE_SCHEMA",
    "DeviceProfile",
    "ProfileSamples",
    "Profile",
    "Tier",
    "Link",
    "Topology",
    "PartitionPlan",
    "Estimate",
    "Plan",
    "ManifestPartition",
    "Manifest",
    "digest",
    "atomic_write_text",
]

PROFILE_SCHEMA = "earlyexit.profile/1"
TOPOLOGY_SCHEMA = "earlyexit.topology/1"
PLAN_SCHEMA = "earlyexit.plan/1"
BUNDLE_SCHEMA = "earlyexit.bundle/1"

BREAKDOWN_KEYS = ("compute", "serialize", "transmit", "propagate")
# written when present; plans made before the runtime-overhead term lack it (read as 0)
BREAKDOWN_OPTIONAL_KEYS = ("overhead",)


# --------------------------------------------------------------------------- helpers


def _umask() -> int:
    """The process's umask (read without leaving it changed)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same dir + ``os.replace``).

    Args:
        path: destination file; its directory must exist.
        text: the content, written as UTF-8.

    Raises:
        FileNotFoundError: if the directory of ``path`` does not exist.
        IsADirectoryError: if ``path`` is a directory.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {str(directory)!r} does not exist (writing {str(path)!r})")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory; give a file name to write")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; honour the user's umask
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def digest(obj: Any) -> str:
    """Return ``"sha256:<hex>"`` of the canonical JSON of ``obj`` (or of ``obj.to_dict()``).

    Canonical JSON: sorted keys, no whitespace, ASCII, no NaN.

    Args:
        obj: a JSON-compatible value, or an object with a ``to_dict`` method.

    Returns:
        The digest string.

    Example:
        >>> digest({"b": 1, "a": [1.5, None]})[:14]
        'sha256:cf0c489'
    """
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    return "sha256:" + hashlib.sha256(_canonical_json(obj).encode("ascii")).hexdigest()


def _read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} file {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise TypeError(f"{what} file {str(path)!r}: expected a JSON object, got {type(data).__name__}")
    return data


def _json_text(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def _check_schema(data: Mapping[str, Any], expected: str, what: str) -> None:
    if not isinstance(data, Mapping):
        raise TypeError(f"{what}: expected a mapping, got {type(data).__name__}")
    schema = data.get("schema")
    if schema is None:
        raise ValueError(f"{what}.schema: missing; expected {expected!r}")
    if schema != expected:
        raise ValueError(f"{what}.schema: unknown schema {schema!r}; this version reads {expected!r}")


def _req(data: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in data:
        raise ValueError(f"{what}.{key}: missing required field")
    return data[key]


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a string, got {type(value).__name__}")
    return value


def _int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def _float(value: Any, name: str, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name}: must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name}: must be <= {hi}, got {value}")
    return value


def _array(value: Any, name: str, shape: tuple[int, ...], *, lo: float | None = None,
           hi: float | None = None, allow_nan: bool = False, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(value, (str, bytes)) or isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a list of numbers, got {type(value).__name__}")
    try:
        if allow_nan:
            value = _none_to_nan(value)
        arr = np.array(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected numbers in a {' x '.join(map(str, shape))} array ({err})") from err
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {' x '.join(map(str, shape)) or 'scalar'}, "
                         f"got {' x '.join(map(str, arr.shape)) or 'scalar'}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if allow_nan:
            bad &= ~np.isnan(arr)
        if bad.any():
            raise ValueError(f"{name}: values must be finite, found {arr[bad][0]} at {tuple(np.argwhere(bad)[0])}")
        finite = arr[np.isfinite(arr)]
        if lo is not None and finite.size and finite.min() < lo:
            idx = tuple(np.argwhere(arr < lo)[0])
            raise ValueError(f"{name}: values must be >= {lo}, found {arr[idx]} at index {idx}")
        if hi is not None and finite.size and finite.max() > hi:
            idx = tuple(np.argwhere(arr > hi)[0])
            raise ValueError(f"{name}: values must be <= {hi}, found {arr[idx]} at index {idx}")
    return arr


def _none_to_nan(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, (list, tuple)):
        return [_none_to_nan(v) for v in value]
    return value


def _tolist(arr: np.ndarray) -> Any:
    """numpy array -> nested lists with NaN written as ``None`` (JSON ``null``)."""
    out = arr.tolist()
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        return _nan_to_none(out)
    return out


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _extra(data: Mapping[str, Any], known: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


# --------------------------------------------------------------------------- profile


@dataclass(eq=False)
class DeviceProfile:
    """Timings of one device (SPEC ``profile.devices[name]``).

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
    """

    partition_time_s: np.ndarray
    serialize_s: np.ndarray
    deserialize_s: np.ndarray
    result_serialize_s: float
    result_deserialize_s: float
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    hop_s: float | None = None

    _KEYS = ("partition_time_s", "serialize_s", "deserialize_s", "result_serialize_s",
             "result_deserialize_s", "meta", "hop_s")

    def __post_init__(self) -> None:
        self.partition_time_s = np.asarray(self.partition_time_s, dtype=np.float64)
        self.serialize_s = np.asarray(self.serialize_s, dtype=np.float64)
        self.deserialize_s = np.asarray(self.deserialize_s, dtype=np.float64)
        self.result_serialize_s = float(self.result_serialize_s)
        self.result_deserialize_s = float(self.result_deserialize_s)
        if self.hop_s is not None:
            self.hop_s = _float(self.hop_s, "device.hop_s", lo=0.0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], num_blocks: int, name: str = "device") -> DeviceProfile:
        """Build from a SPEC mapping; ``name`` prefixes error messages."""
        if not isinstance(data, Mapping):
            raise TypeError(f"{name}: expected a mapping, got {type(data).__name__}")
        n = num_blocks
        pt = _array(_req(data, "partition_time_s", name), f"{name}.partition_time_s", (n, n),
                    lo=0.0, allow_nan=True)
        upper = np.triu(np.ones((n, n), dtype=bool))
        missing = np.isnan(pt) & upper
        if missing.any():
            a, b = np.argwhere(missing)[0]
            raise ValueError(f"{name}.partition_time_s[{a}][{b}] (blocks {a + 1}..{b + 1}): "
                             "missing; the upper triangle (a <= b) must be complete")
        pt = np.where(upper, pt, np.nan)
        ser = _array(_req(data, "serialize_s", name), f"{name}.serialize_s", (n + 1,), lo=0.0)
        de = _array(_req(data, "deserialize_s", name), f"{name}.deserialize_s", (n + 1,), lo=0.0)
        rs = _float(_req(data, "result_serialize_s", name), f"{name}.result_serialize_s", lo=0.0)
        rd = _float(_req(data, "result_deserialize_s", name), f"{name}.result_deserialize_s", lo=0.0)
        meta = data.get("meta", {}) or {}
        if not isinstance(meta, Mapping):
            raise TypeError(f"{name}.meta: expected a mapping, got {type(meta).__name__}")
        hop = data.get("hop_s")
        if hop is not None:
            hop = _float(hop, f"{name}.hop_s", lo=0.0)
        return cls(pt, ser, de, rs, rd, dict(meta), _extra(data, cls._KEYS), hop)

    def to_dict(self) -> dict[str, Any]:
        """The SPEC mapping (lower triangle of ``partition_time_s`` as ``null``; ``hop_s`` if set)."""
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
        return out


@dataclass(eq=False)
class ProfileSamples:
    """Per-sample record for the ``exact`` estimator: ``entropy`` and ``correct``, N x S."""

    entropy: np.ndarray
    correct: np.ndarray

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], num_blocks: int, name: str = "profile.samples") -> ProfileSamples:
        """Build from ``{"entropy": N x S, "correct": N x S}``."""
        if not isinstance(data, Mapping):
            raise TypeError(f"{name}: expected a mapping with 'entropy' and 'correct', got {type(data).__name__}")
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
        """The SPEC mapping (``correct`` as 0/1 integers)."""
        return {"entropy": self.entropy.tolist(), "correct": self.correct.astype(int).tolist()}


@dataclass(eq=False)
class Profile:
    """A model+dataset profile (SPEC ``earlyexit.profile/1``).

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
        """Build from a SPEC mapping, checking the schema and every field."""
        w = "profile"
        _check_schema(data, PROFILE_SCHEMA, w)
        n = _int(_req(data, "num_blocks", w), f"{w}.num_blocks", 1)
        thresholds = data.get("thresholds", [round(0.1 * i, 10) for i in range(11)])
        devices_raw = _req(data, "devices", w)
        if not isinstance(devices_raw, Mapping):
            raise TypeError(f"{w}.devices: expected a mapping of device name -> timings")
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
        """The SPEC mapping (JSON-compatible)."""
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


# --------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class Tier:
    """One tier: a display name, the profile device it runs, and a slowdown factor."""

    name: str
    device: str
    slowdown: float = 1.0

    def __post_init__(self) -> None:
        _str(self.name, "tier.name")
        _str(self.device, "tier.device")
        object.__setattr__(self, "slowdown", _float(self.slowdown, "tier.slowdown", lo=0.0, lo_open=True))


@dataclass(frozen=True)
class Link:
    """Link j joins tier j and tier j+1."""

    bandwidth_mbps: float
    propagation_ms: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "bandwidth_mbps",
                           _float(self.bandwidth_mbps, "link.bandwidth_mbps", lo=0.0, lo_open=True))
        object.__setattr__(self, "propagation_ms", _float(self.propagation_ms, "link.propagation_ms", lo=0.0))


@dataclass(frozen=True)
class Topology:
    """A tiered network (SPEC ``earlyexit.topology/1``).

    Example:
        >>> t = Topology(tiers=(Tier("edge", "pi"), Tier("cloud", "gpu", 0.5)),
        ...              links=(Link(10, 20),), destination=1)
        >>> Topology.from_dict(t.to_dict()) == t
        True
    """

    tiers: tuple[Tier, ...]
    links: tuple[Link, ...]
    mtu_bytes: int = 1500
    source: int = 0
    destination: int = 0
    name: str = ""
    description: str = ""

    schema = TOPOLOGY_SCHEMA

    def __post_init__(self) -> None:
        w = "topology"
        tiers = tuple(self.tiers)
        links = tuple(self.links)
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "links", links)
        if not tiers:
            raise ValueError(f"{w}.tiers: needs at least one tier")
        for i, t in enumerate(tiers):
            if not isinstance(t, Tier):
                raise TypeError(f"{w}.tiers[{i}]: expected a Tier, got {type(t).__name__}")
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"{w}.tiers: tier names must be unique, got {names}")
        if len(links) != len(tiers) - 1:
            raise ValueError(f"{w}.links: expected {len(tiers) - 1} links for {len(tiers)} tiers "
                             f"(link j joins tier j and j+1), got {len(links)}")
        for i, lk in enumerate(links):
            if not isinstance(lk, Link):
                raise TypeError(f"{w}.links[{i}]: expected a Link, got {type(lk).__name__}")
        object.__setattr__(self, "mtu_bytes", _int(self.mtu_bytes, f"{w}.mtu_bytes", 1))
        m = len(tiers)
        for key in ("source", "destination"):
            v = _int(getattr(self, key), f"{w}.{key}", 0)
            if v >= m:
                raise ValueError(f"{w}.{key}: tier index must be in 0..{m - 1}, got {v}")
            object.__setattr__(self, key, v)

    @property
    def num_tiers(self) -> int:
        """M, the number of tiers."""
        return len(self.tiers)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        """Build from a SPEC mapping, checking the schema and every field."""
        w = "topology"
        _check_schema(data, TOPOLOGY_SCHEMA, w)
        tiers_raw = _req(data, "tiers", w)
        links_raw = data.get("links", [])
        if not isinstance(tiers_raw, list):
            raise TypeError(f"{w}.tiers: expected a list of {{name, device, slowdown}}")
        if not isinstance(links_raw, list):
            raise TypeError(f"{w}.links: expected a list of {{bandwidth_mbps, propagation_ms}}")
        tiers = []
        for i, t in enumerate(tiers_raw):
            if not isinstance(t, Mapping):
                raise TypeError(f"{w}.tiers[{i}]: expected a mapping with name, device, slowdown")
            unknown = set(t) - {"name", "device", "slowdown"}
            if unknown:
                raise ValueError(f"{w}.tiers[{i}]: unknown field(s) {sorted(unknown)}; valid: name, device, slowdown")
            try:
                tiers.append(Tier(name=_req(t, "name", f"{w}.tiers[{i}]"),
                                  device=_req(t, "device", f"{w}.tiers[{i}]"),
                                  slowdown=t.get("slowdown", 1.0)))
            except (TypeError, ValueError) as err:
                raise type(err)(f"{w}.tiers[{i}]: {err}") from err
        links = []
        for i, lk in enumerate(links_raw):
            if not isinstance(lk, Mapping):
                raise TypeError(f"{w}.links[{i}]: expected a mapping with bandwidth_mbps, propagation_ms")
            unknown = set(lk) - {"bandwidth_mbps", "propagation_ms"}
            if unknown:
                raise ValueError(f"{w}.links[{i}]: unknown field(s) {sorted(unknown)}; "
                                 "valid: bandwidth_mbps, propagation_ms")
            try:
                links.append(Link(bandwidth_mbps=_req(lk, "bandwidth_mbps", f"{w}.links[{i}]"),
                                  propagation_ms=_req(lk, "propagation_ms", f"{w}.links[{i}]")))
            except (TypeError, ValueError) as err:
                raise type(err)(f"{w}.links[{i}]: {err}") from err
        unknown = set(data) - {"schema", "tiers", "links", "mtu_bytes", "source", "destination", "name",
                               "description"}
        if unknown:
            raise ValueError(f"{w}: unknown field(s) {sorted(unknown)}; valid: tiers, links, mtu_bytes, "
                             "source, destination, name, description")
        return cls(tiers=tuple(tiers), links=tuple(links), mtu_bytes=data.get("mtu_bytes", 1500),
                   source=data.get("source", 0), destination=data.get("destination", 0),
                   name=str(data.get("name", "")), description=str(data.get("description", "")))

    def to_dict(self) -> dict[str, Any]:
        """The SPEC mapping."""
        out: dict[str, Any] = {"schema": TOPOLOGY_SCHEMA}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out.update({
            "tiers": [{"name": t.name, "device": t.device, "slowdown": t.slowdown} for t in self.tiers],
            "links": [{"bandwidth_mbps": lk.bandwidth_mbps, "propagation_ms": lk.propagation_ms}
                      for lk in self.links],
            "mtu_bytes": self.mtu_bytes,
            "source": self.source,
            "destination": self.destination,
        })
        return out

    def to_yaml(self) -> str:
        """The topology as YAML text."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, origin: str = "<string>") -> Topology:
        """Parse YAML (or JSON) text."""
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"topology {origin}: not valid YAML: {err}") from err
        if not isinstance(data, Mapping):
            raise TypeError(f"topology {origin}: expected a YAML mapping, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Topology:
        """Read a topology YAML file.

        Raises:
            FileNotFoundError: no such file. ValueError/TypeError: bad content.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"topology file {str(path)!r} does not exist")
        return cls.from_yaml(path.read_text(encoding="utf-8"), repr(str(path)))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the topology as YAML, atomically."""
        atomic_write_text(path, self.to_yaml())

    def digest(self) -> str:
        """sha256 of the canonical JSON (see :func:`digest`)."""
        return digest(self.to_dict())


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PartitionPlan:
    """One partition: blocks ``first_block..last_block`` (1-based, inclusive) on ``tier``."""

    first_block: int
    last_block: int
    tier: int
    tier_name: str

    def to_dict(self) -> dict[str, Any]:
        """The SPEC mapping."""
        return {"first_block": self.first_block, "last_block": self.last_block,
                "tier": self.tier, "tier_name": self.tier_name}


@dataclass(frozen=True)
class Estimate:
    """Estimated latency (s), accuracy, exit fractions and latency breakdown of a configuration."""

    latency_s: float
    accuracy: float
    exit_fractions: tuple[float, ...]
    breakdown_s: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """The SPEC mapping (``breakdown_s.overhead`` only when the breakdown has it)."""
        keys = BREAKDOWN_KEYS + tuple(k for k in BREAKDOWN_OPTIONAL_KEYS if k in self.breakdown_s)
        return {"latency_s": float(self.latency_s), "accuracy": float(self.accuracy),
                "exit_fractions": [float(e) for e in self.exit_fractions],
                "breakdown_s": {k: float(self.breakdown_s[k]) for k in keys}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "plan.estimate") -> Estimate:
        """Build from a SPEC mapping."""
        if not isinstance(data, Mapping):
            raise TypeError(f"{name}: expected a mapping")
        bd = _req(data, "breakdown_s", name)
        if not isinstance(bd, Mapping):
            raise TypeError(f"{name}.breakdown_s: expected a mapping with keys {list(BREAKDOWN_KEYS)}")
        missing = [k for k in BREAKDOWN_KEYS if k not in bd]
        if missing:
            raise ValueError(f"{name}.breakdown_s: missing key(s) {missing}; expected {list(BREAKDOWN_KEYS)}")
        ef = _req(data, "exit_fractions", name)
        if not isinstance(ef, (list, tuple)):
            raise TypeError(f"{name}.exit_fractions: expected a list of numbers")
        return cls(
            latency_s=_float(_req(data, "latency_s", name), f"{name}.latency_s"),
            accuracy=_float(_req(data, "accuracy", name), f"{name}.accuracy"),
            exit_fractions=tuple(_float(e, f"{name}.exit_fractions[{i}]") for i, e in enumerate(ef)),
            breakdown_s={k: _float(bd[k], f"{name}.breakdown_s.{k}")
                         for k in BREAKDOWN_KEYS + BREAKDOWN_OPTIONAL_KEYS if k in bd},
        )


@dataclass(frozen=True)
class Plan:
    """A deployment plan (SPEC ``earlyexit.plan/1``).

    Attributes:
        threshold: the exit threshold T.
        partitions: the partitions in order, each with its blocks and tier.
        estimate: latency, accuracy, exit fractions and latency breakdown.
        estimator: ``"portend"`` or ``"exact"``.
        objective: ``"min_latency"`` (P_lat) or ``"max_accuracy"`` (P_acc).
        constraint: ``{"min_accuracy": a}``, ``{"max_latency_s": s}`` or ``{}``.
        profile_digest / topology_digest: :func:`digest` of the inputs.
        extra: more fields (model, dataset, topology name, ...), written back.

    Example:
        >>> p = Plan(threshold=0.5, partitions=(PartitionPlan(1, 4, 0, "edge"),),
        ...          estimate=Estimate(0.01, 0.9, (1.0,), {"compute": 0.01, "serialize": 0.0,
        ...                                                  "transmit": 0.0, "propagate": 0.0}))
        >>> Plan.from_json(p.to_json()) == p
        True
    """

    threshold: float
    partitions: tuple[PartitionPlan, ...]
    estimate: Estimate
    estimator: str = "portend"
    objective: str = "min_latency"
    constraint: Mapping[str, float] = field(default_factory=dict)
    profile_digest: str = ""
    topology_digest: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    schema = PLAN_SCHEMA
    _KEYS = ("schema", "threshold", "partitions", "estimate", "estimator", "objective", "constraint",
             "profile_digest", "topology_digest")

    def __post_init__(self) -> None:
        w = "plan"
        _float(self.threshold, f"{w}.threshold", 0.0, 1.0)
        parts = tuple(self.partitions)
        object.__setattr__(self, "partitions", parts)
        if not parts:
            raise ValueError(f"{w}.partitions: needs at least one partition")
        prev = 0
        tiers = []
        for i, p in enumerate(parts):
            if not isinstance(p, PartitionPlan):
                raise TypeError(f"{w}.partitions[{i}]: expected a PartitionPlan")
            if p.first_block != prev + 1 or p.last_block < p.first_block:
                raise ValueError(f"{w}.partitions[{i}]: blocks {p.first_block}..{p.last_block} do not "
                                 f"continue the previous partition (expected first_block={prev + 1} "
                                 "and last_block >= first_block)")
            prev = p.last_block
            tiers.append(p.tier)
        if len(set(tiers)) != len(tiers):
            raise ValueError(f"{w}.partitions: tiers must be distinct, got {tiers}")
        if self.estimator not in ("portend", "exact"):
            raise ValueError(f"{w}.estimator: expected 'portend' or 'exact', got {self.estimator!r}")
        if not isinstance(self.estimate, Estimate):
            raise TypeError(f"{w}.estimate: expected an Estimate")
        if len(self.estimate.exit_fractions) != len(parts):
            raise ValueError(f"{w}.estimate.exit_fractions: expected {len(parts)} entries (one per "
                             f"partition), got {len(self.estimate.exit_fractions)}")

    @property
    def cut_points(self) -> tuple[int, ...]:
        """P = (P_1, .., P_L), the 1-based last block of each partition."""
        return tuple(p.last_block for p in self.partitions)

    @property
    def tier_indices(self) -> tuple[int, ...]:
        """D = (D_1, .., D_L)."""
        return tuple(p.tier for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        """The SPEC mapping."""
        return {
            "schema": PLAN_SCHEMA,
            "threshold": float(self.threshold),
            "partitions": [p.to_dict() for p in self.partitions],
            "estimate": self.estimate.to_dict(),
            "estimator": self.estimator,
            "objective": self.objective,
            "constraint": {k: float(v) for k, v in self.constraint.items()},
            "profile_digest": self.profile_digest,
            "topology_digest": self.topology_digest,
            **dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Build from a SPEC mapping, checking the schema and every field."""
        w = "plan"
        _check_schema(data, PLAN_SCHEMA, w)
        parts_raw = _req(data, "partitions", w)
        if not isinstance(parts_raw, list):
            raise TypeError(f"{w}.partitions: expected a list of {{first_block, last_block, tier, tier_name}}")
        parts = []
        for i, p in enumerate(parts_raw):
            n = f"{w}.partitions[{i}]"
            if not isinstance(p, Mapping):
                raise TypeError(f"{n}: expected a mapping")
            parts.append(PartitionPlan(
                first_block=_int(_req(p, "first_block", n), f"{n}.first_block", 1),
                last_block=_int(_req(p, "last_block", n), f"{n}.last_block", 1),
                tier=_int(_req(p, "tier", n), f"{n}.tier", 0),
                tier_name=_str(p.get("tier_name", ""), f"{n}.tier_name")))
        constraint = data.get("constraint") or {}
        if not isinstance(constraint, Mapping):
            raise TypeError(f"{w}.constraint: expected a mapping like {{'min_accuracy': 0.9}}")
        return cls(
            threshold=_float(_req(data, "threshold", w), f"{w}.threshold", 0.0, 1.0),
            partitions=tuple(parts),
            estimate=Estimate.from_dict(_req(data, "estimate", w)),
            estimator=_str(data.get("estimator", "portend"), f"{w}.estimator"),
            objective=_str(data.get("objective", "min_latency"), f"{w}.objective"),
            constraint={str(k): _float(v, f"{w}.constraint.{k}") for k, v in constraint.items()},
            profile_digest=_str(data.get("profile_digest", ""), f"{w}.profile_digest"),
            topology_digest=_str(data.get("topology_digest", ""), f"{w}.topology_digest"),
            extra=_extra(data, cls._KEYS),
        )

    def to_json(self) -> str:
        """The plan as JSON text (exactly what ``earlyexit plan --json`` prints)."""
        return _json_text(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Parse plan JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"plan: not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise TypeError(f"plan: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Read a plan JSON file."""
        return cls.from_dict(_read_json(path, "plan"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the plan as JSON, atomically."""
        atomic_write_text(path, self.to_json())


# --------------------------------------------------------------------------- bundle manifest


@dataclass(frozen=True)
class ManifestPartition:
    """One partition of a bundle: its files per format and its tensor interface."""

    index: int
    files: Mapping[str, str]
    input_name: str = "input"
    output_names: tuple[str, ...] = ("logits", "entropy", "features")
    input_shape: tuple[int | None, ...] = ()
    output_shapes: Mapping[str, tuple[int | None, ...]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("index", "files", "input_name", "output_names", "input_shape", "output_shapes")

    def to_dict(self) -> dict[str, Any]:
        """The manifest mapping of this partition."""
        return {"index": self.index, "files": dict(self.files), "input_name": self.input_name,
                "output_names": list(self.output_names), "input_shape": list(self.input_shape),
                "output_shapes": {k: list(v) for k, v in self.output_shapes.items()}, **dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str) -> ManifestPartition:
        """Build from a manifest mapping."""
        if not isinstance(data, Mapping):
            raise TypeError(f"{name}: expected a mapping")
        files = _req(data, "files", name)
        if not isinstance(files, Mapping) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError(f"{name}.files: expected a mapping format -> file name, e.g. {{'onnx': 'partition_1.onnx'}}")
        shapes = data.get("output_shapes", {}) or {}
        if not isinstance(shapes, Mapping):
            raise TypeError(f"{name}.output_shapes: expected a mapping output name -> shape")
        return cls(index=_int(_req(data, "index", name), f"{name}.index", 1), files=dict(files),
                   input_name=_str(data.get("input_name", "input"), f"{name}.input_name"),
                   output_names=tuple(data.get("output_names", ("logits", "entropy", "features"))),
                   input_shape=tuple(data.get("input_shape", ())),
                   output_shapes={k: tuple(v) for k, v in shapes.items()},
                   extra=_extra(data, cls._KEYS))


@dataclass(frozen=True)
class Manifest:
    """A bundle's ``manifest.json`` (SPEC ``earlyexit.bundle/1``).

    Example:
        >>> from earlyexit.formats import Estimate, PartitionPlan, Plan
        >>> plan = Plan(0.5, (PartitionPlan(1, 2, 0, "edge"),),
        ...             Estimate(0.1, 0.9, (1.0,), dict.fromkeys(("compute", "serialize",
        ...                      "transmit", "propagate"), 0.0)))
        >>> m = Manifest(plan=plan, class_names=("cat", "dog"), input_shape=(3, 32, 32),
        ...              partitions=(ManifestPartition(1, {"onnx": "partition_1.onnx"}),))
        >>> Manifest.from_dict(m.to_dict()).threshold
        0.5
    """

    plan: Plan
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    partitions: tuple[ManifestPartition, ...]
    input_dtype: str = "float32"
    normalization: Mapping[str, Any] = field(default_factory=dict)
    temperatures: tuple[float, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    schema = BUNDLE_SCHEMA
    _KEYS = ("schema", "plan", "class_names", "input_shape", "input_dtype", "normalization",
             "partitions", "threshold", "temperatures")

    def __post_init__(self) -> None:
        if len(self.partitions) != len(self.plan.partitions):
            raise ValueError(f"manifest.partitions: expected {len(self.plan.partitions)} entries "
                             f"(one per plan partition), got {len(self.partitions)}")

    @property
    def threshold(self) -> float:
        """The exit threshold (the plan's)."""
        return self.plan.threshold

    def to_dict(self) -> dict[str, Any]:
        """The manifest mapping."""
        return {"schema": BUNDLE_SCHEMA, "plan": self.plan.to_dict(), "class_names": list(self.class_names),
                "input_shape": list(self.input_shape), "input_dtype": self.input_dtype,
                "normalization": dict(self.normalization),
                "partitions": [p.to_dict() for p in self.partitions],
                "threshold": float(self.threshold), "temperatures": list(self.temperatures),
                **dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Build from a manifest mapping, checking the schema."""
        w = "manifest"
        _check_schema(data, BUNDLE_SCHEMA, w)
        parts = _req(data, "partitions", w)
        if not isinstance(parts, list):
            raise TypeError(f"{w}.partitions: expected a list")
        norm = data.get("normalization", {}) or {}
        if not isinstance(norm, Mapping):
            raise TypeError(f"{w}.normalization: expected a mapping like {{'mean': [...], 'std': [...]}}")
        shape = _req(data, "input_shape", w)
        if not isinstance(shape, list):
            raise TypeError(f"{w}.input_shape: expected a list of integers")
        return cls(
            plan=Plan.from_dict(_req(data, "plan", w)),
            class_names=tuple(_str(c, f"{w}.class_names[{i}]") for i, c in enumerate(_req(data, "class_names", w))),
            input_shape=tuple(_int(s, f"{w}.input_shape[{i}]", 0) for i, s in enumerate(shape)),
            partitions=tuple(ManifestPartition.from_dict(p, f"{w}.partitions[{i}]") for i, p in enumerate(parts)),
            input_dtype=_str(data.get("input_dtype", "float32"), f"{w}.input_dtype"),
            normalization=dict(norm),
            temperatures=tuple(_float(t, f"{w}.temperatures[{i}]") for i, t in enumerate(data.get("temperatures", []))),
            extra=_extra(data, cls._KEYS),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read ``manifest.json`` (a file, or a bundle directory containing it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        return cls.from_dict(_read_json(path, "manifest"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``manifest.json`` atomically (``path`` may be the bundle directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        atomic_write_text(path, _json_text(self.to_dict()))
