"""``vlavit convert --original DIR --out DIR``: released Video-LaVIT-v1 weights -> one Hugging Face folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DTYPES = ("bfloat16", "float16", "float32")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` sub-command."""
    parser = subparsers.add_parser(
        "convert",
        help="convert the released Video-LaVIT-v1 checkpoint into a Hugging Face folder",
        description=(
            "Convert a downloaded rain1011/Video-LaVIT-v1 folder: the causal LM with both tokenizers and the "
            "processor in OUT, the understanding (SFT) model in OUT/understanding, the keyframe and video "
            "detokenizer pipelines in OUT/detokenizer/{keyframe,video}. Safetensors, sharded above "
            "--max-shard-size. "
            "Needs sentencepiece; peak memory is about the language model in --dtype (~17 GB in bfloat16)."
        ),
    )
    parser.add_argument("--original", required=True, type=Path, help="the released checkpoint folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must be empty or missing)")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="bfloat16", help="weight dtype (default: bfloat16)"
    )
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default: 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert, or report why the input cannot be converted (exit code 2)."""
    import torch

    from transformers_vlavit.conversion.convert import (
        CheckpointMismatchError,
        IncompleteCheckpointError,
        OutputFolderNotEmptyError,
        convert_video_lavit,
    )

    try:
        out = convert_video_lavit(
            args.original,
            args.out,
            dtype=getattr(torch, args.dtype),
            max_shard_size=args.max_shard_size,
            progress=args.progress,
            overwrite=args.overwrite,
        )
    except (IncompleteCheckpointError, OutputFolderNotEmptyError, CheckpointMismatchError) as error:
        print(f"vlavit convert: {error}", file=sys.stderr)
        return 2
    print(f"converted Video-LaVIT checkpoint written to {out}")
    return 0
