"""The ``vlavit`` command line: one sub-command per module in :mod:`transformers_vlavit.commands`.

Each command module defines ``register(subparsers)`` (adds its parser and sets ``func``) and is
imported only when the CLI starts, so heavy imports stay inside each command's ``run``. Each ``run`` checks
its paths and media (:mod:`.commands.inputs`) before it loads a model.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands.inputs import CommandInputError

# name of the module in transformers_vlavit.commands, in the order `vlavit --help` lists them
COMMAND_MODULES = (
    "demo",
    "decompose",
    "tiny_checkpoint",
    "reconstruct",
    "convert",
    "ask",
    "generate",
    "evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``vlavit`` argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="vlavit", description="Video-LaVIT tools for the Hugging Face ecosystem")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"transformers_vlavit.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vlavit`` console script; returns the process exit code.

    Input a command cannot use (:class:`CommandInputError`) is reported in one line on standard error, with
    exit code 2, as argparse reports a wrong option.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandInputError as error:
        print(f"vlavit {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
