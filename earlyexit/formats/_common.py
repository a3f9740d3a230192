"""Field checks, JSON helpers, digests and atomic writes shared by every file kind."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_text", "digest"]

PROFILE_SCHEMA = "earlyexit.profile/1"
TOPOLOGY_SCHEMA = "earlyexit.topology/1"
PLAN_SCHEMA = "earlyexit.plan/1"
BUNDLE_SCHEMA = "earlyexit.bundle/1"

BREAKDOWN_KEYS = ("compute", "serialize", "transmit", "propagate")
# written when present; plans made before the runtime-overhead term lack it (read as 0)
BREAKDOWN_OPTIONAL_KEYS = ("overhead",)




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


def _parse_mapping(text: str, where: str, language: str = "JSON") -> dict[str, Any]:
    """``text`` parsed as JSON or YAML, which must hold one mapping (every file kind's top level).

    Args:
        text: the content.
        where: what the errors name first (``"plan"``, ``"topology 'net.yaml'"``).
        language: ``"JSON"`` or ``"YAML"`` (which reads JSON too).

    Returns:
        The mapping.

    Raises:
        ValueError: if ``text`` is not valid ``language``.
        TypeError: if it is, but holds something other than a mapping.
    """
    if language == "YAML":
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{where}: not valid YAML: {err}") from err
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON: {err}") from err
    if not isinstance(data, dict):
        kind = "an object" if language == "JSON" else "a mapping"
        raise TypeError(f"{where}: expected {kind} at the top level, got {type(data).__name__}")
    return data


def _read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """The JSON object in file ``path`` (``what`` names the file kind in errors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    return _parse_mapping(path.read_text(encoding="utf-8"), f"{what} file {str(path)!r}")


def _json_text(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def _check_schema(data: Mapping[str, Any], expected: str, what: str) -> None:
    _mapping(data, what)
    schema = data.get("schema")
    if schema is None:
        raise ValueError(f"{what}.schema: missing; expected {expected!r}")
    if schema != expected:
        raise ValueError(f"{what}.schema: unknown schema {schema!r}; this version reads {expected!r}")


def _list(value: Any, name: str, of: str = "") -> list[Any]:
    """``value``, checked to be a list (``of``: what its items are, for the error)."""
    if not isinstance(value, list):
        raise TypeError(f"{name}: expected a list{' of ' + of if of else ''}, got {type(value).__name__}")
    return value


def _mapping(value: Any, name: str, like: str = "") -> Mapping[str, Any]:
    """``value``, checked to be a mapping (``like``: its keys and values, for the error)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a mapping{' ' + like if like else ''}, got {type(value).__name__}")
    return value


def _header(schema: str, name: str, description: str) -> dict[str, Any]:
    """A file's first keys: ``schema``, then ``name`` and ``description`` only where set.

    Written only when set, so that a file made without them keeps its digest.
    """
    out: dict[str, Any] = {"schema": schema}
    if name:
        out["name"] = name
    if description:
        out["description"] = description
    return out


def _titles(data: Mapping[str, Any]) -> dict[str, str]:
    """A file's ``name`` and ``description`` ("" where absent), as keyword arguments."""
    return {"name": str(data.get("name", "")), "description": str(data.get("description", ""))}


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
