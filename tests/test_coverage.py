"""Issue 11 in CI: a representative dozen of torchvision and timm models through bench_coverage.

Each model goes through the benchmark's own per-model check, in process, with
random weights and the library's defaults: create, ``decompose``, default exit
heads, ``predict`` (last exit == model output, real early exit) and a
2-partition ONNX export whose torch-free runtime chain equals ``predict``. The
whole sweep is ``benchmarks/bench_coverage.py``.
"""

from __future__ import annotations

import pytest

from tests._scripts import load_script

pytest.importorskip("timm")


def _bench():
    return load_script("benchmarks/bench_coverage.py")


# a ViT, a Swin, EfficientNet-Lite (an early ``size(0)``), a LeViT (attention-bias caches),
# a ConvNeXt, a RegNet, an EfficientNet and classic torchvision CNNs
MODELS = [
    "timm:vit_tiny_patch16_224",
    "timm:efficientnet_lite0",
    "timm:tf_efficientnet_lite0",
    "timm:levit_128s",
    "timm:convnext_atto",
    "timm:regnetx_002",
    "timm:swin_tiny_patch4_window7_224",
    "tv:resnet18",
    "tv:mobilenet_v3_small",
    "tv:squeezenet1_0",
    "tv:shufflenet_v2_x0_5",
    "tv:efficientnet_b0",
]


@pytest.mark.slow
@pytest.mark.onnx
@pytest.mark.parametrize("spec", MODELS)
def test_model_passes_every_stage(spec):
    bench = _bench()
    # the legacy exporter is 2-3x faster; the default (dynamo) one is tested in tests/export
    row = bench.check_model(spec, exporter="torchscript")
    assert row["status"] == dict.fromkeys(bench.STAGES, "ok"), (
        f"{spec}: {row['failed_stage']}: {row['reason']}"
    )
    n = row["blocks"]
    assert n >= 3 and row["exits"] == n  # default exits: one after every block
    assert (
        row["details"]["predict"]["exit_blocks"][0] != row["details"]["predict"]["exit_blocks"][1]
    )
    export = row["details"]["export"]
    assert 1 <= export["cut"] < n
    assert sorted(export["exit_blocks"]) == [export["cut"], n]  # one sample per partition


def test_a_failure_is_one_row_with_its_reason():
    """A model that cannot be built fails at ``create`` with a one-line reason, nothing later runs."""
    bench = _bench()
    row = bench.check_model("tv:no_such_model")
    assert row["status"] == {"create": "fail", "decompose": "-", "heads": "-", "predict": "-",
                             "export": "-"}  # fmt: skip
    assert row["failed_stage"] == "create" and "\n" not in row["reason"]
    assert "no_such_model" in row["reason"]


def test_smallest_timm_model_of_a_family_is_chosen():
    bench = _bench()
    assert bench._name_score("convnext_atto") < bench._name_score("convnext_base")
    assert bench._name_score("vit_tiny_patch16_224") < bench._name_score("vit_large_patch16_224")
