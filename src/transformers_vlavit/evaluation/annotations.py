"""Benchmark annotation files read in the layouts their authors published.

Video QA:

- **MSVD-QA** (Xu et al. 2017, ``xudejing/video-question-answering``): ``test_qa.json`` is a list of
  ``{"answer", "id", "question", "video_id"}`` with an integer ``video_id``; ``youtube_mapping.txt`` maps
  ``vid<video_id>`` to the YouTube clip name (lines ``<clip-name> vid<N>``); videos are
  ``YouTubeClips/<clip-name>.avi``.
- **MSRVTT-QA** (same release): ``test_qa.json`` is a list of ``{"answer", "category_id", "id", "question",
  "video_id"}``; the video of ``video_id`` N is ``video<N>.mp4`` of MSR-VTT.
- **ActivityNet-QA** (``MILVLG/activitynet-qa``): ``test_q.json`` ``[{"video_name", "question",
  "question_id"}]`` and ``test_a.json`` ``[{"answer", "type", "question_id"}]``, joined on ``question_id``;
  the video is ``<video_name>.<ext>`` or ``v_<video_name>.<ext>`` (both namings circulate).
- **generic video QA**: a JSON list or JSONL of ``{"video", "question", "answer"}`` (optional ``"id"``, numbered
  ``<id>_<k>`` where several rows share one; other keys are kept); relative video paths start at
  ``video_root`` or the file's folder.

Text-to-video:

- **MSR-VTT**: the official ``test_videodatainfo.json`` (``"videos"`` with ``split``, ``"sentences"`` with
  ``caption``, ``video_id``, ``sen_id``) or a CSV with ``video_id`` and ``sentence`` columns (the 1k-A
  ``MSRVTT_JSFUSION_test.csv``); one prompt per video (its first caption by ``sen_id``).
- **UCF-101**: ``classInd.txt`` (``<index> <ClassName>`` lines) and the ``UCF-101/<ClassName>/*.avi`` folder;
  the prompt of a class is its name split into lower-case words (``ApplyEyeMakeup`` -> ``apply eye makeup``).
- **generic prompts**: a ``.txt`` file (one prompt per line) or a JSON list / JSONL of ``{"prompt"}`` rows
  (optional ``"id"``, ``"image"`` for image-to-video, other keys kept).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# containers tried, in this order, where an annotation names a video without its extension
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


class EvaluationInputError(ValueError):
    """An input of an evaluation (annotations, media, weights, options) is missing or invalid; raised before
    any model is loaded."""


class AnnotationError(EvaluationInputError):
    """An annotation file is missing, unreadable or not in the layout its task expects."""


class MissingVideosError(EvaluationInputError, FileNotFoundError):
    """Videos named by the annotations are not on disk."""


@dataclass
class QAItem:
    """One question about one video."""

    id: str
    video: Path
    question: str
    answer: str
    extra: dict = field(default_factory=dict)


@dataclass
class PromptItem:
    """One text-to-video (or image-to-video with ``image``) prompt."""

    id: str
    prompt: str
    image: Path | None = None
    extra: dict = field(default_factory=dict)


def read_json_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON list or a JSONL file (chosen by content, not by extension)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    text = path.read_text(encoding="utf-8").strip()
    try:
        rows = (
            json.loads(text)
            if text.startswith("[")
            else [json.loads(l) for l in text.splitlines() if l.strip()]
        )
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path} is neither a JSON list nor JSON Lines: {error}") from error
    if not all(isinstance(row, dict) for row in rows):
        raise AnnotationError(f"{path}: every row must be a JSON object")
    return rows


def _require(rows: list[dict], keys: tuple[str, ...], path: Path) -> None:
    for index, row in enumerate(rows):
        missing = [key for key in keys if key not in row]
        if missing:
            raise AnnotationError(f"{path}: row {index} lacks {missing} (expected keys {list(keys)})")


def find_video(root: Path, stems: list[str]) -> Path | None:
    """The first ``root/<stem><ext>`` that exists (a stem with an extension is tried as is first)."""
    for stem in stems:
        if Path(stem).suffix.lower() in VIDEO_EXTENSIONS and (root / stem).is_file():
            return root / stem
        for extension in VIDEO_EXTENSIONS:
            if (root / f"{stem}{extension}").is_file():
                return root / f"{stem}{extension}"
    return None


def check_videos(items: list, skip_missing: bool = False, attribute: str = "video") -> tuple[list, list[str]]:
    """Split items into those whose video exists and the ids of the others.

    Raises:
        MissingVideosError: some videos are missing and ``skip_missing`` is false.
    """
    present, missing = [], []
    for item in items:
        video = getattr(item, attribute)
        (present if video is not None and Path(video).is_file() else missing).append(item)
    if missing and not skip_missing:
        examples = ", ".join(f"{item.id} ({getattr(item, attribute) or 'not found'})" for item in missing[:3])
        raise MissingVideosError(
            f"{len(missing)} of {len(items)} videos are missing, e.g. {examples}; check --video-root or "
            "pass --skip-missing to evaluate the others"
        )
    return present, [item.id for item in missing]


def load_msvd_qa(annotations: str | os.PathLike, video_root: str | os.PathLike, mapping=None) -> list[QAItem]:
    """MSVD-QA ``test_qa.json`` + ``youtube_mapping.txt`` (default: next to the annotations)."""
    annotations, video_root = Path(annotations), Path(video_root)
    mapping = Path(mapping) if mapping else annotations.parent / "youtube_mapping.txt"
    if not mapping.is_file():
        raise AnnotationError(f"MSVD-QA needs youtube_mapping.txt (looked for {mapping}; pass --mapping)")
    names = {}
    for line in mapping.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            names[parts[1]] = parts[0]
    rows = read_json_rows(annotations)
    _require(rows, ("answer", "id", "question", "video_id"), annotations)
    items = []
    for row in rows:
        name = names.get(f"vid{row['video_id']}")
        if name is None:
            raise AnnotationError(f"{mapping} has no line for vid{row['video_id']}")
        video = find_video(video_root, [name]) or video_root / f"{name}.avi"
        items.append(
            QAItem(str(row["id"]), video, row["question"], str(row["answer"]), {"video_id": row["video_id"]})
        )
    return items


def load_msrvtt_qa(annotations: str | os.PathLike, video_root: str | os.PathLike) -> list[QAItem]:
    """MSRVTT-QA ``test_qa.json``; video ``video<video_id>.mp4`` under ``video_root``."""
    annotations, video_root = Path(annotations), Path(video_root)
    rows = read_json_rows(annotations)
    _require(rows, ("answer", "id", "question", "video_id"), annotations)
    items = []
    for row in rows:
        stem = f"video{row['video_id']}"
        video = find_video(video_root, [stem]) or video_root / f"{stem}.mp4"
        extra = {"video_id": row["video_id"], "category_id": row.get("category_id")}
        items.append(QAItem(str(row["id"]), video, row["question"], str(row["answer"]), extra))
    return items


def load_activitynet_qa(
    questions: str | os.PathLike, video_root: str | os.PathLike, answers=None
) -> list[QAItem]:
    """ActivityNet-QA ``test_q.json`` joined with ``test_a.json`` (default: ``_q`` -> ``_a`` next to it)."""
    questions, video_root = Path(questions), Path(video_root)
    answers = Path(answers) if answers else questions.with_name(questions.name.replace("_q.json", "_a.json"))
    if answers == questions or not answers.is_file():
        raise AnnotationError(f"ActivityNet-QA needs the answer file (looked for {answers}; pass --answers)")
    question_rows, answer_rows = read_json_rows(questions), read_json_rows(answers)
    _require(question_rows, ("video_name", "question", "question_id"), questions)
    _require(answer_rows, ("answer", "question_id"), answers)
    by_id = {row["question_id"]: row for row in answer_rows}
    items = []
    for row in question_rows:
        answer = by_id.get(row["question_id"])
        if answer is None:
            raise AnnotationError(f"{answers} has no answer for question {row['question_id']}")
        name = row["video_name"]
        video = find_video(video_root, [name, f"v_{name}"]) or video_root / f"v_{name}.mp4"
        extra = {"video_name": name, "type": answer.get("type")}
        items.append(QAItem(str(row["question_id"]), video, row["question"], str(answer["answer"]), extra))
    return items


def load_video_qa(
    annotations: str | os.PathLike, video_root: str | os.PathLike | None = None
) -> list[QAItem]:
    """Generic ``{video, question, answer}`` JSON/JSONL; ids default to the row index."""
    annotations = Path(annotations)
    root = Path(video_root) if video_root else annotations.parent
    rows = read_json_rows(annotations)
    _require(rows, ("video", "question", "answer"), annotations)
    ids = [str(row.get("id", index)) for index, row in enumerate(rows)]
    # several questions may share their video's id (as in the shapes world): number them, as Video-ChatGPT does
    repeated = {item_id for item_id, count in Counter(ids).items() if count > 1}
    seen: Counter = Counter()
    items = []
    for item_id, row in zip(ids, rows):
        if item_id in repeated:
            seen[item_id] += 1
            item_id = f"{item_id}_{seen[item_id] - 1}"
        extra = {key: value for key, value in row.items() if key not in ("id", "video", "question", "answer")}
        video = Path(row["video"]) if Path(row["video"]).is_absolute() else root / row["video"]
        items.append(QAItem(item_id, video, row["question"], str(row["answer"]), extra))
    return items


def load_prompts(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[PromptItem]:
    """Generic prompts: ``.txt`` lines or JSON/JSONL rows with ``"prompt"`` (optional ``"id"``, ``"image"``)."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise AnnotationError(f"prompt file {path} does not exist")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [PromptItem(f"{index:05d}", line) for index, line in enumerate(lines)]
    root = Path(image_root) if image_root else path.parent
    rows = read_json_rows(path)
    _require(rows, ("prompt",), path)
    items = []
    for index, row in enumerate(rows):
        image = row.get("image")
        image = None if image is None else (Path(image) if Path(image).is_absolute() else root / image)
        extra = {key: value for key, value in row.items() if key not in ("id", "prompt", "image")}
        items.append(PromptItem(str(row.get("id", f"{index:05d}")), row["prompt"], image, extra))
    return items


def load_msrvtt_prompts(annotations: str | os.PathLike, video_root: str | os.PathLike | None = None):
    """MSR-VTT test captions -> ``(prompts, reference videos)``: one prompt (first caption) per test video."""
    annotations = Path(annotations)
    if not annotations.is_file():
        raise AnnotationError(f"annotation file {annotations} does not exist")
    captions: dict[str, tuple[int, str]] = {}
    if annotations.suffix.lower() == ".csv":
        with annotations.open(newline="", encoding="utf-8") as handle:
            for order, row in enumerate(csv.DictReader(handle)):
                if "video_id" not in row or "sentence" not in row:
                    raise AnnotationError(f"{annotations}: a MSR-VTT CSV needs video_id and sentence columns")
                captions.setdefault(row["video_id"], (order, row["sentence"]))
    else:
        data = json.loads(annotations.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "sentences" not in data or "videos" not in data:
            raise AnnotationError(f"{annotations} is not MSR-VTT's videodatainfo layout (videos, sentences)")
        test_videos = {video["video_id"] for video in data["videos"] if video.get("split", "test") == "test"}
        for sentence in data["sentences"]:
            video_id = sentence["video_id"]
            if video_id in test_videos:
                order = sentence.get("sen_id", 0)
                if video_id not in captions or order < captions[video_id][0]:
                    captions[video_id] = (order, sentence["caption"])
    prompts = [
        PromptItem(video_id, caption) for video_id, (_, caption) in sorted(captions.items(), key=_natural)
    ]
    references = _reference_videos(video_root, [item.id for item in prompts])
    return prompts, references


def _natural(entry) -> list:
    """Sort key that orders ``video10`` after ``video9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", entry[0])]


def _reference_videos(video_root, stems: list[str]) -> list[Path]:
    if video_root is None:
        return []
    root = Path(video_root)
    return [video for video in (find_video(root, [stem]) for stem in stems) if video is not None]


def reference_folder_videos(video_root) -> list[Path]:
    """Every video file under ``video_root`` (recursively, sorted); empty without a folder."""
    if video_root is None:
        return []
    return sorted(
        p for p in Path(video_root).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
    )


def class_prompt(class_name: str) -> str:
    """``ApplyEyeMakeup`` -> ``apply eye makeup``; ``YoYo`` -> ``yo yo``."""
    return " ".join(re.findall(r"[A-Z]+(?![a-z])|[A-Z][a-z]*|[a-z]+|\d+", class_name)).lower()


def load_ucf101_prompts(class_index: str | os.PathLike, video_root=None, samples_per_class: int = 100):
    """UCF-101 ``classInd.txt`` -> ``(prompts, reference videos)``: ``samples_per_class`` prompts per class
    (ids ``<ClassName>_<k>``) and every ``.avi`` under ``video_root``."""
    class_index = Path(class_index)
    if not class_index.is_file():
        raise AnnotationError(f"UCF-101 class index {class_index} does not exist (classInd.txt)")
    classes = []
    for line in class_index.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            classes.append(parts[1])
    if not classes:
        raise AnnotationError(f"{class_index} has no '<index> <ClassName>' lines")
    prompts = [
        PromptItem(f"{name}_{k:03d}", class_prompt(name), extra={"class": name})
        for name in classes
        for k in range(samples_per_class)
    ]
    references = sorted(Path(video_root).rglob("*.avi")) if video_root else []
    return prompts, references
