"""The Video-ChatGPT judge protocol for open-ended video QA, with a pluggable judge.

Protocol (Maaz et al. 2023, ``quantitative_evaluation/evaluate_activitynet_qa.py``; the one behind the
Video-LaVIT paper's MSVD-QA / MSRVTT-QA / ActivityNet-QA numbers): a chat model receives the system and
user messages below for each (question, answer, prediction) and answers with a Python dict string
``{'pred': 'yes'|'no', 'score': 0-5}``; accuracy is the share of ``yes`` among ``yes``+``no`` answers and the
score is the mean of the integer scores. The original called ``gpt-3.5-turbo`` and retried unparsable
answers until every item had one. Here the judge is either a local transformers chat model
(:class:`LocalChatJudge`) or any OpenAI-compatible ``/chat/completions`` endpoint (:class:`EndpointJudge`);
an answer still unparsable after ``retries`` attempts is recorded with ``judge_error`` and left out of both
averages (the metrics report how many).
"""

from __future__ import annotations

import ast
import json
import os
import re
import time
import urllib.request
from pathlib import Path

from transformers.utils import logging

from .records import PredictionFile

logger = logging.get_logger(__name__)

# the protocol's messages, character for character (the missing spaces between sentences are the original's)
JUDGE_SYSTEM_PROMPT = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and "
    "determine if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
JUDGE_USER_TEMPLATE = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {prediction}\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
    "with 5 indicating the highest meaningful match. Please generate the response in the form of a Python "
    "dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and "
    "value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only "
    "provide the Python dictionary string. For example, your response should look like this: "
    "{{'pred': 'yes', 'score': 4.8}}."
)
# the model the published numbers were judged with
ORIGINAL_JUDGE = "gpt-3.5-turbo"


class JudgeResponseError(ValueError):
    """A judge answer that is not the protocol's ``{'pred': ..., 'score': ...}`` dict."""


def judge_messages(question: str, answer: str, prediction: str) -> list[dict]:
    """The protocol's two chat messages for one QA pair."""
    user = JUDGE_USER_TEMPLATE.format(question=question, answer=answer, prediction=prediction)
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_judgement(text: str) -> dict:
    """``"{'pred': 'yes', 'score': 4}"`` (optionally inside other text) -> ``{"pred": "yes", "score": 4}``.

    As in the original, ``pred`` counts as yes when it contains "yes" and as no when it contains "no", and
    the score is truncated to an integer.
    """
    match = re.search(r"\{.*?\}", text, flags=re.DOTALL)
    if match is None:
        raise JudgeResponseError(f"no dict in judge answer {text!r}")
    try:
        value = ast.literal_eval(match.group(0))
    except (ValueError, SyntaxError) as error:
        raise JudgeResponseError(f"judge answer {text!r} is not a Python dict: {error}") from error
    if not isinstance(value, dict) or "pred" not in value or "score" not in value:
        raise JudgeResponseError(f"judge answer {text!r} lacks 'pred' or 'score'")
    pred = str(value["pred"]).lower()
    verdict = "yes" if "yes" in pred else "no" if "no" in pred else None
    if verdict is None:
        raise JudgeResponseError(f"judge 'pred' {value['pred']!r} is neither yes nor no")
    try:
        score = int(float(value["score"]))
    except (TypeError, ValueError) as error:
        raise JudgeResponseError(f"judge score {value['score']!r} is not a number") from error
    return {"pred": verdict, "score": score}


class LocalChatJudge:
    """A transformers chat model (a folder with a chat template) as judge; greedy decoding.

    Args:
        path: model folder (``AutoModelForCausalLM`` + ``AutoTokenizer`` with a chat template).
        device, dtype: where and in which precision the judge runs.
        max_new_tokens: longest judge answer.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", dtype=None, max_new_tokens: int = 32):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = f"local:{Path(path).name}"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"judge model {path} has no chat template; save one with its tokenizer")
        self.model = (
            AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32).to(device).eval()
        )
        self.max_new_tokens = max_new_tokens

    def __call__(self, messages: list[dict]) -> str:
        """One judge answer (text) for the protocol's messages."""
        import torch

        input_ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"].to(self.model.device)
        with torch.no_grad():
            output = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)


class EndpointJudge:
    """An OpenAI-compatible chat-completions endpoint as judge (standard library HTTP, temperature 0).

    Args:
        url: the API base (``https://api.openai.com/v1``) or the full ``.../chat/completions`` URL.
        model: the model name sent with each request (the original protocol used ``gpt-3.5-turbo``).
        api_key: sent as a bearer token when given (never logged or recorded).
        timeout: seconds per request.
    """

    def __init__(
        self, url: str, model: str = ORIGINAL_JUDGE, api_key: str | None = None, timeout: float = 60
    ):
        self.url = (
            url if url.rstrip("/").endswith("/chat/completions") else url.rstrip("/") + "/chat/completions"
        )
        self.model = model
        self.name = f"endpoint:{model}"
        self._api_key = api_key
        self.timeout = timeout
        # seconds before the n-th retry (times n): rate limits of hosted APIs pass with a pause
        self.retry_wait = 5.0

    def __call__(self, messages: list[dict]) -> str:
        """One judge answer (text) for the protocol's messages."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0}).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = json.loads(response.read())
        return payload["choices"][0]["message"]["content"]


def judge_records(judge, records: list[dict], judgements: PredictionFile, retries: int = 3, progress=None):
    """Judge every record not yet in ``judgements`` (resumable); returns the judgement records in order.

    Args:
        judge: callable ``messages -> answer text`` with a ``name``.
        records: prediction records with ``id``, ``question``, ``answer``, ``prediction``.
        judgements: the JSONL file the judgements are appended to.
        retries: attempts per item before it is recorded with ``judge_error`` (a judge's ``retry_wait``
            attribute, if any, is the pause in seconds before the n-th retry, times n).
        progress: optional ``tqdm``-like wrapper for the loop.
    """
    pending = [record for record in records if record["id"] not in judgements]
    for record in progress(pending) if progress else pending:
        messages = judge_messages(record["question"], record["answer"], record["prediction"])
        result: dict = {"id": record["id"], "judge": judge.name}
        for attempt in range(retries):
            try:
                text = judge(messages)
                result.update(parse_judgement(text), response=text)
                break
            except (
                ValueError,
                KeyError,
                IndexError,
                OSError,
            ) as error:  # unparsable answer, HTTP or network error
                logger.warning(f"judge attempt {attempt + 1} on {record['id']} failed: {error}")
                result["judge_error"] = str(error)
                time.sleep(getattr(judge, "retry_wait", 0.0) * (attempt + 1))
        if "pred" in result:
            result.pop("judge_error", None)
        judgements.add([result])
    return judgements.records(record["id"] for record in records)


def judge_scores(judgements: list[dict]) -> dict:
    """``accuracy`` (share of yes among yes+no) and mean ``score`` of parsed judgements."""
    valid = [j for j in judgements if "pred" in j]
    yes = sum(j["pred"] == "yes" for j in valid)
    return {
        "accuracy": yes / len(valid) if valid else None,
        "score": sum(j["score"] for j in valid) / len(valid) if valid else None,
        "yes": yes,
        "no": len(valid) - yes,
        "unparsed": len(judgements) - len(valid),
    }
