"""``earlyexit --help`` (no subcommand) starts without torch, and lists every subcommand.

Building the top-level parser imports every command module's ``register``; none
of them may import torch (or Lightning, torchvision, timm) on the way, since a
package ``__init__`` that imports its torch modules eagerly would load all of
torch (seconds) to print the command list. The first test runs the help with
those packages made unimportable, as on the light install, and checks that every
command has its own help line rather than the "(needs torch: ...)" placeholder
that a module failing to import gets; the second runs it where torch is
installed and checks that torch was not loaded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from earlyexit.cli import _COMMANDS

HEAVY = ("torch", "torchvision", "lightning", "timm")

_BLOCKER = f"""
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
"""

_HELP = f"""
import contextlib, io, json, sys
from earlyexit.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(["--help"])
    except SystemExit as stop:
        code = stop.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps({{"code": code, "help": out.getvalue(), "heavy": heavy}}))
"""


def _run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _listed(help_text: str) -> dict[str, str]:
    """Command -> its help text, from the ``COMMAND`` section of the top-level help."""
    listed: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        m = re.match(r"^ {4}(\S+)(?: +(.*))?$", line)
        if m:
            current = m.group(1)
            listed[current] = m.group(2) or ""
        elif current and re.match(r"^ {6,}\S", line):
            listed[current] = f"{listed[current]} {line.strip()}".strip()
        else:
            current = None
    return listed


def test_help_lists_every_command_with_torch_unimportable():
    got = _run(_BLOCKER + _HELP)
    assert got["code"] == 0
    listed = _listed(got["help"])
    assert set(listed) == {"train", *_COMMANDS}, got["help"]
    placeholders = {c: h for c, h in listed.items() if h.startswith("(needs ")}
    assert not placeholders  # a command module imported torch while registering


def test_help_imports_no_torch_where_torch_is_installed():
    got = _run(_HELP)
    assert got["code"] == 0
    assert got["heavy"] == []
    assert set(_listed(got["help"])) == {"train", *_COMMANDS}


def test_the_listing_parser_sees_placeholders():
    """The parser of the help text itself, on a planted placeholder and a wrapped line."""
    text = (
        "positional arguments:\n  COMMAND\n"
        "    plan          choose threshold\n"
        "                  and tiers\n"
        "    profile-merge\n"
        "                  (needs torch: pip install x)\n\n"
        "options:\n  -h, --help  show this help message and exit\n"
    )
    assert _listed(text) == {
        "plan": "choose threshold and tiers",
        "profile-merge": "(needs torch: pip install x)",
    }
