"""``topology.yaml``: tiers, their devices and the links between them (``earlyexit.topology/1``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from earlyexit.formats._common import (
    TOPOLOGY_SCHEMA,
    _check_schema,
    _float,
    _header,
    _int,
    _list,
    _mapping,
    _parse_mapping,
    _req,
    _str,
    _titles,
    atomic_write_text,
    digest,
)

__all__ = ["Tier", "Link", "Topology"]


@dataclass(frozen=True)
class Tier:
    """One tier: a display name, the profile device it runs, and a slowdown factor.

    ``labels`` (optional) are the node labels of the machines that run the tier,
    ``{key: value}`` strings (a Kubernetes nodeSelector; see docs/deployment.md);
    stored as sorted ``(key, value)`` pairs so that a tier stays hashable, and
    written only when given, so a topology without them keeps its digest.
    """

    name: str
    device: str
    slowdown: float = 1.0
    labels: Mapping[str, str] | tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _str(self.name, "tier.name")
        _str(self.device, "tier.device")
        object.__setattr__(self, "slowdown", _float(self.slowdown, "tier.slowdown", lo=0.0, lo_open=True))
        labels = self.labels
        if not isinstance(labels, Mapping):
            try:
                labels = dict(labels)
            except (TypeError, ValueError):
                raise TypeError(f"tier.labels: expected a mapping {{key: value}} of strings, "
                                f"got {type(self.labels).__name__}") from None
        for k, v in labels.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k:
                raise TypeError(f"tier.labels: keys and values must be strings (keys non-empty), "
                                f"got {k!r}: {v!r}")
        object.__setattr__(self, "labels", tuple(sorted(labels.items())))


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
    """A tiered network (docs/spec.md ``earlyexit.topology/1``).

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
        """Build from a mapping as in docs/spec.md, checking the schema and every field."""
        w = "topology"
        _check_schema(data, TOPOLOGY_SCHEMA, w)
        tiers_raw = _list(_req(data, "tiers", w), f"{w}.tiers", "{name, device, slowdown}")
        links_raw = _list(data.get("links", []), f"{w}.links", "{bandwidth_mbps, propagation_ms}")
        tiers = []
        for i, t in enumerate(tiers_raw):
            _mapping(t, f"{w}.tiers[{i}]", "with name, device, slowdown")
            unknown = set(t) - {"name", "device", "slowdown", "labels"}
            if unknown:
                raise ValueError(f"{w}.tiers[{i}]: unknown field(s) {sorted(unknown)}; "
                                 "valid: name, device, slowdown, labels")
            _mapping(t.get("labels", {}), f"{w}.tiers[{i}].labels", "{key: value} of strings")
            try:
                tiers.append(Tier(name=_req(t, "name", f"{w}.tiers[{i}]"),
                                  device=_req(t, "device", f"{w}.tiers[{i}]"),
                                  slowdown=t.get("slowdown", 1.0), labels=t.get("labels", {})))
            except (TypeError, ValueError) as err:
                raise type(err)(f"{w}.tiers[{i}]: {err}") from err
        links = []
        for i, lk in enumerate(links_raw):
            _mapping(lk, f"{w}.links[{i}]", "with bandwidth_mbps, propagation_ms")
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
                   **_titles(data))

    def to_dict(self) -> dict[str, Any]:
        """The mapping of docs/spec.md."""
        out = _header(TOPOLOGY_SCHEMA, self.name, self.description)
        out.update({
            "tiers": [{"name": t.name, "device": t.device, "slowdown": t.slowdown,
                       **({"labels": dict(t.labels)} if t.labels else {})} for t in self.tiers],
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
        return cls.from_dict(_parse_mapping(text, f"topology {origin}", "YAML"))

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
