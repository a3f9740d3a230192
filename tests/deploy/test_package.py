"""What cannot run here, checked statically: the runtime image's build file; and deploy's imports.

No container engine is available in CI, so docker/Containerfile is not
built; these checks hold it to what tests/runtime/test_light_install.py
builds and serves for real (``pip install`` of the base distribution, no
extras), and to the command the manifests run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "earlyexit" / "deploy"
TORCH = {"torch", "torchvision", "torchaudio", "lightning", "timm", "onnx"}


def test_the_runtime_image_installs_the_light_distribution_for_both_architectures():
    text = (REPO / "docker" / "Containerfile").read_text()
    assert "--platform linux/amd64,linux/arm64" in text  # the documented buildx command
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M)
    sources = [s for line in copies for s in line.split()]
    assert sources == ["pyproject.toml", "README.md", "earlyexit/"]
    assert all((REPO / s).exists() for s in sources)
    installs = re.findall(r"pip install[^\n\\]*", text)
    assert installs and all("[" not in line for line in installs)  # no extras: no torch
    assert re.search(r"^USER \d+:\d+$", text, flags=re.M)  # numeric, for runAsNonRoot
    ignore = (REPO / "docker" / "Containerfile.dockerignore").read_text().split()
    assert {"!pyproject.toml", "!README.md", "!earlyexit/"} <= set(ignore)


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.py")), ids=lambda p: p.name)
def test_deploy_imports_neither_torch_nor_the_runtime_internals(path):
    """deploy reads formats and writes files; only the probe uses the runtime's public client."""
    mods = _imports(path)
    assert not {m for m in mods if m.split(".")[0] in TORCH}
    ours = {m for m in mods if m.startswith("earlyexit.") and not m.startswith("earlyexit.deploy")}
    allowed = {"earlyexit.formats", "earlyexit._checks", "earlyexit._lazy", "earlyexit._signatures",
               "earlyexit._cliutil"}  # fmt: skip
    if path.name == "probe.py":
        allowed.add("earlyexit.runtime.client")
    assert ours <= allowed, ours - allowed
