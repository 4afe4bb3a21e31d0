"""Turn LLaVA / Video-ChatGPT instruction data into a `datasets` Arrow dataset of chat messages with media.

Inputs (JSON array or JSON Lines, ``--format auto`` tells them apart per row)
    * LLaVA: ``{"id", "image": "coco/1.jpg" | [...], "video": "clip.mp4" | [...],
      "conversations": [{"from": "human" | "gpt" | "system", "value": "<image>\\nWhat is ..."}, ...]}``
    * Video-ChatGPT (VideoInstruct-100K): ``{"video_id": "v_abc" (or "video"), "q": "...", "a": "..."}``;
      the file is ``<media-root>/<video_id>`` with the first of ``--video-extensions`` that exists.
Media paths are relative to ``--media-root`` (default: the input file's folder).

Output (``--out DIR``, ``datasets.load_from_disk(DIR)``), one row per conversation:
    id               string
    messages         list of {"role": "system" | "user" | "assistant", "content": string}: the chat format of
                     transformers' ``apply_chat_template`` and TRL's ``SFTTrainer``; each image / video is one
                     ``<image>`` / ``<video>`` placeholder in a user turn, in the order of ``images`` / ``videos``
    images           list[Image]   the images, embedded
    videos           list[string]  absolute video paths
    keyframes        list[Image]   the keyframes of all clips of all videos, in order
    motion_vectors   Array5D [clips of all videos, 2, 24, 20, 36] (LLM-path scaling, see prepare_video_text.py)
    clips_per_video  list[int32]   how the clips split into videos
    error            string        None when the row succeeded, else why it did not (missing file, placeholder
                                   count that does not match the media, undecodable video)

LLaVA's convention is kept: a row with media but no placeholder gets one ``<image>\\n`` / ``<video>\\n`` per
item prepended to its first user turn. Sharding, resuming and throughput reporting work as in
``prepare_video_text.py`` (``--num-shards``, rerun the same command to resume), and so does ``--engine ray``
(one Ray task per conversation, Parquet shards in ``--out``).

Example::

    python datasets/prepare_instructions.py --input llava_v1_5_mix665k.json --media-root data/images \\
        --out data/llava_sft --num-proc 8 --num-shards 64
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, Image, List, Value

# The scripts of this folder are run directly (``python datasets/...``), which puts this folder on sys.path.
from prepare_video_text import (
    DecompositionOptions,
    PreparationError,
    add_preparation_arguments,
    already_prepared,
    check_plan,
    clip_features,
    decompose_path,
    decomposition_options,
    finalize,
    report_failures,
    run_sharded_map,
    run_with_ray,
)

from transformers_vlavit.tokenizer_training import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
DEFAULT_VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov")


class InstructionRowError(ValueError):
    """One conversation cannot be used (its message ends up in the ``error`` column)."""


def as_list(value) -> list:
    """``None`` -> [], a single item -> [item], a list -> the list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def detect_format(row: dict) -> str:
    """``"llava"`` for rows with ``conversations``, ``"video-chatgpt"`` for rows with ``q``/``a``."""
    if row.get("conversations"):
        return "llava"
    if row.get("q") is not None and row.get("a") is not None:
        return "video-chatgpt"
    raise InstructionRowError("row has neither 'conversations' (LLaVA) nor 'q'/'a' (Video-ChatGPT)")


def llava_messages(row: dict) -> list[dict]:
    """LLaVA ``conversations`` -> chat ``messages`` with transformers role names."""
    messages = []
    for turn in row["conversations"]:
        speaker = str(turn.get("from", "")).lower()
        if speaker not in ROLES:
            raise InstructionRowError(f"unknown speaker {turn.get('from')!r}; expected one of {sorted(ROLES)}")
        messages.append({"role": ROLES[speaker], "content": str(turn.get("value", ""))})
    return messages


def add_missing_placeholders(messages: list[dict], placeholder: str, count: int) -> list[dict]:
    """Prepend ``count`` placeholders to the first user turn when the conversation has none (LLaVA's rule).

    Raises:
        InstructionRowError: the conversation has placeholders, but not ``count`` of them.
    """
    found = sum(message["content"].count(placeholder) for message in messages if message["role"] == "user")
    outside = sum(message["content"].count(placeholder) for message in messages if message["role"] != "user")
    if outside:
        raise InstructionRowError(f"{placeholder} appears outside user turns; media belong to user turns")
    if found == count:
        return messages
    if found or not count:
        raise InstructionRowError(f"{found} {placeholder} placeholders for {count} media files")
    first_user = next((index for index, message in enumerate(messages) if message["role"] == "user"), None)
    if first_user is None:
        raise InstructionRowError("the conversation has no user turn to attach its media to")
    messages = [dict(message) for message in messages]
    messages[first_user]["content"] = f"{placeholder}\n" * count + messages[first_user]["content"]
    return messages


def resolve_media(name: str, media_root: Path) -> Path:
    """Absolute path of a media file given relative to ``media_root`` (or absolute)."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else media_root / path


def find_video(video_id: str, media_root: Path, extensions: tuple[str, ...]) -> Path:
    """The file of a Video-ChatGPT ``video_id``: itself when it has an extension that exists, else id + extension."""
    direct = resolve_media(video_id, media_root)
    if direct.is_file():
        return direct
    for extension in extensions:
        candidate = direct.with_name(f"{direct.name}.{extension}")
        if candidate.is_file():
            return candidate
    raise InstructionRowError(f"no video file for {video_id!r} in {media_root} (tried {', '.join(extensions)})")


def conversation(row: dict, row_format: str, media_root: Path, extensions: tuple[str, ...]) -> tuple[list, list, list]:
    """``(messages, image paths, video paths)`` of one input row, placeholders checked."""
    if row_format == "auto":
        row_format = detect_format(row)
    if row_format == "video-chatgpt":
        video_id = row.get("video_id") or row.get("video")
        if not video_id:
            raise InstructionRowError("Video-ChatGPT row without 'video_id'")
        messages = [
            {"role": "user", "content": f"{VIDEO_PLACEHOLDER}\n{row['q']}"},
            {"role": "assistant", "content": str(row["a"])},
        ]
        return messages, [], [find_video(str(video_id), media_root, extensions)]
    messages = llava_messages(row)
    images = [resolve_media(str(name), media_root) for name in as_list(row.get("image"))]
    videos = [resolve_media(str(name), media_root) for name in as_list(row.get("video"))]
    messages = add_missing_placeholders(messages, IMAGE_PLACEHOLDER, len(images))
    messages = add_missing_placeholders(messages, VIDEO_PLACEHOLDER, len(videos))
    if not any(message["role"] == "assistant" for message in messages):
        raise InstructionRowError("the conversation has no assistant turn to learn from")
    return messages, images, videos


def output_features(options: DecompositionOptions) -> Features:
    """Features of the prepared instruction dataset."""
    clips = clip_features(options)
    return Features(
        {
            "id": Value("string"),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "images": List(Image()),
            "videos": List(Value("string")),
            "keyframes": clips["keyframes"],
            "motion_vectors": clips["motion_vectors"],
            "clips_per_video": List(Value("int32")),
            "error": Value("string"),
        }
    )


def prepare_row(
    record: dict, *, row_format: str, media_root: Path, extensions: tuple[str, ...], options: DecompositionOptions
) -> dict:
    """``Dataset.map`` function: one raw conversation (``record["row"]``, JSON) -> the output columns.

    Failures are kept in the ``error`` column, never raised.
    """
    row = json.loads(record["row"])
    grid = tuple(clip_features(options)["motion_vectors"].shape[1:])
    output = {
        "id": str(row.get("id") or row.get("video_id") or record["index"]),
        "messages": [],
        "images": [],
        "videos": [],
        "keyframes": [],
        "motion_vectors": np.zeros((0, *grid), dtype=options.motion_dtype),
        "clips_per_video": [],
        "error": None,
    }
    try:
        messages, images, videos = conversation(row, row_format, media_root, extensions)
        output["messages"] = messages
        output["videos"] = [str(path) for path in videos]
        for path in images:
            if not path.is_file():
                raise InstructionRowError(f"image file {path} does not exist")
        output["images"] = [{"path": str(path), "bytes": path.read_bytes()} for path in images]
        motions = []
        for path in videos:
            clips = decompose_path(str(path), options)
            if clips["error"] is not None:
                raise InstructionRowError(f"video {path}: {clips['error']}")
            output["keyframes"].extend(clips["keyframes"])
            output["clips_per_video"].append(clips["num_clips"])
            motions.append(clips["motion_vectors"])
        if motions:
            output["motion_vectors"] = np.concatenate(motions)
    except (InstructionRowError, KeyError, TypeError) as error:
        output.update(images=[], keyframes=[], clips_per_video=[], error=f"{type(error).__name__}: {error}")
        output["motion_vectors"] = np.zeros((0, *grid), dtype=options.motion_dtype)
    return output


def load_rows(path: Path) -> Dataset:
    """Read a JSON array or JSON Lines file into a dataset of ``row`` (JSON text) and ``index`` per conversation.

    Rows are kept as JSON text because LLaVA-style files mix schemas (``image`` as a string in one row, a list
    in the next, no media at all in text-only rows) that Arrow cannot type column by column.
    """
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(records, dict):
        records = [records]
    if not records or not all(isinstance(record, dict) for record in records):
        raise PreparationError(f"{path} must hold a JSON array of objects or one JSON object per line")
    return Dataset.from_dict({"row": [json.dumps(record) for record in records], "index": list(range(len(records)))})


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of this script."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="LLaVA or Video-ChatGPT JSON / JSONL file")
    parser.add_argument("--format", choices=("auto", "llava", "video-chatgpt"), default="auto")
    parser.add_argument("--media-root", help="folder relative image / video paths start from")
    parser.add_argument("--video-extensions", default=",".join(DEFAULT_VIDEO_EXTENSIONS), help="for Video-ChatGPT ids")
    add_preparation_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the preparation; returns the process exit code."""
    args = build_parser().parse_args(argv)
    input_path = Path(args.input).resolve()
    out_dir = Path(args.out).resolve()
    media_root = Path(args.media_root).resolve() if args.media_root else input_path.parent
    options = decomposition_options(args)
    try:
        if already_prepared(out_dir, args.overwrite):
            return 0
        if not input_path.is_file():
            raise PreparationError(f"input file {input_path} does not exist")
        rows = load_rows(input_path)
        plan = {
            "input": str(input_path),
            "rows": len(rows),
            "num_shards": args.num_shards,
            "format": args.format,
            "media_root": str(media_root),
            "engine": args.engine,
            **asdict(options),
        }
        check_plan(out_dir, plan, args.overwrite)
    except PreparationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    process = partial(
        prepare_row,
        row_format=args.format,
        media_root=media_root,
        extensions=tuple(extension.strip(". ") for extension in args.video_extensions.split(",")),
        options=options,
    )
    if args.engine == "ray":
        return run_with_ray(
            args,
            rows,
            process,
            output_features(options),
            out_dir,
            unit="conversations",
        )
    dataset = run_sharded_map(
        rows,
        process,
        output_features(options),
        out_dir,
        num_shards=args.num_shards,
        num_proc=args.num_proc,
        remove_columns=["row", "index"],
        desc="preparing conversations",
        unit="conversations",
    )
    return report_failures(finalize(dataset, out_dir, args.keep_shards))


if __name__ == "__main__":
    sys.exit(main())
