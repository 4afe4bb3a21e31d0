"""Benchmark of `decompose_video(skip_unused_frames=...)`: decoding every source frame against skipping the
unreferenced frames the 6 fps resampling drops, on a synthetic 720p H.264 clip with B-frames.

The clip is `write_synthetic_video` at 1280x720, 30 fps, libx264 `veryfast` with 3 B-frames (B-pyramid:
some B-frames are references and must still be decoded). Both settings run alternately in this process,
`--repeat` times each, and their results are checked to be identical; the medians and their ratio are
printed, with the number of source frames each decoded. `--decoder-threads 1` shows the same without the
source decoder's frame threads.

Usage: `python benchmarks/bench_skip_unused_frames.py [--seconds 10] [--repeat 3] [--decoder-threads 0]`
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_decompose import machine_description

from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.video_decomposition import VideoDecomposition, decompose_video

SETTINGS = {"full decode": {"skip_unused_frames": False}, "skip unused frames": {"skip_unused_frames": True}}


def same_result(a: VideoDecomposition, b: VideoDecomposition) -> bool:
    """Motion, block grids, frame types, clip starts and keyframe pixels all equal."""
    return (
        torch.equal(a.motion_vectors, b.motion_vectors)
        and torch.equal(a.block_motion, b.block_motion)
        and a.frame_types == b.frame_types
        and a.keyframe_indices == b.keyframe_indices
        and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.keyframes, b.keyframes))
    )


def main() -> None:
    """Generate the clip, time both settings alternately and print medians, ratio and frames decoded."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the 720p clip")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per setting (median reported)")
    parser.add_argument(
        "--decoder-threads", type=int, default=0, help="source decoder threads (0: FFmpeg's choice)"
    )
    args = parser.parse_args()

    print(f"machine: {machine_description()}")
    with tempfile.TemporaryDirectory() as temporary:
        path = Path(temporary) / "h264_720p_b_frames.mp4"
        begin = time.perf_counter()
        write_synthetic_video(
            path,
            width=1280,
            height=720,
            duration=args.seconds,
            fps=30.0,
            codec_options={"preset": "veryfast", "bf": "3"},
        )
        print(
            f"input: {args.seconds:g} s of 1280x720 H.264 at 30 fps, 3 B-frames (generated in "
            f"{time.perf_counter() - begin:.1f} s); decoder_threads={args.decoder_threads}"
        )
        runs = {label: [] for label in SETTINGS}
        results = {}
        for _ in range(args.repeat):
            for label, settings in SETTINGS.items():
                begin = time.perf_counter()
                results[label] = decompose_video(path, decoder_threads=args.decoder_threads, **settings)
                runs[label].append(time.perf_counter() - begin)
    for label, times in runs.items():
        result = results[label]
        listed = ", ".join(f"{seconds:.2f}" for seconds in times)
        print(
            f"{label:20} median {statistics.median(times):6.2f} s  (runs {listed}); decoded "
            f"{result.decoded_source_frames} source frames -> {result.num_frames} MPEG-4 frames"
        )
    full, skipped = (statistics.median(runs[label]) for label in SETTINGS)
    identical = same_result(results["full decode"], results["skip unused frames"])
    print(f"speed-up (full / skip): {full / skipped:.2f}x; results identical: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
