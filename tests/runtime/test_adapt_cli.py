"""``earlyexit adapt``: every flag reaches compare_on_trace; bad values exit 2 with one line."""

from __future__ import annotations

import numpy as np
import pytest

import earlyexit.runtime.adaptive as adaptive
from earlyexit.cli import main


@pytest.fixture
def bundle_and_data(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((3, 4), np.float32), y=np.arange(3))
    return str(b), str(data)


def test_every_flag_reaches_compare_on_trace(monkeypatch, bundle_and_data, tmp_path, capsys):
    seen = {}

    def fake(profile, topology, bundles, x, y, trace, **kw):
        seen.update(
            profile=profile, topology=topology, bundles=bundles, x=x, y=y, trace=trace, **kw
        )
        return {
            "table": [],
            "runs": {"adaptive": {"switches": [], "samples": []}},
            "replan_ms": [],
            "trace": trace.to_dict(),
        }

    monkeypatch.setattr(adaptive, "compare_on_trace", fake)
    b, data = bundle_and_data
    plot = tmp_path / "p.png"
    code = main(["adapt", "--profile", "P.json", "--topology", "pi4-wifi", "--bundle", b, "--bundle", b,
                 "--data", data, "--trace", "step-50-2-50", "--time-scale", "0.5", "--settle", "2.5",
                 "--min-accuracy", "0.9", "--rounds", "3", "--plot", str(plot), "--json"])  # fmt: skip
    assert code == 0
    assert (
        seen["profile"] == "P.json" and seen["topology"] == "pi4-wifi" and seen["bundles"] == [b, b]
    )
    assert seen["x"].shape == (3, 4) and list(seen["y"]) == [0, 1, 2]
    assert seen["trace"].change_times == (5.0, 10.0)  # scaled by --time-scale
    assert seen["settle_s"] == 2.5 and seen["min_accuracy"] == 0.9 and seen["rounds"] == 3
    assert plot.is_file()
    assert capsys.readouterr().out.startswith("{")


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--time-scale", "0"], "--time-scale"),
        (["--settle", "-1"], "--settle"),
        (["--min-accuracy", "2"], "--min-accuracy"),
        (["--rounds", "0"], "--rounds"),
        (["--rounds", "two"], "--rounds"),
        (["--trace", "nope"], "nope"),
        (["--data", "missing.npz"], "--data"),
    ],
)
def test_bad_values_exit_2_with_one_line(bundle_and_data, capsys, extra, flag):
    b, data = bundle_and_data
    argv = ["adapt", "--profile", "P", "--topology", "pi4-wifi", "--bundle", b, "--data", data,
            "--trace", "step-50-2-50", *extra]  # fmt: skip
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses the value
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1


def test_the_table_is_printed_one_line_per_phase(monkeypatch, bundle_and_data, capsys):
    row = {"start": 0.0, "end": 10.0, "bandwidth_mbps": [2.0, 50.0], "adaptive_latency_ms": 12.5,
           "adaptive_accuracy": 0.9, "static_latency_ms": None, "static_accuracy": None}  # fmt: skip

    def fake(*args, **kw):
        runs = {"adaptive": {"switches": [{"t": 1.25}], "samples": []}, "static": {}}
        return {"table": [row], "runs": runs, "replan_ms": [0.5, 2.0]}

    monkeypatch.setattr(adaptive, "compare_on_trace", fake)
    b, data = bundle_and_data
    code = main(["adapt", "--profile", "P", "--topology", "pi4-wifi", "--bundle", b,
                 "--data", data, "--trace", "step-50-2-50"])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 2
    assert out[0].startswith("[0.0, 10.0) s 2-50 Mb/s: adaptive 12.50 ms acc 0.900  static nan ms")
    assert out[1] == "adaptive switches at [1.25] s; re-planning 2.00 ms at most"


def test_a_row_with_speedups_prints_them_and_marks_the_degraded_phase(
    monkeypatch, bundle_and_data, capsys
):
    row = {"start": 10.0, "end": 20.0, "bandwidth_mbps": [2.0, 2.0], "adaptive_latency_ms": 12.0,
           "adaptive_accuracy": 0.9, "oracle_speedup": 2.5, "model_oracle_speedup": 3.0,
           "adaptive_speedup": 2.25, "adaptive_oracle_rounds": [1.01, None, 0.93],
           "degraded": True}  # fmt: skip

    def fake(*args, **kw):
        return {"table": [row], "runs": {"adaptive": {"switches": []}}, "replan_ms": []}

    monkeypatch.setattr(adaptive, "compare_on_trace", fake)
    b, data = bundle_and_data
    assert main(["adapt", "--profile", "P", "--topology", "pi4-wifi", "--bundle", b,
                 "--data", data, "--trace", "step-50-2-50"]) == 0  # fmt: skip
    line = capsys.readouterr().out.splitlines()[0]
    assert line.endswith(
        "oracle/static 2.50x (model 3.00x)  adaptive/static 2.25x"
        "  adaptive/oracle per round 1.01 0.93  [degraded]"
    )
