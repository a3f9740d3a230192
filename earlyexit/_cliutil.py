"""What the subcommands' ``_cli`` modules share: repeatable KEY=VALUE pairs, options from fields.

:func:`add_fields` turns the fields of an options dataclass (read from its
source by :func:`earlyexit._signatures.read_fields`) into options: a field is
a flag unless the command computes it, typed from its annotation, with the
default and ``Attributes:`` line the class declares. A new field is a new
flag, with nothing to write here. Standard library only.

Example:
    >>> import argparse
    >>> from earlyexit._signatures import Param
    >>> p = argparse.ArgumentParser()
    >>> fields = {"hwm": Param("hwm", 64, "high-water mark.", "int"),
    ...           "tier": Param("tier", None, "its tier.", "int | None")}
    >>> add_fields(p, fields, skip={"tier"})
    {'hwm': '--hwm'}
    >>> p.parse_args(["--hwm", "9"]).hwm
    9
    >>> key_values(["edge=cpu", "2=gpu"], "--device")
    {'edge': 'cpu', '2': 'gpu'}
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from earlyexit._checks import float_range, int_range
from earlyexit._signatures import Param, add_param

__all__ = [
    "MAX_LIST",
    "key_values",
    "block_list",
    "name_list",
    "unit_list",
    "field_flag",
    "field_type",
    "add_fields",
    "name_flags",
    "given",
    "add_command",
]

MAX_LIST = 10_000
"""The most items one list option takes (blocks, tiers or thresholds)."""


def key_values(items: Iterable[str], flag: str, form: str = "TIER=DEVICE") -> dict[str, str]:
    """Repeatable ``KEY=VALUE`` options as a dict (``--device edge=cpu --device 2=gpu``).

    Args:
        items: the values given (``action="append"``).
        flag: the option's name, for the error.
        form: what one value looks like, for the error.

    Returns:
        Key -> value, both stripped, in order (a repeated key: the last value).

    Raises:
        ValueError: an item without ``=``, or with an empty key or value.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} expects {form}, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def block_list(text: str) -> list[int]:
    """An argparse type: ``5,10-20`` -> block numbers (>= 1), at most ``MAX_LIST`` of them.

    Example:
        >>> block_list("5,10-12")
        [5, 10, 11, 12]
    """
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, sep, b = part.partition("-")
            lo, hi = int(a), int(b if sep else a)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected block numbers >= 1 and ranges like 5,10-20, got {text!r}"
            ) from None
        if lo < 1 or hi < lo:
            raise argparse.ArgumentTypeError(
                f"expected block numbers >= 1 and ranges a-b with a <= b, got {part!r}"
            )
        if hi - lo + 1 + len(out) > MAX_LIST:
            raise argparse.ArgumentTypeError(f"at most {MAX_LIST} blocks, got {text!r}")
        out.extend(range(lo, hi + 1))
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one block number, got {text!r}")
    return out


def name_list(text: str) -> list[int | str]:
    """An argparse type: ``0,2`` or ``edge,cloud`` -> tier indices or names."""
    out = [int(t) if t.strip().isdigit() else t.strip() for t in text.split(",") if t.strip()]
    if not out or len(out) > MAX_LIST:
        raise argparse.ArgumentTypeError(
            f"expected 1 to {MAX_LIST} tier indices or names, e.g. 0,2 or edge,cloud, got {text!r}"
        )
    return out


def unit_list(text: str) -> list[float]:
    """An argparse type: ``0.3,0.5`` (or ``0.3 0.5``) -> numbers in [0, 1], such as thresholds."""
    try:
        out = [float(t) for t in text.replace(",", " ").split()]
    except ValueError:
        out = []
    if not out or len(out) > MAX_LIST or not all(0.0 <= t <= 1.0 for t in out):
        raise argparse.ArgumentTypeError(
            f"expected 1 to {MAX_LIST} thresholds in [0, 1], e.g. 0.3,0.5, got {text!r}"
        )
    return out


def field_flag(name: str) -> tuple[str, str]:
    """``(flag, unit)`` of a field: ``dead_after_s`` -> ``("--dead-after", "s")``."""
    if name.endswith("_s"):
        return f"--{name[:-2].replace('_', '-')}", "s"
    return f"--{name.replace('_', '-')}", ""


def field_type(param: Param) -> Callable[[str], Any] | None:
    """The argparse type of a field from its annotation (``None``: a boolean flag).

    Raises:
        TypeError: an annotation with no command-line form (give the field a shape).
    """
    kind = param.annotation.replace(" | None", "").replace("None | ", "").strip()
    types: dict[str, Callable[[str], Any] | None] = {
        "int": int_range(), "float": float_range(), "str": str, "bool": None,
    }  # fmt: skip
    if kind not in types:
        raise TypeError(
            f"field {param.name!r}: no command-line form for {param.annotation!r} "
            "(one of int, float, str, bool); declare its shape where the command adds its fields"
        )
    return types[kind]


def add_fields(
    parser: argparse.ArgumentParser | Any,
    fields: Mapping[str, Param],
    shapes: Mapping[str, Mapping[str, Any]] | None = None,
    skip: Collection[str] = (),
) -> dict[str, str]:
    """Add an option for every field of an options class that the command does not compute.

    Args:
        parser: an argparse parser or argument group.
        fields: from :func:`~earlyexit._signatures.read_fields`.
        shapes: per field, what its option needs beyond the field's own
            declaration: ``flags`` (a tuple; default from :func:`field_flag`)
            and keyword arguments of :func:`~earlyexit._signatures.add_param`
            (``type`` with a range, ``action="append"``, a ``default`` the
            command line needs, ``scale``).
        skip: the fields the command computes (no option).

    Returns:
        Field name -> its flag, for the fields given options (``args.<name>``
        holds each value).

    Raises:
        TypeError: a field with neither a shape nor an annotation :func:`field_type` knows.
    """
    shapes = shapes or {}
    added: dict[str, str] = {}
    for name, param in fields.items():
        if name in skip:
            continue
        shape = dict(shapes.get(name, {}))
        flag, unit = field_flag(name)
        flags = shape.pop("flags", (flag,))
        if "type" not in shape and "action" not in shape:
            kind = field_type(param)
            if kind is not None:
                shape["type"] = kind
        if unit and "scale" not in shape:
            shape.setdefault("unit", unit)
        add_param(parser, param, *flags, **shape)
        added[name] = flags[0]
    return added


def name_flags(text: str, flags: Mapping[str, str]) -> str:
    """An API error that starts with a parameter's name, said with its flag.

    Example:
        >>> name_flags("hwm must be an integer", {"hwm": "--hwm"})
        '--hwm: hwm must be an integer'
    """
    head = text.split(" ", 1)[0].rstrip(":")
    return f"{flags[head]}: {text}" if head in flags else text


def given(
    args: argparse.Namespace, params: Mapping[str, Param], skip: Collection[str] = ()
) -> dict[str, Any]:
    """The parsed values of a function's parameters: its keyword arguments, each named once.

    Args:
        args: the parsed command line.
        params: the function's parameters (:func:`~earlyexit._signatures.read_signature`).
        skip: parameters the command passes itself (files it loads, values it converts).

    Returns:
        Parameter name -> ``args.<name>``, for every parameter the command line has.

    Example:
        >>> given(argparse.Namespace(reps=3, json=True), {"reps": Param("reps", 15, "", "int")})
        {'reps': 3}
    """
    return {k: getattr(args, k) for k in params if k not in skip and hasattr(args, k)}


def add_command(
    subparsers: Any, name: str, func: Callable[[argparse.Namespace], int], summary: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """Add a subcommand that runs ``func``.

    Args:
        subparsers: the ``earlyexit`` parser's subparsers.
        name: the command's name.
        func: what runs it (``args.func``).
        summary: its line in ``earlyexit --help``.
        kwargs: passed on to ``add_parser`` (``description``, ``prog``).

    Returns:
        Its parser, to add the options to.
    """
    p = subparsers.add_parser(name, help=summary, **kwargs)
    p.set_defaults(func=func)
    return p
