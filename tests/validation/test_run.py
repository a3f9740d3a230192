"""validate() end to end on a small random-weight ResNet-20, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from earlyexit.planner.synthetic import synthetic_profile
from earlyexit.planner.topology import resolve_topology


def _model():
    torch = pytest.importorskip("torch")
    from earlyexit import MultiExitModel, backbones, decompose

    torch.manual_seed(0)
    return MultiExitModel(
        decompose(backbones.create("resnet20", num_classes=10, in_chans=1), input_shape=(1, 28, 28))
    ).eval()


@pytest.mark.slow
def test_profile_times_partitions_as_the_runtime_runs_them():
    torch = pytest.importorskip("torch")
    from earlyexit.profiling import profile
    from earlyexit.profiling.timing import time_onnx_partitions

    model = _model()
    t = time_onnx_partitions(model, torch.randn(1, 1, 28, 28), reps=3, budget_s=0.01)
    upper = t[np.triu_indices(10)]
    assert np.isfinite(upper).all() and (upper > 0).all()
    assert np.isnan(t[np.tril_indices(10, -1)]).all()
    with pytest.raises(ValueError, match="engine"):
        profile(model, [(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))], engine="tf")


@pytest.mark.slow
def test_validate_end_to_end_on_a_small_checkpoint(tmp_path):
    import earlyexit
    from earlyexit.checkpoint import save
    from earlyexit.formats import Topology
    from earlyexit.validation import validate

    model = _model()
    ckpt = save(model, tmp_path / "m.pt", {"dataset": "fashion-mnist"})
    prof = earlyexit.profile(model, "fashion-mnist", "cpu", threads=1, engine="onnx", reps=3,
                             budget_s=0.01, progress=False)  # fmt: skip
    topo = resolve_topology("portend-aws").to_dict()
    for t in topo["tiers"]:
        t["device"] = "cpu"
    lines: list[str] = []
    out = validate(ckpt, prof, Topology.from_dict(topo), configs=2, samples=4, passes=2,
                   accuracy_samples=40, out_dir=tmp_path / "v", accuracy_drop=None, split=True,
                   keep_logs=True, progress=lines.append)  # fmt: skip
    assert [ln for ln in lines if ln.startswith("pass ")] == [
        "pass 1/2: timing 2 configurations", "pass 2/2: timing 2 configurations"]  # fmt: skip
    assert len(out.configs) == 2 and out.wall_time_s > 0
    # two passes: each configuration deployed twice, its timed samples split between them
    for i in (1, 2):
        got = sorted(d.name for d in (tmp_path / "v" / "logs" / f"config-{i}").iterdir())
        assert got == ["pass-1", "pass-2"]
    # this profile has no hop_s and timed its runs back to back: two notes say so, nothing else
    # (but for a drift of this host, which the host check below measured)
    assert any("timed its partitions 0 ms apart" in n for n in out.notes)
    said = ("hop_s", "0 ms apart", "this host's speed drifted")
    assert [n for n in out.notes if not any(s in n for s in said)] == []
    # the whole network timed on this host before and after, against the profile's entry
    (check,) = out.host_check  # timed back to back: no busy table, the cold time only
    assert (check.device, check.statistic) == ("cpu", "cold")
    assert check.profiled_s == prof.devices["cpu"].partition_time_s[0][9]
    assert len(check.measured_s) == 2 and all(m > 0 for m in check.measured_s)
    for rec in out.configs:
        m = rec.measured
        # the first 4, and up to 4 of every exit that they miss
        assert 4 <= m.latency_samples <= 4 * len(rec.config.cuts)
        assert m.accuracy_samples == 40 and m.degraded == 0
        assert m.latency_pass is not None and m.latency_pass.agreement == 1.0
        assert sum(m.exit_fractions) == pytest.approx(1.0)
        assert set(rec.estimated) == {"portend", "exact"}
        assert m.split is not None and m.split.full_s == m.latency_s
        assert m.split.bare_s > 0 and m.split.links_s + m.split.slowdown_s + m.split.bare_s == (
            pytest.approx(m.latency_s))  # fmt: skip
    written = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert written["configs"][0]["measured"]["latency_s"] == out.configs[0].measured.latency_s
    assert written["configs"][0]["measured"]["split_s"]["full"] == out.configs[0].measured.latency_s
    assert written["latency_error"]["relative_error"] == pytest.approx(
        [r.relative_error("exact") for r in out.configs])  # fmt: skip
    assert len(out.plots) == 4
    assert written["host_check"] == {"cpu": {"cold": check.to_dict()}}


def test_validate_refuses_another_models_profile_and_cleans_up(tmp_path):
    from earlyexit.checkpoint import save
    from earlyexit.validation import validate

    ckpt = save(_model(), tmp_path / "m.pt", {"dataset": "fashion-mnist"})
    other = synthetic_profile(10, num_samples=50)
    other.extra["model_digest"] = "0" * 64  # made from other weights
    out = tmp_path / "v" / "run"
    kw = dict(configs=1, samples=2, accuracy_samples=2, out_dir=out, niceness=None)
    with pytest.raises(ValueError, match="model_digest differs"):
        validate(ckpt, other, "portend-aws", **kw)
    assert not (tmp_path / "v").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="6 blocks"):
        validate(ckpt, synthetic_profile(6), "portend-aws", force=True, **kw)
    # forced: a warning, then a failure half-way (an unknown exporter) removes what was written
    with (
        pytest.warns(UserWarning, match="other weights"),
        pytest.raises(ValueError, match="unknown ONNX exporter"),
    ):
        validate(ckpt, other, "portend-aws", force=True, exporter="nope", **kw)
    assert not (tmp_path / "v").exists()
    for bad in ({"samples": 0}, {"accuracy_samples": 1, "samples": 2}, {"configs": 10**6},
                {"passes": 0}, {"passes": 21}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            validate(ckpt, other, "portend-aws", **{**kw, **bad})
    with pytest.raises(TypeError, match="configs must be an integer"):
        validate(ckpt, other, "portend-aws", **{**kw, "configs": 2.5})


def test_profile_notes_name_each_device_profiled_unlike_the_deployment():
    import warnings

    from earlyexit.validation.run import _profile_notes

    prof = synthetic_profile(4)
    topo = resolve_topology("portend-aws")
    devices = sorted({t.device for t in topo.tiers})
    first = prof.devices[devices[0]]
    first.meta.update(engine="onnxruntime", gap_s=0.02)
    first.hop_s = 1e-4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notes = _profile_notes(prof, topo, gap_s=0.02)
    # the first device matches the deployment; every other one misses all three
    assert not any(repr(devices[0]) in n for n in notes)
    for dev in devices[1:]:
        mine = [n for n in notes if n.startswith(f"device {dev!r}")]
        assert len(mine) == 3
        assert "engine 'torch'" in mine[0] and "0 ms apart" in mine[1] and "no hop_s" in mine[2]
    # a profile timed further apart than the latency pass waits is not flagged; closer is
    first.meta.update(gap_s=0.05)
    assert not any(repr(devices[0]) in n for n in _profile_notes(prof, topo, gap_s=0.02))
    first.meta.update(gap_s=0.01)
    assert any(f"{devices[0]!r} timed its partitions 10 ms apart" in n
               for n in _profile_notes(prof, topo, gap_s=0.0))  # fmt: skip
    assert [str(w.message) for w in caught] == [n for n in notes if "engine" in n]
