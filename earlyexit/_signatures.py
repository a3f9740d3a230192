"""Command-line options declared once: by the public function they reach.

A subcommand's option takes its default and its help text from the signature
and the ``Args:`` docstring section of the function it calls, so a parameter
is declared in one place. The function's source is read with :mod:`ast`,
without importing its module: ``earlyexit --help`` and the edge's commands must
start without PyTorch, while functions such as ``export_bundle`` live in
modules that import it. Defaults that are names (``FP32_ATOL``) resolve in a
namespace the caller passes, else as the module's own constants, read from its
source too (:func:`read_constant`: ``MAX_HWM = 1_000_000``, ``256 * 1024 * 1024``,
or a name imported from another module). A dataclass's fields read the same
way (:func:`read_fields`, help from its ``Attributes:`` section), so a new
field of an options class becomes a new flag.

Standard library only, and a leaf (it imports nothing of ours), so every
command may use it. About 440 lines, half of them docstrings and doctests:
reading a declaration and turning it into an option stay together (the
helpers that need ``_checks``, such as :func:`earlyexit._cliutil.add_fields`,
live in :mod:`earlyexit._cliutil`).

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
import operator
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MISSING",
    "Param",
    "read_signature",
    "read_fields",
    "read_constant",
    "add_param",
    "docstring_args",
]

MISSING: Any = inspect.Parameter.empty
_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Attributes|Returns|Yields|Raises|Example|Examples|Note|Notes):\s*$"
)


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


def docstring_args(
    doc: str | None, sections: tuple[str, ...] = ("Args", "Arguments", "Parameters")
) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section.

    Args:
        doc: a docstring (``None`` gives ``{}``).
        sections: the section titles to read (``("Attributes",)`` for a dataclass).

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
            inside, name = stripped[:-1] in sections, None
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


def _imported(module: str, name: str) -> str | None:
    """The module that ``module`` imports ``name`` from (``from X import name``), if any."""
    for node in _parse(module).body:
        if isinstance(node, ast.ImportFrom) and any(
            (a.asname or a.name) == name and a.name == name for a in node.names
        ):
            package = module if _is_package(module) else module.rpartition(".")[0]
            return importlib.util.resolve_name("." * node.level + (node.module or ""), package)
    return None


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow,
}  # fmt: skip


def _eval(node: ast.expr, module: str, namespace: Mapping[str, Any], where: str) -> Any:
    """A literal, a name (the namespace's, else a constant of ``module``) or arithmetic on them."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.Name):
        if node.id in namespace:
            return namespace[node.id]
        try:
            return read_constant(module, node.id)
        except ValueError:
            pass
    elif isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = (_eval(n, module, namespace, where) for n in (node.left, node.right))
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError(f"{where}: exponent {right} too large in {ast.unparse(node)!r}")
        return _OPS[type(node.op)](left, right)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand, module, namespace, where)
        return -value if isinstance(node.op, ast.USub) else value
    elif isinstance(node, ast.Tuple | ast.List):
        items = [_eval(e, module, namespace, where) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    raise ValueError(
        f"{where}: default {ast.unparse(node)!r} is neither a literal nor a name of the namespace "
        f"given ({', '.join(sorted(namespace)) or 'empty'}) or a constant of {module}"
    )


def read_constant(module: str, name: str) -> Any:
    """A module-level constant, read from the source without importing the module.

    Args:
        module: the dotted module name.
        name: the constant's name: assigned a literal, arithmetic on literals and
            other constants, or imported (``from x import name``, followed).

    Returns:
        Its value.

    Raises:
        ValueError: if the module or the name is not found, or its value is an
            expression other than those.

    Example:
        >>> read_constant("earlyexit.runtime.wire", "MAX_MESSAGE_BYTES")
        268435456
    """
    where = f"{module}.{name}"
    for node in _parse(module).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if (
            isinstance(node, ast.Assign | ast.AnnAssign)
            and node.value is not None
            and any(isinstance(t, ast.Name) and t.id == name for t in targets)
        ):
            return _eval(node.value, module, {}, where)
    source = _imported(module, name)
    if source is None:
        raise ValueError(f"no constant {name!r} at module level in {module}")
    return read_constant(source, name)


def _params(
    pairs: list[tuple[ast.arg | ast.AnnAssign, ast.expr | None]],
    docs: Mapping[str, str],
    module: str,
    namespace: Mapping[str, Any],
    where: str,
) -> dict[str, Param]:
    out: dict[str, Param] = {}
    for node, default in pairs:
        name = node.arg if isinstance(node, ast.arg) else node.target.id  # type: ignore[union-attr]
        out[name] = Param(
            name=name,
            default=MISSING if default is None else _eval(default, module, namespace, where),
            help=_constants_said(docs.get(name, ""), module),
            annotation=ast.unparse(node.annotation) if node.annotation is not None else "",
        )
    return out


def _constants_said(text: str, module: str) -> str:
    """``:data:`MAX_CONFIGS``` -> ``1000`` where ``module`` (or what it imports) defines it."""

    def value(m: re.Match[str]) -> str:
        try:
            return str(read_constant(module, m.group(1).rsplit(".", 1)[-1]))
        except ValueError:
            return m.group(0)

    return re.sub(r":data:`~?([\w.]+)`", value, text)


def _definition(module: str, name: str, kind: type | tuple[type, ...]) -> tuple[str, Any]:
    """``(defining module, node)`` of a module-level def or class, following ``from x import``."""
    node = next((n for n in _parse(module).body if isinstance(n, kind) and n.name == name), None)
    if node is not None:
        return module, node
    source = _imported(module, name)
    if source is None:
        raise ValueError(f"no {'class' if kind is ast.ClassDef else 'function'} {name!r} at "
                         f"module level in {module}")  # fmt: skip
    return _definition(source, name, kind)


def read_signature(
    module: str, function: str, namespace: Mapping[str, Any] | None = None
) -> dict[str, Param]:
    """The parameters of ``module.function``, read from its source without importing it.

    Args:
        module: the dotted module name (a module that imports the function
            from another is followed there).
        function: a module-level function's name.
        namespace: values of the names used as defaults (for example
            ``vars(earlyexit.export.constants)``); other names are read with
            :func:`read_constant`.

    Returns:
        Parameter name -> :class:`Param`, in signature order (``*args`` and
        ``**kwargs`` left out).

    Raises:
        ValueError: if the module or function is not found, or a default is
            neither a literal nor in ``namespace`` nor a constant.

    Example:
        >>> list(read_signature("earlyexit._signatures", "docstring_args"))
        ['doc', 'sections']
    """
    module, fn = _definition(module, function, (ast.FunctionDef, ast.AsyncFunctionDef))
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(
        a.defaults
    )
    pairs = [
        *zip(positional, defaults, strict=True),
        *zip(a.kwonlyargs, a.kw_defaults, strict=True),
    ]
    docs = docstring_args(ast.get_docstring(fn))
    return _params(pairs, docs, module, dict(namespace or {}), f"{module}.{function}")


def read_fields(
    module: str, cls: str, namespace: Mapping[str, Any] | None = None
) -> dict[str, Param]:
    """The fields of a dataclass, read from its source: defaults and ``Attributes:`` help.

    Args:
        module: the dotted module name.
        cls: the class's name; its annotated class-level names are the fields
            (``ClassVar`` ones left out).
        namespace: as for :func:`read_signature`.

    Returns:
        Field name -> :class:`Param`, in declaration order.

    Raises:
        ValueError: as for :func:`read_signature`.

    Example:
        >>> f = read_fields("earlyexit._signatures", "Param")
        >>> list(f), f["name"].help
        (['name', 'default', 'help', 'annotation'], "the parameter's name.")
    """
    module, node = _definition(module, cls, ast.ClassDef)
    pairs = [
        (n, n.value)
        for n in node.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
        and "ClassVar" not in ast.unparse(n.annotation)
    ]  # fmt: skip
    docs = docstring_args(ast.get_docstring(node), ("Attributes",))
    return _params(pairs, docs, module, dict(namespace or {}), f"{module}.{cls}")  # type: ignore[arg-type]


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
    scale: float = 1.0,
    unit: str = "",
    more: str = "",
    **kwargs: Any,
) -> argparse.Action:
    """Add an option for ``param`` with the default and help its function declares.

    A ``bool`` parameter whose default is ``False`` becomes a ``store_true``
    flag, one whose default is ``True`` named ``--no-...`` a ``store_false``
    flag; a flag without dashes makes a positional argument (optional if the
    parameter has a default), named by the flag. Keyword arguments override
    what the signature gives (``type``, ``choices``, ``metavar``,
    ``required``; ``default`` only where the command line's default must
    differ, which the help then says). The value lands in ``args.<name>``.

    Args:
        parser: an argparse parser or argument group.
        param: from :func:`read_signature` or :func:`read_fields`.
        flags: option strings (default ``--name-with-dashes``).
        scale: the parameter's value per unit of the command line's
            (``1e-3``: milliseconds typed, seconds passed on); ``type`` is
            required with it and the shown default is converted.
        unit: the command line's unit, said in the help (``"ms"``).
        more: a sentence the help adds about the command line's form (an
            example of the syntax, a limit of the parser).
        kwargs: passed on to ``add_argument``.

    Returns:
        The argparse action.

    Raises:
        ValueError: ``scale`` without a ``type``.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = add_param(p, Param("rtol", 1e-3, "relative tolerance.", "float"), type=float)
        >>> _ = add_param(p, Param("gap_s", 0.0, "idle time.", "float"), "--gap-ms",
        ...               type=float, scale=1e-3, unit="ms")
        >>> a = p.parse_args(["--gap-ms", "20"])
        >>> a.rtol, a.gap_s
        (0.001, 0.02)
    """
    flags = flags or (f"--{param.name.replace('_', '-')}",)
    positional = not flags[0].startswith("-")
    if not positional:
        kwargs.setdefault("dest", param.name)
    doc = textwrap.shorten(kwargs.pop("help", None) or _plain(param.help), 320, placeholder=" ...")
    given_in = f"Given in {unit}." if unit and scale != 1.0 else ""
    help_text = " ".join(t for t in (doc, given_in, more) if t)
    if scale != 1.0:
        if "type" not in kwargs:
            raise ValueError(f"add_param({param.name!r}): scale needs a type to convert")
        kwargs["type"] = _scaled(kwargs["type"], scale)
    default = kwargs.get("default", param.default)
    if positional:
        if default is not MISSING:
            kwargs.setdefault("nargs", "?")
            kwargs.setdefault("default", default)
    elif param.default is False and "action" not in kwargs and "type" not in kwargs:
        kwargs["action"] = "store_true"
        kwargs.setdefault("default", False)
    elif param.default is True and flags[0].startswith("--no-") and "type" not in kwargs:
        kwargs.setdefault("action", "store_false")
        kwargs.setdefault("default", True)
        help_text = f"turn off: {help_text}"
    elif default is MISSING:
        kwargs.setdefault("required", True)
    else:
        kwargs.setdefault("default", default)
        if default is not None and "default:" not in help_text:
            shown = _show(default / scale if scale != 1.0 else default)
            help_text = f"{help_text} (default: {shown}{' ' + unit if unit else ''})".strip()
    if not positional and "choices" not in kwargs and kwargs.get("action") not in _FLAGS:
        kwargs.setdefault("metavar", flags[0].lstrip("-").replace("-", "_").upper())
    if unit and f" {unit})" not in help_text:  # said with the default, else here
        help_text = f"{help_text} (in {unit})".strip()
    kwargs["help"] = help_text.replace("%", "%%") if help_text else None  # argparse formats it
    return parser.add_argument(*flags, **kwargs)


_FLAGS = ("store_true", "store_false", "count")


def _scaled(parse: Callable[[str], Any], scale: float) -> Callable[[str], Any]:
    def scaled(text: str) -> Any:
        return parse(text) * scale

    scaled.__name__ = getattr(parse, "__name__", "value")
    return scaled
