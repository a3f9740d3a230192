"""``plan.json``: a configuration (threshold, partitions, placement) and its estimate (``earlyexit.plan/1``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from earlyexit.formats._common import (
    BREAKDOWN_KEYS,
    BREAKDOWN_OPTIONAL_KEYS,
    PLAN_SCHEMA,
    _check_schema,
    _extra,
    _float,
    _int,
    _json_text,
    _list,
    _mapping,
    _parse_mapping,
    _read_json,
    _req,
    _str,
    atomic_write_text,
)

__all__ = ["PartitionPlan", "Estimate", "Plan"]


@dataclass(frozen=True)
class PartitionPlan:
    """One partition: blocks ``first_block..last_block`` (1-based, inclusive) on ``tier``."""

    first_block: int
    last_block: int
    tier: int
    tier_name: str

    def to_dict(self) -> dict[str, Any]:
        """The mapping of docs/spec.md."""
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
        """The mapping of docs/spec.md (``breakdown_s.overhead`` only when the breakdown has it)."""
        keys = BREAKDOWN_KEYS + tuple(k for k in BREAKDOWN_OPTIONAL_KEYS if k in self.breakdown_s)
        return {"latency_s": float(self.latency_s), "accuracy": float(self.accuracy),
                "exit_fractions": [float(e) for e in self.exit_fractions],
                "breakdown_s": {k: float(self.breakdown_s[k]) for k in keys}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "plan.estimate") -> Estimate:
        """Build from a mapping as in docs/spec.md."""
        _mapping(data, name)
        bd = _mapping(_req(data, "breakdown_s", name), f"{name}.breakdown_s", f"with keys {list(BREAKDOWN_KEYS)}")
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
    """A deployment plan (docs/spec.md ``earlyexit.plan/1``).

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
        """The mapping of docs/spec.md."""
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
        """Build from a mapping as in docs/spec.md, checking the schema and every field."""
        w = "plan"
        _check_schema(data, PLAN_SCHEMA, w)
        parts_raw = _list(_req(data, "partitions", w), f"{w}.partitions",
                          "{first_block, last_block, tier, tier_name}")
        parts = []
        for i, p in enumerate(parts_raw):
            n = f"{w}.partitions[{i}]"
            _mapping(p, n)
            parts.append(PartitionPlan(
                first_block=_int(_req(p, "first_block", n), f"{n}.first_block", 1),
                last_block=_int(_req(p, "last_block", n), f"{n}.last_block", 1),
                tier=_int(_req(p, "tier", n), f"{n}.tier", 0),
                tier_name=_str(p.get("tier_name", ""), f"{n}.tier_name")))
        constraint = _mapping(data.get("constraint") or {}, f"{w}.constraint", "like {'min_accuracy': 0.9}")
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
        return cls.from_dict(_parse_mapping(text, "plan"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Read a plan JSON file."""
        return cls.from_dict(_read_json(path, "plan"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the plan as JSON, atomically."""
        atomic_write_text(path, self.to_json())
