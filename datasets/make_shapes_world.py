"""Write the synthetic "shapes" world: H.264 videos with ground truth, in the formats of this folder's scripts.

Every video shows one coloured shape (circle, square or triangle; red, green, blue, yellow, magenta or cyan)
moving left, right, up or down, or staying still, on a dark flat or faintly textured background; some videos
have two clips with a change of direction ("... moves left, then moves up"). Some colour x shape combinations
(green triangle, yellow circle, blue square) never appear in the training split.

Output (``--out DIR``):
    videos/<split>/<id>.mp4        H.264 files (4 s for one clip; 10 s for two: 2 s at rest, then two 4 s clips)
    metadata.jsonl                 one row per video: id, split, video, caption, colour, shape, directions,
                                   num_clips, held_out, positions (object centre per frame), qa, and the rest
                                   of its drawing parameters
    <split>_video_text.csv         video,caption: the input of ``datasets/prepare_video_text.py``
    <split>_instructions.json      LLaVA-style conversations (every question of a video, in a random order,
                                   plus a description turn): the input of ``datasets/prepare_instructions.py``
    <split>_qa.jsonl               {id, video, question, answer, type, held_out, num_clips}: evaluation questions
                                   (also a generic ``video-qa`` file)
    <split>_t2v.jsonl              {id, prompt, colour, shape, directions, held_out}: text-to-video prompts
    <split>_i2v.jsonl              {id, image, prompt, colour, shape, directions, held_out}: image-to-video
                                   (``image`` is the first frame of the video's first clip, a PNG under keyframes/)
    world.json                     the settings, counts per split and the held-out combinations

Paths inside the files are relative to DIR. The same ``--seed`` gives the same world. Existing videos are kept
(a rerun after an interruption only writes what is missing); ``--overwrite`` starts again.

Example::

    python datasets/make_shapes_world.py --out data/shapes --num-videos 2000 --size 64 --seed 0 --num-proc 2
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from transformers_vlavit.shapes.world import (
    CAPTION_TEMPLATES,
    SPLITS,
    ShapesVideoSpec,
    ShapesWorldError,
    WorldSettings,
    caption,
    clip_start_time,
    generation_prompt,
    metadata,
    questions,
    render_frames,
    sample_world,
    write_video,
)

logger = logging.getLogger("make_shapes_world")
WORLD_FILE = "world.json"
DESCRIBE_QUESTION = "Describe the video."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the world (created)")
    parser.add_argument("--num-videos", type=int, default=2000, help="videos over all splits")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (square, multiple of 16)")
    parser.add_argument("--fps", type=int, default=24, help="frame rate of the files")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything drawn")
    parser.add_argument("--num-proc", type=int, default=1, help="processes writing videos")
    parser.add_argument("--two-clip-fraction", type=float, default=0.2, help="share of two-clip videos")
    parser.add_argument("--validation-fraction", type=float, default=0.05, help="share of validation videos")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of test videos")
    parser.add_argument("--texture-probability", type=float, default=0.5, help="share of textured backgrounds")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing world in --out first")
    return parser.parse_args(argv)


def _write_one(task: tuple[ShapesVideoSpec, str]) -> str:
    """Write one video unless it exists (worker of the process pool); returns its path."""
    spec, path = task
    if not Path(path).is_file():
        write_video(spec, path)
    return path


def video_path(spec: ShapesVideoSpec) -> str:
    """Path of a video relative to the world folder."""
    return f"videos/{spec.split}/{spec.video_id}.mp4"


def keyframe_path(spec: ShapesVideoSpec) -> str:
    """Path (relative to the world folder) of the PNG of the first frame of the video's first clip."""
    return f"keyframes/{spec.split}/{spec.video_id}.png"


def conversation(spec: ShapesVideoSpec, rng: np.random.Generator) -> dict:
    """A LLaVA-style row: every question of the video in a random order, then a description turn."""
    pairs = questions(spec)
    order = rng.permutation(len(pairs))
    turns = []
    for position, index in enumerate(order):
        pair = pairs[index]
        prefix = "<video>\n" if position == 0 else ""
        turns += [{"from": "human", "value": prefix + pair["question"]}, {"from": "gpt", "value": pair["answer"]}]
    turns += [
        {"from": "human", "value": DESCRIBE_QUESTION},
        {"from": "gpt", "value": caption(spec, template=0)},
    ]
    return {"id": spec.video_id, "video": video_path(spec), "conversations": turns}


def write_keyframe(spec: ShapesVideoSpec, out: Path) -> None:
    """Save the first frame of the first clip as PNG (the image of an image-to-video item)."""
    path = out / keyframe_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = render_frames(spec)
    Image.fromarray(frames[int(round(clip_start_time(spec.num_clips, 0) * spec.fps))]).save(path)


def write_tables(specs: list[ShapesVideoSpec], out: Path, seed: int) -> dict[str, int]:
    """Write metadata.jsonl and the per-split files; returns the number of videos per split."""
    rng = np.random.default_rng(seed + 1)
    by_split = {split: [spec for spec in specs if spec.split == split] for split in SPLITS}
    with (out / "metadata.jsonl").open("w", encoding="utf-8") as handle:
        for spec in specs:
            handle.write(json.dumps(metadata(spec, video_path(spec))) + "\n")
    for split, chosen in by_split.items():
        with (out / f"{split}_video_text.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["video", "caption"])
            for spec in chosen:
                writer.writerow([video_path(spec), caption(spec)])
        (out / f"{split}_instructions.json").write_text(
            json.dumps([conversation(spec, rng) for spec in chosen], indent=1), encoding="utf-8"
        )
        with (out / f"{split}_qa.jsonl").open("w", encoding="utf-8") as handle:
            for spec in chosen:
                for pair in questions(spec):
                    row = {"id": spec.video_id, "video": video_path(spec), **pair}
                    row.update(held_out=spec.held_out, num_clips=spec.num_clips)
                    handle.write(json.dumps(row) + "\n")
        common = {"colour": None, "shape": None, "directions": None, "held_out": None}
        with (out / f"{split}_t2v.jsonl").open("w", encoding="utf-8") as t2v, (
            out / f"{split}_i2v.jsonl"
        ).open("w", encoding="utf-8") as i2v:
            for spec in chosen:
                truth = dict(common, colour=spec.colour, shape=spec.shape, directions=list(spec.directions))
                truth["held_out"] = spec.held_out
                prompt = generation_prompt(spec.colour, spec.shape, spec.directions)
                t2v.write(json.dumps({"id": spec.video_id, "prompt": prompt, **truth}) + "\n")
                i2v.write(
                    json.dumps({"id": spec.video_id, "image": keyframe_path(spec), "prompt": prompt, **truth})
                    + "\n"
                )
    return {split: len(chosen) for split, chosen in by_split.items()}


def make_world(args: argparse.Namespace) -> dict:
    """Write the whole world described by ``args``; returns the content of ``world.json``."""
    out = Path(args.out)
    settings = WorldSettings(
        num_videos=args.num_videos,
        size=args.size,
        fps=args.fps,
        seed=args.seed,
        two_clip_fraction=args.two_clip_fraction,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        texture_probability=args.texture_probability,
    )
    if out.exists() and args.overwrite:
        shutil.rmtree(out)
    summary_path = out / WORLD_FILE
    if summary_path.is_file():
        previous = json.loads(summary_path.read_text())
        if previous["settings"] != _settings_dict(settings):
            raise ShapesWorldError(
                f"{out} holds a world made with other settings ({previous['settings']}); "
                "pass --overwrite or another --out"
            )
    specs = sample_world(settings)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(spec, str(out / video_path(spec))) for spec in specs]
    started = time.perf_counter()
    if args.num_proc > 1:
        # "spawn": the workers import NumPy and PyAV afresh instead of inheriting the parent's threads
        with multiprocessing.get_context("spawn").Pool(args.num_proc) as pool:
            for _ in tqdm(pool.imap_unordered(_write_one, tasks, chunksize=8), total=len(tasks), desc="videos"):
                pass
    else:
        for task in tqdm(tasks, desc="videos"):
            _write_one(task)
    for spec in specs:
        if spec.split != "train":
            write_keyframe(spec, out)
    counts = write_tables(specs, out, args.seed)
    elapsed = time.perf_counter() - started
    summary = {
        "settings": _settings_dict(settings),
        "videos_per_split": counts,
        "two_clip_videos": sum(spec.num_clips == 2 for spec in specs),
        "held_out_videos": {split: sum(s.held_out for s in specs if s.split == split) for split in SPLITS},
        "caption_templates": list(CAPTION_TEMPLATES),
        "seconds": round(elapsed, 1),
    }
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def _settings_dict(settings: WorldSettings) -> dict:
    """JSON form of the settings (held-out pairs as lists)."""
    values = dict(vars(settings))
    values["held_out"] = [list(pair) for pair in settings.held_out]
    return values


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 on bad settings)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        summary = make_world(args)
    except ShapesWorldError as error:
        logger.error("make_shapes_world: %s", error)
        return 2
    logger.info(
        "wrote %d videos (%s) to %s in %.1f s",
        sum(summary["videos_per_split"].values()),
        ", ".join(f"{split} {count}" for split, count in summary["videos_per_split"].items()),
        args.out,
        summary["seconds"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
