"""Starting a deployment's pieces (runtime/_launch.py) without starting processes."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from earlyexit.formats import Link, Tier, Topology
from earlyexit.runtime._launch import (
    check_settings,
    fit_topology,
    runner_specs,
    start_client,
    synthetic_size,
)

TOPO = Topology(
    tiers=(Tier("edge", "d", slowdown=4.0), Tier("cloud", "d", slowdown=1.0)),
    links=(Link(20.0, 5.0),),
    source=0,
    destination=1,
)
BOUNDS = {"start_timeout_s": 5.0, "niceness": None}


def test_fit_topology_checks_every_plan_s_tiers():
    assert fit_topology(None, [(0, 5)]) is None  # no topology: nothing to check
    assert fit_topology(TOPO, [(0, 1), (1,)]) is TOPO
    assert fit_topology("pi4-wifi", [(0, 1)]).num_tiers == 2
    with pytest.raises(ValueError, match=r"tiers \[0, 2\] do not fit the topology's 2 tiers"):
        fit_topology(TOPO, [(0, 1), (0, 2)])


def test_runner_specs_name_the_resolved_bundle_or_the_synthetic_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    specs = runner_specs("bundle", None, 2, "int8")
    assert specs == [
        {"kind": "bundle", "path": str(tmp_path.resolve() / "bundle"), "partition": k,
         "precision": "int8"}
        for k in range(2)
    ]  # fmt: skip
    assert runner_specs(None, {"num_partitions": 2, "in_dim": 8}, 2, "fp32") == [
        {"kind": "synthetic", "num_partitions": 2, "in_dim": 8, "partition": k} for k in range(2)
    ]
    assert synthetic_size({}) == (3, (32,))
    assert synthetic_size({"num_partitions": 2, "in_dim": 8}) == (2, (8,))


@pytest.mark.parametrize(
    "settings, message",
    [
        ((0, "fp32", None), "start_timeout_s must be a finite number of seconds > 0"),
        ((True, "fp32", None), "start_timeout_s"),
        ((float("inf"), "fp32", None), "start_timeout_s"),
        ((1.0, "bf16", None), "precision must be fp32, int8 or fp16"),
        ((1.0, "fp32", 20), r"niceness must be None or an integer in \[-20, 19\]"),
        ((1.0, "fp32", 1.5), "niceness"),
    ],
)
def test_settings_are_refused_before_anything_starts(settings, message):
    with pytest.raises(ValueError, match=message):
        check_settings(*settings)
    check_settings(1.0, "fp16", -3)  # valid: no error


def _folders(root: Path) -> list[Path]:
    return sorted(root.glob("earlyexit-test-*"))


@pytest.fixture
def short_tmp(monkeypatch):
    """A short temporary root (Unix socket paths must stay under about 100 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="ee"))
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_client_plays_source_and_destination_and_cleanup_removes_the_folder(short_tmp):
    tmp_path = short_tmp
    st = start_client(TOPO, apply_slowdown=True, log_dir=None, keep_logs=False,
                      prefix="earlyexit-test-", **BOUNDS)  # fmt: skip
    try:
        (folder,) = _folders(tmp_path)
        assert st.log_path == folder
        assert (st.source, st.destination) == (0, 1)
        assert (st.client.source_slowdown, st.client.destination_slowdown) == (4.0, 1.0)
        assert [st.slow(t) for t in (0, 1)] == [4.0, 1.0]
        assert st.client.results_address == f"ipc://{folder.resolve()}/results.sock"
        assert st.bind("worker0") == f"ipc://{folder.resolve()}/worker0.sock"
        assert st.procs == []
    finally:
        st.cleanup()
    assert _folders(tmp_path) == []


def test_without_slowdown_or_topology_every_tier_runs_at_full_speed(tmp_path):
    st = start_client(None, apply_slowdown=True, log_dir=tmp_path / "logs", keep_logs=False,
                      prefix="earlyexit-test-", transport="tcp", **BOUNDS)  # fmt: skip
    try:
        assert (st.source, st.destination, st.slow(0)) == (0, 0, 1.0)
        assert st.client.results_address.startswith("tcp://127.0.0.1:")
    finally:
        st.cleanup()
    assert (tmp_path / "logs").is_dir()  # the caller's folder is kept
    st = start_client(TOPO, apply_slowdown=False, log_dir=tmp_path, keep_logs=False,
                      prefix="earlyexit-test-", **BOUNDS)  # fmt: skip
    try:
        assert (st.client.source_slowdown, st.client.destination_slowdown) == (1.0, 1.0)
    finally:
        st.cleanup()


def test_kept_logs_stay_and_a_client_that_fails_to_start_leaves_no_folder(short_tmp):
    tmp_path = short_tmp
    st = start_client(None, apply_slowdown=False, log_dir=None, keep_logs=True,
                      prefix="earlyexit-test-", **BOUNDS)  # fmt: skip
    st.cleanup()
    (kept,) = _folders(tmp_path)
    shutil.rmtree(kept)
    with pytest.raises(ValueError, match="hwm must be >= 1"):
        start_client(None, apply_slowdown=False, log_dir=None, keep_logs=False,
                     prefix="earlyexit-test-", hwm=0, **BOUNDS)  # fmt: skip
    assert _folders(tmp_path) == []


def test_the_client_counts_the_cpu_its_slowdown_stretches():
    """Client.cpu_s: the thread CPU of encoding inputs at the source's slowdown and of
    decoding results at the destination's; nothing at an end that runs at full speed."""
    from earlyexit.runtime.deployment import deploy

    with deploy(synthetic={"num_partitions": 1}, threshold=0.0, tiers=[1], topology=TOPO,
                emulate_links=False) as d:  # fmt: skip
        assert d.client.cpu_s == {"encode": 0.0, "decode": 0.0}
        x = d.inputs(4)
        for i in range(4):
            d.client.infer(x[i], timeout_s=30.0)
        enc, dec = d.client.cpu_s["encode"], d.client.cpu_s["decode"]
    # the source (slowdown 4) encodes: some CPU, and well under the time it took
    assert 0.0 < enc < 0.5
    assert dec == 0.0  # the destination runs at full speed: nothing stretched
    back = Topology(TOPO.tiers, TOPO.links, source=1, destination=0)
    with deploy(synthetic={"num_partitions": 1}, threshold=0.0, tiers=[1], topology=back,
                emulate_links=False) as d:  # fmt: skip
        x = d.inputs(4)
        for i in range(4):
            d.client.infer(x[i], timeout_s=30.0)
        assert d.client.cpu_s["encode"] == 0.0 and d.client.cpu_s["decode"] > 0.0
