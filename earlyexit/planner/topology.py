"""Topologies: the built-ins, loading by name or path, and small helpers.

Built-ins ship as YAML next to this module (``topologies/*.yaml``):
``portend-aws`` (PORTEND's 3-tier AWS setup), ``mobile`` and ``iot`` (EdgeSys
2022). ``resolve_topology`` accepts a :class:`~earlyexit.formats.Topology`, a
built-in name, a path to a YAML file or a mapping as in docs/spec.md.

Example:
    >>> from earlyexit.planner import resolve_topology
    >>> t = resolve_topology("portend-aws")
    >>> [tier.name for tier in t.tiers], t.mtu_bytes
    (['edge', 'base-station', 'cloud'], 9000)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from earlyexit.formats import Profile, Topology

__all__ = [
    "BUILTIN_TOPOLOGIES",
    "list_topologies",
    "load_builtin_topology",
    "resolve_topology",
    "resolve_profile",
    "bind_devices",
    "tier_index",
]

_DIR = Path(__file__).with_name("topologies")
BUILTIN_TOPOLOGIES: tuple[str, ...] = ("iot", "mobile", "pi4-wifi", "portend-aws")
"""The topologies shipped in ``topologies/`` (a literal: ``--help`` reads it without importing)."""


def list_topologies() -> list[str]:
    """Names of the built-in topologies.

    Returns:
        The names accepted by :func:`load_builtin_topology`.

    Example:
        >>> list_topologies()
        ['iot', 'mobile', 'pi4-wifi', 'portend-aws']
    """
    return sorted(p.stem for p in _DIR.glob("*.yaml"))


def load_builtin_topology(name: str) -> Topology:
    """Load a built-in topology by name.

    Args:
        name: one of :func:`list_topologies`.

    Raises:
        ValueError: unknown name (the message lists the valid ones).

    Example:
        >>> load_builtin_topology("mobile").num_tiers
        4
    """
    path = _DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(
            f"unknown built-in topology {name!r}; valid: {', '.join(list_topologies())} "
            "(or a path to a topology YAML file)"
        )
    return Topology.load(path)


def resolve_topology(topology: Topology | str | os.PathLike[str] | Mapping[str, Any]) -> Topology:
    """Return a Topology from an object, a built-in name, a YAML path or a mapping as in docs/spec.md.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError / TypeError: anything else that is not a topology.

    Example:
        >>> resolve_topology("iot").tiers[0].name
        'pi'
    """
    if isinstance(topology, Topology):
        return topology
    if isinstance(topology, Mapping):
        return Topology.from_dict(topology)
    if isinstance(topology, (str, os.PathLike)):
        text = os.fspath(topology)
        if isinstance(topology, str) and text in list_topologies():
            return load_builtin_topology(text)
        path = Path(text)
        if path.suffix or os.sep in text or path.exists():
            return Topology.load(path)
        return load_builtin_topology(text)
    raise TypeError(
        f"topology: expected a Topology, a built-in name ({', '.join(list_topologies())}), "
        f"a YAML path or a mapping, got {type(topology).__name__}"
    )


def resolve_profile(profile: Profile | str | os.PathLike[str] | Mapping[str, Any]) -> Profile:
    """Return a Profile from an object, a JSON path or a mapping as in docs/spec.md.

    Example:
        >>> from earlyexit.planner.synthetic import synthetic_profile
        >>> resolve_profile(synthetic_profile(4).to_dict()).num_blocks
        4
    """
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, Mapping):
        return Profile.from_dict(profile)
    if isinstance(profile, (str, os.PathLike)):
        return Profile.load(profile)
    raise TypeError(
        f"profile: expected a Profile, a JSON path or a mapping, got {type(profile).__name__}"
    )


def bind_devices(topology: Topology, mapping: Mapping[str, str]) -> Topology:
    """Return a copy of ``topology`` whose tiers use other profile devices.

    Args:
        topology: the topology.
        mapping: keys are tier names, tier indices (as strings) or current
            device names; values are keys of ``profile.devices``.

    Raises:
        ValueError: a key that names no tier or device.

    Example:
        >>> t = bind_devices(resolve_topology("portend-aws"), {"a1.medium": "pi"})
        >>> t.tiers[0].device
        'pi'
    """
    tiers = list(topology.tiers)
    for key, device in mapping.items():
        hits = [i for i, t in enumerate(tiers) if key in (t.name, str(i))]
        if not hits:
            hits = [i for i, t in enumerate(topology.tiers) if t.device == key]
        if not hits:
            raise ValueError(
                f"bind_devices: {key!r} names no tier or device; tiers: "
                f"{[t.name for t in tiers]}, devices: {[t.device for t in topology.tiers]}"
            )
        for i in hits:
            tiers[i] = dataclasses.replace(tiers[i], device=str(device))
    return dataclasses.replace(topology, tiers=tuple(tiers))


def tier_index(topology: Topology, tier: int | str) -> int:
    """The index of a tier given by index or name.

    Raises:
        ValueError: no such tier.

    Example:
        >>> tier_index(resolve_topology("portend-aws"), "cloud")
        2
    """
    if isinstance(tier, bool):
        raise TypeError(f"tier: expected an index or a tier name, got {tier!r}")
    m = topology.num_tiers
    if isinstance(tier, int):
        if not 0 <= tier < m:
            raise ValueError(f"tier {tier}: must be in 0..{m - 1}")
        return tier
    if isinstance(tier, str):
        for i, t in enumerate(topology.tiers):
            if t.name == tier:
                return i
        if tier.isdigit():
            return tier_index(topology, int(tier))
        raise ValueError(f"tier {tier!r}: no such tier; valid: {[t.name for t in topology.tiers]}")
    raise TypeError(f"tier: expected an index or a tier name, got {type(tier).__name__}")


def _tiers(topology: Topology, tiers: Sequence[int | str]) -> list[int]:
    return [tier_index(topology, t) for t in tiers]
