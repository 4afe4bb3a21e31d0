"""``vlavit demo --out DIR``: make a short synthetic video with PyAV and decompose it (``make demo``).

The video (moving shapes over a panning texture, ``sample.mp4``) is generated locally, so the demo
needs no downloaded media; the outputs are those of ``vlavit decompose``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .decompose import add_decomposition_arguments, decompose_to_folder, print_summary
from .inputs import check_output_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="generate a synthetic sample video and decompose it into keyframes and motion",
        description=__doc__,
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--width", type=int, default=480, help="sample video width (default 480)")
    parser.add_argument("--height", type=int, default=270, help="sample video height (default 270)")
    parser.add_argument("--duration", type=float, default=16.0, help="sample length in seconds (default 16)")
    parser.add_argument("--source-fps", type=float, default=30.0, help="sample frame rate (default 30)")
    parser.add_argument("--codec", default="libx264", help="sample video codec (default libx264)")
    parser.add_argument("--audio", action="store_true", help="add an audio track to the sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample's background texture")
    add_decomposition_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write ``sample.mp4`` into ``--out`` and decompose it there."""
    from ..synthetic_video import write_synthetic_video

    check_output_folder(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    sample = args.out / "sample.mp4"
    write_synthetic_video(
        sample,
        width=args.width,
        height=args.height,
        duration=args.duration,
        fps=args.source_fps,
        codec=args.codec,
        audio=args.audio,
        seed=args.seed,
    )
    summary = decompose_to_folder(sample, args.out, args)
    print_summary(summary, args.out)
    return 0
