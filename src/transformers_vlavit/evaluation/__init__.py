"""Evaluation harness: the paper's benchmarks (video QA, text-to-video CLIPSIM / FVD, reconstruction) and
the shapes world, as ``evaluate(task, model, out, ...)`` and ``vlavit evaluate``.

One module per concern: ``annotations`` (benchmark files as published), ``records`` (resumable JSONL),
``video_qa`` (batched answers with the original prompt), ``scoring`` (offline match), ``judges``
(Video-ChatGPT judge protocol), ``text_to_video`` (seeded generation), ``clipsim``, ``i3d``, ``fvd``,
``frechet``, ``reconstruction``, ``shapes_tasks``, ``report`` (pictures and Markdown) and ``tasks`` (the runner).
"""

from .annotations import AnnotationError, EvaluationInputError, MissingVideosError
from .frechet import features_frechet_distance, frechet_distance, gaussian_statistics
from .i3d import InceptionI3d, load_i3d
from .judges import EndpointJudge, LocalChatJudge, judge_messages, parse_judgement
from .scoring import contains_match, exact_match, normalize_answer
from .tasks import TASKS, EvaluationOptions, evaluate

__all__ = [
    "TASKS",
    "AnnotationError",
    "EndpointJudge",
    "EvaluationInputError",
    "EvaluationOptions",
    "InceptionI3d",
    "LocalChatJudge",
    "MissingVideosError",
    "contains_match",
    "evaluate",
    "exact_match",
    "features_frechet_distance",
    "frechet_distance",
    "gaussian_statistics",
    "judge_messages",
    "load_i3d",
    "normalize_answer",
    "parse_judgement",
]
