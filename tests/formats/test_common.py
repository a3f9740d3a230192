"""Reading a file kind's text: every reader goes through one parser, with the same errors."""

from __future__ import annotations

import pytest

from earlyexit.formats import Manifest, Plan, Profile, Topology
from earlyexit.formats._common import _parse_mapping
from earlyexit.formats.trace import LinkTrace


def test_parse_mapping_reads_json_and_yaml():
    assert _parse_mapping('{"a": [1, 2.5], "b": null}', "x") == {"a": [1, 2.5], "b": None}
    assert _parse_mapping("a: [1, 2.5]\nb: ~\n", "x", "YAML") == {"a": [1, 2.5], "b": None}
    assert _parse_mapping('{"a": 1}', "x", "YAML") == {"a": 1}  # YAML reads JSON too


@pytest.mark.parametrize(
    ("text", "language", "error", "match"),
    [
        ("{", "JSON", ValueError, r"^here: not valid JSON: "),
        ("a: [1", "YAML", ValueError, r"^here: not valid YAML: "),
        ("[1, 2]", "JSON", TypeError, r"^here: expected an object at the top level, got list$"),
        ("- 1\n- 2\n", "YAML", TypeError, r"^here: expected a mapping at the top level, got list$"),
        ("3", "JSON", TypeError, r"got int$"),
        ("", "YAML", TypeError, r"got NoneType$"),
    ],
)
def test_parse_mapping_names_the_place_and_the_problem(text, language, error, match):
    with pytest.raises(error, match=match):
        _parse_mapping(text, "here", language)


def _readers(tmp_path):
    """Each reader of text, as ``(name, read(text))``; file readers write the text first."""

    def from_file(cls, name):
        def read(text):
            path = tmp_path / name
            path.write_text(text)
            return cls.load(path)

        return read

    return {
        "Plan.from_json": (Plan.from_json, "plan", "JSON"),
        "Plan.load": (from_file(Plan, "plan.json"), "plan file", "JSON"),
        "Profile.load": (from_file(Profile, "profile.json"), "profile file", "JSON"),
        "Manifest.load": (from_file(Manifest, "manifest.json"), "manifest file", "JSON"),
        "Topology.from_yaml": (Topology.from_yaml, "topology <string>", "YAML"),
        "Topology.load": (from_file(Topology, "topo.yaml"), "topology '", "YAML"),
        "LinkTrace.load": (from_file(LinkTrace, "trace.yaml"), "trace ", "YAML"),
    }


@pytest.mark.parametrize(
    "reader",
    ["Plan.from_json", "Plan.load", "Profile.load", "Manifest.load", "Topology.from_yaml",
     "Topology.load", "LinkTrace.load"],
)  # fmt: skip
def test_every_reader_refuses_bad_text_and_a_list(reader, tmp_path):
    read, where, language = _readers(tmp_path)[reader]
    bad = "{" if language == "JSON" else "a: [1"
    with pytest.raises(ValueError, match=f"^{where}.*: not valid {language}: "):
        read(bad)
    with pytest.raises(
        TypeError, match=f"^{where}.*: expected an? [a-z]+ at the top level, got list$"
    ):
        read("[1, 2]")


def _good() -> dict[str, dict]:
    """A valid mapping of each file kind."""
    from earlyexit.formats import Estimate, ManifestPartition, PartitionPlan
    from earlyexit.planner.synthetic import synthetic_profile

    bd = {"compute": 0.1, "serialize": 0.0, "transmit": 0.0, "propagate": 0.0}
    plan = Plan(0.4, (PartitionPlan(1, 4, 0, "edge"),), Estimate(0.1, 0.9, (1.0,), bd))
    manifest = Manifest(plan, ("a", "b"), (3, 8, 8), (ManifestPartition(1, {"onnx": "p.onnx"}),))
    return {
        "plan": plan.to_dict(),
        "manifest": manifest.to_dict(),
        "profile": synthetic_profile(4, ("edge", "cloud")).to_dict(),
        "topology": Topology.from_dict(
            {
                "schema": "earlyexit.topology/1",
                "tiers": [{"name": "e", "device": "cpu"}, {"name": "c", "device": "cpu"}],
                "links": [{"bandwidth_mbps": 1, "propagation_ms": 1}],
            }
        ).to_dict(),  # fmt: skip
        "trace": LinkTrace.builtin("wifi-to-4g").to_dict(),
    }


_BUILD = {
    "plan": Plan.from_dict,
    "manifest": Manifest.from_dict,
    "profile": Profile.from_dict,
    "topology": Topology.from_dict,
    "trace": LinkTrace.from_dict,
}


@pytest.mark.parametrize(
    ("kind", "path", "value", "match"),
    [
        ("plan", (), [], r"^plan: expected a mapping, got list$"),
        ("plan", ("partitions",), "x", r"^plan\.partitions: expected a list of \{first_block, last_block, tier, tier_name\}, got str$"),
        ("plan", ("partitions", 0), 3, r"^plan\.partitions\[0\]: expected a mapping, got int$"),
        ("plan", ("constraint",), [1], r"^plan\.constraint: expected a mapping like \{'min_accuracy': 0\.9\}, got list$"),
        ("plan", ("estimate", "breakdown_s"), 1.0, r"^plan\.estimate\.breakdown_s: expected a mapping with keys \['compute', .*\], got float$"),
        ("manifest", ("partitions",), {}, r"^manifest\.partitions: expected a list of partition mappings, got dict$"),
        ("manifest", ("input_shape",), "3x8x8", r"^manifest\.input_shape: expected a list of integers, got str$"),
        ("manifest", ("normalization",), [0.5], r"^manifest\.normalization: expected a mapping like \{'mean'.*, got list$"),
        ("manifest", ("partitions", 0), "p", r"^manifest\.partitions\[0\]: expected a mapping, got str$"),
        ("manifest", ("partitions", 0, "output_shapes"), [1], r"^manifest\.partitions\[0\]\.output_shapes: expected a mapping output name -> shape, got list$"),
        ("profile", ("devices",), [], r"^profile\.devices: expected a mapping of device name -> timings, got list$"),
        ("profile", ("devices", "edge"), 1, r"^profile\.devices\['edge'\]: expected a mapping, got int$"),
        ("profile", ("devices", "edge", "meta"), [1], r"^profile\.devices\['edge'\]\.meta: expected a mapping, got list$"),
        ("topology", ("tiers",), {}, r"^topology\.tiers: expected a list of \{name, device, slowdown\}, got dict$"),
        ("topology", ("links",), "1", r"^topology\.links: expected a list of \{bandwidth_mbps, propagation_ms\}, got str$"),
        ("topology", ("tiers", 0), "e", r"^topology\.tiers\[0\]: expected a mapping with name, device, slowdown, got str$"),
        ("topology", ("tiers", 0, "labels"), ["a"], r"^topology\.tiers\[0\]\.labels: expected a mapping \{key: value\} of strings, got list$"),
        ("topology", ("links", 0), 5, r"^topology\.links\[0\]: expected a mapping with bandwidth_mbps, propagation_ms, got int$"),
        ("trace", (), "x", r"^trace: expected a mapping, got str$"),
        ("trace", ("steps",), {}, r"^trace\.steps: expected a list of \[time_s, bandwidth_mbps, propagation_ms\], got dict$"),
    ],
)  # fmt: skip
def test_a_field_of_the_wrong_kind_is_named_with_what_it_should_be(kind, path, value, match):
    data = _good()[kind]
    _BUILD[kind](data)  # valid as it is
    if path:
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    else:
        data = value
    with pytest.raises(TypeError, match=match):
        _BUILD[kind](data)


@pytest.mark.parametrize("kind", ["topology", "trace"])
def test_name_and_description_are_written_only_when_set(kind):
    """The optional header of a file: absent stays absent (same digest), given round-trips."""
    data = _good()[kind]
    data.pop("name", None)
    data.pop("description", None)
    bare = _BUILD[kind](data)
    assert bare.name == "" and bare.description == ""
    assert list(bare.to_dict())[0] == "schema" and not {"name", "description"} & set(bare.to_dict())
    titled = _BUILD[kind]({**data, "name": "n", "description": "d"})
    out = titled.to_dict()
    assert list(out)[:3] == ["schema", "name", "description"]
    assert (out["name"], out["description"]) == ("n", "d")
    assert _BUILD[kind](out) == titled
    only = _BUILD[kind]({**data, "description": "d"}).to_dict()
    assert "name" not in only and only["description"] == "d"
