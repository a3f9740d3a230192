"""BundleSession: torch-free partitions with per-sample early exit, matching the eager model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from earlyexit.runtime.session import (  # noqa: E402
    BundleSession,
    check_files,
    precision_file_key,
    session_options,
)
from tests.export._models import make_model, make_plan, samples  # noqa: E402

pytestmark = pytest.mark.onnx


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from earlyexit.export import export_bundle

    model, dm = make_model()
    x, y = samples(dm, "test", 128)
    plan = make_plan(model, (2, 6, 10), x)
    out = tmp_path_factory.mktemp("session") / "bundle"
    export_bundle(model, plan, out, formats="onnx", verify_data=x, exporter="torchscript")
    return model, plan, out, x


def test_run_partition_matches_eager(setup):
    from earlyexit.surgery.slicing import slice

    model, plan, out, x = setup
    sess = BundleSession(out)
    assert sess.num_partitions == 3 and sess.exit_blocks == (2, 6, 10)
    parts = slice(model, plan)
    h_np, h = x[:8].numpy(), x[:8]
    for k, part in enumerate(parts):
        logits, entropy, features = sess.run_partition(k, h_np)
        with torch.no_grad():
            ref = part(h)
        np.testing.assert_allclose(logits, ref[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(entropy, ref[1].numpy(), atol=1e-4)
        if k < 2:
            assert features is not None
            np.testing.assert_allclose(features, ref[2].numpy(), atol=1e-4)
            h_np, h = features, ref[2]
        else:
            assert features is None


def test_predict_matches_multi_exit_model(setup):
    model, plan, out, x = setup
    sess = BundleSession(out)
    ref = model.select_exits([2, 6, 10]).predict(x, plan.threshold)
    got = sess.predict(x.numpy())  # the manifest's threshold
    np.testing.assert_array_equal(got["exit_block"], ref.exit_block.numpy())
    np.testing.assert_array_equal(got["prediction"], ref.prediction.numpy())
    np.testing.assert_allclose(got["logits"], ref.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["entropy"], ref.entropy.numpy(), atol=1e-4)
    assert set(got) == {"logits", "prediction", "exit_partition", "exit_block", "entropy"}
    assert 0 < (got["exit_partition"] == 0).sum() < len(x)  # early exit happens
    np.testing.assert_array_equal(sess.predict(x[:5].numpy(), 0.0)["exit_block"], [10] * 5)
    np.testing.assert_array_equal(sess.predict(x[:5].numpy(), 1.0)["exit_partition"], [0] * 5)
    one = sess.predict(x[:1].numpy())
    assert one["exit_block"][0] == ref.exit_block[0]


def test_only_staying_samples_go_on(setup, monkeypatch):
    _, plan, out, x = setup
    sess = BundleSession(out)
    seen: list[tuple[int, int]] = []
    run = sess._run

    def spy(k, h):
        seen.append((k, len(h)))
        return run(k, h)

    monkeypatch.setattr(sess, "_run", spy)
    got = sess.predict(x.numpy())
    left = [int((got["exit_partition"] == k).sum()) for k in range(3)]
    assert seen[0] == (0, len(x))
    assert seen[1] == (1, len(x) - left[0])
    if len(seen) > 2:
        assert seen[2] == (2, len(x) - left[0] - left[1])


def test_errors_are_clear(setup, tmp_path):
    _, _, out, x = setup
    sess = BundleSession(out)
    with pytest.raises(ValueError, match=r"partitions 0\.\.2"):
        sess.run_partition(3, x.numpy())
    with pytest.raises(ValueError, match=r"expects an input of shape \[B, 1, 28, 28\]"):
        sess.run_partition(0, np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(TypeError, match="numpy"):
        sess.run_partition(0, x)
    with pytest.raises(ValueError, match="threshold"):
        sess.predict(x.numpy(), 1.5)
    with pytest.raises(ValueError, match="no int8 ONNX file.*--target arm"):
        BundleSession(out, "int8")
    with pytest.raises(ValueError, match="unknown precision"):
        BundleSession(out, "bf16")
    with pytest.raises(FileNotFoundError):
        BundleSession(tmp_path)
    assert precision_file_key("fp16") == "onnx_fp16"
    # float64 and lists are accepted and cast
    logits, _, _ = sess.run_partition(0, x[:2].numpy().astype(np.float64))
    assert logits.dtype == np.float32


def test_session_threading_options():
    opts = session_options(2)
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ValueError):
        session_options(-1)


def test_bundle_runs_without_torch(setup):
    _, plan, out, x = setup
    np.save(out.parent / "x.npy", x[:16].numpy())
    code = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import earlyexit.runtime
        import earlyexit.runtime.session as s
        s.check_files({str(out)!r})
        sess = s.BundleSession({str(out)!r})
        out = sess.predict(np.load({str(out.parent / "x.npy")!r}))
        logits, entropy, feats = sess.run_partition(0, np.zeros((1, 1, 28, 28), np.float32))
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print(json.dumps({{"torch": bad, "exit": out["exit_block"].tolist()}}))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["torch"] == []
    assert len(report["exit"]) == 16


def test_check_files_finds_altered_files(setup, tmp_path):
    import shutil

    _, _, out, _ = setup
    assert check_files(out) == 3
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    path = copy / "partition_2.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        ValueError, match="partition 2: partition_2.onnx does not match the SHA-256"
    ):
        check_files(copy)
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match="truncated"):
        check_files(copy)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        check_files(copy)


def test_session_refuses_an_altered_file_before_loading_it(setup, tmp_path):
    import hashlib
    import shutil

    _, _, out, _ = setup
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    path = copy / "partition_3.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="partition_3.onnx does not match the SHA-256"):
        BundleSession(copy)
    # a corrupt file whose manifest was rewritten to match: ONNX Runtime's error, as a ValueError
    path.write_bytes(b"\x08not an onnx model")
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = manifest["partitions"][2]
    entry["bytes"]["onnx"] = path.stat().st_size
    entry["sha256"]["onnx"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="ONNX Runtime cannot load"):
        BundleSession(copy)


def test_a_tier_loads_only_its_own_partition(setup, tmp_path):
    """partitions=[k] reads and checks only partition k's file: a host may hold just that one."""
    import shutil

    _, _, out, x = setup
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in ("partition_1.onnx", "partition_3.onnx"):
        (copy / name).unlink()  # another tier's files: absent on this host
    full, mine = BundleSession(out), BundleSession(copy, partitions=[1])
    h = full.run_partition(0, x[:8].numpy())[2]
    for a, b in zip(mine.run_partition(1, h), full.run_partition(1, h), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="partition 0 was not loaded"):
        mine.run_partition(0, x[:8].numpy())
    with pytest.raises(ValueError, match="did not load"):
        mine.predict(x[:8].numpy())
    with pytest.raises(FileNotFoundError):
        BundleSession(copy)  # all partitions: the missing files are named
    with pytest.raises(ValueError, match="partitions must be indices"):
        BundleSession(copy, partitions=[3])
