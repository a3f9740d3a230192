"""The open-loop load generator: its schedule, its admission at the first tier, its accounting.

Behaviour, not wall time: the schedule is checked as numbers (a Kolmogorov-
Smirnov statistic against the exponential law), and the end-to-end runs check
counts (every sample answered, dropped or unanswered, once), never a latency.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from earlyexit.cli import main
from earlyexit.runtime.load import check_local, open_loop, poisson_schedule, run_load


def _ks_exponential(x: np.ndarray, rate: float) -> float:
    """The KS statistic of ``x`` against Exp(rate)."""
    x = np.sort(x)
    n = len(x)
    cdf = 1.0 - np.exp(-rate * x)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - cdf), np.max(cdf - (i - 1) / n)))


# ----------------------------------------------------------------- the schedule


@pytest.mark.parametrize("rate", [5.0, 120.0, 3000.0])
def test_schedule_interarrivals_are_exponential(rate: float) -> None:
    t = poisson_schedule(rate, 4000.0 / rate, seed=3)
    gaps = np.diff(np.concatenate([[0.0], t]))
    d = _ks_exponential(gaps, rate)
    assert d < 1.63 / math.sqrt(len(gaps))  # KS at the 1% level
    # the same test rejects a schedule of equal gaps with the same mean
    assert _ks_exponential(np.full(len(gaps), 1.0 / rate), rate) > 1.63 / math.sqrt(len(gaps))
    # and a Poisson count: about rate x duration arrivals
    assert abs(len(t) - 4000) < 5 * math.sqrt(4000)


def test_schedule_is_bounded_ordered_and_seeded() -> None:
    t = poisson_schedule(50.0, 3.0, seed=1)
    assert np.all(np.diff(t) > 0) and t[0] > 0 and t[-1] < 3.0
    assert np.array_equal(t, poisson_schedule(50.0, 3.0, seed=1))
    assert not np.array_equal(t[:10], poisson_schedule(50.0, 3.0, seed=2)[:10])
    assert len(poisson_schedule(1000.0, 10.0, max_samples=7)) == 7


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"rate": 0.0, "duration_s": 1.0}, "rate"),
        ({"rate": math.nan, "duration_s": 1.0}, "rate"),
        ({"rate": True, "duration_s": 1.0}, "rate"),
        ({"rate": 1.0, "duration_s": -1.0}, "duration_s"),
        ({"rate": 1.0, "duration_s": 1e9}, "duration_s"),
        ({"rate": 1.0, "duration_s": 1.0, "max_samples": 0}, "max_samples"),
        ({"rate": 1.0, "duration_s": 1.0, "max_samples": 2.5}, "max_samples"),
    ],
)
def test_schedule_refuses_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        poisson_schedule(**kwargs)


# ----------------------------------------------------------------- addresses and arguments


@pytest.mark.parametrize("addr", ["ipc:///tmp/x.sock", "tcp://127.0.0.1:5555",
                                  "tcp://localhost:9", "tcp://[::1]:9", "tcp://127.0.0.1:*"])  # fmt: skip
def test_local_addresses_pass(addr: str) -> None:
    assert check_local(addr) == addr


@pytest.mark.parametrize("addr", ["tcp://10.0.0.2:5555", "tcp://example.com:80", "tcp://*:5555",
                                  "tcp://0.0.0.0:*", "udp://127.0.0.1:5", "127.0.0.1:5"])  # fmt: skip
def test_other_hosts_are_refused(addr: str) -> None:
    with pytest.raises(ValueError, match="not"):
        check_local(addr)


def test_run_load_refuses_remote_routes_before_connecting() -> None:
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="not on this host"):
        run_load(1.0, 1.0, connect=["tcp://192.168.1.7:5555"], inputs=x)
    with pytest.raises(ValueError, match="not on this host"):
        run_load(1.0, 1.0, connect=["tcp://127.0.0.1:9"], results_bind="tcp://*:5", inputs=x)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"bundle": "b", "synthetic": {"num_partitions": 1}},
     {"synthetic": {"num_partitions": 1}, "connect": ["tcp://127.0.0.1:9"]}],
)  # fmt: skip
def test_run_load_needs_exactly_one_deployment(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="exactly one of bundle"):
        run_load(1.0, 1.0, **kwargs)


# ----------------------------------------------------------------- end to end


@pytest.mark.slow
def test_full_first_tier_drops_every_arrival_beyond_k() -> None:
    """A frozen first tier holds K samples: the K first are sent, every later one dropped."""
    from earlyexit.runtime.deployment import deploy

    with deploy(synthetic={"num_partitions": 2}, threshold=0.5, ack_interval_s=0.0) as d:
        d.client.infer(d.inputs(1)[0])  # connected and warm
        d.pause(0)
        try:
            res = open_loop(d.client, d.inputs(8), 200.0, 0.2, queue_capacity=3, seed=4,
                            drain_timeout_s=0.3)  # fmt: skip
        finally:
            d.resume(0)
        n = len(poisson_schedule(200.0, 0.2, seed=4))
        assert (res.offered, res.answered, res.unanswered, res.dropped) == (n, 0, 3, n - 3)
        assert res.max_in_system == 3 and res.loss_ratio == 1.0
        late = d.client.gather(timeout_s=30.0)  # resumed: the three held samples finish
        assert len(late) == 3 and all(not r.degraded for r in late)


@pytest.mark.slow
def test_every_sample_is_answered_or_dropped_once() -> None:
    import gc

    from earlyexit.runtime.deployment import deploy

    seen: list[int] = []  # collections look past the frozen heap during the run only
    probe = lambda phase, info: seen.append(gc.get_freeze_count()) if phase == "start" else None  # noqa: E731
    with deploy(synthetic={"num_partitions": 3, "repeat": 20}, threshold=0.5,
                ack_interval_s=0.0) as d:  # fmt: skip
        gc.callbacks.append(probe)
        try:
            res = open_loop(d.client, d.inputs(50), 400.0, 1.5, queue_capacity=4, seed=0)
        finally:
            gc.callbacks.remove(probe)
        stats = dict(d.client.stats)
    assert gc.get_freeze_count() == 0  # the caller's heap as it was
    assert any(n > 0 for n in seen)  # frozen while the stream ran
    assert res.offered == len(poisson_schedule(400.0, 1.5, seed=0))
    assert res.offered == res.answered + res.dropped + res.unanswered
    assert res.unanswered == 0 and res.failed == 0
    assert stats["submitted"] == res.answered == stats["delivered"]  # one result per id
    assert stats["duplicates"] == 0
    assert sum(res.exit_counts.values()) == res.answered == len(res.latencies)
    assert set(res.exit_counts) <= {0, 1, 2}
    assert res.max_in_system <= 4 and int(res.ahead.max()) <= 3
    assert res.loss_ratio == pytest.approx(res.dropped / res.offered)
    assert (
        res.latency_s["p50"] <= res.latency_s["p95"] <= res.latency_s["p99"] <= res.latency_s["max"]
    )


# ----------------------------------------------------------------- the command


def test_every_flag_reaches_run_load(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    import earlyexit.runtime.load as load_mod

    seen: dict = {}

    def record(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["args"], seen["kwargs"] = args, kwargs
        return load_mod.LoadResult(1.0, 1.0, 2, 1, 1, 0, 0, 0, 0, 1.0,
                                   dict.fromkeys(("mean", "p50", "p95", "p99", "max"), 0.001),
                                   1.0, 0.0, {0: 1}, {"p50": 0.0, "p99": 0.0, "max": 0.0}, 1)  # fmt: skip

    monkeypatch.setattr(load_mod, "run_load", record)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.ones((3, 4), np.float32))
    code = main(["load", "--connect", "ipc:///tmp/a", "--connect", "tcp://127.0.0.1:7",
                 "--rate", "12.5", "--duration", "3", "--results-bind", "tcp://127.0.0.1:8",
                 "--control-bind", "ipc:///tmp/c", "--data", str(data), "--max-samples", "40",
                 "--queue-capacity", "6", "--seed", "9", "--drain-timeout", "4",
                 "--threshold", "0.25", "--topology", "pi4-wifi", "--json",
                 "--policy", '{"policy": "probabilities", "p": [0.5, 0.5]}',
                 "--cpu-latency-us", "0", "--cpu-affinity", "spread"])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["exit_counts"] == {"0": 1}
    assert seen["args"] == (12.5, 3.0, None)
    kw = seen["kwargs"]
    assert kw["connect"] == ["ipc:///tmp/a", "tcp://127.0.0.1:7"]
    assert (kw["results_bind"], kw["control_bind"]) == ("tcp://127.0.0.1:8", "ipc:///tmp/c")
    assert kw["inputs"].shape == (3, 4)
    assert (kw["max_samples"], kw["queue_capacity"], kw["seed"]) == (40, 6, 9)
    assert (kw["drain_timeout_s"], kw["threshold"], kw["topology"]) == (4.0, 0.25, "pi4-wifi")
    assert json.loads(kw["policy"]) == {"policy": "probabilities", "p": [0.5, 0.5], "seed": None}
    assert kw["cpu_latency_us"] == 0 and kw["cpu_affinity"] == "spread"
    main(["load", "--synthetic", '{"num_partitions": 2}', "--rate", "1", "--duration", "1"])
    assert seen["kwargs"]["synthetic"] == {"num_partitions": 2}
    assert "latency mean" in capsys.readouterr().out
    main(["load", "--bundle", str(tmp_path), "--rate", "1", "--duration", "1"])
    assert seen["args"][2] == str(tmp_path)


@pytest.mark.slow
def test_load_command_runs_a_synthetic_deployment(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["load", "--synthetic", '{"num_partitions": 2}', "--threshold", "0.5",
                 "--rate", "150", "--duration", "1", "--max-samples", "60",
                 "--queue-capacity", "5", "--seed", "2", "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["offered"] == len(poisson_schedule(150.0, 1.0, 60, seed=2)) <= 60
    assert out["offered"] == out["answered"] + out["dropped"] + out["unanswered"]
    assert out["queue_capacity"] == 5 and out["max_in_system"] <= 5
    assert sum(out["exit_counts"].values()) == out["answered"]


@pytest.mark.slow
def test_load_reports_each_workers_policy(capsys: pytest.CaptureFixture[str]) -> None:
    """--policy reaches the workers; every worker's report comes back in the result."""
    code = main(["load", "--synthetic", '{"num_partitions": 2}', "--threshold", "0.5",
                 "--rate", "100", "--duration", "1", "--max-samples", "50", "--json",
                 "--policy", '{"policy": "adaee", "grid": [0.2, 0.8], "seed": 1}'])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policies"]["0"]["policy"] == "adaee"
    assert out["policies"]["0"]["thresholds"] == [0.2, 0.8]
    assert out["policies"]["1"]["policy"] == "threshold"


_L = ["--rate", "5", "--duration", "1"]
BAD = [
    (["--synthetic", "{}", "--rate", "0", "--duration", "1"], "--rate"),
    (["--synthetic", "{}", "--rate", "nan", "--duration", "1"], "--rate"),
    (["--synthetic", "{}", "--rate", "5", "--duration", "-1"], "--duration"),
    (["--synthetic", "{}", "--rate", "5", "--duration", "1e9"], "--duration"),
    (["--synthetic", "{}", *_L, "--max-samples", "0"], "--max-samples"),
    (["--synthetic", "{}", *_L, "--queue-capacity", "0"], "--queue-capacity"),
    (["--synthetic", "[1]", *_L], "--synthetic"),
    (_L, "--bundle"),
    (["--bundle", "nope", *_L], "--bundle"),
    (["--connect", "tcp://10.1.2.3:5555", *_L], "not on this host"),
    (["--connect", "tcp://*:5555", *_L], "--connect"),
    (
        ["--connect", "tcp://127.0.0.1:9", "--results-bind", "tcp://0.0.0.0:*", *_L],
        "--results-bind",
    ),
    (["--connect", "tcp://127.0.0.1:9", *_L], "--data"),
    (["--synthetic", "{}", "--data", "nope.npz", *_L], "--data"),
    (["--synthetic", "{}", "--threshold", "2", *_L], "--threshold"),
    (["--synthetic", "{}", "--policy", '{"policy": "nope"}', *_L], "--policy"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_load_arguments_exit_2_with_one_line(
    argv: list[str], needle: str, tmp_path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["load", *argv])
    except SystemExit as exc:  # refused while parsing
        code = exc.code
    err = capfd.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("earlyexit load: error:"), err
    assert needle in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_plot_load_draws_model_lines_and_measured_points(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from earlyexit.plotting import plot_load

    rows = [{"rate": r, "model": {"latency_s": 0.01 + r * 1e-4, "loss_ratio": r / 1e3},
             "measured": {"latency_s": {"mean": 0.012, "p95": 0.02}, "loss_ratio": r / 2e3},
             "model_measured_service": {"latency_s": 0.011, "loss_ratio": 0.0}}
            for r in (10.0, 20.0, 30.0)]  # fmt: skip
    res = {"rows": rows, "capacity_model": 25.0, "capacity_measured": 28.0,
           "topology": "t", "queue_capacity": 5, "queue_model": "exact"}  # fmt: skip
    fig = plot_load(res, tmp_path / "load.png")
    assert (tmp_path / "load.png").stat().st_size > 0
    lat, loss = fig.axes
    assert len(lat.lines) == 6 and len(loss.lines) == 5  # 3 + 2 knee lines, 3 + 2
    assert list(loss.lines[2].get_ydata()) == [0.005, 0.01, 0.015]  # measured points
