"""MkDocs hook: fill the CLI reference with the live ``earlyexit <cmd> --help`` output.

In a page, the line ``<!-- earlyexit-help -->`` becomes one section per
subcommand of the installed ``earlyexit`` (in its help order, ``train`` before
``evaluate``), each holding that command's ``--help`` output, taken at build
time. The reference cannot drift from the code, and a new subcommand shows up
by itself. ``train`` (a LightningCLI) is rendered collapsed, since it lists
every Trainer option.
"""

from __future__ import annotations

import contextlib
import io
import os

MARKER = "<!-- earlyexit-help -->"


def _parser():
    from earlyexit.cli import build_parser

    return build_parser()


def commands() -> list[str]:
    """Subcommands in help order, as a user types them (``profile merge``)."""
    sub = _parser()._subparsers._group_actions[0]  # argparse keeps the subparsers action here
    names = [a.dest for a in sub._choices_actions]
    out: list[str] = []
    for name in names:
        if name == "evaluate" and "train" not in names:  # listed by `earlyexit --help` now
            out.append("train")
        out.append("profile merge" if name == "profile-merge" else name)
    if "train" not in out:
        out.insert(0, "train")
    return out


def help_text(command: str) -> str:
    """The ``--help`` output of ``earlyexit <command>`` (the top level for ``""``)."""
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width
    if command == "train":
        from earlyexit.training.cli import train_main

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
            train_main(["--help"])
        return buf.getvalue().rstrip()
    parser = _parser()
    if not command:
        return parser.format_help().rstrip()
    name = command.replace(" ", "-")
    choices = parser._subparsers._group_actions[0].choices
    if name not in choices:
        raise ValueError(f"docs: no subcommand {command!r} in `earlyexit --help`")
    return choices[name].format_help().rstrip()


def render() -> str:
    """The Markdown of every command's section."""
    parts = [f'```text title="earlyexit --help"\n{help_text("")}\n```\n']
    for cmd in commands():
        text = help_text(cmd)
        parts.append(f"## `earlyexit {cmd}`\n")
        if cmd == "train":
            body = "\n".join("    " + line if line else "" for line in text.splitlines())
            parts.append(f'??? note "earlyexit train --help"\n\n    ```text\n{body}\n    ```\n')
        else:
            parts.append(f'```text title="earlyexit {cmd} --help"\n{text}\n```\n')
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs signature
    """Replace the marker with the generated sections."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
