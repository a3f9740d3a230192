"""The import directions of docs/architecture (ARCHITECTURE.md): checked on the source, statically.

Every ``import`` of the package counts, at module level or inside a function,
since a function-level import is still a dependency. ``TYPE_CHECKING`` blocks
are skipped.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "earlyexit"
# leaves: modules and packages that must not import the rest of earlyexit
LEAVES = {"formats", "_lazy", "_checks", "_signatures"}
TORCH = ("torch", "torchvision", "torchaudio", "lightning", "timm", "torchmetrics", "onnx")


def _unit(module: str) -> str:
    """The package (or top-level module) of ``earlyexit.X...``: ``X``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, at_module_level)`` for every import in ``path``, outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "earlyexit":  # from earlyexit import backbones: the subpackage
                out += [(f"earlyexit.{a.name}", id(node) in top) for a in node.names]
            else:
                out.append((node.module, id(node) in top))
    return out


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _graph() -> dict[str, dict[str, list[str]]]:
    """unit -> {imported unit: [modules that import it]}."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, path in _modules().items():
        src = _unit(name)
        for module, _ in _imports(path):
            if module.startswith("earlyexit.") and _unit(module) != src:
                graph[src][_unit(module)].append(name)
    return graph


def _cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, {})):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_no_import_cycle_between_packages():
    graph = _graph()
    cycle = _cycle(graph)
    if cycle:
        where = [f"{a} -> {b} in {sorted(set(graph[a][b]))}" for a, b in itertools.pairwise(cycle)]
        pytest.fail("import cycle between packages:\n  " + "\n  ".join(where))


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_nothing_of_ours(leaf):
    assert not {k: v for k, v in _graph()[leaf].items() if k != leaf}


def test_runtime_needs_no_model_surgery():
    """The runtime runs a bundle: it never imports surgery, training, profiling or export."""
    forbidden = {"surgery", "training", "profiling", "export", "backbones"}
    assert not forbidden & set(_graph()["runtime"])


@pytest.mark.parametrize("unit", ["planner", "runtime", "formats"])
def test_torch_free_packages_do_not_import_torch_at_module_level(unit):
    """planner, runtime and formats load without torch (a function may import it on its own path)."""
    bad = [
        (name, module)
        for name, path in _modules().items()
        if _unit(name) == unit
        for module, top in _imports(path)
        if top and module.split(".")[0] in TORCH
    ]
    assert not bad


def test_the_checker_sees_a_cycle():
    """The cycle finder itself: a planted cycle is found, a DAG is not."""
    assert _cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}}) is None


@pytest.mark.parametrize("unit", ["profiling", "export", "data", "checkpoint", "surgery", "backbones"])
def test_lightning_training_sits_on_top(unit):
    """training (the LightningModule, its callbacks, the train CLI) uses the rest; nothing below uses it."""
    assert "training" not in _graph()[unit], dict(_graph()[unit]).get("training")
