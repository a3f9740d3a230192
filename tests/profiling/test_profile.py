"""The profiler on ResNet-20 and the embedded Fashion-MNIST subset."""

import json

import numpy as np
import pytest
import torch

from earlyexit import MultiExitModel, backbones, decompose, normalized_entropy
from earlyexit.cli import main as cli_main
from earlyexit.formats import Profile
from earlyexit.profiling import merge_profiles, profile
from earlyexit.profiling.exits import ExitOutputs, fit_temperatures
from earlyexit.runtime.wire import encode


def _model(seed: int = 0) -> MultiExitModel:
    torch.manual_seed(seed)
    seq = decompose(
        backbones.create("resnet20", num_classes=10, in_chans=1), input_shape=(1, 28, 28)
    )
    return MultiExitModel(seq).eval()


@pytest.fixture(scope="module")
def data():
    """A few batches of the real profiling split (inputs normalized as in training)."""
    from earlyexit.data import EarlyExitDataModule

    dm = EarlyExitDataModule("fashion-mnist", batch_size=100, augment=False)
    dm.setup()
    batches = []
    for k, (x, y) in enumerate(dm.profile_dataloader()):
        if k == 2:
            break
        batches.append((x, y))
    return batches


@pytest.fixture(scope="module")
def trained(data):
    """ResNet-20 fitted for a few steps, so exits disagree in confidence."""
    model = _model().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for x, y in data:
            opt.zero_grad()
            sum(torch.nn.functional.cross_entropy(o, y) for o in model(x)).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def prof(trained, data):
    return profile(trained, data, "unit", threads=1, reps=5, budget_s=0.05, progress=False)


def test_accuracy_and_exit_rates_match_direct_computation(prof, trained, data):
    # an independent, sample-by-sample count
    correct = np.zeros(10)
    below = np.zeros((len(prof.thresholds), 10))
    total = 0
    with torch.no_grad():
        for x, y in data:
            for j in range(x.shape[0]):
                outs = trained(x[j : j + 1])
                for i, logits in enumerate(outs):
                    correct[i] += int(logits.argmax() == y[j])
                    h = float(normalized_entropy(logits)[0])
                    below[:, i] += [h < t for t in prof.thresholds]
                total += 1
    np.testing.assert_allclose(prof.branch_accuracy, correct / total, atol=1e-9)
    np.testing.assert_allclose(
        prof.exit_rate, below / total, atol=1.5 / total
    )  # one sample at a boundary
    assert prof.samples.entropy.shape == (10, total)
    np.testing.assert_allclose(prof.samples.correct.mean(1), prof.branch_accuracy)
    assert 0 < prof.exit_rate[5].sum() and (prof.exit_rate[5] < 1).any()


def test_exit_rates_monotone_in_threshold(prof):
    assert prof.thresholds[0] == 0.0 and prof.thresholds[-1] == 1.0 and len(prof.thresholds) == 11
    assert (np.diff(prof.exit_rate, axis=0) >= 0).all()
    assert (prof.exit_rate[0] == 0).all()


def test_partition_times_cover_the_upper_triangle(prof):
    # which blocks each [a, b] contains is checked with sleeping blocks in
    # test_timing.py; wall-clock comparisons between partitions belong to benchmarks
    t = prof.devices["unit"].partition_time_s
    upper = np.triu(np.ones_like(t, dtype=bool))
    assert (t[upper] > 0).all() and np.isfinite(t[upper]).all() and np.isnan(t[~upper]).all()


def test_serialized_sizes_are_wire_sizes(prof, trained, data):
    x = data[0][0][:1]
    assert prof.input_bits == 8 * len(encode(x.numpy(), kind="input", ids=[0]))
    with torch.no_grad():
        h = x
        for i, block in enumerate(trained.blocks):
            h = block(h)
            assert prof.output_bits[i] == 8 * len(encode(h.numpy(), kind="features", ids=[0]))
    assert 32 * 10 < prof.result_bits < 32 * 10 + 8 * 200
    dev = prof.devices["unit"]
    assert (dev.serialize_s > 0).all() and (dev.deserialize_s > 0).all()


def test_round_trip_and_corrupt_files(prof, tmp_path):
    path = tmp_path / "p.json"
    prof.save(path)
    back = Profile.load(path)
    np.testing.assert_array_equal(back.exit_rate, prof.exit_rate)
    np.testing.assert_array_equal(
        back.devices["unit"].partition_time_s, prof.devices["unit"].partition_time_s
    )
    np.testing.assert_array_equal(back.samples.correct, prof.samples.correct)
    text = path.read_text()
    (tmp_path / "trunc.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError):
        Profile.load(tmp_path / "trunc.json")
    data = json.loads(text)
    data["exit_rate"] = data["exit_rate"][:-1]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="exit_rate"):
        Profile.load(tmp_path / "bad.json")
    data = json.loads(text)
    data["schema"] = "earlyexit.profile/99"
    (tmp_path / "schema.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema"):
        Profile.load(tmp_path / "schema.json")


def test_merge(prof, trained, data):
    other = profile(trained, data[:1], "other", threads=1, reps=3, budget_s=0.02, progress=False)
    merged = merge_profiles([prof, other])
    assert sorted(merged.devices) == ["other", "unit"]
    np.testing.assert_array_equal(merged.exit_rate, prof.exit_rate)
    with pytest.raises(ValueError, match="more than one"):
        merge_profiles([prof, prof])
    stranger = profile(
        _model(seed=1), data[:1], "x", threads=1, reps=3, budget_s=0.02, progress=False
    )
    with pytest.raises(ValueError, match="weights"):
        merge_profiles([prof, stranger])


def test_calibration_lowers_nll():
    torch.manual_seed(0)
    y = torch.randint(0, 5, (400,))
    logits = torch.randn(400, 5) * 0.5 + 8.0 * torch.nn.functional.one_hot(y, 5)
    flip = torch.rand(400) < 0.3  # overconfident and often wrong
    logits[flip] = logits[flip].roll(1, dims=1)
    (t,) = fit_temperatures(ExitOutputs([logits], y))
    nll = lambda s: float(torch.nn.functional.cross_entropy(logits / s, y))  # noqa: E731
    assert t > 1.5 and nll(t) < nll(1.0)
    assert nll(t) <= min(nll(t * 0.8), nll(t * 1.25)) + 1e-6


def test_calibrated_profile_records_temperatures(trained, data):
    p = profile(
        trained, data[:1], "cal", threads=1, reps=3, budget_s=0.02, calibrate=True, progress=False
    )
    assert (
        p.temperatures.shape == (10,) and (p.temperatures > 0).all() and (p.temperatures != 1).any()
    )


def test_the_cpu_latency_request_is_held_while_timing_and_recorded(trained, data):
    """Recorded where the kernel took it; released once the profile returns."""
    import os
    import struct

    path = "/dev/cpu_dma_latency"
    p = profile(trained, data[:1], "qos", threads=1, reps=3, budget_s=0.02, progress=False,
                cpu_latency_us=7)  # fmt: skip
    held = os.access(path, os.W_OK)
    assert p.devices["qos"].meta["cpu_latency_us"] == (7 if held else None)
    if held:  # released: the effective bound is no longer ours (unless another holder's is lower)
        with open(path, "rb") as fh:
            assert struct.unpack("=i", fh.read(4))[0] != 7
    assert prof_meta_default(trained, data) is None
    with pytest.raises(ValueError, match="cpu_latency_us"):
        profile(trained, data[:1], progress=False, cpu_latency_us=-1)


def prof_meta_default(trained, data):
    p = profile(trained, data[:1], "d", threads=1, reps=3, budget_s=0.02, progress=False)
    return p.devices["d"].meta["cpu_latency_us"]


def test_bad_arguments(trained, data):
    with pytest.raises(ValueError, match="full configuration"):
        profile(trained.select_exits([2, 5]), data, progress=False)
    with pytest.raises(ValueError, match="thresholds"):
        profile(trained, data, thresholds=[0.5, 2.0], progress=False)
    with pytest.raises(ValueError, match="threads"):
        profile(trained, data, threads=0, progress=False)


@pytest.mark.slow
def test_cli_profile_and_merge(tmp_path, trained):
    from earlyexit.checkpoint import save

    ckpt = tmp_path / "m.pt"
    save(trained, ckpt)
    args = [
        "profile",
        "--checkpoint",
        str(ckpt),
        "--device-name",
        "a",
        "--threads",
        "1",
        "--reps",
        "3",
    ]
    assert cli_main([*args, "-o", str(tmp_path / "a.json"), "--plot", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 10_000
    args[4] = "b"
    assert cli_main([*args, "-o", str(tmp_path / "b.json"), "--measure-hops"]) == 0
    out = tmp_path / "all.json"
    assert (
        cli_main(
            ["profile", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(out)]
        )
        == 0
    )
    merged = Profile.load(out)
    assert sorted(merged.devices) == ["a", "b"]
    assert merged.devices["a"].hop_s is None and merged.devices["b"].hop_s > 0  # --measure-hops


@pytest.mark.slow
def test_measure_hops_records_the_runtime_cost(trained, data, tmp_path):
    """profile(measure_hops=True) stores hop_s (and how it was measured), and it survives a
    save; with an idle gap, the idle curve is a real worker's, with its wake-up times."""
    p = profile(trained, data[:1], "hops", threads=1, reps=3, budget_s=0.02, progress=False,
                measure_hops=True, gap_s=0.002, worker_idle_curve=True, idle_slowdown=4.0,
                cpu_affinity="spread", link_idle_curve=True)  # fmt: skip
    dev = p.devices["hops"]
    assert dev.hop_s is not None and 0 < dev.hop_s < 0.05
    assert dev.extra["hop"]["hops"] == [2, 3, 4] and dev.extra["hop"]["hop_s"] == dev.hop_s
    assert dev.extra["hop"]["cpu"]["cpu_affinity"] == "spread"  # hop_cpu_s pinned as deployed
    link = dev.extra["hop"]["link"]  # and what crossing an emulated link adds
    assert dev.link_hop_s == link["link_hop_s"] and link["cpu_affinity"] == "spread"
    curve, measured = dev.idle_curve, dev.extra["idle"]
    assert curve["gap_s"] == [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    assert len(curve["wake_s"]) == 7 and np.all(np.diff(curve["factor"]) >= 0)
    # the factors are the worker's CPU per message over its back-to-back one, as measured
    cpu = np.array(measured["cpu_s"])
    assert curve["factor"] == pytest.approx(np.maximum.accumulate(np.maximum(cpu[1:] / cpu[0], 1)))
    assert dev.extra["idle_curve_in_process"]["gap_s"] == curve["gap_s"]
    assert (measured["slowdown"], measured["cpu_affinity"]) == (4.0, "spread")
    # the worker emulated 4x: its round trip holds its stretched CPU
    assert np.all(np.array(measured["round_trip_s"]) > 4.0 * 0.9 * cpu)
    # the far tier's curve: its idle was the sample's time on an emulated link, the
    # round trips taken net of that time (the propagation there and back)
    linked, how = dev.link_idle_curve, dev.extra["link_idle"]
    assert linked["gap_s"] == curve["gap_s"] and "emulated link" in how["method"]
    # CPU(g) = f(g) CPU(0) + c(g) through the whole network and block 1 alone
    lcpu, small = np.array(how["cpu_s"]), np.array(how["cpu_small_s"])
    f = np.maximum.accumulate(np.maximum((lcpu[1:] - small[1:]) / (lcpu[0] - small[0]), 1))
    assert linked["factor"] == pytest.approx(f)
    cold = np.maximum.accumulate(np.maximum(small[1:] - f * small[0], 0))
    assert linked["cold_s"] == pytest.approx(cold)
    assert np.all(np.array(how["round_trip_s"]) > 4.0 * 0.9 * lcpu)
    assert max(how["round_trip_s"]) < 0.2  # net of the gaps, the longest 0.2 s
    assert (how["slowdown"], how["cpu_affinity"]) == (4.0, "spread")
    # the client's own CPU from the same deployments, against its whole wait (the gap's)
    client = dev.client_curve
    assert len(client["wait_s"]) == 8 and client["wait_s"][-1] > 0.2
    assert all(w > g for w, g in zip(client["wait_s"][1:], curve["gap_s"], strict=True))
    assert np.all(np.diff(client["decode_s"]) >= 0) and client["decode_s"][0] > 0
    p.save(tmp_path / "p.json")
    assert Profile.load(tmp_path / "p.json").devices["hops"].link_idle_curve == linked
    assert Profile.load(tmp_path / "p.json").devices["hops"].client_curve == client
    assert Profile.load(tmp_path / "p.json").devices["hops"].hop_s == dev.hop_s
    with pytest.raises(TypeError, match="measure_hops must be True or False"):
        profile(trained, data[:1], measure_hops="yes", progress=False)
    with pytest.raises(ValueError, match=r"worker_idle_curve needs an idle gap \(gap_s > 0\)"):
        profile(trained, data[:1], worker_idle_curve=True, progress=False)
    with pytest.raises(ValueError, match=r"link_idle_curve needs an idle gap \(gap_s > 0\)"):
        profile(trained, data[:1], link_idle_curve=True, progress=False)
    with pytest.raises(TypeError, match="link_idle_curve must be True or False"):
        profile(trained, data[:1], link_idle_curve=1, gap_s=0.01, progress=False)
    with pytest.raises(ValueError, match="idle_slowdown must be a number > 1, got 1"):
        profile(trained, data[:1], idle_slowdown=1, progress=False)
    with pytest.raises(ValueError, match="cpu_affinity must be None or 'spread'"):
        profile(trained, data[:1], cpu_affinity="all", progress=False)


@pytest.mark.slow
def test_cli_save_calibrated_checkpoint_matches_the_profile(tmp_path, trained):
    """profile --calibrate --save-calibrated: a checkpoint whose digest is the profile's, so
    that export accepts the profile's plans (it refuses them with the uncalibrated one)."""
    import earlyexit
    from earlyexit.checkpoint import save
    from earlyexit.export.bundle import check_plan_matches
    from earlyexit.planner import bind_devices, load_builtin_topology, plan
    from earlyexit.surgery.digest import model_digest

    ckpt, cal, out = tmp_path / "m.pt", tmp_path / "cal.pt", tmp_path / "p.json"
    save(trained, ckpt)
    base = ["profile", "--checkpoint", str(ckpt), "--threads", "1", "--reps", "2", "-o", str(out)]
    assert cli_main([*base, "--save-calibrated", str(cal)]) == 2  # needs --calibrate
    assert not out.exists() and not cal.exists()
    assert cli_main([*base, "--calibrate", "--save-calibrated", str(cal)]) == 0
    prof = Profile.load(out)
    model = earlyexit.load(cal)
    assert torch.allclose(model.temperatures, torch.as_tensor(prof.temperatures, dtype=torch.float32))
    assert model_digest(model) == prof.extra["model_digest"]
    topo = bind_devices(load_builtin_topology("pi4-wifi"), {"reference": next(iter(prof.devices))})
    p = plan(prof, topo, min_accuracy=0.0)
    check_plan_matches(model, p)  # accepted
    with pytest.raises(ValueError, match="temperatures"):
        check_plan_matches(earlyexit.load(ckpt), p)
