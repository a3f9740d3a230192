"""The README's promises: two command blocks first, and its Python example runs."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_opens_with_demo_and_test_commands():
    blocks = _blocks()
    assert blocks[0][0] == "bash" and "earlyexit demo" in blocks[0][1]
    assert blocks[1][0] == "bash" and "pytest" in blocks[1][1]
    # .ci/run runs the README's second block itself
    ci = (README.parent / ".ci" / "run").read_text()
    assert "README.md" in ci


def test_readme_python_example_runs(tmp_path):
    code = "\n".join(body for lang, body in _blocks() if lang == "python")
    assert code
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tensor(" in proc.stdout


def test_readme_figures_are_those_of_the_committed_runs():
    """README's figures are rendered from docs/img/*.json by tools/update_figures.py, not typed."""
    sys.path.insert(0, str(README.parent / "tools"))
    try:
        import update_figures
    finally:
        sys.path.pop(0)
    text = README.read_text()
    assert text.count("<!-- figures:") == 2
    assert update_figures.render(text) == text, (
        "README.md's figures differ from docs/img/demo_report.json and "
        "validation_summary.json: run `python tools/update_figures.py`"
    )
