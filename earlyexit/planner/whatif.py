"""What-if studies (PORTEND Fig. 9): sweep one topology parameter and re-plan.

A parameter is named like ``links[0].bandwidth_mbps``, ``links[1].propagation_ms``,
``tiers[1].slowdown``, ``mtu_bytes``, ``source`` or ``destination``; values are
``start:stop:count`` (evenly spaced, inclusive), ``start:stop:count:log``
(log-spaced) or a comma list.

Example:
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> rows = whatif(synthetic_profile(8), "portend-aws", "links[0].bandwidth_mbps", [1, 10],
    ...               min_accuracy=0.5)
    >>> [r["value"] for r in rows]
    [1.0, 10.0]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from earlyexit.formats import Topology
from earlyexit.planner.api import ProfileLike, TopologyLike, baselines, plan
from earlyexit.planner.topology import resolve_profile, resolve_topology

__all__ = ["MAX_VALUES", "parse_vary", "parse_values", "set_parameter", "whatif"]

MAX_VALUES = 1000
"""The most values one what-if sweep takes (each one is a full re-plan)."""

_PARAM = re.compile(r"^(?:(tiers|links)\[(\d+)\]\.(\w+)|(mtu_bytes|source|destination))$")


def parse_values(text: str) -> list[float]:
    """Parse ``start:stop:count[:log]`` or ``a,b,c`` into a list of finite numbers.

    Raises:
        ValueError: anything else, and more than :data:`MAX_VALUES` values.

    Example:
        >>> parse_values("1:100:3:log"), parse_values("1,2.5")
        ([1.0, 10.0, 100.0], [1.0, 2.5])
    """
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in ("log", "lin")):
                raise ValueError
            a, b, k = float(parts[0]), float(parts[1]), int(parts[2])
            if k > MAX_VALUES:
                raise OverflowError(k)
            if k < 1 or not (np.isfinite(a) and np.isfinite(b)):
                raise ValueError
            if len(parts) == 4 and parts[3] == "log":
                if a <= 0 or b <= 0:
                    raise ValueError
                return [float(v) for v in np.geomspace(a, b, k)]
            return [float(v) for v in np.linspace(a, b, k)]
        items = [v for v in text.split(",") if v.strip()]
        if len(items) > MAX_VALUES:
            raise OverflowError(len(items))
        values = [float(v) for v in items]
        if not values or not all(np.isfinite(values)):
            raise ValueError
        return values
    except OverflowError as err:
        raise ValueError(
            f"values {text!r}: {err.args[0]} values; a sweep takes at most {MAX_VALUES}"
        ) from None
    except ValueError:
        raise ValueError(
            f"values {text!r}: expected start:stop:count, start:stop:count:log "
            "or a comma list of numbers"
        ) from None


def parse_vary(text: str) -> tuple[str, list[float]]:
    """Split ``PARAM=VALUES``.

    Example:
        >>> parse_vary("tiers[1].slowdown=1,0.5")
        ('tiers[1].slowdown', [1.0, 0.5])
    """
    if "=" not in text:
        raise ValueError(
            f"--vary {text!r}: expected PARAM=VALUES, e.g. links[0].bandwidth_mbps=1:100:20"
        )
    name, values = text.split("=", 1)
    return name.strip(), parse_values(values)


def set_parameter(topology: Topology, name: str, value: float) -> Topology:
    """A copy of ``topology`` with one parameter changed.

    Raises:
        ValueError: an unknown parameter or index.

    Example:
        >>> t = set_parameter(resolve_topology("portend-aws"), "links[0].bandwidth_mbps", 5)
        >>> t.links[0].bandwidth_mbps
        5.0
    """
    m = _PARAM.match(name.strip())
    if not m:
        raise ValueError(
            f"parameter {name!r}: expected links[j].bandwidth_mbps, links[j].propagation_ms, "
            "tiers[j].slowdown, mtu_bytes, source or destination"
        )
    if m.group(4):
        return dataclasses.replace(topology, **{m.group(4): int(round(value))})
    kind, j, attr = m.group(1), int(m.group(2)), m.group(3)
    items = list(getattr(topology, kind))
    if not 0 <= j < len(items):
        raise ValueError(f"parameter {name!r}: {kind} index must be in 0..{len(items) - 1}")
    valid = {"links": ("bandwidth_mbps", "propagation_ms"), "tiers": ("slowdown",)}[kind]
    if attr not in valid:
        raise ValueError(f"parameter {name!r}: {kind}[j] has {', '.join(valid)}")
    items[j] = dataclasses.replace(items[j], **{attr: float(value)})
    return dataclasses.replace(topology, **{kind: tuple(items)})


def whatif(
    profile: ProfileLike,
    topology: TopologyLike,
    parameter: str,
    values: Sequence[float],
    min_accuracy: float | None = None,
    max_latency: float | None = None,
    estimator: str = "portend",
    **hints: Any,
) -> list[dict[str, Any]]:
    """Re-plan for every value of one topology parameter, with the baselines.

    Args:
        profile, topology: as for :func:`earlyexit.plan`.
        parameter: e.g. ``"links[0].bandwidth_mbps"`` (see the module docstring).
        values: the values to try.
        min_accuracy / max_latency / estimator / **hints: as for :func:`earlyexit.plan`.

    Raises:
        ValueError: more than :data:`MAX_VALUES` values, an unknown parameter.

    Returns:
        One row per value: ``value``, ``plan`` (a Plan, or None if infeasible),
        ``latency_s``, ``accuracy`` and the baselines' latencies
        (``edge_only_s``, ``cloud_only_s``, ``neurosurgeon_s``).
    """
    if len(values) > MAX_VALUES:
        raise ValueError(f"values: {len(values)} given; a sweep takes at most {MAX_VALUES}")
    prof = resolve_profile(profile)
    base_topo = resolve_topology(topology)
    rows = []
    for v in values:
        topo = set_parameter(base_topo, parameter, float(v))
        try:
            p = plan(
                prof,
                topo,
                min_accuracy=min_accuracy,
                max_latency=max_latency,
                estimator=estimator,
                **hints,
            )
        except ValueError as err:
            if "no configuration" not in str(err):
                raise
            p = None
        b = baselines(prof, topo, estimator)
        rows.append(
            {
                "value": float(v),
                "plan": p,
                "latency_s": None if p is None else p.estimate.latency_s,
                "accuracy": None if p is None else p.estimate.accuracy,
                **{f"{k}_s": bp.estimate.latency_s for k, bp in b.items()},
            }
        )
    return rows
