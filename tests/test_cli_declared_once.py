"""Options declared once: each flag of plan, pareto, whatif, capacity and profile reaches its
function, and its default and help are that function's (read from the source)."""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

import earlyexit.planner.api as api
from earlyexit._signatures import docstring_args
from earlyexit.cli import build_parser, main
from earlyexit.planner.synthetic import synthetic_profile


class _Reached(Exception):
    pass


@pytest.fixture
def prof_path(tmp_path):
    path = tmp_path / "p.json"
    synthetic_profile(8, num_samples=20).save(path)
    return str(path)


def _record(monkeypatch, module, name):
    seen: dict = {}

    def record(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise _Reached

    monkeypatch.setattr(module, name, record)
    return seen


HINTS = ["--num-partitions", "2", "--max-partitions", "3", "--tiers", "0,cloud", "--placement",
         "0,2", "--cut-points", "3,5-6", "--exits", "8", "--thresholds", "0.3,0.5"]  # fmt: skip
HINT_VALUES = {"num_partitions": 2, "max_partitions": 3, "tiers": [0, "cloud"], "placement": [0, 2],
               "cut_points": [3, 5, 6], "exits": [8], "thresholds": [0.3, 0.5]}  # fmt: skip


def test_every_plan_flag_reaches_plan(monkeypatch, prof_path):
    seen = _record(monkeypatch, api, "plan")
    argv = ["plan", "--profile", prof_path, "--topology", "portend-aws", "--estimator", "exact",
            "--max-latency", "0.5", "--arrival-rate", "30", "--max-loss", "0.2",
            "--queue-capacity", "7", "--queue-model", "exact", "--device", "edge=m4.large",
            "--set", "links[0].bandwidth_mbps=5", *HINTS]  # fmt: skip
    with pytest.raises(_Reached):
        main(argv)
    prof, topo = seen["args"]
    assert prof.num_blocks == 8
    assert topo.tiers[0].device == "m4.large" and topo.links[0].bandwidth_mbps == 5
    assert seen["kwargs"] == {
        "min_accuracy": None, "max_latency": 0.5, "estimator": "exact", "arrival_rate": 30.0,
        "queue_capacity": 7, "max_loss": 0.2, "queue_model": "exact", **HINT_VALUES,
    }  # fmt: skip


def test_plan_defaults_are_plans(monkeypatch, prof_path):
    real = inspect.signature(api.plan).parameters
    seen = _record(monkeypatch, api, "plan")
    with pytest.raises(_Reached):
        main(["plan", "--profile", prof_path, "--topology", "mobile"])
    assert seen["kwargs"] == {k: v.default for k, v in real.items() if k in seen["kwargs"]}
    assert set(seen["kwargs"]) == set(real) - {"profile", "topology", "hints"}


@pytest.mark.parametrize("command", ["pareto", "whatif"])
def test_every_pareto_and_whatif_flag_reaches_its_function(monkeypatch, prof_path, command):
    whatif_mod = importlib.import_module("earlyexit.planner.whatif")  # the package shadows the name
    module, name = (api, "pareto") if command == "pareto" else (whatif_mod, "whatif")
    seen = _record(monkeypatch, module, name)
    argv = [command, "--profile", prof_path, "--topology", "portend-aws", "--estimator", "exact",
            *HINTS]  # fmt: skip
    if command == "whatif":
        argv += ["--vary", "links[0].bandwidth_mbps=1,5", "--min-accuracy", "0.6"]
    with pytest.raises(_Reached):
        main(argv)
    kw = seen["kwargs"]
    assert kw["estimator"] == "exact" and {k: kw[k] for k in HINT_VALUES} == HINT_VALUES
    if command == "whatif":
        assert seen["args"][2:] == ("links[0].bandwidth_mbps", [1.0, 5.0])
        assert (kw["min_accuracy"], kw["max_latency"]) == (0.6, None)


def test_every_capacity_flag_reaches_plan_capacity(monkeypatch, prof_path, tmp_path):
    real = inspect.signature(api.plan_capacity).parameters
    seen = _record(monkeypatch, api, "plan_capacity")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text("{}")
    base = ["capacity", "--plan", str(plan_file), "--profile", prof_path, "--topology", "iot"]
    with pytest.raises(_Reached):
        main(base)
    assert seen["args"][0] == str(plan_file)
    keys = ("max_loss", "queue_capacity", "queue_model")
    assert seen["kwargs"] == {k: real[k].default for k in keys}
    with pytest.raises(_Reached):
        main([*base, "--max-loss", "0.2", "--queue-capacity", "3", "--queue-model", "exact"])
    assert seen["kwargs"] == {"max_loss": 0.2, "queue_capacity": 3, "queue_model": "exact"}


def _sub(command: str) -> argparse.ArgumentParser:
    parser = build_parser([command])
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        command
    ]


# options whose command-line default differs from the function's on purpose (the help says it)
_CLI_DEFAULTS: dict[str, set[str]] = {"validate": {"out_dir"}}
# command -> (module, function) whose parameters its flags are
DECLARED = [
    ("plan", "earlyexit.planner.api", "plan"),
    ("plan", "earlyexit.planner.space", "make_space"),
    ("pareto", "earlyexit.planner.space", "make_space"),
    ("whatif", "earlyexit.planner.api", "plan"),
    ("capacity", "earlyexit.planner.api", "plan_capacity"),
    ("profile", "earlyexit.profiling.api", "profile"),
    ("validate", "earlyexit.validation", "validate"),
]


@pytest.mark.parametrize(("command", "module", "name"), DECLARED)
def test_help_and_defaults_are_the_functions(command, module, name):
    """Every option named after a parameter shows that parameter's Args: line and default."""
    func = inspect.unwrap(getattr(importlib.import_module(module), name))
    real = inspect.signature(func).parameters
    docs = docstring_args(inspect.getdoc(func))
    checked = 0
    for action in _sub(command)._actions:
        if action.dest not in real or action.dest in ("profile", "topology", "plan"):
            continue  # files the command loads itself, declared there
        first = " ".join(docs[action.dest].split()).split("``")[0][:30]
        assert first in " ".join(action.help.split()), (action.dest, action.help)
        default = real[action.dest].default
        if default is not inspect.Parameter.empty and action.dest not in _CLI_DEFAULTS.get(
            command, ()
        ):
            assert action.default == default, action.dest
        checked += 1
    assert checked >= 3


def test_every_profile_flag_reaches_profile(monkeypatch, tmp_path):
    papi = importlib.import_module("earlyexit.profiling.api")
    real = inspect.signature(papi.profile).parameters
    seen = _record(monkeypatch, papi, "profile")
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"")
    base = ["profile", "--checkpoint", str(ckpt), "-o", str(tmp_path / "p.json")]
    with pytest.raises(_Reached):
        main(base)
    kw = seen["kwargs"]
    assert (kw["model"], kw["data"], kw["device_name"]) == (
        str(ckpt), real["data"].default, real["device_name"].default)  # fmt: skip
    keys = ("threads", "batch_size", "thresholds", "calibrate", "reps", "percentile",
            "granularity", "engine", "gap_s", "measure_hops", "cpu_latency_us",
            "worker_idle_curve", "link_idle_curve", "idle_slowdown", "cpu_affinity")  # fmt: skip
    assert {k: seen["kwargs"][k] for k in keys} == {k: real[k].default for k in keys}
    assert seen["kwargs"]["progress"] is True
    argv = [*base, "--data", "mnist", "--device-name", "pi", "--threads", "2", "--batch-size", "4",
            "--thresholds", "0,0.5 1", "--calibrate", "--engine", "onnx", "--gap-ms", "20",
            "--measure-hops", "--worker-idle-curve", "--link-idle-curve", "--reps", "3", "--percentile", "90", "--compare-granularity",
            "--cpu-latency-us", "0", "--idle-slowdown", "10", "--cpu-affinity", "spread",
            "--json"]  # fmt: skip
    with pytest.raises(_Reached):
        main(argv)
    kw = seen["kwargs"]
    assert (kw["model"], kw["data"], kw["device_name"]) == (str(ckpt), "mnist", "pi")
    assert {k: seen["kwargs"][k] for k in (*keys, "progress")} == {
        "threads": 2, "batch_size": 4, "thresholds": [0.0, 0.5, 1.0], "calibrate": True,
        "reps": 3, "percentile": 90.0, "granularity": True, "engine": "onnx",
        "gap_s": pytest.approx(0.02), "measure_hops": True, "progress": False,
        "cpu_latency_us": 0, "worker_idle_curve": True, "link_idle_curve": True, "idle_slowdown": 10.0,
        "cpu_affinity": "spread",
    }  # fmt: skip


def test_merge_profiles_takes_the_paths(monkeypatch, tmp_path):
    papi = importlib.import_module("earlyexit.profiling.api")
    seen = _record(monkeypatch, papi, "merge_profiles")
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    for f in files:
        f.write_text("{}")
    with pytest.raises(_Reached):
        main(["profile", "merge", *map(str, files), "-o", str(tmp_path / "m.json")])
    assert seen["args"] == ([str(f) for f in files],)
