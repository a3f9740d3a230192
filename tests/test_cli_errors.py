"""Every subcommand (export has its own tests) given bad values, as a careless or hostile user would.

Each case runs ``earlyexit`` in a fresh working directory and must end with exit
code 2, exactly one line on stderr that names the argument, no traceback and no
file left behind. The cases fail while parsing or in the first checks, so the
table is fast; the few that need files share one session-scoped set (a small
random checkpoint, a profile of another model, a hand-made bundle, hostile files).
Serve's port-in-use and SHA-256 checks, and the deployment's temporary folder,
have tests of their own below.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from earlyexit.cli import main
from earlyexit.planner.synthetic import synthetic_profile

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this would run code (it must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _manifest(files: dict[int, dict[str, bytes]]) -> dict:
    """A two-partition bundle manifest (ResNet-20 on 1x28x28, cut after block 3) for ``files``."""
    plan = {
        "schema": "earlyexit.plan/1",
        "threshold": 0.5,
        "partitions": [
            {"first_block": 1, "last_block": 3, "tier": 0, "tier_name": "edge"},
            {"first_block": 4, "last_block": 10, "tier": 1, "tier_name": "cloud"},
        ],
        "estimate": {
            "latency_s": 0.0,
            "accuracy": 0.0,
            "exit_fractions": [0.5, 0.5],
            "breakdown_s": dict.fromkeys(("compute", "serialize", "transmit", "propagate"), 0.0),
        },
    }
    shapes = {1: [None, 1, 28, 28], 2: [None, 16, 28, 28]}
    outputs = {1: ["logits", "entropy", "features"], 2: ["logits", "entropy"]}
    parts = []
    for k in (1, 2):
        names = {fmt: f"partition_{k}.{'onnx' if fmt == 'onnx' else 'pt'}" for fmt in files[k]}
        parts.append(
            {
                "index": k,
                "files": names,
                "input_name": "input",
                "output_names": outputs[k],
                "input_shape": shapes[k],
                "output_shapes": {},
                "bytes": {fmt: len(data) for fmt, data in files[k].items()},
                "sha256": {fmt: hashlib.sha256(data).hexdigest() for fmt, data in files[k].items()},
            }
        )
    return {
        "schema": "earlyexit.bundle/1",
        "plan": plan,
        "class_names": [str(i) for i in range(10)],
        "input_shape": [1, 28, 28],
        "input_dtype": "float32",
        "normalization": {},
        "partitions": parts,
        "threshold": 0.5,
    }


def write_bundle(path: Path, files: dict[int, dict[str, bytes]]) -> Path:
    """A bundle directory holding ``files`` and a manifest whose sizes and hashes match them."""
    path.mkdir(parents=True)
    for k, by_fmt in files.items():
        for fmt, data in by_fmt.items():
            (path / f"partition_{k}.{'onnx' if fmt == 'onnx' else 'pt'}").write_bytes(data)
    (path / "manifest.json").write_text(json.dumps(_manifest(files)))
    return path


@pytest.fixture(scope="session")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files the cases point at, all outside the cases' working directories."""
    torch = pytest.importorskip("torch")
    from earlyexit import MultiExitModel, backbones, decompose
    from earlyexit.checkpoint import CHECKPOINT_FORMAT, save

    d = tmp_path_factory.mktemp("fx")
    torch.manual_seed(0)
    model = MultiExitModel(
        decompose(backbones.create("resnet20", num_classes=10, in_chans=1), input_shape=(1, 28, 28))
    ).eval()
    save(model, d / "model.pt", {"dataset": "fashion-mnist", "input_shape": [1, 28, 28]})
    other = synthetic_profile(10, num_samples=50)  # the right shape, another model's weights
    other.extra["model_digest"] = "0" * 64
    other.save(d / "other_profile.json")
    (d / "broken.json").write_text('{"schema": "earlyexit.profile/1", "num_blocks": "ten"')
    marker = d / "PAYLOAD_RAN"
    torch.save({"format": CHECKPOINT_FORMAT, "config": _Payload(marker)}, d / "evil.pt")
    (d / "a_file.txt").write_text("not a directory")
    (d / "a_dir").mkdir()
    junk = {1: {"onnx": b"\x08junk one"}, 2: {"onnx": b"\x08junk two"}}
    write_bundle(d / "bundle", junk)
    return {
        "ckpt": str(d / "model.pt"),
        "other": str(d / "other_profile.json"),
        "broken": str(d / "broken.json"),
        "evil": str(d / "evil.pt"),
        "marker": str(marker),
        "file": str(d / "a_file.txt"),
        "dir": str(d / "a_dir"),
        "bundle": str(d / "bundle"),
    }


S = ["--results", "tcp://127.0.0.1:9"]  # serve's required route
P = ["--profile", "{other}", "--topology", "portend-aws"]  # a profile the planner reads

# (case id, argv, a string the one error line must contain)
CASES: list[tuple[str, list[str], str]] = [
    ("unknown-command", ["bogus"], "invalid choice"),
    # --- backbones / blocks / evaluate
    ("backbones-no-match", ["backbones", "resnt*"], "resnt*"),
    ("blocks-classes-1", ["blocks", "resnet20", "--num-classes", "1"], "--num-classes"),
    ("blocks-in-chans-0", ["blocks", "resnet20", "--in-chans", "0"], "--in-chans"),
    ("evaluate-missing", ["evaluate", "--checkpoint", "nope.pt"], "--checkpoint"),
    ("evaluate-evil", ["evaluate", "--checkpoint", "{evil}"], "refused"),
    ("evaluate-batch-0", ["evaluate", "--checkpoint", "{ckpt}", "--batch-size", "0"], "--batch-size"),
    ("evaluate-threshold", ["evaluate", "--checkpoint", "{ckpt}", "--threshold", "1.5"], "--threshold"),
    ("evaluate-limit-0", ["evaluate", "--checkpoint", "{ckpt}", "--limit", "0"], "--limit"),
    # --- profile
    ("profile-reps-0", ["profile", "--checkpoint", "{ckpt}", "--reps", "0"], "--reps"),
    ("profile-batch-0", ["profile", "--checkpoint", "{ckpt}", "--batch-size", "0"], "--batch-size"),
    ("profile-threads-0", ["profile", "--checkpoint", "{ckpt}", "--threads", "0"], "--threads"),
    ("profile-percentile", ["profile", "--checkpoint", "{ckpt}", "--percentile", "101"], "--percentile"),
    ("profile-gap-nan", ["profile", "--checkpoint", "{ckpt}", "--gap-ms", "nan"], "--gap-ms"),
    ("profile-o-dir", ["profile", "--checkpoint", "{ckpt}", "-o", "{dir}"], "-o/--output"),
    ("profile-o-missing-dir", ["profile", "--checkpoint", "{ckpt}", "-o", "no/p.json"], "-o/--output"),
    ("profile-plot-nonexistent",
     ["profile", "--checkpoint", "{ckpt}", "-o", "out.json", "--plot", "/nonexistent/p.png"], "--plot"),
    ("profile-plot-not-image", ["profile", "--checkpoint", "{ckpt}", "--plot", "p.txt"], "--plot"),
    ("profile-plot-is-output",
     ["profile", "--checkpoint", "{ckpt}", "-o", "same.png", "--plot", "same.png"], "same file"),
    ("profile-o-unwritable", ["profile", "--checkpoint", "{ckpt}", "-o", "/proc/p.json"], "-o/--output"),
    ("profile-evil", ["profile", "--checkpoint", "{evil}"], "refused"),
    ("profile-thresholds", ["profile", "--checkpoint", "{ckpt}", "--thresholds", "a,b"], "--thresholds"),
    ("merge-missing", ["profile", "merge", "nope.json", "-o", "m.json"], "profiles"),
    ("merge-o-dir", ["profile", "merge", "{other}", "-o", "{dir}"], "-o/--output"),
    # --- plan / pareto / whatif
    ("plan-o-dir", ["plan", *P, "-o", "{dir}"], "-o/--output"),
    ("plan-min-accuracy", ["plan", *P, "--min-accuracy", "2"], "--min-accuracy"),
    ("plan-max-latency-0", ["plan", *P, "--max-latency", "0"], "--max-latency"),
    ("plan-num-partitions-0", ["plan", *P, "--num-partitions", "0"], "--num-partitions"),
    ("plan-cut-points-huge", ["plan", *P, "--cut-points", "1-100000000"], "--cut-points"),
    ("plan-cut-points-0", ["plan", *P, "--cut-points", "0,3"], "--cut-points"),
    ("plan-thresholds", ["plan", *P, "--thresholds", "0.5,2"], "--thresholds"),
    ("plan-set-nan", ["plan", *P, "--set", "links[0].bandwidth_mbps=nan"], "--set"),
    ("plan-profile-missing", ["plan", "--profile", "nope.json", "--topology", "portend-aws"], "nope.json"),
    ("plan-profile-broken", ["plan", "--profile", "{broken}", "--topology", "portend-aws"], "broken.json"),
    ("plan-device", ["plan", *P, "--device", "garbage"], "--device"),
    ("plan-placement", ["plan", *P, "--placement", "0,0"], "placement"),
    ("plan-tiers", ["plan", *P, "--tiers", "9"], "tier 9"),
    ("plan-topology-garbage", ["plan", "--profile", "{other}", "--topology", "garbage"], "garbage"),
    ("plan-arrival-rate-0", ["plan", *P, "--arrival-rate", "0"], "--arrival-rate"),
    ("plan-max-loss-alone", ["plan", *P, "--max-loss", "0.1"], "--arrival-rate"),
    ("capacity-max-loss-1", ["capacity", "--plan", "{other}", *P, "--max-loss", "1"], "--max-loss"),
    ("pareto-plot-not-image", ["pareto", *P, "--plot", "x.txt"], "--plot"),
    ("pareto-plot-nonexistent", ["pareto", *P, "--plot", "/nonexistent/x.png"], "--plot"),
    ("whatif-unbounded", ["whatif", *P, "--vary", "links[0].bandwidth_mbps=1:100:100000000"],
     "at most 1000"),
    ("whatif-long-list", ["whatif", *P, "--vary", "links[0].bandwidth_mbps=" + ",".join(["1"] * 1001)],
     "at most 1000"),
    ("whatif-slowdown", ["whatif", *P, "--vary", "tiers[0].slowdown=-1,0"], "slowdown"),
    ("whatif-nan", ["whatif", *P, "--vary", "links[0].bandwidth_mbps=1:nan:3"], "values"),
    ("whatif-parameter", ["whatif", *P, "--vary", "links[9].bandwidth_mbps=1,2"], "links index"),
    ("whatif-plot-dir", ["whatif", *P, "--vary", "links[0].bandwidth_mbps=1,2", "--plot", "{dir}"],
     "--plot"),
    # --- serve (every one refused before READY)
    ("serve-bind-garbage", ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--bind", "garbage"],
     "--bind"),
    ("serve-control-bind", ["serve", "--bundle", "{bundle}", "--partition", "1", *S,
                            "--control-bind", "tcp://127.0.0.1:70000"], "--control-bind"),
    ("serve-hwm", ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--hwm", "-1"], "--hwm"),
    # --- adapt
    ("adapt-time-scale", ["adapt", *P, "--bundle", "{bundle}", "--data", "{file}", "--trace",
                          "step-50-2-50", "--time-scale", "0"], "--time-scale"),
    ("adapt-data", ["adapt", *P, "--bundle", "{bundle}", "--data", "{file}", "--trace",
                    "step-50-2-50"], "--data"),
    ("serve-max-message-0",
     ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--max-message-bytes", "0"],
     "--max-message-bytes"),
    ("serve-max-message-small",
     ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--max-message-bytes", "2000"],
     "--max-message-bytes"),
    ("serve-results-garbage", ["serve", "--bundle", "{bundle}", "--partition", "1", "--results", "garbage"],
     "--results"),
    ("serve-next-garbage",
     ["serve", "--bundle", "{bundle}", "--partition", "0", *S, "--next", "tcp://*:5"], "--next"),
    ("serve-no-next", ["serve", "--bundle", "{bundle}", "--partition", "0", *S], "--next"),
    ("serve-threshold", ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--threshold", "2"],
     "--threshold"),
    ("serve-partition", ["serve", "--bundle", "{bundle}", "--partition", "5", *S], "--partition"),
    ("serve-tier", ["serve", "--bundle", "{bundle}", "--tier", "7", *S], "tier 7"),
    ("serve-threads", ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--threads", "-1"],
     "--threads"),
    ("serve-dead-after", ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--dead-after", "0"],
     "--dead-after"),
    ("serve-slowdown-inf", ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--slowdown", "inf"],
     "--slowdown"),
    ("serve-max-batch", ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--max-batch", "0"],
     "--max-batch"),
    ("serve-precision", ["serve", "--bundle", "{bundle}", "--partition", "1", *S, "--precision", "int8"],
     "int8"),
    ("serve-ipc-bind", ["serve", "--bundle", "{bundle}", "--partition", "1", *S,
                        "--bind", "ipc:///nonexistent/dir/sock"], "--bind"),
    ("serve-bundle-missing", ["serve", "--bundle", "nope", "--partition", "1", *S], "--bundle"),
    ("serve-bundle-file", ["serve", "--bundle", "{file}", "--partition", "1", *S], "--bundle"),
    ("serve-bundle-no-manifest", ["serve", "--bundle", "{dir}", "--partition", "1", *S], "manifest"),
    # --- load (refused before any process starts)
    ("load-rate-0", ["load", "--synthetic", "{{}}", "--rate", "0", "--duration", "1"], "--rate"),
    ("load-duration-huge", ["load", "--synthetic", "{{}}", "--rate", "5", "--duration", "1e9"],
     "--duration"),
    ("load-queue-capacity-0",
     ["load", "--synthetic", "{{}}", "--rate", "5", "--duration", "1", "--queue-capacity", "0"],
     "--queue-capacity"),
    ("load-no-deployment", ["load", "--rate", "5", "--duration", "1"], "--bundle"),
    ("load-connect-remote", ["load", "--connect", "tcp://10.1.2.3:5555", "--rate", "5",
                             "--duration", "1"], "not on this host"),
    ("load-connect-no-data", ["load", "--connect", "tcp://127.0.0.1:9", "--rate", "5",
                              "--duration", "1"], "--data"),
    # --- deploy k8s | compose | netns (typed with a space; more in tests/deploy/test_cli.py)
    ("deploy-k8s-files", ["deploy-k8s", "--bundle", "{bundle}", "--files", "zip", "-o", "m"], "--files"),
    ("deploy-compose-publish", ["deploy-compose", "--bundle", "{bundle}", "--publish", "0", "-o", "c"],
     "--publish"),
    ("deploy-netns-samples", ["deploy-netns", "--bundle", "{bundle}", "--samples", "0"], "--samples"),
    # --- validate
    ("validate-accuracy-samples-0",
     ["validate", "--checkpoint", "{ckpt}", *P, "--accuracy-samples", "0"], "--accuracy-samples"),
    ("validate-accuracy-below-samples",
     ["validate", "--checkpoint", "{ckpt}", *P, "--samples", "200", "--accuracy-samples", "100"],
     "--accuracy-samples"),
    ("validate-samples-0", ["validate", "--checkpoint", "{ckpt}", *P, "--samples", "0"], "--samples"),
    ("validate-samples-huge", ["validate", "--checkpoint", "{ckpt}", *P, "--samples", "10000000"],
     "--samples"),
    ("validate-configs-0", ["validate", "--checkpoint", "{ckpt}", *P, "--configs", "0"], "--configs"),
    ("validate-nice", ["validate", "--checkpoint", "{ckpt}", *P, "--nice", "50"], "--nice"),
    ("validate-out-file", ["validate", "--checkpoint", "{ckpt}", *P, "--out", "{file}"], "--out"),
    ("validate-device", ["validate", "--checkpoint", "{ckpt}", *P, "--device", "edge"], "--device"),
    ("validate-other-model", ["validate", "--checkpoint", "{ckpt}", *P], "model_digest"),
    ("validate-evil", ["validate", "--checkpoint", "{evil}", *P], "refused"),
    ("validate-forced-bad-data",  # past the digest check: its warning stays off stderr
     ["validate", "--checkpoint", "{ckpt}", *P, "--force", "--data", "garbage"], "garbage"),
    ("validate-profile-dir", ["validate", "--checkpoint", "{ckpt}", "--profile", "{dir}",
                              "--topology", "portend-aws"], "--profile"),
    # --- demo
    ("demo-samples-0", ["demo", "--samples", "0"], "--samples"),
    ("demo-samples-negative", ["demo", "--samples", "-5"], "--samples"),
    ("demo-samples-huge", ["demo", "--samples", "5000"], "--samples"),
    ("demo-out-file", ["demo", "--out", "{file}"], "--out"),
    ("demo-epochs-negative", ["demo", "--train", "--epochs", "-1"], "--epochs"),
    ("demo-train-and-checkpoint", ["demo", "--train", "--checkpoint", "{ckpt}"], "--checkpoint"),
    ("demo-out-unwritable", ["demo", "--out", "/proc/demo"], "--out"),
    ("demo-checkpoint-missing", ["demo", "--checkpoint", "nope.pt"], "--checkpoint"),
    ("demo-checkpoint-evil", ["demo", "--checkpoint", "{evil}", "--out", "d"], "refused"),
    # --- train (a LightningCLI)
    ("train-max-epochs", ["train", "--trainer.max_epochs=-5"], "max_epochs"),
    ("train-init-from-evil", ["train", "--model.init_from", "{evil}"], "refused"),
    ("train-unknown-flag", ["train", "--trainer.max_epochz=1"], "max_epochz"),
    ("train-batch-0", ["train", "--data.batch_size=0"], "batch_size"),
    ("train-backbone", ["train", "--model.backbone", "nope"], "unknown backbone"),
    ("train-output-dir", ["train", "--output", "{dir}"], "--output"),
]  # fmt: skip


def _run(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses while parsing
        code = exc.code
    return int(code or 0), capfd.readouterr().err


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_value_is_one_line_and_leaves_nothing(
    argv: list[str],
    needle: str,
    fx: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # this case's temporary files
    code, err = _run([a.format(**fx) for a in argv], capfd)
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line
    assert err.startswith("earlyexit") and "Traceback" not in err
    assert needle in err, err
    assert sorted(os.listdir(cwd)) == []  # no partial output in the working directory
    assert sorted(os.listdir(tmp)) == []  # nor in the temporary directory
    assert not Path(fx["marker"]).exists()  # no pickled payload ever ran


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from earlyexit.cli import _COMMANDS

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for command in ["train", *_COMMANDS]:
        assert f"    {command} " in text or f"    {command}\n" in text, command


def test_table_covers_every_subcommand() -> None:
    from earlyexit.cli import _COMMANDS

    covered = {"profile-merge" if c[1][:2] == ["profile", "merge"] else c[1][0] for c in CASES}
    assert set(_COMMANDS) - {"export"} <= covered  # export: tests/export


# ----------------------------------------------------------------- serve, as a process


def _serve(argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "earlyexit.cli", "serve", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "READY" not in proc.stdout
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_serve_refuses_a_port_in_use_before_ready(fx: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _one_line_error(
            _serve(
                [
                    "--bundle",
                    fx["bundle"],
                    "--partition",
                    "1",
                    *S,
                    "--bind",
                    f"tcp://127.0.0.1:{port}",
                ]
            )  # fmt: skip
        )
    assert "--bind" in err and "in use" in err


def test_serve_checks_sha256_before_loading(fx: dict[str, str], tmp_path: Path) -> None:
    files = {1: {"onnx": b"\x08partition one"}, 2: {"onnx": b"\x08partition two"}}
    bundle = write_bundle(tmp_path / "b", files)
    data = bytearray((bundle / "partition_2.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (bundle / "partition_2.onnx").write_bytes(bytes(data))
    err = _one_line_error(_serve(["--bundle", str(bundle), "--partition", "1", *S]))
    assert "SHA-256" in err and "partition_2.onnx" in err


def test_serve_refuses_a_corrupt_onnx_that_matches_its_manifest(tmp_path: Path) -> None:
    files = {1: {"onnx": b"\x08one"}, 2: {"onnx": b"\x08not a model at all"}}
    bundle = write_bundle(tmp_path / "b", files)  # an attacker rewrote the manifest too
    err = _one_line_error(_serve(["--bundle", str(bundle), "--partition", "1", *S]))
    assert "ONNX Runtime cannot load" in err


def test_serve_torchscript_refuses_a_pickle(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    marker = tmp_path / "PAYLOAD_RAN"
    evil = pickle.dumps(_Payload(marker))
    files = {1: {"torchscript": b"one"}, 2: {"torchscript": evil}}
    bundle = write_bundle(tmp_path / "b", files)
    err = _one_line_error(
        _serve(["--bundle", str(bundle), "--partition", "1", *S, "--engine", "torchscript"])
    )
    assert "TorchScript cannot load" in err and not marker.exists()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of this test's own (others' deployments share the system one)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_deployment_removes_its_temporary_folder(private_tmp: Path) -> None:
    import numpy as np

    from earlyexit.runtime.deployment import deploy

    with deploy(synthetic={"num_partitions": 2}, threshold=0.5) as d:
        folder = d.log_dir
        assert folder.name.startswith("earlyexit-deploy-") and folder.is_dir()
        d.run(np.zeros((2, 32), np.float32), timeout_s=30)
    assert not folder.exists() and os.listdir(private_tmp) == []
    assert "worker[1]" in d.log()  # the logs outlive the folder

    with deploy(synthetic={"num_partitions": 2}, threshold=0.5, keep_logs=True) as d:
        kept = d.log_dir
    assert kept.is_dir() and any(kept.glob("worker*.log"))


def test_deployment_start_failure_leaves_no_folder(private_tmp: Path) -> None:
    from earlyexit.runtime.deployment import deploy

    with pytest.raises(RuntimeError, match="worker1 exited"):
        deploy(synthetic={"num_partitions": 2, "in_dim": -1}, threshold=0.5, start_timeout_s=30)
    assert os.listdir(private_tmp) == []


# ----------------------------------------------------------------- the shared helpers


def test_removed_on_failure_removes_a_new_folder(tmp_path: Path) -> None:
    from earlyexit._checks import removed_on_failure

    out = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError), removed_on_failure(out) as d:
        (d / "partial.json").write_text("{}")
        raise RuntimeError("half-way")
    assert os.listdir(tmp_path) == []  # the parents it created went too
    with removed_on_failure(out) as d:
        (d / "done.json").write_text("{}")
    assert (out / "done.json").is_file()  # success keeps everything


def test_removed_on_failure_keeps_what_was_there(tmp_path: Path) -> None:
    from earlyexit._checks import removed_on_failure

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError), removed_on_failure(tmp_path) as d:
        (d / "bundle").mkdir()
        (d / "bundle" / "partition_1.onnx").write_bytes(b"x")
        (d / "report.md").write_text("partial")
        raise ValueError("bad input found late")
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_output_honours_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    from earlyexit._checks import atomic_output

    old = os.umask(umask)
    try:
        with atomic_output(tmp_path / "plot.png") as tmp:
            tmp.write_bytes(b"png")
    finally:
        os.umask(old)
    assert (tmp_path / "plot.png").stat().st_mode & 0o777 == mode
    assert os.listdir(tmp_path) == ["plot.png"]  # no temporary file left


def test_atomic_output_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    from earlyexit._checks import atomic_output

    target = tmp_path / "p.png"
    target.write_bytes(b"old")
    with pytest.raises(OSError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["p.png"]
    with pytest.raises(ValueError, match="is a directory"), atomic_output(tmp_path):
        pass


def test_argument_types_name_the_range() -> None:
    import argparse

    from earlyexit._checks import float_range, int_range, zmq_address

    assert int_range(1, 10)("10") == 10
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \[1, 10\], got 11"):
        int_range(1, 10)("11")
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer >= 0"):
        int_range(0)("1.5")
    assert float_range(0, 1)("0.25") == 0.25
    for bad in ("nan", "inf", "-0.1", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"\[0, 1\]"):
            float_range(0, 1)(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="> 0"):
        float_range(0, lo_open=True)("0")
    assert zmq_address(bind=True)("tcp://*:*") == "tcp://*:*"
    assert zmq_address()("tcp://10.0.0.2:5557") == "tcp://10.0.0.2:5557"
    for bad in ("tcp://*:5557", "tcp://host:*", "tcp://host:0", "tcp://host:65536", "host:5", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="tcp://HOST:PORT"):
            zmq_address()(bad)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"hwm": 0}, "hwm"),
        ({"hwm": -1}, "hwm"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_message_bytes": 0}, "max_message_bytes"),
        ({"batch_timeout_s": float("nan")}, "batch_timeout_s"),
        ({"dead_after_s": 0.1, "heartbeat_s": 0.2}, "dead_after_s"),
        ({"start_timeout_s": 0}, "start_timeout_s"),
        ({"niceness": 40}, "niceness"),
        ({"precision": "fp64"}, "precision"),
    ],
)
def test_deploy_refuses_bad_settings_before_starting_anything(
    kwargs: dict, needle: str, private_tmp: Path
) -> None:
    from earlyexit.runtime.deployment import deploy

    with pytest.raises(ValueError, match=needle):
        deploy(synthetic={"num_partitions": 2}, threshold=0.5, **kwargs)
    assert os.listdir(private_tmp) == []
