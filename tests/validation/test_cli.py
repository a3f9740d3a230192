"""``earlyexit validate``: every flag reaches validate(), limits agree with the API."""

from __future__ import annotations

import pytest

import earlyexit.validation.run as run
from earlyexit.cli import build_parser, main
from earlyexit.validation import _cli


class _Reached(Exception):
    pass


@pytest.fixture
def files(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"")  # input files are checked to exist while parsing
    (tmp_path / "p.json").write_text("{}")
    return ["--checkpoint", str(tmp_path / "c.pt"), "--profile", str(tmp_path / "p.json"),
            "--topology", "portend-aws"]  # fmt: skip


def _call(monkeypatch, argv):
    seen = {}

    def record(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise _Reached

    monkeypatch.setattr(run, "validate", record)
    with pytest.raises(_Reached):
        main(["validate", *argv])
    return seen


def test_defaults_reach_validate(monkeypatch, files, tmp_path):
    seen = _call(monkeypatch, [*files, "--out", str(tmp_path / "v")])
    kw = seen["kwargs"]
    files = (str(tmp_path / "c.pt"), str(tmp_path / "p.json"), "portend-aws", None)
    assert (kw["checkpoint"], kw["profile"], kw["topology"], kw["data"]) == files
    assert (kw["configs"], kw["samples"], kw["accuracy_samples"], kw["seed"]) == (30, 100, 2000, 0)
    assert kw["emulate_links"] is True and kw["niceness"] == -15 and kw["devices"] == {}
    assert (kw["force"], kw["keep_logs"], kw["split"]) == (False, False, False)
    assert (kw["rounds"], kw["min_per_exit"], kw["realtime"]) == (3, 10, 10)
    assert kw["gap_s"] == 0.0 and kw["passes"] == 1
    assert kw["cpu_latency_us"] is None and kw["cpu_affinity"] is None
    assert kw["progress"] is print


def test_every_flag_reaches_validate(monkeypatch, files, tmp_path):
    argv = [*files, "--data", "fashion-mnist", "--configs", "3", "--samples", "5",
            "--accuracy-samples", "7", "--device", "edge=cpu", "--device", "2=gpu",
            "--out", str(tmp_path / "v"), "--seed", "4", "--no-links", "--nice", "0",
            "--force", "--keep-logs", "--split", "--rounds", "5", "--min-per-exit", "0", "--realtime", "0", "--gap-ms", "20",
            "--cpu-latency-us", "0", "--cpu-affinity", "spread", "--passes", "3", "--json"]  # fmt: skip
    kw = _call(monkeypatch, argv)["kwargs"]
    assert (kw["configs"], kw["samples"], kw["accuracy_samples"], kw["seed"]) == (3, 5, 7, 4)
    assert kw["devices"] == {"edge": "cpu", "2": "gpu"} and kw["out_dir"] == str(tmp_path / "v")
    assert kw["emulate_links"] is False and kw["niceness"] is None
    assert kw["force"] and kw["keep_logs"] and kw["split"] and kw["progress"] is None
    assert (kw["rounds"], kw["min_per_exit"], kw["realtime"]) == (5, 0, None)
    assert kw["gap_s"] == pytest.approx(0.02) and kw["passes"] == 3
    assert kw["cpu_latency_us"] == 0 and kw["cpu_affinity"] == "spread"
    kw = _call(monkeypatch, [*files, "--realtime", "20"])["kwargs"]
    assert kw["realtime"] == 20


@pytest.mark.parametrize("flag", ["--rounds", "--min-per-exit", "--realtime", "--gap-ms", "--passes"])
def test_bad_counts_exit_2_with_one_line(files, capsys, flag):
    with pytest.raises(SystemExit) as exc:
        main(["validate", *files, flag, "-1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]


def test_bad_device_and_sample_counts_are_refused(files, capsys):
    assert main(["validate", *files, "--device", "edge"]) == 2
    assert "TIER=DEVICE" in capsys.readouterr().err
    assert main(["validate", *files, "--samples", "9", "--accuracy-samples", "3"]) == 2
    assert "--accuracy-samples must be >= --samples" in capsys.readouterr().err


def test_limits_agree_with_the_api():
    assert (_cli.MAX_CONFIGS, _cli.MAX_SAMPLES, _cli.MAX_ACCURACY_SAMPLES) == (
        run.MAX_CONFIGS, run.MAX_SAMPLES, run.MAX_ACCURACY_SAMPLES)  # fmt: skip


def test_serve_and_validate_are_commands(tmp_path, files, capsys):
    parser = build_parser()
    args = parser.parse_args(
        ["serve", "--bundle", str(tmp_path), "--tier", "1", "--results", "tcp://127.0.0.1:9"]
    )
    assert args.func.__name__ == "serve_command"
    args = parser.parse_args(["validate", *files, "--configs", "3", "--json"])
    assert args.configs == 3 and args.json and args.func.__name__ == "_validate_command"
    # a bundle directory without a manifest: a clear error, exit code 2
    assert (
        main(["serve", "--bundle", str(tmp_path), "--tier", "0", "--results", "tcp://127.0.0.1:9"])
        == 2
    )
    assert "manifest" in capsys.readouterr().err
