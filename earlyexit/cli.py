"""The ``earlyexit`` command. Thin: each subcommand parses and calls the Python API.

Every area of the package registers its own subcommands through a ``register``
function in its ``_cli`` module, so that this file stays a dispatcher.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

# modules with a ``register(subparsers)`` function, in help order
_COMMAND_MODULES = [
    "earlyexit.surgery._cli",
    "earlyexit.training._cli",
    "earlyexit.profiling._cli",
    "earlyexit.planner._cli",
    "earlyexit.export._cli",
    "earlyexit.runtime._cli",
    "earlyexit._demo",
]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="earlyexit",
        description="Early-exit model surgery, profiling, planning and deployment.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that area has no commands yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``earlyexit`` command line; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `earlyexit train ...` is a LightningCLI; it owns its own argument parsing.
    if argv and argv[0] == "train":
        from earlyexit.training.cli import train_main

        return train_main(argv[1:])
    if argv[:2] == ["profile", "merge"]:
        argv = ["profile-merge", *argv[2:]]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"earlyexit {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
