"""ARM64 for real: a ``--target arm`` bundle run by an emulated aarch64 Python against x86.

Slow. ``/work/shared/tools/arm64-python.sh`` (or ``$EARLYEXIT_ARM64_TOOL``) builds
an aarch64 CPython with numpy, onnxruntime and pyzmq that runs here under qemu
user-mode emulation; it is built once into ``~/.cache/earlyexit-arm64/<hash of
the script>`` and reused. The runtime code reaches it on ``PYTHONPATH`` (it has
no torch, so whatever runs there is torch-free by construction).

Emulation is hundreds of times slower than the host: nothing is timed there, the
plan is small (exits after blocks 1, 2 and 3 of the shipped ResNet-20) and the
inputs are batched.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from earlyexit.formats import Estimate, Manifest, PartitionPlan, Plan

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "checkpoints" / "resnet20_fashionmnist.pt"
TOOL = Path(os.environ.get("EARLYEXIT_ARM64_TOOL", "/work/shared/tools/arm64-python.sh"))
SAMPLES = 500
EXITS = (1, 2, 3)
FORCED_FP32 = 100  # fp32 partitions forced on these; the fp32 chain and int8 run all SAMPLES

# Runs on aarch64: every partition forced on the first `forced` samples (each
# partition is fed the features of the previous one computed there), and for fp32
# the whole chain with early exit through BundleSession.predict on every sample.
# Imports nothing but the runtime.
_ARM_SCRIPT = r"""
import json, platform, sys
import numpy as np
from earlyexit.runtime.session import BundleSession

bundle, precision, inputs, out, forced = sys.argv[1:6]
x = np.load(inputs)["x"]
session = BundleSession(bundle, precision)
threshold = session.manifest.threshold
res = {}
h = x[: int(forced)]
for k in range(session.num_partitions):
    parts = [session.run_partition(k, h[i:i + 50]) for i in range(0, len(h), 50)]
    res[f"logits{k}"] = np.concatenate([p[0] for p in parts])
    res[f"entropy{k}"] = np.concatenate([p[1] for p in parts])
    if parts[0][2] is not None:
        h = np.concatenate([p[2] for p in parts])
if precision == "fp32":
    chain = [session.predict(x[i:i + 100], threshold) for i in range(0, len(x), 100)]
    for key in ("exit_partition", "prediction", "logits"):
        res["chain_" + key] = np.concatenate([c[key] for c in chain])
np.savez(out, machine=np.array(platform.machine()), **res)
"""


@pytest.fixture(scope="session")
def arm_python() -> Path:
    """The emulated aarch64 interpreter, built once per version of the tool script."""
    if not TOOL.exists():
        pytest.fail(f"the ARM64 tool {TOOL} is missing (set EARLYEXIT_ARM64_TOOL)")
    key = hashlib.sha256(TOOL.read_bytes()).hexdigest()[:12]
    dest = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "earlyexit-arm64" / key
    py = dest / "py-arm64"
    if not py.exists():
        build = subprocess.run(
            ["sh", str(TOOL), str(dest)], capture_output=True, text=True, timeout=900
        )
        if build.returncode != 0 or not py.exists():
            pytest.fail(f"building the ARM64 Python failed:\n{build.stderr[-3000:]}")
    return py


def _arm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(REPO)  # the runtime's code; no torch exists on that side
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def arm_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A ``--target arm`` bundle (fp32 + int8) of the shipped checkpoint, its test samples."""
    torch = pytest.importorskip("torch")
    import earlyexit
    from earlyexit.data import EarlyExitDataModule
    from earlyexit.export import export_bundle

    model = earlyexit.load(CHECKPOINT)
    dm = EarlyExitDataModule.for_model("fashion-mnist", model, batch_size=256)

    def take(split: str, n: int) -> tuple:
        ds = dm.dataset(split)
        xs, ys = zip(*(ds[i] for i in range(n)), strict=True)
        return torch.stack(xs), torch.stack(ys)

    vx, vy = take("test", SAMPLES)
    with torch.no_grad():
        logits = model.select_exits([EXITS[0]])(vx)[0]
    ent = earlyexit.normalized_entropy(logits, model.temperatures[EXITS[0] - 1]).sort().values
    cut = int(0.7 * SAMPLES)  # about 70% leave at the first exit: emulated compute is dear
    threshold = float(ent[cut - 1] + ent[cut]) / 2
    zero = dict.fromkeys(("compute", "serialize", "transmit", "propagate"), 0.0)
    plan = Plan(
        threshold,
        tuple(PartitionPlan(e, e, k, f"tier{k}") for k, e in enumerate(EXITS)),
        Estimate(0.0, 0.0, (1 / 3, 1 / 3, 1 / 3), zero),
    )
    out = tmp_path_factory.mktemp("arm") / "bundle"
    export_bundle(
        model, plan, out, formats="onnx", target="arm",
        calibration_data=take("profile", 200), verify_data=(vx, vy),
    )  # fmt: skip
    return out, vx.numpy(), vy.numpy()


@pytest.fixture(scope="module")
def arm_outputs(arm_python: Path, arm_bundle, tmp_path_factory) -> dict[str, dict]:
    """Outputs of the bundle on emulated aarch64, fp32 and int8 (two processes at once)."""
    bundle, x, _ = arm_bundle
    work = tmp_path_factory.mktemp("armrun")
    (work / "run.py").write_text(_ARM_SCRIPT)
    np.savez(work / "x.npz", x=x)
    procs = {
        prec: subprocess.Popen(
            [
                str(arm_python),
                str(work / "run.py"),
                str(bundle),
                prec,
                str(work / "x.npz"),
                str(work / f"{prec}.npz"),
                str(FORCED_FP32 if prec == "fp32" else SAMPLES),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_arm_env(),
            cwd=work,
        )  # fmt: skip
        for prec in ("fp32", "int8")
    }
    out = {}
    for prec, p in procs.items():
        _, err = p.communicate(timeout=1800)
        assert p.returncode == 0, err.decode(errors="replace")[-3000:]
        with np.load(work / f"{prec}.npz") as z:
            out[prec] = {k: z[k] for k in z.files}
        assert str(out[prec]["machine"]) == "aarch64"
    return out


def _x86_forced(bundle: Path, precision: str, x: np.ndarray) -> list[tuple]:
    from earlyexit.runtime.session import BundleSession

    session = BundleSession(bundle, precision)
    outs, h = [], x
    for k in range(session.num_partitions):
        logits, ent, feats = session.run_partition(k, h)
        outs.append((logits, ent))
        h = feats
    return outs


def test_fp32_partitions_and_chain_match_x86(arm_bundle, arm_outputs) -> None:
    from earlyexit.runtime.session import BundleSession

    bundle, x, _ = arm_bundle
    manifest = Manifest.load(bundle)
    tol = manifest.extra["verification"]["tolerance_fp32"]
    arm = arm_outputs["fp32"]
    for k, (logits, ent) in enumerate(_x86_forced(bundle, "fp32", x[:FORCED_FP32])):
        err = np.abs(arm[f"logits{k}"] - logits).max()
        assert err <= tol["atol"] + tol["rtol"] * np.abs(logits).max(), (k, err)
        np.testing.assert_array_equal(arm[f"logits{k}"].argmax(1), logits.argmax(1))
        np.testing.assert_allclose(arm[f"entropy{k}"], ent, atol=1e-4)
    want = BundleSession(bundle).predict(x, manifest.threshold)
    assert len(arm["chain_exit_partition"]) == len(x) >= 500
    np.testing.assert_array_equal(arm["chain_exit_partition"], want["exit_partition"])
    np.testing.assert_array_equal(arm["chain_prediction"], want["prediction"])
    assert set(want["exit_partition"].tolist()) == {0, 1, 2}  # every exit is exercised
    err = np.abs(arm["chain_logits"] - want["logits"]).max()
    assert err <= tol["atol"] + tol["rtol"] * np.abs(want["logits"]).max()


def test_int8_exit_accuracy_reproduced_on_arm(arm_bundle, arm_outputs) -> None:
    bundle, x, y = arm_bundle
    report = Manifest.load(bundle).extra["quantization"]["int8"]
    assert report["samples"] == len(x) >= 500
    arm = arm_outputs["int8"]
    acc = [float((arm[f"logits{k}"].argmax(1) == y).mean()) for k in range(len(EXITS))]
    assert np.abs(np.subtract(acc, report["exit_accuracy"])).max() <= 0.001, (
        acc, report["exit_accuracy"],
    )  # fmt: skip
    # and the same classes as int8 on x86, exit by exit
    for k, (logits, _) in enumerate(_x86_forced(bundle, "int8", x)):
        agree = float((arm[f"logits{k}"].argmax(1) == logits.argmax(1)).mean())
        assert agree >= 0.99, (k, agree)


# --------------------------------------------------------------------------- mixed deployment


def _spawn(cmd: list[str], config: dict, env: dict, timeout_s: float) -> tuple:
    proc = subprocess.Popen(
        [*cmd, "-m", "earlyexit.runtime.worker", "--config", json.dumps(config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline, line = time.monotonic() + timeout_s, b""
    while not line.endswith(b"\n") and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line += os.read(proc.stdout.fileno(), 1)
    if not line.startswith(b"READY "):
        proc.kill()
        raise AssertionError(f"{cmd[0]} worker did not start: {line!r}")
    return proc, json.loads(line[len(b"READY ") :])


def test_mixed_deployment_edge_tier_on_arm(arm_python: Path, arm_bundle) -> None:
    """Tier 0 on emulated aarch64, tiers 1 and 2 on x86, over loopback: every sample back."""
    from earlyexit.runtime.client import Client
    from earlyexit.runtime.options import WorkerOptions
    from earlyexit.runtime.session import BundleSession

    bundle, x_all, _ = arm_bundle
    x = x_all[:48]
    manifest = Manifest.load(bundle)
    want = BundleSession(bundle).predict(x, manifest.threshold)
    x86_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    x86_env["PYTHONPATH"] = str(REPO)
    procs: list[subprocess.Popen] = []
    with Client(dead_after_s=60.0) as client:
        try:
            nxt = None
            for k in (2, 1, 0):
                options = WorkerOptions(
                    partition=k, num_partitions=3, threshold=manifest.threshold, tier=k,
                    last_block=EXITS[k], result_route=(client.results_address,),
                    next_route=() if nxt is None else (nxt,), dead_after_s=60.0, heartbeat_s=0.5,
                )  # fmt: skip
                config = {
                    "runner": {"kind": "bundle", "path": str(bundle), "partition": k},
                    "options": options.to_dict(),
                }
                if k == 0:
                    proc, info = _spawn([str(arm_python)], config, _arm_env(), 300)
                else:
                    proc, info = _spawn([sys.executable], config, x86_env, 60)
                procs.append(proc)
                nxt = info["input"]
            client.input_route = [nxt]
            ids = []
            for i in range(0, len(x), 8):  # batches of 8: emulated calls are slow
                ids += client.submit(x[i : i + 8], batch=True)
            got = client.gather(ids, timeout_s=600)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(20)
    assert client.stats["delivered"] == len(x) and client.stats["degraded"] == 0
    assert [r.partition for r in got] == want["exit_partition"].tolist()
    assert {0, 1} <= set(want["exit_partition"].tolist())
    assert [r.tier for r in got] == want["exit_partition"].tolist()
    assert [r.prediction for r in got] == want["prediction"].tolist()
    np.testing.assert_allclose(np.stack([r.logits for r in got]), want["logits"], atol=1e-4)
