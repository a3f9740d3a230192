"""The ``earlyexit`` command. Thin: each subcommand parses and calls the Python API.

Every area of the package registers its own subcommands through a ``register``
function in its ``_cli`` module, so that this file stays a dispatcher. Only the
module of the command asked for is imported, so that ``serve``, ``plan``,
``pareto`` and ``whatif`` start on the light (edge) install, where PyTorch is
absent; a command that needs what that install leaves out says so in one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["FULL_INSTALL", "build_parser", "main"]

FULL_INSTALL = "pip install 'earlyexit-edge[train]'"
"""How to get the full (training) stack on top of the light install."""

# command -> module with a ``register(subparsers)`` function, in help order
_COMMANDS: dict[str, str] = {
    "backbones": "earlyexit.backbones._cli",
    "blocks": "earlyexit.backbones._cli",
    "evaluate": "earlyexit.training._cli",
    "profile": "earlyexit.profiling._cli",
    "profile-merge": "earlyexit.profiling._cli",
    "plan": "earlyexit.planner._cli",
    "capacity": "earlyexit.planner._cli",
    "pareto": "earlyexit.planner._cli",
    "whatif": "earlyexit.planner._cli",
    "export": "earlyexit.export._cli",
    "serve": "earlyexit.runtime._cli",
    "adapt": "earlyexit.runtime._cli",
    "load": "earlyexit.runtime._load_cli",
    "deploy-k8s": "earlyexit.deploy._cli",
    "deploy-compose": "earlyexit.deploy._cli",
    "deploy-netns": "earlyexit.deploy._cli",
    "validate": "earlyexit.validation",
    "demo": "earlyexit._demo",
}


def _missing(err: ModuleNotFoundError) -> str | None:
    """The third-party module a failed import lacks (None: one of ours is missing)."""
    name = err.name or ""
    return None if not name or name.split(".")[0] == "earlyexit" else name


def _needs(command: str, missing: str) -> str:
    return (
        f"earlyexit {command}: needs {missing!r}, which the light (edge) install leaves out; "
        f"install the full stack: {FULL_INSTALL}"
    )


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """Build the argument parser.

    Args:
        commands: register only the modules of these commands (default: every
            module; a module whose third-party dependencies are missing is listed
            with a placeholder that says what to install).

    Returns:
        The parser.

    Raises:
        ModuleNotFoundError: a module of a command named in ``commands`` lacks a dependency.
    """
    from earlyexit._checks import OneLineParser  # errors as one line, exit code 2

    parser = OneLineParser(
        prog="earlyexit",
        description="Early-exit model surgery, profiling, planning and deployment.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # `earlyexit train` is dispatched in main (a LightningCLI); listed here for --help
    sub.add_parser(
        "train", add_help=False, help="train a multi-exit model (LightningCLI; train --help)"
    )
    only = None if commands is None else set(commands)
    wanted = [m for c, m in _COMMANDS.items() if only is None or c in only]
    for name in dict.fromkeys(wanted):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that area has no commands yet
                continue
            missing = _missing(err)
            if only is not None or missing is None:
                raise
            for command in (c for c, m in _COMMANDS.items() if m == name):
                sub.add_parser(command, help=f"(needs {missing}: {FULL_INSTALL})")
            continue
        module.register(sub)
    return parser


def _exit_on_sigterm() -> dict[int, Any]:
    """SIGTERM/SIGHUP end the command as Ctrl-C does: ``with`` blocks and ``finally`` run, so a
    deployment's workers and link relays are stopped and its temporary folder removed,
    not orphaned (only where the signal still has its default action, in the main thread).

    Returns:
        The handlers replaced, for :func:`main` to put back.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            old[sig] = signal.signal(sig, stop)
    return old


def main(argv: list[str] | None = None) -> int:
    """Run the ``earlyexit`` command line; returns the process exit code."""
    import signal

    replaced = _exit_on_sigterm()
    try:
        return _main(argv)
    finally:
        for sig, handler in replaced.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    try:
        # `earlyexit train ...` is a LightningCLI; it owns its own argument parsing.
        if command == "train":
            from earlyexit.training.cli import train_main

            return train_main(argv[1:])
        if argv[:2] == ["profile", "merge"]:
            argv = ["profile-merge", *argv[2:]]
            command = argv[0]
        if argv[:1] == ["deploy"] and argv[1:2] in (["k8s"], ["compose"], ["netns"]):
            argv = [f"deploy-{argv[1]}", *argv[2:]]  # earlyexit.deploy; other `deploy` forms: runtime
            command = argv[0]
        elif argv[:1] == ["deploy"] and "--netns" in argv:  # `deploy --netns` = `deploy netns`
            argv = ["deploy-netns", *(a for a in argv[1:] if a != "--netns")]
            command = argv[0]
        parser = build_parser([command] if command in _COMMANDS else None)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        from earlyexit._checks import one_line

        try:
            result = args.func(args)
        except (ValueError, TypeError, OSError) as err:  # bad input: one line, code 2
            print(f"earlyexit {args.command}: error: {one_line(err)}", file=sys.stderr)
            return 2
        except RuntimeError as err:  # a failure that is not the input's: one line, code 1
            print(f"earlyexit {args.command}: failed: {one_line(err)}", file=sys.stderr)
            return 1
    except ModuleNotFoundError as err:
        missing = _missing(err)
        if missing is None:
            raise
        print(_needs(str(command), missing), file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
