"""Accuracy of the shapes-world detectors on a world's own videos (the ground truth they must recover).

Decodes every video of a split with PyAV (the path generated videos take), runs
`transformers_vlavit.shapes.detect_video` on the frames of its clips and prints the share of correct colours,
shapes and directions (all clips of a video must be right), overall and for held-out combinations, with the
machine it ran on.

    python benchmarks/bench_shapes_detectors.py --world data/shapes --split test
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import av
import numpy as np

from transformers_vlavit.machine import describe_machine
from transformers_vlavit.shapes import detect_video
from transformers_vlavit.shapes.world import clip_start_time


def frames_of(path: Path) -> list[np.ndarray]:
    """Every frame of a video as `[H, W, 3]` uint8 RGB."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", required=True, help="folder written by datasets/make_shapes_world.py")
    parser.add_argument("--split", default="test", help="train, validation or test")
    args = parser.parse_args()
    world = Path(args.world)
    rows = [json.loads(line) for line in (world / "metadata.jsonl").read_text().splitlines()]
    rows = [row for row in rows if row["split"] == args.split]
    hits = {group: {"colour": 0, "shape": 0, "direction": 0, "videos": 0} for group in ("all", "held_out")}
    started = time.perf_counter()
    for row in rows:
        frames = frames_of(world / row["video"])
        first = int(round(clip_start_time(row["num_clips"], 0) * row["fps"]))
        found = detect_video(frames[first:], num_clips=row["num_clips"])
        for group in ("all", "held_out") if row["held_out"] else ("all",):
            hits[group]["videos"] += 1
            hits[group]["colour"] += found.colour == row["colour"]
            hits[group]["shape"] += found.shape == row["shape"]
            hits[group]["direction"] += found.directions == row["directions"]
    elapsed = time.perf_counter() - started
    print(f"machine: {describe_machine()}; {platform.system()}, Python {platform.python_version()}")
    for group, counts in hits.items():
        n = counts["videos"]
        if n:
            scores = ", ".join(f"{key} {100 * counts[key] / n:.1f}%" for key in ("colour", "shape", "direction"))
            print(f"{args.split} split, {group}: {n} videos: {scores}")
    print(f"{len(rows)} videos in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
