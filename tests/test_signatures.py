"""_signatures: options declared once, by the function they reach."""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

from earlyexit._signatures import (
    MISSING,
    Param,
    add_param,
    docstring_args,
    read_constant,
    read_fields,
    read_signature,
)

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


def test_unresolvable_default_is_refused(tmp_path, monkeypatch):
    (tmp_path / "sig_fixture.py").write_text(
        "import os\nfrom os.path import sep\nLIMIT = 2 ** 10 - 1\nLIST = [LIMIT, -3]\n"
        "def f(a=os.getcwd(), b=1):\n    pass\n"
        "def g(a=LIMIT * 2, b=UNDEFINED):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="neither a literal nor a name"):
        read_signature("sig_fixture", "f")  # a call is never evaluated
    with pytest.raises(ValueError, match="UNDEFINED"):
        read_signature("sig_fixture", "g")
    assert read_signature("sig_fixture", "g", {"UNDEFINED": 5})["b"].default == 5
    assert read_signature("sig_fixture", "g", {"UNDEFINED": 5})["a"].default == 2046
    assert read_constant("sig_fixture", "LIST") == [1023, -3]
    with pytest.raises(ValueError, match="no constant"):
        read_constant("sig_fixture", "nope")
    with pytest.raises(ValueError, match="no function"):
        read_signature("earlyexit._signatures", "nope")
    with pytest.raises(ValueError, match="not found"):
        read_signature("earlyexit.no_such_module", "f")


def test_constants_are_the_modules():
    """Constants and re-exported functions are followed across modules, as the import does."""
    import earlyexit.runtime.options as options
    import earlyexit.validation as validation

    assert read_constant("earlyexit.runtime.options", "MAX_MESSAGE_BYTES") == options.MAX_MESSAGE_BYTES
    assert read_constant("earlyexit.runtime.options", "MAX_HWM") == options.MAX_HWM
    assert read_constant("earlyexit.validation", "MAX_CONFIGS") == validation.MAX_CONFIGS
    real = inspect.signature(validation.validate).parameters
    read = read_signature("earlyexit.validation", "validate")  # imported there from its module
    assert {p: read[p].default for p in read} == {
        p: v.default for p, v in real.items() if v.default is not inspect.Parameter.empty
    } | {p: MISSING for p, v in real.items() if v.default is inspect.Parameter.empty}


def test_dataclass_fields_read_as_parameters():
    import dataclasses

    from earlyexit.runtime.options import WorkerOptions

    read = read_fields("earlyexit.runtime.options", "WorkerOptions")
    real = dataclasses.fields(WorkerOptions)
    assert list(read) == [f.name for f in real]
    for f in real:
        expected = MISSING if f.default is dataclasses.MISSING else f.default
        assert read[f.name].default == expected, f.name
        assert read[f.name].help, f"field {f.name} has no Attributes: line"
    assert read["hwm"].annotation == "int" and "high-water mark" in read["hwm"].help


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


# subcommand -> the function its options reach (their defaults must be that function's)
COMMANDS = [
    ("export", "earlyexit.export.bundle", "export_bundle", 9),
    ("blocks", "earlyexit.backbones._cli", "describe_blocks", 2),
    ("deploy-k8s", "earlyexit.deploy.k8s", "k8s_objects", 5),
    ("deploy-k8s", "earlyexit.deploy.tiers", "plan_workers", 2),
    ("deploy-compose", "earlyexit.deploy.compose", "compose_spec", 5),
    ("plan", "earlyexit.planner.api", "plan", 7),
    ("plan", "earlyexit.planner.space", "make_space", 7),
    ("capacity", "earlyexit.planner.api", "plan_capacity", 3),
    ("profile", "earlyexit.profiling.api", "profile", 12),
]


@pytest.mark.parametrize(("command", "module", "name", "least"), COMMANDS)
def test_command_defaults_are_the_functions(command, module, name, least):
    from earlyexit.cli import build_parser

    parser = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    real = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    checked = 0
    for action in sub.choices[command]._actions:
        if action.dest not in real or real[action.dest].default is inspect.Parameter.empty:
            continue
        default = real[action.dest].default
        got = tuple(action.default) if isinstance(default, tuple) else action.default
        assert got == default, action.dest
        if default not in (None, False):
            assert "(default:" in action.help, action.dest
        checked += 1
    assert checked >= least


def test_positional_parameters():
    p = argparse.ArgumentParser()
    add_param(p, Param("name", MISSING, "a name.", "str"), "name")
    add_param(p, Param("pattern", None, "a glob.", "str"), "pattern")
    assert vars(p.parse_args(["x"])) == {"name": "x", "pattern": None}
    assert vars(p.parse_args(["x", "y*"])) == {"name": "x", "pattern": "y*"}
    with pytest.raises(SystemExit):
        p.parse_args([])
