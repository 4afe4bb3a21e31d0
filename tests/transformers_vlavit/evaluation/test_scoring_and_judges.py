"""Offline answer matching and the Video-ChatGPT judge protocol."""

from __future__ import annotations

import pytest

from transformers_vlavit.evaluation.judges import (
    EndpointJudge,
    JudgeResponseError,
    judge_messages,
    judge_records,
    judge_scores,
    parse_judgement,
)
from transformers_vlavit.evaluation.records import PredictionFile
from transformers_vlavit.evaluation.scoring import (
    contains_match,
    exact_match,
    normalize_answer,
    offline_scores,
)


def test_normalisation_and_matches():
    assert normalize_answer("  The Man, singing! ") == "man singing"
    assert exact_match("A dog.", "dog") and not exact_match("a dog runs", "dog")
    assert contains_match("I think a dog runs", "dog") and not contains_match("hotdog", "dog")
    assert not contains_match("anything", "the")  # an answer of only articles matches nothing
    scores = offline_scores(
        [
            {"prediction": "Dog", "answer": "dog"},
            {"prediction": "a big dog", "answer": "dog"},
            {"prediction": "cat", "answer": "dog"},
            {"prediction": "the dog", "answer": "dog"},
        ]
    )
    assert scores == {"exact": 0.5, "contains": 0.75, "count": 4}


def test_judge_messages_are_the_protocol_s():
    system, user = judge_messages("what is {x}?", "red", "it is red")
    assert system["role"] == "system" and user["role"] == "user"
    assert system["content"].endswith(
        "accomplish the task:------##INSTRUCTIONS: - Focus on the meaningful match "
        "between the predicted answer and the correct answer.\n- Consider synonyms or "
        "paraphrases as valid matches.\n- Evaluate the correctness of the prediction "
        "compared to the answer."
    )
    assert user["content"].startswith(
        "Please evaluate the following video-based question-answer pair:\n\n"
        "Question: what is {x}?\nCorrect Answer: red\nPredicted Answer: it is red\n\n"
    )
    assert user["content"].endswith(
        "in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. "
        "Only provide the Python dictionary string. For example, your response should "
        "look like this: {'pred': 'yes', 'score': 4.8}."
    )


def test_parse_judgement():
    assert parse_judgement("{'pred': 'yes', 'score': 4}") == {"pred": "yes", "score": 4}
    assert parse_judgement("Sure: {'pred': 'No', 'score': 2.7} done") == {"pred": "no", "score": 2}
    for text in (
        "yes 4",
        "{'pred': 'maybe', 'score': 3}",
        "{'pred': 'yes'}",
        "{'pred': 'yes', 'score': 'x'}",
        "{oops}",
    ):
        with pytest.raises(JudgeResponseError):
            parse_judgement(text)


def test_accuracy_is_yes_over_parsed_and_score_the_mean():
    judgements = [
        {"pred": "yes", "score": 5},
        {"pred": "no", "score": 1},
        {"pred": "yes", "score": 3},
        {"judge_error": "x"},
    ]
    assert judge_scores(judgements) == {"accuracy": 2 / 3, "score": 3.0, "yes": 2, "no": 1, "unparsed": 1}


def test_endpoint_judgements_follow_the_content_and_unparsable_answers_are_retried(fake_endpoint, tmp_path):
    records = [
        {"id": "1", "question": "q", "answer": "red", "prediction": "red"},
        {"id": "2", "question": "q", "answer": "red", "prediction": "blue"},
        {"id": "3", "question": "q", "answer": "cat", "prediction": "cat"},
    ]
    judge = EndpointJudge(fake_endpoint.url + "/chat/completions", model="m")
    judgements = judge_records(judge, records, PredictionFile(tmp_path / "j.jsonl"))
    assert [(j["pred"], j["score"]) for j in judgements] == [("yes", 5), ("no", 1), ("yes", 5)]
    assert judge_scores(judgements)["accuracy"] == pytest.approx(2 / 3)
    assert fake_endpoint.requests[0]["auth"] is None  # no key given, none sent

    answers = iter(["not a dict", "{'pred': 'yes', 'score': 3}"])

    def flaky(messages):
        return next(answers)

    flaky.name = "flaky"
    retried = judge_records(flaky, records[:1], PredictionFile(tmp_path / "k.jsonl"), retries=2)
    assert retried == [
        {"id": "1", "judge": "flaky", "pred": "yes", "score": 3, "response": "{'pred': 'yes', 'score': 3}"}
    ]

    def hopeless(messages):
        return "I cannot judge this"

    hopeless.name = "hopeless"
    failed = judge_records(hopeless, records[:2], PredictionFile(tmp_path / "l.jsonl"), retries=2)
    assert all("pred" not in j and "no dict" in j["judge_error"] for j in failed)
    assert judge_scores(failed) == {"accuracy": None, "score": None, "yes": 0, "no": 0, "unparsed": 2}
