"""export_bundle: files per format, verification that can fail, int8/fp16 targets, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import earlyexit.export.bundle as bundle_mod
from earlyexit.export import ExportVerificationError, export_bundle, write_onnx
from earlyexit.formats import Manifest
from earlyexit.runtime.session import BundleSession

pytestmark = pytest.mark.onnx


@pytest.fixture(scope="module")
def arm_bundle(tmp_path_factory, model, plan, verify_data, calibration_data):
    out = tmp_path_factory.mktemp("arm") / "bundle"
    manifest = export_bundle(
        model, plan, out, target="arm", calibration_data=calibration_data, verify_data=verify_data
    )
    return out, manifest


def test_bundle_has_every_file_and_the_spec_fields(arm_bundle, model, plan):
    out, manifest = arm_bundle
    assert Manifest.load(out).to_dict() == manifest.to_dict()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["manifest.json"]
        + [f"partition_{k}{s}" for k in (1, 2) for s in (".onnx", ".pt", ".pt2", ".int8.onnx")]
    )
    assert manifest.plan == plan
    assert manifest.threshold == plan.threshold
    assert manifest.class_names == tuple(model.metadata["class_names"])
    assert manifest.input_shape == (1, 28, 28) and manifest.input_dtype == "float32"
    assert dict(manifest.normalization) == model.normalization
    t = model.temperatures.tolist()
    assert manifest.temperatures == pytest.approx((t[2], t[9]))
    p1, p2 = manifest.partitions
    assert (p1.index, p2.index) == (1, 2)
    assert p1.output_names == ("logits", "entropy", "features")
    assert p2.output_names == ("logits", "entropy")
    assert p1.input_shape == (None, 1, 28, 28)
    assert dict(p1.output_shapes)["features"] == p2.input_shape
    assert dict(p2.output_shapes) == {"logits": (None, 10), "entropy": (None,)}
    assert p1.extra["first_block"] == 1 and p2.extra["last_block"] == 10
    assert p1.extra["tier_name"] == "tier0"
    for p in (p1, p2):
        for fmt in ("onnx", "torchscript", "pt2"):
            assert max(p.extra["max_abs_diff"][fmt].values()) <= 1e-4
        assert set(p.extra["bytes"]) == set(p.files) == set(p.extra["sha256"])
    assert manifest.extra["providers"]["int8"] == ["CPUExecutionProvider"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_verification_covers_the_whole_split(arm_bundle, verify_data):
    _, manifest = arm_bundle
    ver = manifest.extra["verification"]
    assert ver["samples"] == len(verify_data[0])
    for fmt in ("onnx", "torchscript", "pt2"):
        c = ver["chained"][fmt]
        assert c["samples"] == len(verify_data[0])
        assert c["same"] + c["borderline"] == c["samples"]
    # the plan's threshold splits the samples: early exit is really exercised
    assert 0.2 < ver["exit_fractions"][0] < 0.8


def test_int8_reports_accuracy_change_per_exit(arm_bundle, verify_data):
    out, manifest = arm_bundle
    q = manifest.extra["quantization"]["int8"]
    assert q["exits"] == [3, 10]
    assert len(q["exit_accuracy"]) == len(q["exit_accuracy_fp32"]) == 2
    assert q["exit_accuracy_change"] == pytest.approx(
        [a - b for a, b in zip(q["exit_accuracy"], q["exit_accuracy_fp32"], strict=True)]
    )
    assert q["calibration"]["samples"] == 64
    sizes = manifest.partitions[1].extra["bytes"]
    assert sizes["onnx_int8"] < 0.5 * sizes["onnx"]
    # the int8 model is really quantized and runs
    graph = onnx.load(str(out / manifest.partitions[1].files["onnx_int8"])).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    pred = BundleSession(out, "int8").predict(verify_data[0][:32].numpy())
    assert pred["prediction"].shape == (32,)


def test_gpu_target_adds_fp16_and_providers(tmp_path, model, plan, verify_data):
    out = tmp_path / "gpu"
    manifest = export_bundle(model, plan, out, formats="onnx", target="gpu",
                             verify_data=verify_data[0][:64], exporter="torchscript")  # fmt: skip
    assert manifest.extra["providers"]["fp16"][:2] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
    ]
    assert all("onnx_fp16" in p.files for p in manifest.partitions)
    graph = onnx.load(str(out / manifest.partitions[0].files["onnx_fp16"])).graph
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    sess = BundleSession(out, "fp16")  # falls back to the CPU here
    assert sess.providers[-1] == "CPUExecutionProvider"
    logits, entropy, _ = sess.run_partition(1, np.zeros((2, 16, 28, 28), np.float32))
    assert logits.dtype == np.float32 and entropy.shape == (2,)
    assert "accuracy" not in manifest.extra["verification"]  # no labels given


def _corrupting_writer(partition_index: int, scale: float):
    def write(part, path, example, opset=None, exporter="dynamo"):
        used = write_onnx(part, path, example, opset, exporter)
        if part.index == partition_index:
            m = onnx.load(str(path))
            init = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
            arr = numpy_helper.to_array(init).copy()
            arr.flat[0] += scale
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            onnx.save(m, str(path))
        return used

    return write


def test_corrupted_partition_fails_and_leaves_nothing(
    tmp_path, monkeypatch, model, plan, verify_data
):
    monkeypatch.setattr(bundle_mod._writers, "write_onnx", _corrupting_writer(1, 0.5))
    out = tmp_path / "bundle"
    with pytest.raises(
        ExportVerificationError, match=r"partition 2 \(blocks 4\.\.10\).*off by"
    ) as e:
        export_bundle(model, plan, out, formats="onnx", verify_data=verify_data[0][:32],
                      exporter="torchscript")  # fmt: skip
    assert e.value.partition == 2 and e.value.fmt == "onnx" and e.value.diff > 1e-4
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_chained_mismatch_fails(tmp_path, monkeypatch, model, plan, verify_data):
    # the files match eager, but the chain is compared with a model whose exit is elsewhere
    real = bundle_mod._verify.reference_predictions

    def shifted(m, x, t, b=256):
        blocks, preds = real(m, x, t, b)
        return np.where(blocks == 3, 10, 3), preds

    monkeypatch.setattr(bundle_mod._verify, "reference_predictions", shifted)
    out = tmp_path / "bundle"
    with pytest.raises(ExportVerificationError, match="differs from MultiExitModel.predict"):
        export_bundle(model, plan, out, formats="onnx", verify_data=verify_data[0][:64],
                      exporter="torchscript")  # fmt: skip
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path, model, plan):
    with pytest.raises(ValueError, match="unknown format"):
        export_bundle(model, plan, tmp_path / "b", formats="onnx,tflite")
    with pytest.raises(ValueError, match="unknown target"):
        export_bundle(model, plan, tmp_path / "b", target="tpu")
    with pytest.raises(ValueError, match="must include 'onnx'"):
        export_bundle(model, plan, tmp_path / "b", formats="pt2", target="arm")
    with pytest.raises(TypeError, match="MultiExitModel"):
        export_bundle(torch.nn.Linear(2, 2), plan, tmp_path / "b")
    with pytest.raises(ValueError, match=r"tolerance \(atol\) must be a finite number > 0"):
        export_bundle(model, plan, tmp_path / "b", tolerance=0)
    with pytest.raises(ValueError, match=r"rtol must be a number in \[0, 1\)"):
        export_bundle(model, plan, tmp_path / "b", rtol=1.0)
    with pytest.raises(ValueError, match="calibration_samples must be an int >= 1"):
        export_bundle(model, plan, tmp_path / "b", calibration_samples=0)

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_bundle(model, plan, tmp_path / "full")
    with pytest.raises(ValueError, match="is not a directory"):
        export_bundle(model, plan, tmp_path / "full" / "x" / "b")
    small = model.select_exits([2, 10])
    with pytest.raises(ValueError, match="not active"):
        export_bundle(small, plan, tmp_path / "b")
    with pytest.raises(ValueError, match="samples of shape"):
        export_bundle(model, plan, tmp_path / "b", verify_data=torch.zeros(4, 3, 32, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_overwrite_replaces_only_a_bundle(tmp_path, model, plan, verify_data):
    """--overwrite never deletes a folder that is not a bundle, nor a file."""
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "important.txt").write_text("keep me")
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"a checkpoint")
    kw = dict(
        formats="onnx", exporter="torchscript", verify_data=verify_data[0][:16], overwrite=True
    )
    with pytest.raises(FileExistsError, match="not a bundle"):
        export_bundle(model, plan, folder, **kw)
    with pytest.raises(FileExistsError, match="not a directory"):
        export_bundle(model, plan, victim, **kw)
    assert (folder / "important.txt").read_text() == "keep me"
    assert victim.read_bytes() == b"a checkpoint"
    # a real bundle is replaced, and nothing else is left beside it
    out = tmp_path / "bundle"
    export_bundle(model, plan, out, **kw)
    (out / "stale.txt").write_text("old")
    export_bundle(model, plan, out, **kw)
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "stuff", "victim.pt"]


def test_cli_exports_a_checkpoint(tmp_path, model, plan, capsys):
    from earlyexit.checkpoint import save
    from earlyexit.cli import main

    ckpt = save(model, tmp_path / "model.pt")
    plan_path = tmp_path / "plan.json"
    plan.save(plan_path)
    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(ckpt), "--plan", str(plan_path), "--format", "onnx",
            "--exporter", "torchscript", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "verified onnx: 2000/2000 samples" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"] == "earlyexit.bundle/1"
    assert manifest["verification"]["data"] == "fashion-mnist test split"
    assert main(argv) == 2  # exists: refuses without --overwrite
    assert "overwrite" in capsys.readouterr().err


def test_cli_rejects_bad_format(tmp_path):
    from earlyexit.cli import main

    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", "c", "--plan", "p", "--format", "tflite", "-o", "b"])


def test_data_argument_forms(model, verify_data):
    x, y = verify_data
    r = bundle_mod.resolve_data((x[:5], y[:5]), "test", model)
    assert r is not None and r[1] is not None and len(r[0]) == 5
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:6], y[:6]), batch_size=4)
    r = bundle_mod.resolve_data(loader, "test", model, limit=5)
    assert r is not None and len(r[0]) == 5 and len(r[1]) == 5
    with pytest.raises(TypeError, match="data must be"):
        bundle_mod.resolve_data(3.5, "test", model)


@pytest.mark.slow
def test_cli_one_command_arm_bundle(tmp_path, model, plan, capsys):
    """The whole path with the defaults: every format, dynamo ONNX, int8, full test split."""
    from earlyexit.checkpoint import save
    from earlyexit.cli import main

    ckpt = save(model, tmp_path / "model.pt")
    plan.save(tmp_path / "plan.json")
    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(ckpt), "--plan", str(tmp_path / "plan.json"),
            "--target", "arm", "--data", "fashion-mnist", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    for fmt in ("onnx", "torchscript", "pt2"):
        assert f"verified {fmt}: 2000/2000 samples" in text
    assert "int8 accuracy per exit" in text
    manifest = Manifest.load(out)
    assert manifest.extra["quantization"]["int8"]["calibration"]["samples"] == 1000
    assert manifest.extra["export"]["onnx_exporter"] == "dynamo"


def test_dynamo_failure_falls_back_to_the_legacy_exporter(
    tmp_path, monkeypatch, model, plan, verify_data
):
    def flaky(part, path, example, opset=None, exporter="dynamo"):
        if exporter == "dynamo":
            raise RuntimeError("unsupported op\nmore detail")
        return write_onnx(part, path, example, opset, exporter)

    monkeypatch.setattr(bundle_mod._writers, "write_onnx", flaky)
    with pytest.warns(RuntimeWarning, match="dynamo ONNX exporter failed \\(unsupported op\\)"):
        manifest = export_bundle(
            model, plan, tmp_path / "b", formats="onnx", verify_data=verify_data[0][:32]
        )
    assert manifest.extra["export"]["onnx_exporter"] == "torchscript"


SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "resnet20_fashionmnist.pt"


@pytest.mark.slow
@pytest.mark.parametrize("num_partitions", [2, 3])
def test_planner_plan_of_the_shipped_checkpoint_exports(tmp_path, model, num_partitions):
    """A planner's plan (synthetic profile, PORTEND AWS topology) on the shipped checkpoint."""
    import earlyexit
    from earlyexit.planner.synthetic import synthetic_profile

    if SHIPPED.is_file():
        model = earlyexit.load(SHIPPED)
    plan = earlyexit.plan(
        synthetic_profile(num_blocks=10), "portend-aws", num_partitions=num_partitions
    )
    manifest = export_bundle(
        model, plan, tmp_path / "bundle", formats="onnx,pt2", verify_data="fashion-mnist"
    )
    assert len(manifest.partitions) == num_partitions
    assert manifest.extra["verification"]["data"] == "fashion-mnist test split"
    for fmt in ("onnx", "pt2"):
        c = manifest.extra["verification"]["chained"][fmt]
        assert c["samples"] == 2000 and c["same"] + c["borderline"] == 2000


def test_opset_is_honoured_and_recorded(tmp_path, model, plan, verify_data):
    # the dynamo exporter writes opset >= 18 only: an older opset takes the legacy exporter
    manifest = export_bundle(
        model, plan, tmp_path / "b", formats="onnx", opset=17, verify_data=verify_data[0][:32]
    )
    assert manifest.extra["export"]["opset"] == 17
    assert manifest.extra["export"]["onnx_exporter"] == "torchscript"
    m = onnx.load(str(tmp_path / "b" / "partition_1.onnx"))
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    with pytest.raises(ValueError, match="opset must be an int >= 7"):
        export_bundle(model, plan, tmp_path / "c", opset=3)


def _loud_partition(model, x, reach=268.0):
    """The last partition of a copy of ``model`` whose logits reach ``reach`` in magnitude."""
    import copy

    from earlyexit.export.verify import eager_chain_inputs
    from earlyexit.surgery.slicing import slice as slice_model

    loud = copy.deepcopy(model)
    linear = [
        m for m in loud.heads[str(loud.exits[-1])].modules() if isinstance(m, torch.nn.Linear)
    ]
    parts = slice_model(loud, [3, 10])
    h = eager_chain_inputs(parts, x)[1]
    with torch.no_grad():
        factor = reach / float(parts[1](h)[0].abs().max())
        linear[-1].weight.mul_(factor)
        linear[-1].bias.mul_(factor)
    parts = [p.eval() for p in slice_model(loud, [3, 10])]
    return parts[1], h


def _perturbed(part, delta_of):
    """A runner: the eager partition with ``delta_of(logits)`` added to every logit."""

    def run(x):
        with torch.no_grad():
            outs = [t.numpy() for t in part(torch.from_numpy(x))]
        outs[0] = outs[0] + delta_of(outs[0])
        return outs

    return run


def test_tolerance_scales_with_the_outputs(model, verify_data):
    """Issue 11: 4.5e-4 on logits reaching 268 is rounding; 1% of them is an error."""
    from earlyexit.export.verify import check_outputs

    part, h = _loud_partition(model, verify_data[0][:32])
    inputs = [("real samples", h)]
    signs = lambda a: np.where(np.arange(a.size).reshape(a.shape) % 2, 1.0, -1.0)  # noqa: E731
    rounding = _perturbed(part, lambda a: (4.5e-4 * signs(a)).astype(np.float32))
    diffs, scales = check_outputs(rounding, part, inputs, "onnx", "p.onnx")
    assert diffs["logits"] == pytest.approx(4.5e-4, rel=0.05)
    assert 267 < scales["logits"] < 269  # every logit is off, the smallest ones too
    # the same rounding fails an absolute-only rule (the old fixed 1e-4)
    with pytest.raises(ExportVerificationError, match="off by 0.00045"):
        check_outputs(rounding, part, inputs, "onnx", "p.onnx", tolerance=1e-4, rtol=0.0)

    # a real error: one logit per sample off by 1% of the logits' magnitude
    def one_logit(a):
        d = np.zeros_like(a)
        d[:, 0] = 0.01 * np.abs(a).max()
        return d

    with pytest.raises(ExportVerificationError, match=r"off by 2\.68.*allowed") as e:
        check_outputs(_perturbed(part, one_logit), part, inputs, "onnx", "p.onnx")
    assert e.value.partition == 2 and e.value.diff > 2


def test_plan_for_another_model_is_refused(tmp_path, model, plan, verify_data):
    import dataclasses

    def with_extra(**kw):
        return dataclasses.replace(plan, extra={**plan.extra, **kw})

    with pytest.raises(ValueError, match="made for a model of 20 blocks, this one has 10.*--force"):
        export_bundle(model, with_extra(num_blocks=20), tmp_path / "b")
    with pytest.raises(ValueError, match="made for model 'resnet56', this one is 'resnet20'"):
        export_bundle(model, with_extra(model="resnet56"), tmp_path / "b")
    with pytest.raises(ValueError, match="other weights or exit temperatures"):
        export_bundle(model, with_extra(model_digest="0" * 64), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
    # the model's own digest and block count pass; force exports with a warning
    from earlyexit.profiling import model_digest

    ok = with_extra(num_blocks=10, model="resnet20", model_digest=model_digest(model))
    bundle_mod.check_plan_matches(model, ok)
    with pytest.warns(UserWarning, match="20 blocks.*exporting anyway"):
        manifest = export_bundle(model, with_extra(num_blocks=20), tmp_path / "b", formats="onnx",
                                 exporter="torchscript", verify_data=verify_data[0][:16], force=True)  # fmt: skip
    assert manifest.plan.extra["num_blocks"] == 20 and (tmp_path / "b" / "manifest.json").is_file()


def test_a_failed_export_removes_the_folders_it_created(
    tmp_path, monkeypatch, model, plan, verify_data
):
    monkeypatch.setattr(bundle_mod._writers, "write_onnx", _corrupting_writer(1, 0.5))
    with pytest.raises(ExportVerificationError):
        export_bundle(model, plan, tmp_path / "new" / "deeper" / "bundle", formats="onnx",
                      verify_data=verify_data[0][:16], exporter="torchscript")  # fmt: skip
    assert list(tmp_path.iterdir()) == []
