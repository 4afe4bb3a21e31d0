"""The ``vlavit`` command line: one sub-command per module in :mod:`transformers_vlavit.commands`.

Each command module defines ``register(subparsers)`` (adds its parser and sets ``func``) and is
imported only when the CLI starts, so heavy imports stay inside each command's ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
    """Entry point of the ``vlavit`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
