"""``earlyexit deploy k8s``: manifests valid for the Kubernetes schema, and their containers serve.

Validation uses kubernetes-validate (the Kubernetes OpenAPI schemas, shipped
offline in the package) in strict mode, for the version docs/deployment.md
names. The serving test runs each Deployment's exact command line as a local
process, with its ConfigMap's files as its /bundle and the Service names
mapped to 127.0.0.1 ports, and checks every sample against BundleSession.predict.
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path

import kubernetes_validate  # the dev extra (pyproject.toml); its schemas ship in the package
import numpy as np
import pytest
import yaml

from earlyexit.cli import main
from earlyexit.deploy.k8s import CONFIGMAP_MAX_BYTES, KUBERNETES_VERSION
from earlyexit.deploy.netns import earlyexit_program, start_serve
from earlyexit.deploy.probe import probe
from earlyexit.formats import Profile, Topology

pytestmark = pytest.mark.slow  # the session's bundle is an ONNX export (about 20 s)

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _k8s(demo_files, out: Path, *extra: str) -> dict[str, dict]:
    """Run ``earlyexit deploy k8s`` on the demo's files; ``{file name: object}``."""
    code = main(["deploy", "k8s", "--bundle", str(demo_files["bundle"]), "--plan",
                 str(demo_files["plan"]), "--topology", str(demo_files["topology"]), "--profile",
                 str(demo_files["profile"]), "-o", str(out), *extra])  # fmt: skip
    assert code == 0
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml"))}


def _by_kind(objs: dict[str, dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs.values() if o["kind"] == kind}


@pytest.fixture(scope="module")
def manifests(demo_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("k8s") / "manifests"
    return out, _k8s(demo_files, out)


@pytest.mark.parametrize("files", ["configmap", "image"])
def test_every_manifest_passes_the_kubernetes_schema(demo_files, tmp_path, files):
    objs = _k8s(demo_files, tmp_path / "m", "--files", files)
    kust = objs.pop("kustomization.yaml")
    assert kust["kind"] == "Kustomization" and sorted(kust["resources"]) == sorted(objs)
    kinds = sorted(o["kind"] for o in objs.values())
    want = {"configmap": ["ConfigMap"] * 3, "image": []}[files]
    assert kinds == sorted(want + ["Deployment"] * 3 + ["Service"] * 4)
    for name, obj in objs.items():
        for version in (KUBERNETES_VERSION, kubernetes_validate.latest_version()):
            kubernetes_validate.validate(obj, version, strict=True)
        # what the schema leaves to the API server: names, label values, ConfigMap size
        assert DNS_1035.match(obj["metadata"]["name"]) and len(obj["metadata"]["name"]) <= 63, name
        labels = dict(obj["metadata"].get("labels", {}))
        if obj["kind"] == "Deployment":
            labels |= obj["spec"]["template"]["metadata"]["labels"]
            labels |= obj["spec"]["template"]["spec"].get("nodeSelector", {})
        assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values()), labels
        if obj["kind"] == "ConfigMap":
            size = sum(len(v.encode()) for v in obj.get("data", {}).values())
            size += sum(len(base64.b64decode(v)) for v in obj.get("binaryData", {}).values())
            assert size <= CONFIGMAP_MAX_BYTES


def test_the_validator_refuses_a_broken_manifest(manifests):
    """The check can fail: a misspelled field and a wrong type are schema errors."""
    _, objs = manifests
    dep = next(iter(_by_kind(objs, "Deployment").values()))
    typo = copy.deepcopy(dep)
    typo["spec"]["template"]["spec"]["containers"][0]["comand"] = ["earlyexit"]
    wrong = copy.deepcopy(dep)
    wrong["spec"]["replicas"] = "one"
    for bad in (typo, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_deployments_carry_the_plan_the_topology_and_the_profile(manifests, demo_files):
    """One tier per Deployment: its partition, node labels from the topology, CPU from the profile."""
    _, objs = manifests
    deps = _by_kind(objs, "Deployment")
    services = _by_kind(objs, "Service")
    topo = Topology.load(demo_files["topology"])
    profile = Profile.load(demo_files["profile"])
    from earlyexit.formats import Plan

    plan = Plan.load(demo_files["plan"])
    cpu_s = []
    for k, part in enumerate(plan.partitions):
        dep = deps[f"earlyexit-{part.tier_name}"]
        pod = dep["spec"]["template"]["spec"]
        argv = pod["containers"][0]["command"]
        assert argv[argv.index("--tier") + 1] == str(part.tier)
        assert (
            dep["metadata"]["annotations"]["earlyexit/blocks"]
            == f"{part.first_block}-{part.last_block}"
        )
        assert pod.get("nodeSelector", {}) == dict(topo.tiers[part.tier].labels)
        assert dep["metadata"]["name"] in services  # the Service that names the tier
        assert (
            services[dep["metadata"]["name"]]["spec"]["selector"]
            == dep["spec"]["selector"]["matchLabels"]
        )
        # measured CPU seconds per input sample: compute and (de)serialization on the tier's
        # device, times the tier's slowdown, times the fraction of samples that get there
        dev = profile.devices[topo.tiers[part.tier].device]
        a, b = part.first_block - 1, part.last_block - 1
        t = dev.partition_time_s[a, b] + dev.deserialize_s[a] + dev.result_serialize_s
        t += dev.serialize_s[b + 1] if k < 2 else 0.0
        reach = 1 - sum(plan.estimate.exit_fractions[:k])
        cpu_s.append(t * topo.tiers[part.tier].slowdown * reach)
        assert float(dep["metadata"]["annotations"]["earlyexit/cpu-ms-per-input-sample"]) == (
            pytest.approx(cpu_s[-1] * 1e3, rel=1e-3)
        )
    cores = [
        int(deps[f"earlyexit-{p.tier_name}"]["spec"]["template"]["spec"]["containers"][0]
            ["resources"]["requests"]["cpu"][:-1]) / 1000
        for p in plan.partitions
    ]  # fmt: skip
    # without --rate the busiest tier gets one core (--threads 1) and the others their share
    assert max(cores) == 1.0
    np.testing.assert_allclose(cores, [max(0.05, c / max(cpu_s)) for c in cpu_s], atol=1e-3)


def test_rate_sets_requests_in_cores_and_refuses_what_a_worker_cannot_do(
    demo_files, tmp_path, capsys
):
    slow = _by_kind(_k8s(demo_files, tmp_path / "a", "--rate", "10"), "Deployment")
    fast = _by_kind(_k8s(demo_files, tmp_path / "b", "--rate", "40"), "Deployment")
    for name, dep in slow.items():
        ms = float(dep["metadata"]["annotations"]["earlyexit/cpu-ms-per-input-sample"])
        for rate, deps in ((10, slow), (40, fast)):  # samples/s x ms per sample -> millicores
            got = deps[name]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
            assert got["cpu"].endswith("m") and int(got["cpu"][:-1]) == pytest.approx(
                max(50, rate * ms), abs=1
            ), name
    code = main(["deploy", "k8s", "--bundle", str(demo_files["bundle"]), "--topology",
                 str(demo_files["topology"]), "--profile", str(demo_files["profile"]),
                 "--rate", "1000", "-o", str(tmp_path / "c")])  # fmt: skip
    assert code == 2 and "lower --rate" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_files_too_big_for_a_configmap_go_in_an_image_layer(demo_files, tmp_path):
    from earlyexit.deploy.k8s import write_k8s
    from earlyexit.deploy.tiers import plan_workers

    workers = plan_workers(demo_files["bundle"])
    out = tmp_path / "m"
    # the cloud partition (about 0.9 MB) does not fit a 500 kB limit: auto picks the image
    write_k8s(demo_files["bundle"], workers, out, configmap_limit=500_000,
              image="registry.example/ee/runtime:1.0")  # fmt: skip
    assert not list(out.glob("*.configmap.yaml"))
    deps = [yaml.safe_load(p.read_text()) for p in out.glob("*.deployment.yaml")]
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deps}
    assert len(images) == 1 and images.pop().startswith("registry.example/ee/runtime-bundle:")
    assert all(
        v["name"] != "bundle" for d in deps for v in d["spec"]["template"]["spec"]["volumes"]
    )
    containerfile = (out / "Containerfile.bundle").read_text()
    assert "ARG RUNTIME_IMAGE=registry.example/ee/runtime:1.0" in containerfile
    assert "COPY bundle/ /bundle/" in containerfile
    for w in workers:
        for f in w.files:
            assert (out / "bundle" / f).read_bytes() == (demo_files["bundle"] / f).read_bytes()
    with pytest.raises(ValueError, match="over the ConfigMap limit"):
        write_k8s(demo_files["bundle"], workers, tmp_path / "n", files="configmap",
                  configmap_limit=500_000)  # fmt: skip


def _local(argv: list[str], pod_service: str, ports: dict[tuple[str, int], int], bundle: Path):
    """A container's command with Service hosts on 127.0.0.1 ports and /bundle at ``bundle``."""
    out = []
    for arg in argv:
        m = re.fullmatch(r"tcp://([^:]+):(\d+)", arg)
        if m:
            host = pod_service if m.group(1) == "*" else m.group(1)
            arg = f"tcp://127.0.0.1:{ports[(host, int(m.group(2)))]}"
        out.append(str(bundle) if arg == "/bundle" else arg)
    assert out[0] == "earlyexit"
    return [*earlyexit_program(), *out[1:]]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_container_command_lines_serve_the_bundle(manifests, samples, tmp_path):
    """Each Deployment's exact command, its ConfigMap as its files: same exits as predict."""
    _, objs = manifests
    services = _by_kind(objs, "Service")
    ports = {
        (name, p["port"]): _free_port() for name, s in services.items() for p in s["spec"]["ports"]
    }
    configmaps = _by_kind(objs, "ConfigMap")
    procs = []
    try:
        deps = _by_kind(objs, "Deployment")
        order = sorted(
            deps.values(), key=lambda d: -int(d["metadata"]["annotations"]["earlyexit/partition"])
        )
        for dep in order:  # the last tier first, as kubectl wait would have it
            pod = dep["spec"]["template"]["spec"]
            cm = configmaps[
                next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
            ]
            files = tmp_path / dep["metadata"]["name"]  # the ConfigMap volume, as mounted
            files.mkdir()
            for key, text in cm.get("data", {}).items():
                (files / key).write_text(text)
            for key, b64 in cm.get("binaryData", {}).items():
                (files / key).write_bytes(base64.b64decode(b64))
            service = next(n for n, s in services.items()
                           if s["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"])  # fmt: skip
            argv = _local(pod["containers"][0]["command"], service, ports, files)
            procs.append(start_serve(argv, log=tmp_path / f"{service}.log"))
        first = next(
            d for d in deps.values() if d["metadata"]["annotations"]["earlyexit/partition"] == "0"
        )
        x, want = samples
        got = probe([f"tcp://127.0.0.1:{ports[(first['metadata']['name'], 5555)]}"], x,
                    results_bind=f"tcp://127.0.0.1:{ports[('earlyexit-results', 5558)]}")  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    assert [r["partition"] for r in got] == want["exit_partition"].tolist()
    assert sorted(set(want["exit_partition"].tolist())) == [0, 1, 2]
    assert [r["block"] for r in got] == want["exit_block"].tolist()
    assert [r["prediction"] for r in got] == want["prediction"].tolist()
    assert not any(r["degraded"] for r in got)
    np.testing.assert_allclose(np.array([r["logits"] for r in got]).reshape(len(x), -1),
                               want["logits"], atol=1e-4)  # fmt: skip
