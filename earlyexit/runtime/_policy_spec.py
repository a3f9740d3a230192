"""Exit policies as data: a spec parsed and checked once, the policy a worker's exit
applies, and the reports workers send upstream (docs/spec.md#load).

Public names are re-exported by :mod:`earlyexit.runtime.policies`, which holds the
policies themselves.

Example:
    >>> from earlyexit.runtime.policies import policy_text
    >>> policy_text({"policy": "adaee", "grid": [0.2, 0.5]})[:30]
    '{"cost_weight":1.0,"discount":'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from earlyexit.runtime._online_policies import (
    AdaEE,
    ExitPolicy,
    ExitProbabilityPolicy,
    KnapsackPolicy,
)

__all__ = [
    "POLICIES",
    "parse_policy",
    "policy_text",
    "make_policy",
    "merge_policy_reports",
    "compact_report",
    "REPORT_BYTES",
]


# ----------------------------------------------------------------- policy specs
POLICIES: dict[str, dict[str, Any]] = {
    "threshold": {},
    "probabilities": {"p": None, "seed": None},
    "knapsack": {"exit_times": None, "exit_accuracy": None, "arrival_rate": None,
                 "utilization": 0.9},
    "adaee": {"grid": [round(0.1 * i, 1) for i in range(1, 10)], "exploration": 1.0,
              "cost_weight": 1.0, "discount": 1.0, "seed": None},
}  # fmt: skip
"""Every policy a worker applies: its name -> its fields and their defaults (None: required,
except ``seed``). The spec of a policy is this data, e.g. ``{"policy": "adaee", "grid": [0.2,
0.5]}``; :func:`parse_policy` checks it once."""
_LISTS = {"p", "exit_times", "exit_accuracy", "grid"}
_OPTIONAL = {"seed"}
_MAX_LIST = 4096


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _spec_source(spec: Any) -> Mapping[str, Any]:
    """A spec given as a mapping, a policy name, JSON text or a JSON/YAML file's path."""
    if isinstance(spec, Mapping):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f'policy: expected a mapping like {{"policy": "threshold"}}, a policy name, '
            f"JSON text or a JSON/YAML file, got {type(spec).__name__}"
        )
    text = os.fspath(spec).strip()
    if text in POLICIES:
        return {"policy": text}
    if not text.startswith(("{", "[")):
        path = Path(text)
        if not path.is_file():
            raise ValueError(
                f"policy: {text[:80]!r} is no policy name ({', '.join(POLICIES)}), no JSON "
                "object and no file"
            )
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            from earlyexit.formats._common import _parse_mapping

            return _parse_mapping(text, f"policy: file {path.name!r}", "YAML")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"policy: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise TypeError(f"policy: expected a JSON object, got {type(data).__name__}")
    return data


def parse_policy(spec: Any = None) -> dict[str, Any]:
    """A policy spec checked and completed with its defaults: the one place specs are read.

    Args:
        spec: None (``threshold``, today's rule), a policy name, a mapping
            ``{"policy": NAME, field: value, ...}``, its JSON text, or the path
            of a JSON or YAML file holding it. Fields per policy: :data:`POLICIES`.

    Returns:
        ``{"policy": NAME, **every field}`` (JSON-able).

    Raises:
        ValueError: an unknown policy or field, a missing or bad value (named,
            with the valid ones).
        TypeError: a spec that is none of the forms above.

    Example:
        >>> parse_policy('{"policy": "adaee", "grid": [0.2, 0.5]}')["exploration"]
        1.0
        >>> parse_policy(None)
        {'policy': 'threshold'}
    """
    data = {"policy": "threshold"} if spec is None else _spec_source(spec)
    name = data.get("policy")
    if not isinstance(name, str) or name not in POLICIES:
        raise ValueError(f"policy: {str(name)[:40]!r} is not one of {', '.join(POLICIES)}")
    fields = POLICIES[name]
    unknown = sorted(str(k)[:40] for k in data if k != "policy" and k not in fields)
    if unknown:
        valid = ", ".join(fields) or "none"
        raise ValueError(f"policy: {name} has no field(s) {unknown}; valid: {valid}")
    out: dict[str, Any] = {"policy": name}
    for field, default in fields.items():
        v = data.get(field, default)
        if v is None and field not in _OPTIONAL:
            raise ValueError(f"policy: {name} needs {field!r}; fields: {', '.join(fields)}")
        if field == "seed":
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"policy: seed must be an integer >= 0 or null, got {v!r}")
        elif field in _LISTS:
            ok = isinstance(v, (list, tuple)) and 0 < len(v) <= _MAX_LIST
            if not ok or not all(_number(x) for x in v):
                raise ValueError(
                    f"policy: {name}: {field!r} must be a list of 1 to {_MAX_LIST} finite "
                    f"numbers, got {str(v)[:80]}"
                )
            v = [float(x) for x in v]
        elif not _number(v):
            raise ValueError(f"policy: {name}: {field!r} must be a finite number, got {v!r}")
        else:
            v = float(v)
        out[field] = v
    make_policy(out, partition=0, num_partitions=None, threshold=0.5)  # the values' own checks
    return out


def policy_text(spec: Any = None) -> str:
    """The canonical JSON text of a checked spec (what crosses into a worker process).

    Example:
        >>> policy_text("threshold")
        '{"policy":"threshold"}'
    """
    return json.dumps(parse_policy(spec), separators=(",", ":"), sort_keys=True)


def make_policy(
    spec: Any, partition: int, num_partitions: int | None, threshold: float
) -> ExitPolicy | None:
    """The policy the worker of ``partition`` applies at its exit (None: the threshold rule).

    ``threshold`` gives None, so that the worker keeps its vectorized path.
    ``adaee`` is a bandit in the first tier's worker only (partition 0); the
    later workers apply ``threshold``, which is the bandit's own rule for the
    exits after the first (``later_threshold``). ``probabilities`` and
    ``knapsack`` give one value per exit of the plan: every worker applies
    its own exit ``k = partition``.

    Args:
        spec: as for :func:`parse_policy` (checked again if not canonical).
        partition: the worker's 0-based partition.
        num_partitions: L, the plan's exits (None: do not check the lengths).
        threshold: the deployment's exit threshold.

    Returns:
        The policy, or None for the threshold rule.

    Raises:
        ValueError: values the policy refuses, or lists that do not give one
            value per exit.
    """
    s = spec if isinstance(spec, dict) and "policy" in spec else parse_policy(spec)
    name = s["policy"]
    if name == "threshold" or (name == "adaee" and partition != 0):
        return None
    n = num_partitions
    for field in ("p", "exit_times", "exit_accuracy"):
        if n is not None and field in s and len(s[field]) != n:
            raise ValueError(
                f"policy: {name}: {field!r} gives {len(s[field])} values; the plan has {n} exits"
            )
    try:
        if name == "probabilities":
            seed = None if s["seed"] is None else [int(s["seed"]), int(partition)]
            return ExitProbabilityPolicy(s["p"], seed=seed)  # type: ignore[arg-type]
        if name == "knapsack":
            return KnapsackPolicy(s["exit_times"], s["exit_accuracy"], s["arrival_rate"],
                                  s["utilization"])  # fmt: skip
        return AdaEE(s["grid"], s["exploration"], s["cost_weight"], s["discount"],
                     num_exits=max(n or 2, 1), later_threshold=threshold,
                     seed=s["seed"])  # fmt: skip
    except (TypeError, ValueError) as err:
        msg = str(err).replace("thresholds:", "grid:").replace("probabilities:", "p:")
        raise ValueError(f"policy: {name}: {msg}") from None


_MAX_REPORTS = 16
REPORT_BYTES = 2048
"""The largest policy report (JSON) a heartbeat carries: 16 of them stay far under a header's 64 KiB."""
_PER_ARM = ("thresholds", "counts", "values", "pending")


def compact_report(report: Mapping[str, Any], limit: int = REPORT_BYTES) -> dict[str, Any]:
    """A policy report that fits ``limit`` bytes of JSON: per-arm lists dropped if need be.

    Example:
        >>> big = AdaEE([i / 999 for i in range(1000)]).describe()
        >>> sorted(compact_report(big))[:3], compact_report(big)["arms"]
        (['arms', 'best_threshold', 'cost_weight'], 1000)
    """
    out = dict(report)
    if len(json.dumps(out)) <= limit:
        return out
    arms = len(out.get("thresholds") or ())
    out = {k: v for k, v in out.items() if k not in _PER_ARM and k != "p" and k != "exit_times"}
    out["arms"] = arms
    if len(json.dumps(out)) > limit:
        return {"policy": str(out.get("policy", "?"))[:40], "truncated": True}
    return out


def merge_policy_reports(store: MutableMapping[int, dict[str, Any]], report: Any) -> int:
    """Keep the policy reports a heartbeat carries: ``{partition: describe()}``, checked.

    Args:
        store: partition -> its newest report (updated in place; at most 16 partitions).
        report: the heartbeat's ``policies`` field (from another process: anything).

    Returns:
        How many reports were taken (entries that are not ``{"<int>": {"policy": ...}}``,
        or larger than :data:`REPORT_BYTES` of JSON, are skipped).
    """
    if not isinstance(report, Mapping):
        return 0
    taken = 0
    for key, value in list(report.items())[:_MAX_REPORTS]:
        try:
            k = int(key)
        except (TypeError, ValueError):
            continue
        if not (0 <= k < 1_000_000 and isinstance(value, Mapping) and "policy" in value):
            continue
        if k not in store and len(store) >= _MAX_REPORTS:
            continue
        try:
            small = len(json.dumps(value)) <= REPORT_BYTES
        except (TypeError, ValueError):  # not JSON (NaN is: Python writes it)
            small = False
        if small:
            store[k] = dict(value)
            taken += 1
    return taken
