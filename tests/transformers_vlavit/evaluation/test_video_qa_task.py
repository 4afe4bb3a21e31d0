"""`vlavit evaluate` on the video-QA tasks with the tiny checkpoint: prompt, batching, resume, judges."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoProcessor

from transformers_vlavit.cli import main
from transformers_vlavit.commands.ask import answer_questions
from transformers_vlavit.evaluation.annotations import QAItem
from transformers_vlavit.evaluation.records import PredictionFile
from transformers_vlavit.evaluation.video_qa import (
    ORIGINAL_UNDERSTANDING_CLIPS,
    predict_video_qa,
    qa_prompts,
    understanding_clip_count,
)

FAST = ["--max-new-tokens", "4", "--min-new-tokens", "2", "--max-clips", "2"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prompt_is_the_vicuna_v1_turn_with_the_video_placeholder(tiny_checkpoint):
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    expected = (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <video>\nwho is singing? ASSISTANT:"
    )
    assert qa_prompts(processor, ["who is singing?"]) == [expected]


def test_clip_count_follows_the_processor_else_the_original(tiny_checkpoint):
    assert ORIGINAL_UNDERSTANDING_CLIPS == 16  # `max_video_clips=16` of the original's understanding loader
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    expected = getattr(processor, "max_clips", None) or 16
    assert understanding_clip_count(processor) == expected
    processor.max_clips = 3
    assert understanding_clip_count(processor) == 3


def test_batched_answers_equal_one_by_one_greedy_answers(tiny_checkpoint, videos, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    items = [
        QAItem("a", videos[0], "what moves?", "ball"),
        QAItem("b", videos[1], "what colour is it?", "red"),
        QAItem("c", videos[0], "is it day?", "yes"),
    ]
    records = predict_video_qa(
        model,
        processor,
        items,
        PredictionFile(tmp_path / "p.jsonl"),
        batch_size=3,
        max_clips=2,
        max_new_tokens=5,
        min_new_tokens=5,
    )
    for item, record in zip(items, records):
        alone = answer_questions(
            model,
            processor,
            item.video,
            [item.question],
            max_clips=2,
            do_sample=False,
            max_new_tokens=5,
            min_new_tokens=5,
        )
        assert record["prediction"] == alone[0]
    assert [r["id"] for r in records] == ["a", "b", "c"]


def test_msvd_qa_run_resumes_and_is_deterministic(tiny_checkpoint, msvd_qa, tmp_path):
    annotations, clips = msvd_qa
    arguments = [
        "evaluate",
        "msvd-qa",
        "--model",
        str(tiny_checkpoint),
        "--annotations",
        str(annotations),
        "--video-root",
        str(clips),
        "--batch-size",
        "2",
        *FAST,
    ]
    first, second = tmp_path / "run1", tmp_path / "run2"
    assert main([*arguments, "--out", str(first)]) == 0
    records = read_jsonl(first / "predictions.jsonl")
    assert [r["id"] for r in records] == ["10", "11", "12"]
    assert records[0]["video"].endswith("-4wsuPCjDBc_5_15.avi") and records[1]["answer"] == "dance"

    # an interrupted run: the last record lost and a torn line left behind; the rerun restores it exactly
    lines = (first / "predictions.jsonl").read_text().splitlines()
    (first / "predictions.jsonl").write_text("\n".join(lines[:2]) + '\n{"id": "12", "vid')
    assert main([*arguments, "--out", str(first)]) == 0
    assert read_jsonl(first / "predictions.jsonl") == records

    assert main([*arguments, "--out", str(second)]) == 0
    assert (second / "predictions.jsonl").read_text() == (first / "predictions.jsonl").read_text()
    assert (second / "metrics.json").read_text() == (first / "metrics.json").read_text()
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["questions"] == 3 and metrics["offline"]["count"] == 3
    report = (first / "report.md").read_text()
    assert "![examples](examples.png)" in report and "who is singing?" in report
    assert (first / "examples.png").stat().st_size > 1000


def test_a_prediction_already_on_disk_is_not_recomputed(tiny_checkpoint, msvd_qa, tmp_path):
    annotations, clips = msvd_qa
    out = tmp_path / "run"
    out.mkdir()
    video = str(clips / "zv2RIbUsnSw_335_341.avi")
    done = {"id": "11", "video": video, "question": "q", "answer": "dance", "prediction": "dance"}
    (out / "predictions.jsonl").write_text(json.dumps(done) + "\n")
    assert (
        main(
            [
                "evaluate",
                "msvd-qa",
                "--model",
                str(tiny_checkpoint),
                "--annotations",
                str(annotations),
                "--video-root",
                str(clips),
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    records = read_jsonl(out / "predictions.jsonl")
    assert {r["id"] for r in records} == {"10", "11", "12"}
    assert next(r for r in records if r["id"] == "11") == done
    assert json.loads((out / "metrics.json").read_text())["offline"]["exact"] == pytest.approx(1 / 3)


def test_endpoint_judge_protocol_and_resume(tiny_checkpoint, msvd_qa, tmp_path, fake_endpoint, monkeypatch):
    annotations, clips = msvd_qa
    monkeypatch.setenv("VLAVIT_TEST_KEY", "sk-test")
    out = tmp_path / "run"
    arguments = [
        "evaluate",
        "msvd-qa",
        "--model",
        str(tiny_checkpoint),
        "--annotations",
        str(annotations),
        "--video-root",
        str(clips),
        "--out",
        str(out),
        "--judge",
        fake_endpoint.url,
        "--judge-model",
        "judge-x",
        "--judge-api-key-env",
        "VLAVIT_TEST_KEY",
        *FAST,
    ]
    assert main(arguments) == 0
    assert len(fake_endpoint.requests) == 3
    request = fake_endpoint.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "judge-x"
    assert request["body"]["messages"][0]["content"].startswith("You are an intelligent chatbot designed")
    assert (
        "Question: who is singing?\nCorrect Answer: man\nPredicted Answer: "
        in request["body"]["messages"][1]["content"]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    # the tiny random model never says "man", "dance" or "red"
    assert metrics["judge"] == {
        "name": "endpoint:judge-x",
        "accuracy": 0.0,
        "score": 1.0,
        "yes": 0,
        "no": 3,
        "unparsed": 0,
    }
    assert (
        "sk-test"
        not in (out / "judgements-endpoint-judge-x.jsonl").read_text() + (out / "metrics.json").read_text()
    )
    assert main(arguments) == 0
    assert len(fake_endpoint.requests) == 3  # every judgement was already on disk
    # another judge on the same predictions: its own verdicts, no model change needed
    assert main([*arguments[: -len(FAST)], "--judge-model", "judge-y", *FAST]) == 0
    assert len(fake_endpoint.requests) == 6
    assert json.loads((out / "metrics.json").read_text())["judge"]["name"] == "endpoint:judge-y"


def test_a_run_folder_resumes_only_with_the_same_prediction_settings(
    tiny_checkpoint, msvd_qa, tmp_path, capsys
):
    annotations, clips = msvd_qa
    base = [
        "evaluate",
        "msvd-qa",
        "--model",
        str(tiny_checkpoint),
        "--annotations",
        str(annotations),
        "--video-root",
        str(clips),
        "--out",
        str(tmp_path / "run"),
        "--min-new-tokens",
        "2",
        "--max-clips",
        "2",
    ]
    assert main([*base, "--max-new-tokens", "3", "--limit", "1"]) == 0
    assert main([*base, "--max-new-tokens", "4"]) == 2
    assert "other settings (max_new_tokens)" in capsys.readouterr().err
    assert main([*base, "--max-new-tokens", "3", "--batch-size", "3"]) == 0  # limit and batch size may change
    assert len(read_jsonl(tmp_path / "run" / "predictions.jsonl")) == 3


def test_local_judge_on_generic_video_qa(tiny_checkpoint, videos, tmp_path, tiny_judge):
    rows = [
        {"video": videos[0].name, "question": "what moves?", "answer": "ball", "type": "shape"},
        {"video": videos[1].name, "question": "what colour?", "answer": "red", "type": "colour"},
    ]
    annotations = videos[0].parent / "qa.jsonl"
    annotations.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    assert (
        main(
            [
                "evaluate",
                "video-qa",
                "--model",
                str(tiny_checkpoint),
                "--annotations",
                str(annotations),
                "--out",
                str(out),
                "--judge",
                str(tiny_judge),
                *FAST,
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["judge"] == {
        "name": "local:tiny-judge",
        "accuracy": 1.0,
        "score": 4.0,
        "yes": 2,
        "no": 0,
        "unparsed": 0,
    }
    assert read_jsonl(out / "predictions.jsonl")[1]["type"] == "colour"


def test_bad_inputs_exit_2_with_one_line_before_loading(tiny_checkpoint, msvd_qa, tmp_path, capsys):
    annotations, clips = msvd_qa
    base = ["evaluate", "msvd-qa", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "r")]
    assert main([*base, "--annotations", str(annotations), "--video-root", str(tmp_path / "nowhere")]) == 2
    assert main([*base, "--annotations", str(tmp_path / "missing.json"), "--video-root", str(clips)]) == 2
    (clips / "zv2RIbUsnSw_335_341.avi").unlink()
    assert main([*base, "--annotations", str(annotations), "--video-root", str(clips)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("vlavit evaluate: error: ") for line in errors)
    assert "1 of 3 videos are missing" in errors[2] and "--skip-missing" in errors[2]
    assert (
        main([*base, "--annotations", str(annotations), "--video-root", str(clips), "--skip-missing", *FAST])
        == 0
    )
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["questions"] == 2
    assert (
        main(
            [
                "evaluate",
                "msvd-qa",
                "--model",
                str(tmp_path),
                "--out",
                str(tmp_path / "r2"),
                "--annotations",
                str(annotations),
                "--video-root",
                str(clips),
            ]
        )
        == 2
    )


def test_the_command_offers_every_task_of_the_library():
    from transformers_vlavit.commands.evaluate import TASK_NAMES
    from transformers_vlavit.evaluation import TASKS

    assert TASK_NAMES == TASKS
