"""Offline scoring of open-ended answers: normalised exact match and normalised containment."""

from __future__ import annotations

import re
import string

# dropped before comparing, as VQA-style normalisation does
ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower-case, punctuation to spaces, articles dropped, whitespace collapsed."""
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    return " ".join(word for word in words if word not in ARTICLES)


def exact_match(prediction: str, answer: str) -> bool:
    """Normalised prediction equals the normalised answer."""
    return normalize_answer(prediction) == normalize_answer(answer)


def contains_match(prediction: str, answer: str) -> bool:
    """The normalised answer occurs in the normalised prediction as whole words."""
    answer_words = normalize_answer(answer)
    return bool(answer_words) and f" {answer_words} " in f" {normalize_answer(prediction)} "


def offline_scores(records: list[dict]) -> dict:
    """``exact`` and ``contains`` accuracy over records with ``prediction`` and ``answer``."""
    if not records:
        return {"exact": None, "contains": None, "count": 0}
    exact = sum(exact_match(r["prediction"], r["answer"]) for r in records)
    contains = sum(contains_match(r["prediction"], r["answer"]) for r in records)
    return {"exact": exact / len(records), "contains": contains / len(records), "count": len(records)}
