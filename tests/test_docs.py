"""The documentation site: it builds with ``mkdocs build --strict``, and every example runs.

Conventions for code blocks in ``docs/*.md`` (also in ``docs/contributing-docs.md``):

- ```` ```python ```` blocks run. The blocks of one page share a namespace and
  run in order, in a fresh temporary working directory of their own (one per
  page, with ``recipes/`` and ``checkpoints/`` linked in, so paths read as in
  a checkout), with ``MPLBACKEND=Agg`` and one PyTorch thread.
- ```` ```bash ```` blocks run too, line by line, with ``bash -e`` in that same
  directory and the venv's ``bin`` first on ``PATH`` (so ``earlyexit`` is the
  installed command); a line ending in ``\\`` continues on the next.
- A block right after a line ``<!-- not run: REASON -->`` is not run; the
  reason is required. The comment is invisible on the site, so test
  annotations never show as text above an example.
- ```` ```yaml ```` / ```` ```json ```` blocks with ``title="NAME"`` (a file
  name) are written to that file in the page's directory before the following
  blocks run, so an example can read the configuration shown above it. Other
  ``yaml``/``json`` blocks and ``text`` blocks (outputs) are not run.
- Pages in ``SLOW_PAGES`` (training, profiling, export, deployment, decompose:
  they run Lightning, time partitions, export ONNX files or start processes) are
  marked ``slow``; the others together stay well under a minute.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(
    p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_hooks" not in p.parts
)
SLOW_PAGES = {"training.md", "profiling.md", "export.md", "deployment.md", "decompose.md"}
LANGUAGES = {"python", "bash", "text", "yaml", "json"}
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$",
    re.MULTILINE | re.DOTALL,
)
TITLE = re.compile(r'title="(?P<title>[^"]*)"')
NOT_RUN = "not run:"
SKIP_COMMENT = re.compile(r"<!--\s*not run:(?P<reason>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    line: int
    language: str
    title: str | None
    code: str
    skip: str | None = None  # the reason of a ``<!-- not run: REASON -->`` line above

    @property
    def skip_reason(self) -> str | None:
        return None if self.skip is None else self.skip.strip()

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    """The fenced code blocks of ``docs/<page>``, in order."""
    text = (DOCS / page).read_text()
    out = []
    for m in FENCE.finditer(text):
        info = m.group("info").strip()
        language = info.split()[0] if info else ""
        title = TITLE.search(info)
        indent = len(m.group("indent"))
        code = "\n".join(line[indent:] for line in m.group("body").splitlines())
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP_COMMENT.search(before)
        out.append(
            Block(page, line, language, title and title.group("title"), code,
                  skip and skip.group("reason"))
        )  # fmt: skip
    return out


def _param(page: str) -> pytest.param:
    marks = [pytest.mark.slow] if page in SLOW_PAGES else []
    return pytest.param(page, marks=marks, id=page)


@contextlib.contextmanager
def _sandbox(workdir: Path):
    """Run in ``workdir`` with the docs' environment; restore everything afterwards.

    Examples may register backbones and decomposers; the registries are
    restored too, so that other tests see only the built-ins.
    """
    import torch

    from earlyexit.backbones import _registry

    decompose = importlib.import_module(
        "earlyexit.surgery.decompose"
    )  # the module, not the function
    _registry._ensure_builtins()
    registries = [(r, dict(r)) for r in (_registry._REGISTRY, decompose._DECOMPOSERS)]
    old_cwd, old_env, old_threads = Path.cwd(), dict(os.environ), torch.get_num_threads()
    for name in ("recipes", "checkpoints"):  # relative paths work as in a checkout
        if not (workdir / name).exists():
            (workdir / name).symlink_to(ROOT / name)
    os.chdir(workdir)
    os.environ["MPLBACKEND"] = "Agg"
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
        torch.set_num_threads(old_threads)
        for registry, saved in registries:
            registry.clear()
            registry.update(saved)


def _commands(code: str) -> list[str]:
    return [
        c.strip()
        for c in code.replace("\\\n", " ").splitlines()
        if c.strip() and not c.lstrip().startswith("#")
    ]


def _run_bash(block: Block, workdir: Path) -> None:
    for cmd in _commands(block.code):
        proc = subprocess.run(
            ["bash", "-e", "-c", cmd], cwd=workdir, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            pytest.fail(
                f"{block.where}: `{cmd}` exited with {proc.returncode}\n"
                f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
            )


def test_conventions_are_followed():
    """Every block has a known language, and every skipped block says why."""
    problems = []
    for page in PAGES:
        for b in blocks(page):
            if b.language not in LANGUAGES:
                problems.append(
                    f"{b.where}: language {b.language!r}, expected one of {sorted(LANGUAGES)}"
                )
            if b.skip_reason == "":
                problems.append(f"{b.where}: <!-- not run: ... --> needs a reason")
            if b.title is not None and b.title.startswith(NOT_RUN):
                problems.append(
                    f'{b.where}: title="not run: ..." shows the annotation to readers; '
                    "put <!-- not run: REASON --> on the line above the block instead"
                )
    assert not problems, "\n".join(problems)
    assert sum(b.language == "python" for p in PAGES for b in blocks(p)) >= 10


def _runnable(b: Block) -> bool:
    return b.skip_reason is None and b.language in ("python", "bash")


@pytest.mark.parametrize("page", [_param(p) for p in PAGES if any(map(_runnable, blocks(p)))])
def test_examples_run(page: str, tmp_path: Path):
    """Run the page's python and bash blocks in order, in one namespace and directory."""
    namespace: dict = {"__name__": f"docs_{Path(page).stem}"}
    ran = 0
    with _sandbox(tmp_path):
        for b in blocks(page):
            if b.skip_reason is not None:
                continue
            if b.language in ("yaml", "json"):
                if b.title and re.fullmatch(r"[\w.-]+\.(ya?ml|json)", b.title):
                    (tmp_path / b.title).write_text(b.code + "\n")
                continue
            if not _runnable(b):
                continue
            ran += 1
            if b.language == "bash":
                _run_bash(b, tmp_path)
                continue
            try:
                exec(compile(b.code, b.where, "exec"), namespace)  # noqa: S102 - the docs' own examples
            except Exception as err:
                raise AssertionError(
                    f"{b.where}: the example raised {type(err).__name__}: {err}"
                ) from err
    if ran == 0:
        pytest.skip(f"docs/{page} has no runnable example")


def test_mkdocs_build_strict(tmp_path: Path):
    """``mkdocs build --strict`` succeeds: no broken link, no docstring warning, CLI help renders."""
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: pip install -e '.[dev]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg", "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-6000:]}"
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    for command in ("earlyexit plan", "earlyexit profile", "earlyexit train"):
        assert command in cli
    assert "earlyexit-help" not in cli, "the CLI help marker was not replaced"
    api = (tmp_path / "site" / "reference" / "surgery" / "index.html").read_text()
    assert "MultiExitModel" in api and "list_cut_points" in api
    _check_math_is_served(tmp_path / "site")


def _check_math_is_served(site: Path) -> None:
    """Pages with formulas load MathJax from the site itself (no CDN), after its config."""
    with_math = 0
    for page in site.rglob("*.html"):
        html = page.read_text()
        scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', html)
        assert not [s for s in scripts if "://" in s or s.startswith("//")], (page, scripts)
        if 'class="arithmatex"' not in html:
            continue
        with_math += 1
        local = [s for s in scripts if s.endswith("mathjax/tex-svg.js")]
        assert local, f"{page} has formulas but loads no MathJax"
        config = [s for s in scripts if s.endswith("mathjax-config.js")]
        assert config and scripts.index(config[0]) < scripts.index(local[0])
        served = (page.parent / local[0]).resolve()
        assert served.is_file() and b"MathJax" in served.read_bytes()[:200_000]
    assert with_math >= 1  # docs/concepts.md at least
