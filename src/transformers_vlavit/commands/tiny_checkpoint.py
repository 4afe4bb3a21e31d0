"""`vlavit tiny-checkpoint DIR`: write a tiny random but complete Video-LaVIT checkpoint."""

from __future__ import annotations

import argparse

from .inputs import CommandInputError, check_output_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tiny-checkpoint` sub-command."""
    parser = subparsers.add_parser(
        "tiny-checkpoint",
        help="write a tiny random Video-LaVIT checkpoint (model, processor, tokenizer, detokenizers)",
        description=(
            "Write a tiny random but complete checkpoint: the causal LM with both tokenizers, the processor "
            "with a locally trained tokenizer and chat template, and the tiny detokenizers under "
            "DIR/detokenizer. "
            "Load it with trust_remote_code=True."
        ),
    )
    parser.add_argument("directory", metavar="DIR", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    parser.add_argument(
        "--no-detokenizers", action="store_true", help="leave out the diffusers detokenizer pipelines"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into DIR even when it is not empty"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the checkpoint and report where it went; a non-empty DIR is refused unless ``--overwrite``."""
    folder = check_output_folder(args.directory)
    if folder.is_dir() and any(folder.iterdir()) and not args.overwrite:
        raise CommandInputError(
            f"{folder}: the folder is not empty; pass --overwrite to write the checkpoint into it anyway"
        )

    from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

    path = write_tiny_checkpoint(args.directory, seed=args.seed, with_detokenizers=not args.no_detokenizers)
    print(f"tiny Video-LaVIT checkpoint written to {path}")
    return 0
