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
    with pytest.raises(TypeError, match=f"^{where}.*: expected an? [a-z]+ at the top level, got list$"):
        read("[1, 2]")
