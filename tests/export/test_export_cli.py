"""``earlyexit export`` on the command line: every flag reaches export_bundle; bad input is one line."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from earlyexit.cli import main
from earlyexit.export.constants import FORMATS, FP32_ATOL, FP32_RTOL, ONNX_EXPORTERS, TARGETS
from earlyexit.formats import Manifest

pytestmark = pytest.mark.onnx


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, model, plan):
    """A checkpoint, its plan and a few bad files, outside the folder the tests write in."""
    from earlyexit.checkpoint import save

    d = tmp_path_factory.mktemp("inputs")
    save(model, d / "model.pt")
    plan.save(d / "plan.json")
    dataclasses.replace(plan, extra={**plan.extra, "num_blocks": 20}).save(d / "plan20.json")
    beyond = dataclasses.replace(
        plan,
        partitions=(plan.partitions[0], dataclasses.replace(plan.partitions[1], last_block=12)),
    )
    beyond.save(d / "plan12.json")
    (d / "garbage.json").write_text("{not json")
    (d / "profile.json").write_text(json.dumps({"schema": "earlyexit.profile/1"}))
    (d / "garbage.pt").write_bytes(os.urandom(256))

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch evil_ran",))

    (d / "evil.pt").write_bytes(pickle.dumps(Evil()))
    return d


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_choices_come_from_the_constants():
    """The CLI's choices and defaults are the API's (declared once, in export.constants)."""
    import inspect

    from earlyexit.cli import build_parser
    from earlyexit.export import export_bundle

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["export"]
    acts = {a.dest: a for a in sub._actions}
    assert tuple(acts["target"].choices) == TARGETS
    assert tuple(acts["exporter"].choices) == ONNX_EXPORTERS
    assert tuple(acts["formats"].default) == FORMATS
    sig = inspect.signature(export_bundle).parameters
    assert acts["tolerance"].default == sig["tolerance"].default == FP32_ATOL
    assert acts["rtol"].default == sig["rtol"].default == FP32_RTOL
    assert acts["calibration_samples"].default == sig["calibration_samples"].default
    assert acts["verify_samples"].default == sig["verify_samples"].default
    assert sig["formats"].default == FORMATS


def test_every_flag_reaches_export_bundle(tmp_path, inputs, capsys, monkeypatch):
    """Non-default values of every flag, read back from the manifest the command wrote."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(inputs / "model.pt"), "--plan", str(inputs / "plan20.json"),
            "--format", "onnx", "--target", "arm", "--opset", "17", "--data", "fashion-mnist",
            "--calibration-samples", "7", "--exporter", "torchscript", "--tolerance", "0.25",
            "--rtol", "0.003", "--verify-samples", "48", "--force", "-o", str(out)]  # fmt: skip
    code, text, err = _run(argv, capsys)
    assert code == 0, err
    assert "plan: it was made for a model of 20 blocks" in err and "warning" in err  # --force
    m = Manifest.load(out)
    ver, exp = m.extra["verification"], m.extra["export"]
    assert ver["tolerance_fp32"] == {"atol": 0.25, "rtol": 0.003}  # --tolerance, --rtol
    assert ver["data"] == "fashion-mnist test split"  # --data
    assert ver["samples"] == ver["chained"]["onnx"]["samples"] == 48  # --verify-samples
    assert m.extra["quantization"]["int8"]["calibration"]["samples"] == 7  # --calibration-samples
    assert m.extra["target"] == "arm" and "onnx_int8" in m.partitions[0].files  # --target
    assert exp["opset"] == 17 and exp["onnx_exporter"] == "torchscript"  # --opset, --exporter
    assert sorted(m.partitions[0].files) == ["onnx", "onnx_int8"]  # --format
    assert m.plan.extra["num_blocks"] == 20  # --plan
    # --overwrite replaces the bundle; the defaults reach the manifest too
    argv = ["export", "--checkpoint", str(inputs / "model.pt"), "--plan", str(inputs / "plan.json"),
            "--format", "pt2", "--verify-samples", "32", "--overwrite", "-o", str(out)]  # fmt: skip
    code, text, err = _run(argv, capsys)
    assert code == 0, err
    m = Manifest.load(out)
    assert m.extra["verification"]["tolerance_fp32"] == {"atol": FP32_ATOL, "rtol": FP32_RTOL}
    assert sorted(m.partitions[0].files) == ["pt2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


# (flags, words the one-line error must contain); {d} is the inputs folder
BAD = [
    (["--format", "tflite"], ["--format", "onnx, torchscript, pt2"]),
    (["--format", ","], ["--format", "choose from"]),
    (["--target", "tpu"], ["--target", "cpu", "arm", "gpu"]),
    (["--opset", "3"], ["--opset", "[7, "]),
    (["--opset", "abc"], ["--opset", "[7, "]),
    (["--opset", "999"], ["--opset", "[7, "]),
    (["--tolerance", "0"], ["--tolerance", "> 0"]),
    (["--tolerance", "-1"], ["--tolerance", "> 0"]),
    (["--tolerance", "nan"], ["--tolerance", "> 0"]),
    (["--tolerance", "1e-12x"], ["--tolerance", "> 0"]),
    (["--rtol", "1"], ["--rtol", "[0, 1)"]),
    (["--rtol", "-0.1"], ["--rtol", "[0, 1)"]),
    (["--calibration-samples", "0"], ["--calibration-samples", ">= 1"]),
    (["--verify-samples", "-3"], ["--verify-samples", ">= 1"]),
    (["--exporter", "tf"], ["--exporter", "dynamo", "torchscript"]),
    (["--checkpoint", "{d}/missing.pt"], ["--checkpoint", "does not exist"]),
    (["--checkpoint", "{d}"], ["--checkpoint", "is a directory"]),
    (["--checkpoint", "{d}/garbage.pt"], ["--checkpoint"]),
    (["--checkpoint", "{d}/evil.pt"], ["--checkpoint"]),
    (["--plan", "{d}/missing.json"], ["--plan", "does not exist"]),
    (["--plan", "{d}/garbage.json"], ["--plan", "JSON"]),
    (["--plan", "{d}/profile.json"], ["--plan", "schema"]),
    (["--plan", "{d}/plan20.json"], ["--plan", "20 blocks", "--force"]),
    (["--plan", "{d}/plan12.json"], ["--plan", "block 12", "10 blocks"]),
    (["--data", "no-such-dataset"], ["--data", "no-such-dataset", "valid kinds"]),
    (["--target", "arm", "--format", "pt2"], ["--target", "'onnx'"]),
    (["-o", "{d}/model.pt"], ["--output", "not a directory"]),
    (["-o", "{d}/model.pt/sub"], ["--output", "not a directory"]),
    (["-o", "{d}"], ["--output", "not empty", "overwrite"]),
    (["-o", "{d}", "--overwrite"], ["--output", "not a bundle", "nothing was deleted"]),
    (["-o", ""], ["--output", "empty"]),
]


@pytest.mark.parametrize("flags,words", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_input_is_one_line_and_leaves_nothing(
    flags, words, tmp_path, inputs, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = {"--checkpoint": str(inputs / "model.pt"), "--plan": str(inputs / "plan.json"),
            "-o": "new/deeper/bundle", "--format": "onnx", "--exporter": "torchscript"}  # fmt: skip
    extra = []
    flags = [f.replace("{d}", str(inputs)) for f in flags]
    i = 0
    while i < len(flags):
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            args[flags[i]] = flags[i + 1]
            i += 2
        else:
            extra.append(flags[i])
            i += 1
    before = sorted(p.name for p in inputs.iterdir())
    argv = ["export", *[x for kv in args.items() for x in kv], *extra]
    code, out, err = _run(argv, capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("earlyexit export: error: ")
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert list(tmp_path.iterdir()) == []  # no bundle, no parent folders, nothing ran
    assert sorted(p.name for p in inputs.iterdir()) == before


def test_missing_required_argument_is_one_line(capsys):
    code, _, err = _run(["export", "-o", "b"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "required: --checkpoint, --plan" in err


@pytest.mark.slow
def test_bad_input_in_a_real_process(tmp_path, inputs):
    """As a user sees it: a fresh interpreter, exit code 2, one line, no traceback, no files."""
    for argv in (["--tolerance", "-1"], ["--plan", str(inputs / "plan20.json")]):
        full = ["export", "--checkpoint", str(inputs / "model.pt"), "--plan",
                str(inputs / "plan.json"), "-o", "b", *argv]  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "earlyexit.cli", *full], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert list(Path(tmp_path).iterdir()) == []
