"""The shapes world scored by its detectors: ``shapes-qa``, ``shapes-t2v`` and ``shapes-i2v``.

Inputs are the files ``datasets/make_shapes_world.py`` writes (``--annotations`` is the world folder):
``<split>_qa.jsonl``, ``<split>_t2v.jsonl`` and ``<split>_i2v.jsonl`` (paths relative to the folder).

- ``shapes-qa``: the QA run of the other benchmarks (same prompt, batching, judge); an answer is right when it
  equals the one-word ground truth after normalisation (``shapes``), and, more leniently, when the first word
  of its question type's vocabulary it contains is the ground truth ("The object is red." -> red,
  ``shapes_answer_word``).
- ``shapes-t2v`` / ``shapes-i2v``: one video per prompt with as many clips as the ground truth has
  directions (fixed seeds, resumable); :func:`transformers_vlavit.shapes.detect_video` reads back colour,
  shape and one direction per clip from the pixels.

Accuracy is reported per attribute (``colour``, ``shape``, ``direction`` = first clip, ``after`` = second clip,
and ``joint`` = everything of a generated video right), over all items, separately for the colour x shape
combinations seen in training and the held-out ones, and for one-clip and two-clip items.
"""

from __future__ import annotations

from pathlib import Path

from ..shapes import COLOURS, DIRECTIONS, SHAPES, detect_video
from . import annotations as data
from .annotations import EvaluationInputError
from .report import contact_sheet, sample_frames
from .scoring import normalize_answer

# the words an answer of each question type is read from
ATTRIBUTE_VOCABULARY = {"colour": COLOURS, "shape": SHAPES, "direction": DIRECTIONS, "after": DIRECTIONS}
# the world's QA types in the order the metrics list them, then the all-correct flag of a generated video
ATTRIBUTES = ("colour", "shape", "direction", "after", "joint")
# groups of items reported separately: (name, predicate on an outcome)
GROUPS = (
    ("all", lambda outcome: True),
    ("seen", lambda outcome: not outcome["held_out"]),
    ("held_out", lambda outcome: outcome["held_out"]),
    ("one_clip", lambda outcome: outcome["num_clips"] == 1),
    ("two_clip", lambda outcome: outcome["num_clips"] > 1),
)


def answer_word(prediction: str, vocabulary) -> str | None:
    """The vocabulary word that occurs first (as a whole word) in the normalised prediction."""
    words = normalize_answer(prediction).split()
    positions = {word: words.index(word) for word in vocabulary if word in words}
    return min(positions, key=positions.get) if positions else None


def outcome(attribute: str, record: dict, correct: bool) -> dict:
    """One scored attribute of one item, with what the groups select on."""
    clips = record.get("num_clips") or len(record.get("directions") or [None])
    return {
        "attribute": attribute,
        "held_out": bool(record.get("held_out")),
        "num_clips": clips,
        "correct": correct,
    }


def grouped_accuracy(outcomes: list[dict]) -> dict:
    """Outcomes -> ``{group: {attribute: accuracy, "counts": {attribute: n}}}``.

    Groups: ``all``, ``seen`` / ``held_out`` (colour x shape combinations in / kept out of training) and
    ``one_clip`` / ``two_clip``; an attribute without outcomes in a group is left out of it, and so is a group
    without outcomes.
    """
    result = {}
    for group, selects in GROUPS:
        scores, counts = {}, {}
        for attribute in ATTRIBUTES:
            values = [o["correct"] for o in outcomes if o["attribute"] == attribute and selects(o)]
            if values:
                scores[attribute], counts[attribute] = sum(values) / len(values), len(values)
        if counts:
            result[group] = {**scores, "counts": counts}
    return result


def shapes_qa_scores(records: list[dict]) -> dict:
    """Per-attribute QA accuracy: ``shapes`` by normalised exact match (the world's one-word answers), and
    ``shapes_answer_word`` reading the first vocabulary word of the answer's type from the prediction."""
    exact = [outcome(r["type"], r, normalize_answer(r["prediction"]) == r["answer"]) for r in records]
    read = [
        outcome(r["type"], r, answer_word(r["prediction"], ATTRIBUTE_VOCABULARY[r["type"]]) == r["answer"])
        for r in records
    ]
    return {"shapes": grouped_accuracy(exact), "shapes_answer_word": grouped_accuracy(read)}


def detect_generated(record: dict) -> dict:
    """Run the detectors on a generated video; returns ``{detected_colour, detected_shape, detected_directions}``."""
    from .text_to_video import read_frames

    frames = (read_frames(record["video"]) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    detection = detect_video(frames, num_clips=len(record["directions"]))
    return {
        "detected_colour": detection.colour,
        "detected_shape": detection.shape,
        "detected_directions": list(detection.directions),
    }


def generation_outcomes(records: list[dict]) -> list[dict]:
    """Per generated video: colour, shape, direction (first clip), after (second clip) and joint outcomes."""
    outcomes = []
    for r in records:
        checks = [
            ("colour", r["detected_colour"] == r["colour"]),
            ("shape", r["detected_shape"] == r["shape"]),
        ]
        for name, expected, found in zip(("direction", "after"), r["directions"], r["detected_directions"]):
            checks.append((name, found == expected))
        outcomes += [outcome(name, r, correct) for name, correct in checks]
        outcomes.append(outcome("joint", r, all(correct for _, correct in checks)))
    return outcomes


def _split_file(world: Path, split: str, kind: str) -> Path:
    path = world / f"{split}_{kind}.jsonl"
    if not path.is_file():
        raise EvaluationInputError(
            f"{path} does not exist: --annotations must be a folder written by datasets/make_shapes_world.py "
            f"and --split one of its splits"
        )
    return path


def run_shapes_task(task: str, model_dir, out: Path, options) -> dict:
    """Run ``shapes-qa``, ``shapes-t2v`` or ``shapes-i2v`` (see the module docstring)."""
    from .tasks import (
        _existing,
        _finish,
        _limited,
        _progress,
        check_metric_weights,
        generation_protocol,
        run_generation,
        run_video_qa,
        start_run,
    )

    world = _existing(options.annotations, "--annotations (the shapes world folder)")
    if task == "shapes-qa":
        items = data.load_video_qa(_split_file(world, options.split, "qa"), world)
        items, _ = data.check_videos(_limited(items, options.limit), options.skip_missing)
        return run_video_qa(task, model_dir, out, options, items=items, extra_scores=shapes_qa_scores)

    kind = "t2v" if task == "shapes-t2v" else "i2v"
    prompts = _limited(
        data.load_prompts(_split_file(world, options.split, kind), image_root=world), options.limit
    )
    for item in prompts:
        if kind == "i2v" and (item.image is None or not item.image.is_file()):
            raise EvaluationInputError(f"image-to-video prompt {item.id} has no image on disk ({item.image})")
        if not item.extra.get("directions"):
            raise EvaluationInputError(f"prompt {item.id} has no ground-truth directions")
    references = data.reference_folder_videos(world / "videos" / options.split)
    check_metric_weights(options, references)
    start_run(out, task, model_dir, options)
    records = run_generation(
        task, model_dir, out, options, prompts, num_clips_of=lambda item: len(item.extra["directions"])
    )
    for record in records:
        record.update(detect_generated(record))
    metrics: dict = {
        "task": task,
        "split": options.split,
        "videos": len(records),
        "shapes": grouped_accuracy(generation_outcomes(records)),
    }
    if options.clip:
        from .text_to_video import clipsim_scores

        metrics.update(clipsim_scores(records, options.clip, options.device, _progress("CLIPSIM")))
    if options.i3d:
        from .text_to_video import fvd_score

        metrics.update(
            fvd_score(
                records,
                references,
                options.i3d,
                options.cache_dir or out / "cache",
                options.device,
                fps=records[0]["fps"],
                progress=_progress("I3D reference"),
            )
        )
    protocol = generation_protocol(options, records)
    protocol["clips"] = "one per ground-truth direction"
    protocol["scoring"] = (
        "transformers_vlavit.shapes.detect_video on the generated RGB frames: majority colour and "
        "shape over frames, one direction per clip; held-out colour x shape combinations separately"
    )
    rows = []
    for record in records[: options.num_examples]:
        frames = sample_frames(record["video"], 4)
        if record.get("image"):
            from PIL import Image

            with Image.open(record["image"]) as image:
                frames = [image.convert("RGB"), *frames[:3]]
        found = f"{record['detected_colour']} {record['detected_shape']} {' then '.join(map(str, record['detected_directions']))}"
        held = " (held out)" if record.get("held_out") else ""
        rows.append((frames, f"{record['prompt']}{held}\ndetected: {found}"))
    images = [contact_sheet(rows, out / "samples.png").name] if rows else []
    keys = ("id", "prompt", "held_out", "detected_colour", "detected_shape", "detected_directions")
    return _finish(out, task, metrics, protocol, images, records[: options.num_examples], keys)
