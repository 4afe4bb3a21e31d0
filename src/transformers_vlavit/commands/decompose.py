"""``vlavit decompose VIDEO --out DIR``: keyframes, motion previews and a JSON summary of one video.

Writes ``keyframe_<clip>.png`` (each clip's keyframe), ``motion_<clip>.png`` (the clip's 24 frames of
16 x 16 block motion, colour-coded, in a grid) and ``summary.json`` (clips, keyframe indices, frame
types, shapes and timings).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

# the package's __init__ has imported this module already: no extra start-up cost for the CLI
from ..video_decomposition import (
    DEFAULT_CLIP_FRAMES,
    DEFAULT_FPS,
    DEFAULT_MAX_CLIPS,
    VideoDecodeError,
    decompose_video,
)
from .inputs import CommandInputError, check_output_folder

# Preview layout: frames per row, and the width each frame is drawn at.
PREVIEW_COLUMNS = 6
PREVIEW_FRAME_WIDTH = 192
PREVIEW_GAP = 4
# frame types shown in the printed summary before it is cut with "..."
SUMMARY_FRAME_TYPES = 36


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``decompose`` sub-command."""
    parser = subparsers.add_parser(
        "decompose",
        help="split a video into Video-LaVIT clips (keyframes + MPEG-4 motion vectors) and draw them",
        description=__doc__,
    )
    parser.add_argument("video", help="video file (any container/codec FFmpeg reads) or still image")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    add_decomposition_arguments(parser)
    parser.set_defaults(func=run)


def add_decomposition_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``decompose`` and ``demo``: the settings of :func:`decompose_video`."""
    parser.add_argument(
        "--no-transcode",
        dest="transcode",
        action="store_false",
        help=f"read the input's own motion vectors (only for {DEFAULT_FPS} fps MPEG-4 Part 2 input)",
    )
    parser.add_argument(
        "--fps", type=int, default=DEFAULT_FPS, help="frame rate of the MPEG-4 re-encode (default %(default)s)"
    )
    parser.add_argument(
        "--clip-frames", type=int, default=DEFAULT_CLIP_FRAMES, help="frames per clip (default %(default)s)"
    )
    parser.add_argument(
        "--max-clips", type=int, default=DEFAULT_MAX_CLIPS, help="most clips per video (default %(default)s)"
    )
    parser.add_argument(
        "--encoder-threads",
        type=int,
        default=1,
        help="MPEG-4 encoder threads; above 1 is faster but changes the motion vectors",
    )
    parser.add_argument(
        "--decode-every-frame",
        dest="skip_unused_frames",
        action="store_false",
        help="also decode the source frames the resampling drops (same result, slower; for comparisons)",
    )


def decompose_to_folder(video, out: Path, args: argparse.Namespace) -> dict:
    """Decompose ``video`` and write keyframes, motion previews and ``summary.json`` into ``out``.

    Returns:
        The summary written to ``summary.json``.
    """
    from ..image_processing_video_lavit import VideoLaVITImageProcessor
    from ..motion_visualization import motion_to_rgb

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    decomposition = decompose_video(
        video,
        transcode=args.transcode,
        fps=args.fps,
        clip_frames=args.clip_frames,
        max_clips=args.max_clips,
        encoder_threads=args.encoder_threads,
        skip_unused_frames=args.skip_unused_frames,
    )
    decomposed = time.perf_counter()
    pixel_values = VideoLaVITImageProcessor()(decomposition.keyframes, return_tensors="pt")["pixel_values"]
    processed = time.perf_counter()

    files = []
    for clip, (keyframe, blocks) in enumerate(zip(decomposition.keyframes, decomposition.block_motion)):
        keyframe_path = out / f"keyframe_{clip:02d}.png"
        keyframe.save(keyframe_path)
        # blocks: [2, frames, Hb, Wb]; one colour scale per clip.
        frames = motion_to_rgb(blocks.transpose(0, 1))
        preview_path = out / f"motion_{clip:02d}.png"
        _motion_grid(frames, keyframe.size).save(preview_path)
        files += [keyframe_path.name, preview_path.name]
    written = time.perf_counter()

    height, width = decomposition.frame_size
    summary = {
        "input": str(video),
        "source": _source_stream(video),
        "settings": {
            "transcode": args.transcode,
            "fps": args.fps,
            "clip_frames": args.clip_frames,
            "max_clips": args.max_clips,
            "encoder_threads": args.encoder_threads,
            "skip_unused_frames": args.skip_unused_frames,
        },
        "decoded_source_frames": decomposition.decoded_source_frames,
        "fps": decomposition.fps,
        "frame_size": {"height": height, "width": width},
        "num_frames": decomposition.num_frames,
        "frame_types": decomposition.frame_types,
        "clips": decomposition.num_clips,
        "keyframe_indices": decomposition.keyframe_indices,
        "motion_vectors_shape": list(decomposition.motion_vectors.shape),
        "pixel_values_shape": list(pixel_values.shape),
        "timings_s": {
            "decompose": round(decomposed - started, 4),
            "image_processing": round(processed - decomposed, 4),
            "write_previews": round(written - processed, 4),
            "total": round(written - started, 4),
        },
        "files": files,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _source_stream(video) -> dict:
    """Frame rate, frame count and duration of the input's video stream (as stored, before any re-encoding).

    The count is the container's, or duration x frame rate where the container does not record it.
    """
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        frames = stream.frames or round(duration * fps)
    return {"fps": round(fps, 3), "num_frames": int(frames), "duration_s": round(duration, 3)}


def _motion_grid(frames, keyframe_size: tuple[int, int]):
    """Tile ``[frames, Hb, Wb, 3]`` uint8 motion pictures into one PIL image (keyframe aspect ratio)."""
    from PIL import Image

    width = PREVIEW_FRAME_WIDTH
    height = max(1, round(width * keyframe_size[1] / keyframe_size[0]))
    rows = math.ceil(len(frames) / PREVIEW_COLUMNS)
    grid = Image.new(
        "RGB",
        (PREVIEW_COLUMNS * (width + PREVIEW_GAP) - PREVIEW_GAP, rows * (height + PREVIEW_GAP) - PREVIEW_GAP),
        (64, 64, 64),
    )
    for index, frame in enumerate(frames):
        tile = Image.fromarray(frame).resize((width, height), Image.Resampling.NEAREST)
        row, column = divmod(index, PREVIEW_COLUMNS)
        grid.paste(tile, (column * (width + PREVIEW_GAP), row * (height + PREVIEW_GAP)))
    return grid


def run(args: argparse.Namespace) -> int:
    """Run ``vlavit decompose``; a video or ``--out`` it cannot use raises ``CommandInputError`` (exit code 2)."""
    check_output_folder(args.out)
    try:
        summary = decompose_to_folder(args.video, args.out, args)
    except VideoDecodeError as error:
        raise CommandInputError(str(error)) from error
    print_summary(summary, args.out)
    return 0


def print_summary(summary: dict, out: Path) -> None:
    """One readable paragraph about the result, on standard output (this is a CLI)."""
    size, source = summary["frame_size"], summary["source"]
    handling = "re-encoded to" if summary["settings"]["transcode"] else "read as"
    print(
        f"{summary['input']}: {source['num_frames']} frames at {source['fps']:g} fps ({source['duration_s']:g} s), "
        f"{size['width']}x{size['height']}; {handling} {summary['num_frames']} frames of MPEG-4 at "
        f"{summary['fps']:g} fps, frame types {summary['frame_types'][:SUMMARY_FRAME_TYPES]}"
        f"{'...' if len(summary['frame_types']) > SUMMARY_FRAME_TYPES else ''}\n"
        f"{summary['clips']} clip(s) starting at frames {summary['keyframe_indices']}; "
        f"motion_vectors {summary['motion_vectors_shape']}, pixel_values {summary['pixel_values_shape']}\n"
        f"decomposed in {summary['timings_s']['decompose']:.2f} s; wrote {len(summary['files'])} images and "
        f"summary.json to {out}"
    )
