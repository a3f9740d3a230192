"""_signatures: options declared once, by the function they reach."""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

from earlyexit._signatures import MISSING, Param, add_param, docstring_args, read_signature

# public functions whose parameters commands take (module, name, namespace module)
FUNCTIONS = [
    ("earlyexit.export.bundle", "export_bundle", "earlyexit.export.constants"),
    ("earlyexit.planner.api", "plan", None),
    ("earlyexit.profiling.api", "profile", "earlyexit.profiling.api"),
    ("earlyexit.surgery.decompose", "decompose", None),
    ("earlyexit._signatures", "read_signature", None),
]


@pytest.mark.parametrize(("module", "name", "namespace"), FUNCTIONS)
def test_source_reading_agrees_with_inspect(module, name, namespace):
    ns = vars(importlib.import_module(namespace)) if namespace else None
    try:
        read = read_signature(module, name, ns)
    except ValueError as err:  # a default that is an expression the reader refuses
        pytest.fail(str(err))
    func = getattr(importlib.import_module(module), name)
    real = inspect.signature(func).parameters
    assert list(read) == [p for p in real if real[p].kind not in (real[p].VAR_POSITIONAL, real[p].VAR_KEYWORD)]
    for p, param in read.items():
        expected = real[p].default
        assert param.default is MISSING if expected is inspect.Parameter.empty else param.default == expected, p
    documented = docstring_args(inspect.getdoc(func))
    assert {p: read[p].help for p in documented if p in read} == {p: documented[p] for p in documented if p in read}
    assert all(read[p].help for p in read), f"undocumented parameters of {name}"


def test_docstring_sections_end_the_args():
    doc = """Summary.

    Args:
        a: first line
            continued.
        b (int): typed.
        *args: ignored by name? no: kept as 'args'.

    Returns:
        a: not a parameter.
    """
    assert docstring_args(doc) == {
        "a": "first line continued.",
        "b": "typed.",
        "args": "ignored by name? no: kept as 'args'.",
    }
    assert docstring_args(None) == {}


def test_unresolvable_default_is_refused():
    with pytest.raises(ValueError, match="neither a literal nor a name"):
        read_signature("earlyexit.export.bundle", "export_bundle")  # FORMATS without namespace
    with pytest.raises(ValueError, match="no function"):
        read_signature("earlyexit._signatures", "nope")
    with pytest.raises(ValueError, match="not found"):
        read_signature("earlyexit.no_such_module", "f")


def test_add_param_kinds():
    p = argparse.ArgumentParser()
    add_param(p, Param("force", False, "do it anyway.", "bool"))
    add_param(p, Param("out_dir", MISSING, "where.", "str"), "-o")
    add_param(p, Param("rate", 2.5, "how fast, in ``Hz``.", "float"), type=float)
    ns = p.parse_args(["-o", "x"])
    assert (ns.force, ns.out_dir, ns.rate) == (False, "x", 2.5)
    assert p.parse_args(["-o", "x", "--force", "--rate", "3"]).force is True
    with pytest.raises(SystemExit):
        p.parse_args([])  # out_dir has no default: required
    text = p.format_help()
    assert "how fast, in Hz. (default: 2.5)" in " ".join(text.split())


def test_export_command_defaults_are_export_bundles():
    from earlyexit.cli import build_parser
    from earlyexit.export.bundle import export_bundle

    parser = build_parser(["export"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    export = sub.choices["export"]
    real = inspect.signature(export_bundle).parameters
    checked = 0
    for action in export._actions:
        if action.dest in real and action.dest != "formats" and action.option_strings and not action.required:
            assert action.default == real[action.dest].default, action.dest
            checked += 1
    assert checked >= 9
    formats = next(a for a in export._actions if a.dest == "formats")
    assert tuple(formats.default) == tuple(real["formats"].default)
