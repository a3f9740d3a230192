"""Optional node labels on a topology's tiers (used as a Kubernetes nodeSelector)."""

from __future__ import annotations

import pytest

from earlyexit.formats import Tier, Topology
from earlyexit.planner import load_builtin_topology

_BASE = {
    "schema": "earlyexit.topology/1",
    "tiers": [{"name": "edge", "device": "pi"}, {"name": "cloud", "device": "gpu"}],
    "links": [{"bandwidth_mbps": 10, "propagation_ms": 20}],
}


def test_labels_round_trip_and_stay_hashable():
    data = {
        **_BASE,
        "tiers": [
            {
                "name": "edge",
                "device": "pi",
                "labels": {"kubernetes.io/arch": "arm64", "zone": "a"},
            },
            _BASE["tiers"][1],
        ],
    }
    topo = Topology.from_dict(data)
    assert dict(topo.tiers[0].labels) == {"kubernetes.io/arch": "arm64", "zone": "a"}
    assert topo.tiers[1].labels == ()
    again = Topology.from_yaml(topo.to_yaml())
    assert again == topo and hash(again.tiers[0]) == hash(topo.tiers[0])
    assert again.to_dict()["tiers"][0]["labels"] == {"kubernetes.io/arch": "arm64", "zone": "a"}
    assert "labels" not in again.to_dict()["tiers"][1]


def test_a_topology_without_labels_keeps_its_digest():
    """Labels are written only when given: every existing topology (and plan digest) is unchanged."""
    topo = load_builtin_topology("portend-aws")
    assert all("labels" not in t for t in topo.to_dict()["tiers"])
    rebuilt = Topology(
        tiers=tuple(Tier(t.name, t.device, t.slowdown) for t in topo.tiers),
        links=topo.links,
        mtu_bytes=topo.mtu_bytes,
        source=topo.source,
        destination=topo.destination,
        name=topo.name,
        description=topo.description,
    )
    assert rebuilt.digest() == topo.digest()
    labelled = Topology.from_dict(
        {**_BASE, "tiers": [{**_BASE["tiers"][0], "labels": {"a": "b"}}, _BASE["tiers"][1]]}
    )
    assert labelled.digest() != Topology.from_dict(_BASE).digest()


@pytest.mark.parametrize(
    ("labels", "err", "match"),
    [
        (["a", "b"], TypeError, "labels: expected a mapping"),
        ({"arch": True}, TypeError, "strings"),
        ({"": "x"}, TypeError, "non-empty"),
    ],
)
def test_bad_labels_are_refused_with_what_is_valid(labels, err, match):
    data = {**_BASE, "tiers": [{**_BASE["tiers"][0], "labels": labels}, _BASE["tiers"][1]]}
    with pytest.raises(err, match=match):
        Topology.from_dict(data)
