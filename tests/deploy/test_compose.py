"""``earlyexit deploy compose``: the same serve command lines as the Kubernetes manifests, on one host."""

from __future__ import annotations

import pytest
import yaml

from earlyexit.cli import main

pytestmark = pytest.mark.slow  # the session's bundle is an ONNX export (about 20 s)


def test_compose_runs_the_manifests_commands_in_chain_order(demo_files, tmp_path):
    args = ["--bundle", str(demo_files["bundle"]), "--topology", str(demo_files["topology"]),
            "--profile", str(demo_files["profile"])]  # fmt: skip
    assert main(["deploy", "compose", *args, "-o", str(tmp_path / "c")]) == 0
    assert main(["deploy", "k8s", *args, "--results", "tcp://host.docker.internal:5558",
                 "-o", str(tmp_path / "k")]) == 0  # fmt: skip
    spec = yaml.safe_load((tmp_path / "c" / "compose.yaml").read_text())
    services = spec["services"]
    assert list(services) == ["earlyexit-edge", "earlyexit-base-station", "earlyexit-cloud"]
    for name, service in services.items():
        dep = yaml.safe_load((tmp_path / "k" / f"{name}.deployment.yaml").read_text())
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert service["command"] == container["command"]  # the test of k8s runs these
        assert service["volumes"] == ["./bundle:/bundle:ro"]
    # the last tier starts first; only the first tier's input is published, on loopback
    assert services["earlyexit-edge"]["depends_on"] == {
        "earlyexit-base-station": {"condition": "service_healthy"}
    }
    assert "depends_on" not in services["earlyexit-cloud"]
    assert services["earlyexit-edge"]["ports"] == ["127.0.0.1:5555:5555"]
    assert all("ports" not in s for n, s in services.items() if n != "earlyexit-edge")
    bundle = tmp_path / "c" / "bundle"
    for f in demo_files["bundle"].iterdir():
        assert (bundle / f.name).read_bytes() == f.read_bytes()
