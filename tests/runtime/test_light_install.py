"""The light (edge) install: a fresh venv with only numpy, onnxruntime, pyzmq and pyyaml.

The slow tests build a venv with ``pip install`` of this repository's sources (the
base distribution, no extras; its four dependencies come from the package index or
the local wheel cache) and serve a bundle, exported here with the full install,
with that venv's ``earlyexit serve``. A quick test checks that, where torch is
installed, the edge commands still do not import it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from earlyexit.formats import Estimate, PartitionPlan, Plan

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    """An environment that cannot see this checkout or the main venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("light")
    src = root / "src"  # a copy: building must not write into the work tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "earlyexit", src / "earlyexit", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_env())
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=root,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    return venv


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=venv.parent,
        timeout=120,
    )


@pytest.mark.slow
def test_light_install_has_no_torch(light_venv: Path) -> None:
    code = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "['torch', 'torchvision', 'lightning', 'timm', 'onnx', 'numpy', 'onnxruntime', "
        "'zmq', 'yaml', 'earlyexit']}))"
    )
    found = json.loads(_run(light_venv, "python", "-c", code).stdout)
    assert found == {
        "torch": False, "torchvision": False, "lightning": False, "timm": False, "onnx": False,
        "numpy": True, "onnxruntime": True, "zmq": True, "yaml": True, "earlyexit": True,
    }  # fmt: skip
    where = _run(light_venv, "python", "-c", "import earlyexit; print(earlyexit.__file__)")
    assert str(light_venv) in where.stdout  # the installed copy, not this checkout


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "plan", "pareto", "whatif"])
def test_edge_commands_start_without_torch(light_venv: Path, command: str) -> None:
    out = _run(light_venv, "earlyexit", command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: earlyexit {command}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv", [["blocks", "resnet20"], ["train", "--help"], ["profile", "--checkpoint", "CKPT"]]
)
def test_torch_commands_say_what_to_install(
    light_venv: Path, argv: list[str], tmp_path: Path
) -> None:
    """Commands that need torch say so in one line when run (their --help may work)."""
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read: torch is missing first")
    out = _run(light_venv, "earlyexit", *(str(ckpt) if a == "CKPT" else a for a in argv))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "earlyexit-edge[train]" in lines[0], out.stderr


@pytest.mark.slow
def test_plan_runs_on_the_light_install(light_venv: Path, tmp_path: Path) -> None:
    from earlyexit.planner.synthetic import synthetic_profile

    profile = tmp_path / "profile.json"
    synthetic_profile(10).save(profile)
    out = _run(
        light_venv, "earlyexit", "plan", "--profile", str(profile), "--topology", "portend-aws",
        "-o", str(tmp_path / "plan.json"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    plan = Plan.load(tmp_path / "plan.json")
    assert 1 <= len(plan.partitions) <= 3


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-partition bundle of an untrained ResNet-20, exported with the full install."""
    torch = pytest.importorskip("torch")
    from earlyexit import backbones
    from earlyexit.export import export_bundle
    from earlyexit.surgery import MultiExitModel, decompose

    torch.manual_seed(0)
    model = MultiExitModel(
        decompose(backbones.create("resnet20", num_classes=10)), num_classes=10
    ).eval()
    zero = dict.fromkeys(("compute", "serialize", "transmit", "propagate"), 0.0)
    plan = Plan(
        0.5,
        (PartitionPlan(1, 4, 0, "edge"), PartitionPlan(5, 10, 1, "cloud")),
        Estimate(0.0, 0.0, (0.5, 0.5), zero),
    )
    out = tmp_path_factory.mktemp("bundle") / "b"
    export_bundle(model, plan, out, formats="onnx", verify_data=torch.randn(8, 3, 32, 32))
    return out


def _serve(venv: Path, *args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [str(venv / "bin" / "earlyexit"), "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(),
        cwd=venv.parent,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            line += os.read(proc.stdout.fileno(), 1)
    assert line.startswith(b"READY "), f"serve did not start: {line!r}"
    return proc, json.loads(line[len(b"READY ") :])


@pytest.mark.slow
def test_light_install_serves_a_bundle(light_venv: Path, bundle: Path) -> None:
    """Both tiers run the light install's ``earlyexit serve``; results equal one process."""
    from earlyexit.runtime.client import Client
    from earlyexit.runtime.session import BundleSession

    session = BundleSession(bundle)
    x = np.random.default_rng(0).standard_normal((40, 3, 32, 32)).astype(np.float32)
    threshold = float(np.quantile(session.run_partition(0, x)[1], 0.5))
    want = session.predict(x, threshold)
    procs = []
    with Client() as client:
        try:
            last, info1 = _serve(
                light_venv, "--bundle", str(bundle), "--partition", "1",
                "--bind", "tcp://127.0.0.1:*", "--results", client.results_address,
            )  # fmt: skip
            procs.append(last)
            first, info0 = _serve(
                light_venv, "--bundle", str(bundle), "--partition", "0",
                "--bind", "tcp://127.0.0.1:*", "--threshold", repr(threshold),
                "--next", info1["input"], "--results", client.results_address,
            )  # fmt: skip
            procs.append(first)
            client.input_route = [info0["input"]]
            ids = client.submit(x)
            got = client.gather(ids, timeout_s=60)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)
    assert not any(r.degraded for r in got)
    assert [r.partition for r in got] == want["exit_partition"].tolist()
    assert {0, 1} <= set(want["exit_partition"].tolist())
    assert [r.prediction for r in got] == want["prediction"].tolist()
    np.testing.assert_allclose(np.stack([r.logits for r in got]), want["logits"], atol=1e-4)


@pytest.mark.parametrize("command", ["serve", "plan", "pareto", "whatif"])
def test_edge_commands_import_no_torch(command: str) -> None:
    """Here torch is installed: the edge commands still do not import it."""
    code = (
        "import contextlib, io, sys\n"
        "from earlyexit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main([{command!r}, '--help'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
