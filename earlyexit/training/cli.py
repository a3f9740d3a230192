"""``earlyexit train``: a LightningCLI over :class:`RecipeModule` and :class:`EarlyExitDataModule`.

Examples::

    earlyexit train --config recipes/resnet20_fashionmnist.yaml --trainer.max_epochs=3
    earlyexit train --config recipes/resnet20_fashionmnist.yaml \\
        --data fashion-mnist:/usr/share/datasets/fashion-mnist --output model.pt --test
    earlyexit train --config recipes/finetune.yaml --model.init_from model.pt --model.plan plan.json

Besides the usual LightningCLI options (``--model.*``, ``--data.*``,
``--trainer.*``, ``--print_config``), ``--data SPEC`` is short for
``--data.spec SPEC``, ``--output PATH`` writes the trained model as an
earlyexit checkpoint, and ``--test`` evaluates it on the test split afterwards.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from jsonargparse import ActionYesNo
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from earlyexit.data import EarlyExitDataModule, parse_data_spec
from earlyexit.training.callbacks import SaveEarlyExitCheckpoint
from earlyexit.training.module import RecipeModule

__all__ = ["EarlyExitCLI", "train_main"]


class EarlyExitCLI(LightningCLI):
    """LightningCLI that links the data's classes and input shape into the model."""

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.add_argument(
            "--output",
            type=str | None,
            default=None,
            help="write the trained model here as an earlyexit checkpoint (.pt)",
        )
        parser.add_argument(
            "--test",
            action=ActionYesNo,
            default=False,
            help="evaluate on the test split after fitting",
        )


def _expand_data_shorthand(argv: list[str]) -> list[str]:
    """Rewrite ``--data SPEC`` / ``--data=SPEC`` as ``--data.spec=SPEC``."""

    def is_spec(value: str) -> bool:
        if value.endswith((".yaml", ".yml", ".json")) or value.lstrip().startswith(("{", "[")):
            return False
        try:
            parse_data_spec(value)
        except (TypeError, ValueError):
            return False
        return True

    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--data" and i + 1 < len(argv) and is_spec(argv[i + 1]):
            out.append(f"--data.spec={argv[i + 1]}")
            i += 2
            continue
        if arg.startswith("--data=") and is_spec(arg[len("--data=") :]):
            out.append("--data.spec=" + arg[len("--data=") :])
        else:
            out.append(arg)
        i += 1
    return out


def train_main(argv: list[str] | None = None) -> int:
    """Run ``earlyexit train`` with ``argv`` (the arguments after ``train``).

    A bad argument (a value Lightning or the recipe refuses, an unreadable
    ``--model.init_from``, a missing data directory) is one line on stderr and
    exit code 2, never a traceback.

    Returns:
        The process exit code (0 on success, 2 for a bad argument; ``--help``
        exits through SystemExit).
    """
    from earlyexit._checks import one_line

    try:
        return _train_main(argv)
    except (
        argparse.ArgumentError,
        MisconfigurationException,
        ValueError,
        TypeError,
        OSError,
    ) as err:
        print(f"earlyexit train: error: {one_line(err)}", file=sys.stderr)
        return 2


def _output_argument(argv: list[str]) -> str | None:
    """The value of ``--output`` on the command line (None if absent)."""
    for i, arg in enumerate(argv):
        if arg == "--output" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--output="):
            return arg[len("--output=") :]
    return None


def _train_main(argv: list[str] | None) -> int:
    from earlyexit._checks import check_output_file

    argv = _expand_data_shorthand(list(sys.argv[1:] if argv is None else argv))
    early = _output_argument(argv)
    if early:  # before Lightning builds anything
        check_output_file(early, "--output")
    # "Seed set to 0" on stderr says nothing the config does not; keep stderr for errors
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # `earlyexit train ...` passes its own arguments; sys.argv also holds them
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run")
        cli = EarlyExitCLI(
            RecipeModule,
            EarlyExitDataModule,
            args=argv,
            run=False,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            trainer_defaults={"max_epochs": 8},  # Lightning's own default is 1000
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "prog": "earlyexit train",
                "description": __doc__.splitlines()[0],
                "exit_on_error": False,  # errors raise; train_main prints one line
            },
        )
    output = cli.config.get("output")
    if output:
        check_output_file(output, "--output")  # also when a config file names it
        cli.trainer.callbacks.append(SaveEarlyExitCheckpoint(Path(output)))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if cli.config.get("test"):
        cli.trainer.test(cli.model, datamodule=cli.datamodule)
    return 0
