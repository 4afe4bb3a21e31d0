"""The shapes-world tasks: scoring by the world's detectors, per attribute, held-out and two-clip apart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from transformers_vlavit.cli import main
from transformers_vlavit.evaluation.shapes_tasks import (
    answer_word,
    detect_generated,
    generation_outcomes,
    grouped_accuracy,
    shapes_qa_scores,
)
from transformers_vlavit.shapes import COLOURS

PROJECT_ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]
FAST = ["--steps", "1", "--keyframe-steps", "2", "--height", "32", "--width", "32"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A ten-video world whose test split has a held-out combination and two-clip videos."""
    folder = tmp_path_factory.mktemp("shapes") / "world"
    subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "datasets" / "make_shapes_world.py"),
            "--out",
            str(folder),
            "--num-videos",
            "10",
            "--size",
            "64",
            "--seed",
            "0",
            "--test-fraction",
            "0.6",
            "--two-clip-fraction",
            "0.5",
            "--validation-fraction",
            "0.0",
        ],
        check=True,
        capture_output=True,
    )
    return folder


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answer_word_reads_the_first_vocabulary_word():
    assert answer_word("The object is red, not blue.", COLOURS) == "red"
    assert answer_word("It is reddish", COLOURS) is None


def test_qa_scores_per_attribute_held_out_and_two_clip_apart():
    def record(kind, answer, prediction, held_out=False, clips=1):
        return {
            "type": kind,
            "answer": answer,
            "prediction": prediction,
            "held_out": held_out,
            "num_clips": clips,
        }

    records = [
        record("colour", "red", "red"),
        record("colour", "blue", "It is blue."),
        record("shape", "circle", "square", held_out=True),
        record("shape", "circle", "Circle", held_out=True),
        record("direction", "left", "left", clips=2),
        record("after", "up", "down", clips=2),
    ]
    scores = shapes_qa_scores(records)
    exact, read = scores["shapes"], scores["shapes_answer_word"]
    assert exact["all"] == {
        "colour": 0.5,
        "shape": 0.5,
        "direction": 1.0,
        "after": 0.0,
        "counts": {"colour": 2, "shape": 2, "direction": 1, "after": 1},
    }
    assert read["all"]["colour"] == 1.0
    assert exact["held_out"] == {"shape": 0.5, "counts": {"shape": 2}}
    assert exact["seen"]["colour"] == 0.5 and "shape" not in exact["seen"]
    assert exact["two_clip"] == {"direction": 1.0, "after": 0.0, "counts": {"direction": 1, "after": 1}}
    assert set(exact["one_clip"]) == {"colour", "shape", "counts"}


def test_detectors_read_the_world_s_own_videos_correctly(world):
    """The scoring path (decode -> uint8 frames -> detect_video per clip) on real one-clip world videos."""
    rows = [r for r in read_jsonl(world / "metadata.jsonl") if r["num_clips"] == 1]
    records = [
        {"video": str(world / r["video"]), **{k: r[k] for k in ("colour", "shape", "directions", "held_out")}}
        for r in rows
    ]
    for record in records:
        record.update(detect_generated(record))
    accuracy = grouped_accuracy(generation_outcomes(records))["all"]
    assert accuracy["colour"] == accuracy["shape"] == accuracy["direction"] == accuracy["joint"] == 1.0
    wrong = dict(
        records[0],
        detected_colour="none",
        detected_directions=["left" if records[0]["directions"][0] != "left" else "up"],
    )
    assert grouped_accuracy(generation_outcomes([wrong]))["all"] == {
        "colour": 0.0,
        "shape": 1.0,
        "direction": 0.0,
        "joint": 0.0,
        "counts": {"colour": 1, "shape": 1, "direction": 1, "joint": 1},
    }


def test_shapes_qa_run(tiny_checkpoint, world, tmp_path):
    out = tmp_path / "qa"
    assert (
        main(
            [
                "evaluate",
                "shapes-qa",
                "--model",
                str(tiny_checkpoint),
                "--annotations",
                str(world),
                "--out",
                str(out),
                "--max-new-tokens",
                "3",
                "--min-new-tokens",
                "1",
                "--max-clips",
                "2",
            ]
        )
        == 0
    )
    records = read_jsonl(out / "predictions.jsonl")
    questions = read_jsonl(world / "test_qa.jsonl")
    assert len(records) == len(questions) and records[0]["id"] == f"{questions[0]['id']}_0"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["shapes"]["all"]["counts"]["colour"] == 4
    assert metrics["shapes"]["held_out"]["counts"] == {"colour": 1, "shape": 1, "direction": 1, "after": 1}
    assert "| shapes.held_out.colour |" in (out / "report.md").read_text()


@pytest.mark.parametrize("task", ["shapes-t2v", "shapes-i2v"])
def test_shapes_generation_runs(tiny_checkpoint, world, tmp_path, task):
    out = tmp_path / task
    assert (
        main(
            [
                "evaluate",
                task,
                "--model",
                str(tiny_checkpoint),
                "--annotations",
                str(world),
                "--out",
                str(out),
                "--limit",
                "2",
                *FAST,
            ]
        )
        == 0
    )
    records = read_jsonl(out / "predictions.jsonl")
    prompts = read_jsonl(world / f"test_{task[-3:]}.jsonl")[:2]
    # one clip of 24 frames per ground-truth direction (the first prompt is a held-out two-clip one)
    assert [r["frames"] for r in records] == [24 * len(p["directions"]) for p in prompts]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["shapes"]["held_out"]["counts"]["after"] == 1
    assert metrics["shapes"]["all"]["counts"]["joint"] == 2
    report = (out / "report.md").read_text()
    assert "one per ground-truth direction" in report and (out / "samples.png").is_file()
    if task == "shapes-i2v":
        assert records[0]["image"].endswith(".png")


def test_shapes_tasks_need_a_world_folder(tiny_checkpoint, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                "shapes-t2v",
                "--model",
                str(tiny_checkpoint),
                "--annotations",
                str(tmp_path),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "make_shapes_world.py" in capsys.readouterr().err


def test_each_clip_is_scored_against_its_own_direction():
    record = {
        "colour": "red",
        "shape": "circle",
        "directions": ["left", "up"],
        "held_out": True,
        "detected_colour": "red",
        "detected_shape": "circle",
        "detected_directions": ["left", "up"],
    }
    swapped = dict(record, detected_directions=["up", "left"])
    assert grouped_accuracy(generation_outcomes([record]))["two_clip"]["joint"] == 1.0
    scores = grouped_accuracy(generation_outcomes([swapped]))
    assert (scores["held_out"]["direction"], scores["held_out"]["after"], scores["held_out"]["joint"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert "seen" not in scores and "one_clip" not in scores
