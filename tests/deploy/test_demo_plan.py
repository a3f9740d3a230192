"""The manifests of a plan on the demo's own topology (whatever ``earlyexit demo`` plans for) are valid.

Fast: a hand-made bundle of the plan (the generators read manifests and file
sizes, never a model). The real bundle's manifests and their serving are in
test_k8s.py.
"""

from __future__ import annotations

import kubernetes_validate
import yaml

import earlyexit
from earlyexit.cli import main
from earlyexit.deploy.k8s import KUBERNETES_VERSION
from earlyexit.planner.synthetic import synthetic_profile
from tests.deploy._bundles import make_bundle


def test_manifests_for_the_demo_topology_pass_the_schema(tmp_path):
    from earlyexit._demo import demo_topology

    topo = demo_topology()
    devices = sorted({t.device for t in topo.tiers})
    profile = synthetic_profile(10, devices=devices)
    plan = earlyexit.plan(profile, topo, num_partitions=topo.num_tiers)  # every tier used
    make_bundle(tmp_path / "bundle", plan, [40_000] * topo.num_tiers)
    topo.save(tmp_path / "topo.yaml")
    profile.save(tmp_path / "profile.json")
    out = tmp_path / "manifests"
    assert main(["deploy", "k8s", "--bundle", str(tmp_path / "bundle"), "--topology",
                 str(tmp_path / "topo.yaml"), "--profile", str(tmp_path / "profile.json"),
                 "-o", str(out)]) == 0  # fmt: skip
    objs = [yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml"))]
    kinds = [o["kind"] for o in objs]
    assert kinds.count("Deployment") == topo.num_tiers == kinds.count("ConfigMap")
    for obj in objs:
        if obj["kind"] != "Kustomization":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
