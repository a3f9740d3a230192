"""``manifest.json``: a bundle's partitions, files and checks (``earlyexit.bundle/1``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earlyexit.formats._common import (
    BUNDLE_SCHEMA,
    _check_schema,
    _extra,
    _float,
    _int,
    _json_text,
    _list,
    _mapping,
    _read_json,
    _req,
    _str,
    atomic_write_text,
)
from earlyexit.formats.plan import Plan

__all__ = ["ManifestPartition", "Manifest"]


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
        _mapping(data, name)
        files = _req(data, "files", name)
        if not isinstance(files, Mapping) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError(f"{name}.files: expected a mapping format -> file name, e.g. {{'onnx': 'partition_1.onnx'}}")
        shapes = _mapping(data.get("output_shapes", {}) or {}, f"{name}.output_shapes", "output name -> shape")
        return cls(index=_int(_req(data, "index", name), f"{name}.index", 1), files=dict(files),
                   input_name=_str(data.get("input_name", "input"), f"{name}.input_name"),
                   output_names=tuple(data.get("output_names", ("logits", "entropy", "features"))),
                   input_shape=tuple(data.get("input_shape", ())),
                   output_shapes={k: tuple(v) for k, v in shapes.items()},
                   extra=_extra(data, cls._KEYS))


@dataclass(frozen=True)
class Manifest:
    """A bundle's ``manifest.json`` (docs/spec.md ``earlyexit.bundle/1``).

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
        parts = _list(_req(data, "partitions", w), f"{w}.partitions", "partition mappings")
        norm = _mapping(data.get("normalization", {}) or {}, f"{w}.normalization",
                        "like {'mean': [...], 'std': [...]}")
        shape = _list(_req(data, "input_shape", w), f"{w}.input_shape", "integers")
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
