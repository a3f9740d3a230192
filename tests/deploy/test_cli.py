"""``earlyexit deploy k8s|compose|netns``: every flag reaches the output; bad values exit 2 with one line.

A hand-made bundle (a manifest and placeholder partition files) is enough for
the generators, which read manifests and file sizes and never load a model,
so these tests are fast and need no torch.
"""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from earlyexit.cli import main
from earlyexit.formats import (
    Estimate,
    Link,
    PartitionPlan,
    Plan,
    Tier,
    Topology,
)
from earlyexit.planner.synthetic import synthetic_profile
from tests.deploy._bundles import make_bundle


@pytest.fixture
def files(tmp_path):
    """A 2-tier bundle (blocks 1-4 on the edge, 5-10 in the cloud), its plan, topology and profile."""
    profile = synthetic_profile(10, devices=("pi", "gpu"))
    topo = Topology(tiers=(Tier("edge", "pi", 4.0, {"node-role.kubernetes.io/edge": ""}),
                           Tier("cloud", "gpu")), links=(Link(10, 20),))  # fmt: skip
    plan = Plan(0.5, (PartitionPlan(1, 4, 0, "edge"), PartitionPlan(5, 10, 1, "cloud")),
                Estimate(0.01, 0.9, (0.6, 0.4), dict.fromkeys(
                    ("compute", "serialize", "transmit", "propagate"), 0.0)),
                profile_digest=profile.digest(), topology_digest=topo.digest())  # fmt: skip
    bundle = tmp_path / "bundle"
    make_bundle(bundle, plan, (3000, 5000))
    plan.save(tmp_path / "plan.json")
    topo.save(tmp_path / "topo.yaml")
    profile.save(tmp_path / "profile.json")
    return {"bundle": str(bundle), "plan": str(tmp_path / "plan.json"),
            "topology": str(tmp_path / "topo.yaml"), "profile": str(tmp_path / "profile.json"),
            "dir": tmp_path}  # fmt: skip


def _objects(out) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml"))}


def test_every_k8s_flag_reaches_the_manifests(files, capsys):
    out = files["dir"] / "m"
    code = main(["deploy", "k8s", "--bundle", files["bundle"], "--plan", files["plan"],
                 "--topology", files["topology"], "--profile", files["profile"], "--rate", "5",
                 "--threads", "2", "--image", "reg.example/rt:2", "--prefix", "shop",
                 "--namespace", "ee-test", "--results", "tcp://app.example:7000",
                 "--files", "configmap", "-o", str(out)])  # fmt: skip
    assert code == 0
    objs = _objects(out)
    assert objs.pop("kustomization.yaml")["namespace"] == "ee-test"  # --namespace
    deps = {o["metadata"]["name"]: o for o in objs.values() if o["kind"] == "Deployment"}
    assert sorted(deps) == ["shop-cloud", "shop-edge"]  # --prefix
    assert not any(o["metadata"]["name"] == "shop-results" for o in objs.values())  # --results
    edge = deps["shop-edge"]["spec"]["template"]["spec"]
    c = edge["containers"][0]
    assert c["image"] == "reg.example/rt:2"  # --image
    argv = c["command"]
    assert argv[argv.index("--threads") + 1] == "2"  # --threads
    assert argv[argv.index("--results") + 1] == "tcp://app.example:7000"
    assert argv[argv.index("--next") + 1] == "tcp://shop-cloud:5555"
    assert edge["nodeSelector"] == {"node-role.kubernetes.io/edge": ""}  # --topology's labels
    ms = float(deps["shop-edge"]["metadata"]["annotations"]["earlyexit/cpu-ms-per-input-sample"])
    assert (
        ms > 0 and c["resources"]["requests"]["cpu"] == f"{max(50, round(5 * ms))}m"
    )  # --rate, --profile
    assert any(v.get("configMap") for v in edge["volumes"])  # --files configmap
    assert "shop-edge: partition 0 (blocks 1-4) on tier 0" in capsys.readouterr().out

    image = files["dir"] / "i"
    assert main(["deploy", "k8s", "--bundle", files["bundle"], "--files", "image",
                 "--bundle-image", "reg.example/b:7", "-o", str(image)]) == 0  # fmt: skip
    deps = [o for o in _objects(image).values() if o["kind"] == "Deployment"]
    assert {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deps} == {
        "reg.example/b:7"
    }
    assert "-t reg.example/b:7" in (image / "Containerfile.bundle").read_text()


def test_configmaps_hold_the_partition_files_exactly(files):
    out = files["dir"] / "m"
    assert main(["deploy", "k8s", "--bundle", files["bundle"], "-o", str(out)]) == 0
    cms = [o for o in _objects(out).values() if o.get("kind") == "ConfigMap"]
    assert len(cms) == 2
    for cm in cms:
        (name,) = cm["binaryData"]
        assert (
            base64.b64decode(cm["binaryData"][name])
            == (files["dir"] / "bundle" / name).read_bytes()
        )
        assert json.loads(cm["data"]["manifest.json"]) == json.loads(
            (files["dir"] / "bundle" / "manifest.json").read_text()
        )


def test_every_compose_flag_reaches_the_file(files):
    out = files["dir"] / "c"
    assert main(["deploy", "compose", "--bundle", files["bundle"], "--plan", files["plan"],
                 "--topology", files["topology"], "--profile", files["profile"], "--rate", "5",
                 "--threads", "3", "--image", "reg.example/rt:2", "--project", "lab",
                 "--results", "tcp://10.0.0.9:7000", "--publish", "6000", "-o", str(out)]) == 0  # fmt: skip
    spec = yaml.safe_load((out / "compose.yaml").read_text())
    assert spec["name"] == "lab"  # --project
    edge = spec["services"]["lab-edge"]
    assert edge["image"] == "reg.example/rt:2" and edge["ports"] == ["127.0.0.1:6000:5555"]
    argv = edge["command"]
    assert argv[argv.index("--threads") + 1] == "3"
    assert argv[argv.index("--results") + 1] == "tcp://10.0.0.9:7000"
    assert 0 < edge["cpus"] < 3  # from --rate and --profile: 5 samples/s of the edge's compute


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["k8s", "--prefix", "Bad_Name"], "--prefix"),
        (["k8s", "--namespace", "-x"], "--namespace"),
        (["k8s", "--files", "tarball"], "--files"),
        (["k8s", "--results", "nowhere"], "--results"),
        (["k8s", "--image", "a b"], "--image"),
        (["k8s", "--rate", "0"], "--rate"),
        (["k8s", "--threads", "0"], "--threads"),
        (["k8s", "--plan", "missing.json"], "--plan"),
        (["k8s", "--rate", "5"], "--rate needs --profile"),
        (["k8s", "--profile", "{profile}"], "needs its topology"),
        (["compose", "--publish", "70000"], "--publish"),
        (["compose", "--project", "UP"], "--project"),
    ],
)
def test_bad_values_exit_2_with_one_line(files, capsys, args, needle):
    args = [a.format(**files) for a in args]
    out = files["dir"] / "out"
    code = _exit(["deploy", args[0], "--bundle", files["bundle"], *args[1:], "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("which", "make", "needle"),
    [
        (
            "--plan",
            lambda d: Plan.load(d["plan"]).__class__.from_dict(
                {**Plan.load(d["plan"]).to_dict(), "threshold": 0.25}
            ),
            "not the bundle's",
        ),
        (
            "--topology",
            lambda d: Topology(
                tiers=(Tier("edge", "pi"), Tier("sky", "gpu")), links=(Link(10, 20),)
            ),
            "not the plan's",
        ),
    ],
)
def test_files_of_another_plan_are_refused(files, capsys, which, make, needle):
    other = make(files)
    path = files["dir"] / ("other.json" if which == "--plan" else "other.yaml")
    other.save(path)
    code = _exit(["deploy", "k8s", "--bundle", files["bundle"], which, str(path), "-o",
                  str(files["dir"] / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def _exit(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as err:
        return int(err.code)


def test_not_a_bundle_exits_2(files, capsys):
    code = _exit(["deploy", "k8s", "--bundle", str(files["dir"]), "-o", str(files["dir"] / "o")])
    assert code == 2 and "not a bundle directory" in capsys.readouterr().err
    for form in (["deploy", "netns"], ["deploy", "--netns"]):  # the two spellings
        code = _exit([*form, "--bundle", files["bundle"], "--samples", "0"])
        assert (
            code == 2
            and "earlyexit deploy netns: error: argument --samples" in capsys.readouterr().err
        )
