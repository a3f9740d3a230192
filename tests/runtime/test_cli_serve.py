"""``earlyexit serve``: its worker flags are WorkerOptions' fields, each reaching the worker."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

import earlyexit.runtime.worker as worker_mod
from earlyexit.cli import build_parser, main
from earlyexit.runtime.options import WorkerOptions
from tests.runtime.test_worker_options import _serve_args
from tests.test_cli_errors import write_bundle

# computed by serve from the bundle and --dead-after, never flags
FROM_BUNDLE = {"partition", "num_partitions", "tier", "next_tier", "last_block", "heartbeat_s"}


def _serve_parser() -> argparse.ArgumentParser:
    parser = build_parser(["serve"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def _last_partition(bundle: str) -> list[str]:
    return ["serve", "--bundle", bundle, "--partition", "1", "--results", "tcp://10.0.0.1:5558",
            "--bind", "tcp://127.0.0.1:*"]  # fmt: skip


@pytest.fixture
def captured(tmp_path, monkeypatch):
    bundle = str(write_bundle(tmp_path / "b", {1: {"onnx": b"\x08one"}, 2: {"onnx": b"\x08two"}}))
    seen: dict = {}

    def capture(runner_spec, options):
        seen["options"] = options
        return 0

    monkeypatch.setattr(worker_mod, "serve_config", capture)
    return bundle, seen


def test_every_field_but_the_computed_ones_is_a_flag():
    fields = _serve_parser().get_default("worker_fields")
    names = {f.name for f in dataclasses.fields(WorkerOptions)}
    assert set(fields) == names - FROM_BUNDLE  # a new field is a new flag
    assert (
        fields["result_route"] == "--results" and fields["batch_timeout_s"] == "--batch-timeout-ms"
    )
    assert fields["dead_after_s"] == "--dead-after"


def test_each_numeric_field_flag_reaches_the_options(captured):
    """Every int, float or bool field's flag, given a value other than its default, lands in it."""
    bundle, seen = captured
    parser = _serve_parser()
    fields = parser.get_default("worker_fields")
    by_flag = {s: a for a in parser._actions for s in a.option_strings}
    defaults = {f.name: f.default for f in dataclasses.fields(WorkerOptions)}
    base = _last_partition(bundle)
    checked = 0
    for name, flag in fields.items():
        action = by_flag[flag]
        if isinstance(action, argparse._StoreTrueAction):
            argv, expected = [flag], True
        elif isinstance(defaults[name], bool) or not isinstance(defaults[name], int | float):
            continue  # addresses and routes: named in test_worker_options' argv
        else:
            text = str(defaults[name] + 1) if isinstance(defaults[name], int) else "0.03"
            argv, expected = [flag, text], action.type(text)
        assert main([*base, *argv]) == 0, flag
        got = getattr(seen["options"], name)
        assert got == pytest.approx(expected) and got != defaults[name], flag
        checked += 1
    assert checked >= 8


def test_every_serve_flag_is_reached_by_a_test():
    """The flags not checked generically above are all in the explicit argv of test_worker_options."""
    parser = _serve_parser()
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    fields = parser.get_default("worker_fields")
    numeric = {
        flag for name, flag in fields.items()
        if isinstance(WorkerOptions.__dataclass_fields__[name].default, int | float)
    }  # fmt: skip
    explicit = set(_serve_args("b"))
    assert flags - {"--help", "--tier"} - numeric <= explicit, flags - numeric - explicit


def test_a_field_check_names_the_flag(captured, capsys):
    bundle, _ = captured
    base = _last_partition(bundle)
    assert main([*base, "--pending-limit", "0"]) == 2  # refused by WorkerOptions, not the parser
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pending-limit: pending_limit must be an integer >= 1" in err[0]


def test_serve_sets_the_computed_fields(captured):
    bundle, seen = captured
    argv = ["serve", "--bundle", bundle, "--partition", "0", "--next", "tcp://10.0.0.3:5557",
            "--results", "tcp://10.0.0.1:5558", "--dead-after", "0.4", "--bind", "tcp://127.0.0.1:*"]  # fmt: skip
    assert main(argv) == 0
    o = seen["options"]
    assert (o.partition, o.num_partitions, o.tier, o.next_tier) == (0, 2, 0, 1)
    assert o.heartbeat_s == pytest.approx(0.1) and o.dead_after_s == pytest.approx(0.4)


def test_a_new_field_becomes_a_flag(monkeypatch):
    """What H1-style additions get: a field added to WorkerOptions is a serve flag at once."""
    import earlyexit.runtime._cli as serve_cli
    from earlyexit._signatures import Param

    real = serve_cli.read_fields

    def with_new_field(module, cls, namespace=None):
        return {**real(module, cls, namespace),
                "drain_s": Param("drain_s", 1.5, "how long to drain on SIGTERM.", "float")}  # fmt: skip

    monkeypatch.setattr(serve_cli, "read_fields", with_new_field)
    parser = _serve_parser()
    action = next(a for a in parser._actions if "--drain" in a.option_strings)
    assert action.default == 1.5 and "how long to drain on SIGTERM. (default: 1.5 s)" in action.help
    assert parser.get_default("worker_fields")["drain_s"] == "--drain"
    with pytest.raises(SystemExit):  # a non-number is refused while parsing
        parser.parse_args(["--bundle", ".", "--partition", "0", "--results", "tcp://a:1",
                           "--drain", "soon"])  # fmt: skip
