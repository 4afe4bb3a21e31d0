"""Benchmark files in their published layouts, and the resumable prediction file."""

from __future__ import annotations

import json

import pytest

from transformers_vlavit.evaluation.annotations import (
    AnnotationError,
    MissingVideosError,
    check_videos,
    class_prompt,
    load_activitynet_qa,
    load_msrvtt_prompts,
    load_msrvtt_qa,
    load_prompts,
    load_ucf101_prompts,
)
from transformers_vlavit.evaluation.records import PredictionFile


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_msrvtt_qa_names_videos_by_integer_id(tmp_path):
    rows = [
        {"answer": "car", "category_id": 3, "id": 0, "question": "what is shown?", "video_id": 7010},
        {"answer": "two", "category_id": 1, "id": 1, "question": "how many?", "video_id": 9999},
    ]
    (tmp_path / "test_qa.json").write_text(json.dumps(rows))
    video = touch(tmp_path / "videos" / "video7010.mp4")
    items = load_msrvtt_qa(tmp_path / "test_qa.json", tmp_path / "videos")
    assert (items[0].id, items[0].video, items[0].answer, items[0].extra["category_id"]) == (
        "0",
        video,
        "car",
        3,
    )
    present, missing = check_videos(items, skip_missing=True)
    assert [i.id for i in present] == ["0"] and missing == ["1"]
    with pytest.raises(MissingVideosError, match="1 of 2 videos are missing"):
        check_videos(items)


def test_activitynet_qa_joins_questions_and_answers_on_question_id(tmp_path):
    questions = [
        {
            "video_name": "v_1QIUV7WYKXg",
            "question": "is the athlete wearing trousers",
            "question_id": "v_1QIUV7WYKXg_0",
        },
        {"video_name": "Abc", "question": "what colour is the ball", "question_id": "Abc_1"},
    ]
    answers = [
        {"answer": "white", "type": 4, "question_id": "Abc_1"},
        {"answer": "yes", "type": 3, "question_id": "v_1QIUV7WYKXg_0"},
    ]
    (tmp_path / "test_q.json").write_text(json.dumps(questions))
    (tmp_path / "test_a.json").write_text(json.dumps(answers))
    first = touch(tmp_path / "v" / "v_1QIUV7WYKXg.mkv")
    second = touch(tmp_path / "v" / "v_Abc.mp4")  # the other naming: "v_" added to the video name
    items = load_activitynet_qa(tmp_path / "test_q.json", tmp_path / "v")
    assert [(i.id, i.video, i.answer, i.extra["type"]) for i in items] == [
        ("v_1QIUV7WYKXg_0", first, "yes", 3),
        ("Abc_1", second, "white", 4),
    ]
    (tmp_path / "test_a.json").write_text(json.dumps(answers[:1]))
    with pytest.raises(AnnotationError, match="no answer for question v_1QIUV7WYKXg_0"):
        load_activitynet_qa(tmp_path / "test_q.json", tmp_path / "v")


def test_msrvtt_prompts_take_each_test_video_s_first_caption(tmp_path):
    info = {
        "videos": [
            {"video_id": "video7010", "split": "test"},
            {"video_id": "video10", "split": "train"},
            {"video_id": "video7011", "split": "test"},
        ],
        "sentences": [
            {"caption": "a later caption", "video_id": "video7010", "sen_id": 140201},
            {"caption": "a man drives a car", "video_id": "video7010", "sen_id": 140200},
            {"caption": "train only", "video_id": "video10", "sen_id": 1},
            {"caption": "a cat sleeps", "video_id": "video7011", "sen_id": 140300},
        ],
    }
    (tmp_path / "test_videodatainfo.json").write_text(json.dumps(info))
    reference = touch(tmp_path / "TestVideo" / "video7011.mp4")
    prompts, references = load_msrvtt_prompts(tmp_path / "test_videodatainfo.json", tmp_path / "TestVideo")
    assert [(p.id, p.prompt) for p in prompts] == [
        ("video7010", "a man drives a car"),
        ("video7011", "a cat sleeps"),
    ]
    assert references == [reference]


def test_ucf101_prompts_are_class_names_in_words(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n3 PlayingDaf\n")
    touch(tmp_path / "UCF-101" / "YoYo" / "v_YoYo_g01_c01.avi")
    prompts, references = load_ucf101_prompts(
        tmp_path / "classInd.txt", tmp_path / "UCF-101", samples_per_class=2
    )
    assert [p.id for p in prompts] == [
        "ApplyEyeMakeup_000",
        "ApplyEyeMakeup_001",
        "YoYo_000",
        "YoYo_001",
        "PlayingDaf_000",
        "PlayingDaf_001",
    ]
    assert prompts[0].prompt == "apply eye makeup" and len(references) == 1
    assert class_prompt("YoYo") == "yo yo" and class_prompt("TaiChi") == "tai chi"


def test_generic_prompts_from_text_and_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("a red ball\n\n a blue square \n")
    assert [(p.id, p.prompt) for p in load_prompts(tmp_path / "p.txt")] == [
        ("00000", "a red ball"),
        ("00001", "a blue square"),
    ]
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"id": "x", "prompt": "go left", "image": "f.png", "colour": "red"})
    )
    item = load_prompts(tmp_path / "p.jsonl")[0]
    assert (item.id, item.image, item.extra) == ("x", tmp_path / "f.png", {"colour": "red"})
    (tmp_path / "bad.jsonl").write_text('{"text": "no prompt key"}')
    with pytest.raises(AnnotationError, match="lacks \\['prompt'\\]"):
        load_prompts(tmp_path / "bad.jsonl")


def test_prediction_file_drops_a_torn_last_line_and_keeps_order(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "v": 1}\n{"id": "b", "v": 2}\n{"id": "c", "v"')
    predictions = PredictionFile(path)
    assert "a" in predictions and "c" not in predictions and len(predictions) == 2
    predictions.add([{"id": "c", "v": 3}])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]
    assert [r["v"] for r in PredictionFile(path).records(["c", "a", "zz"])] == [3, 1]
