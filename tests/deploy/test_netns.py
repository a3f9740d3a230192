"""Each tier in its own network namespace: samples cross veth pairs and a bridge, real kernel paths.

Root only (``ip netns add``); skipped with the reason otherwise, the one
platform condition. Latency is printed next to the loopback deployment's,
never asserted (no wall-clock thresholds).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from earlyexit.cli import main
from earlyexit.deploy.netns import LocalChain, netns_unavailable
from earlyexit.deploy.tiers import plan_workers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(netns_unavailable()), reason=f"{netns_unavailable()}"),
]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _check(got: list[dict], want: dict) -> None:
    assert [r["partition"] for r in got] == want["exit_partition"].tolist()
    assert [r["block"] for r in got] == want["exit_block"].tolist()
    assert [r["prediction"] for r in got] == want["prediction"].tolist()
    assert not any(r["degraded"] for r in got)
    np.testing.assert_allclose(np.array([r["logits"] for r in got]).reshape(len(got), -1),
                               want["logits"], atol=1e-4)  # fmt: skip


def test_tiers_in_network_namespaces_answer_like_predict(demo_files, samples):
    x, want = samples
    before = _namespaces()
    chain = LocalChain(demo_files["bundle"], netns=True)
    with chain:
        made = _namespaces() - before
        assert len(made) == 5  # the hub with its bridge, the source, three tiers
        # the workers really listen on their namespace's address, not on loopback
        assert chain.argv(1)[chain.argv(1).index("--bind") + 1] == "tcp://10.231.0.3:5555"
        # every worker runs in a network namespace of its own, none in this process's
        spaces = {os.readlink(f"/proc/{p.pid}/ns/net") for p in chain.procs}
        assert len(spaces) == 3 and os.readlink("/proc/self/ns/net") not in spaces
        # the source's namespace reaches the cloud tier's worker over the bridge
        reach = f"import socket; socket.create_connection(('{chain.hosts[2]}', 5555), 2)"
        via = subprocess.run(["ip", "netns", "exec", chain.source_ns, sys.executable, "-c", reach],
                             capture_output=True, text=True)  # fmt: skip
        assert via.returncode == 0, via.stderr
        got = chain.run(x)
    assert not made & _namespaces()  # deleted on close
    _check(got, want)
    assert sorted({r["partition"] for r in got}) == [0, 1, 2]
    with LocalChain(demo_files["bundle"], netns=False) as loop:
        loopback = loop.run(x)
    _check(loopback, want)
    ns_ms = np.median([r["latency_s"] for r in got]) * 1e3
    lo_ms = np.median([r["latency_s"] for r in loopback]) * 1e3
    far = [r["latency_s"] for r in got if r["partition"] == 2]
    far_lo = [r["latency_s"] for r in loopback if r["partition"] == 2]
    print(f"\nmedian latency: network namespaces {ns_ms:.2f} ms, loopback {lo_ms:.2f} ms "
          f"(ratio {ns_ms / lo_ms:.2f}); to the third tier {np.median(far) * 1e3:.2f} ms vs "
          f"{np.median(far_lo) * 1e3:.2f} ms")  # fmt: skip


def test_namespaces_are_removed_when_a_worker_fails_to_start(demo_files, tmp_path):
    """A worker that cannot start (its file corrupted): RuntimeError, and nothing is left behind."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(demo_files["bundle"], bundle)
    (bundle / "partition_2.onnx").write_bytes(b"not onnx")
    before = _namespaces()
    chain = LocalChain(bundle, plan_workers(demo_files["bundle"]), netns=True)
    with pytest.raises(RuntimeError, match="did not get READY"):
        chain.start()
    assert _namespaces() == before
    assert chain.procs == [] or all(p.poll() is not None for p in chain.procs)


def test_deploy_netns_command(demo_files, samples, tmp_path, capsys):
    """``earlyexit deploy --netns`` (or ``deploy netns``) runs given inputs and writes their results."""
    import json

    x, want = samples
    np.save(tmp_path / "x.npy", x[:6])
    out = tmp_path / "r.json"
    before = _namespaces()
    assert main(["deploy", "--netns", "--bundle", str(demo_files["bundle"]), "--inputs",
                 str(tmp_path / "x.npy"), "--out", str(out), "--threads", "1", "--timeout", "20"]) == 0  # fmt: skip
    assert _namespaces() == before
    got = json.loads(out.read_text())
    assert [r["partition"] for r in got] == want["exit_partition"][:6].tolist()
    assert "6 samples over network namespaces" in capsys.readouterr().out
