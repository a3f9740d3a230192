"""Command-line options declared once: by the public function they reach.

A subcommand's option takes its default and its help text from the signature
and the ``Args:`` docstring section of the function it calls, so a parameter
is declared in one place. The function's source is read with :mod:`ast`,
without importing its module: ``earlyexit --help`` and the edge's commands must
start without PyTorch, while functions such as ``export_bundle`` live in
modules that import it. Defaults that are names (``FP32_ATOL``) resolve in a
namespace the caller passes (a torch-free constants module).

Standard library only.

Example:
    >>> import argparse
    >>> sig = read_signature("earlyexit._signatures", "read_signature")
    >>> sig["namespace"].default is None
    True
    >>> p = argparse.ArgumentParser()
    >>> _ = add_param(p, sig["function"])
    >>> p.parse_args(["--function", "f"]).function
    'f'
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import inspect
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MISSING", "Param", "read_signature", "add_param", "docstring_args"]

MISSING: Any = inspect.Parameter.empty
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Yields|Raises|Example|Examples|Note|Notes):\s*$")


@dataclass(frozen=True)
class Param:
    """One parameter of a function, as its source declares it.

    Attributes:
        name: the parameter's name.
        default: its default value (:data:`MISSING` if it has none).
        help: its ``Args:`` entry, whitespace collapsed ("" if undocumented).
        annotation: the annotation's source text ("" if none).
    """

    name: str
    default: Any
    help: str
    annotation: str


def docstring_args(doc: str | None) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section.

    Args:
        doc: a docstring (``None`` gives ``{}``).

    Returns:
        Parameter name -> its description with whitespace collapsed.

    Example:
        >>> docstring_args('''Do it.
        ...
        ... Args:
        ...     x: the first
        ...         value.
        ...     y, z: the others.
        ...
        ... Returns:
        ...     Nothing.
        ... ''')
        {'x': 'the first value.', 'y': 'the others.', 'z': 'the others.'}
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, str] = {}
    inside, indent = False, None
    name: list[str] | None = None
    for line in lines:
        stripped = line.strip()
        if _SECTION.match(stripped) and len(line) - len(line.lstrip()) == 0:
            inside, name = stripped.startswith(("Args", "Arguments", "Parameters")), None
            continue
        if not inside or not stripped:
            continue
        level = len(line) - len(line.lstrip())
        if indent is None:
            indent = level
        m = re.match(r"^((?:\*{0,2}\w+,\s*)*\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$", stripped)
        if level == indent and m:  # "name: text" or "a, b: text" (one text for several)
            names = [n.strip().lstrip("*") for n in m.group(1).split(",")]
            name = names
            for n in names:
                out[n] = m.group(2)
        elif name is not None and level > indent:
            for n in name:
                out[n] = f"{out[n]} {stripped}".strip()
    return out


@functools.lru_cache(maxsize=64)
def _parse(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"module {module!r} not found")
    with open(spec.origin, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=spec.origin)


def _value(node: ast.expr, namespace: Mapping[str, Any], where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.Name) and node.id in namespace:
        return namespace[node.id]
    raise ValueError(
        f"{where}: default {ast.unparse(node)!r} is neither a literal nor a name of the namespace "
        f"given ({', '.join(sorted(namespace)) or 'empty'})"
    )


def read_signature(
    module: str, function: str, namespace: Mapping[str, Any] | None = None
) -> dict[str, Param]:
    """The parameters of ``module.function``, read from its source without importing it.

    Args:
        module: the dotted module name.
        function: a module-level function's name.
        namespace: values of the names used as defaults (for example
            ``vars(earlyexit.export.constants)``).

    Returns:
        Parameter name -> :class:`Param`, in signature order.

    Raises:
        ValueError: if the module or function is not found, or a default is
            neither a literal nor in ``namespace``.

    Example:
        >>> list(read_signature("earlyexit._signatures", "docstring_args"))
        ['doc']
    """
    tree = _parse(module)
    fn = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
         and n.name == function),
        None,
    )  # fmt: skip
    if fn is None:
        raise ValueError(f"no function {function!r} at module level in {module}")
    ns = dict(namespace or {})
    where = f"{module}.{function}"
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    pairs = [*zip(positional, defaults, strict=True), *zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    docs = docstring_args(ast.get_docstring(fn))
    out: dict[str, Param] = {}
    for arg, default in pairs:
        out[arg.arg] = Param(
            name=arg.arg,
            default=MISSING if default is None else _value(default, ns, where),
            help=docs.get(arg.arg, ""),
            annotation=ast.unparse(arg.annotation) if arg.annotation is not None else "",
        )
    return out


def _plain(text: str) -> str:
    """Docstring markup as a terminal shows it: ``x`` -> x, :func:`~a.b` -> b."""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return text.replace("``", "")


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_param(
    parser: argparse.ArgumentParser | Any,
    param: Param,
    *flags: str,
    **kwargs: Any,
) -> argparse.Action:
    """Add an option for ``param`` with the default and help its function declares.

    A ``bool`` parameter whose default is ``False`` becomes a ``store_true``
    flag; a flag without dashes makes a positional argument (optional if the
    parameter has a default), named by the flag. Keyword arguments override what the signature gives (``type``,
    ``choices``, ``metavar``, ``required``; ``default`` only where the command
    line's default must differ, which the help then says).

    Args:
        parser: an argparse parser or argument group.
        param: from :func:`read_signature`.
        flags: option strings (default ``--name-with-dashes``).
        kwargs: passed on to ``add_argument``.

    Returns:
        The argparse action.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = add_param(p, Param("rtol", 1e-3, "relative tolerance.", "float"), type=float)
        >>> p.parse_args([]).rtol, p.parse_args(["--rtol", "0.5"]).rtol
        (0.001, 0.5)
    """
    flags = flags or (f"--{param.name.replace('_', '-')}",)
    positional = not flags[0].startswith("-")
    if not positional:
        kwargs.setdefault("dest", param.name)
    help_text = kwargs.pop("help", None) or _plain(param.help)
    default = kwargs.get("default", param.default)
    if positional:
        if default is not MISSING:
            kwargs.setdefault("nargs", "?")
            kwargs.setdefault("default", default)
    elif param.default is False and "action" not in kwargs and "type" not in kwargs:
        kwargs["action"] = "store_true"
        kwargs.setdefault("default", False)
    elif default is MISSING:
        kwargs.setdefault("required", True)
    else:
        kwargs.setdefault("default", default)
        if default is not None and "default:" not in help_text:
            help_text = f"{help_text} (default: {_show(default)})".strip()
    kwargs["help"] = textwrap.shorten(help_text, 400, placeholder=" ...") if help_text else None
    return parser.add_argument(*flags, **kwargs)
