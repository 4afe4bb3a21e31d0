"""Answer benchmark questions about videos with the original's understanding prompt, in batches.

The prompt is the original's: one Vicuna-v1 user turn ``<video>\\n<question>`` (``processor.apply_chat_template``),
greedy decoding, at least ``min_new_tokens`` (8 in the original) and at most ``max_new_tokens`` (512) new
tokens, stopping at the turn end (the literal backslash-n), and the video read as at most ``max_clips``
4-second clips (16 in the original's understanding set-up).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers.utils import logging

from ..commands.ask import build_conversations
from ..processing_video_lavit import ANSWER_END
from ..video_decomposition import VideoDecodeError, decompose_video
from ..layout import UNDERSTANDING_FOLDER
from .annotations import QAItem
from .records import PredictionFile

logger = logging.get_logger(__name__)

# the original's understanding set-up (`max_video_clips=16` in its demo and loader)
ORIGINAL_UNDERSTANDING_CLIPS = 16


def understanding_clip_count(processor) -> int:
    """Clips per video for understanding: the processor's saved ``max_clips`` when it has one, else 16."""
    for owner in (processor, getattr(processor, "image_processor", None)):
        value = getattr(owner, "max_clips", None)
        if isinstance(value, int) and value > 0:
            return value
    return ORIGINAL_UNDERSTANDING_CLIPS


def understanding_model_folder(model_dir: str | os.PathLike) -> Path:
    """``DIR/understanding`` when a converted checkpoint has it (the SFT weights), else ``DIR``."""
    folder = Path(model_dir) / UNDERSTANDING_FOLDER
    return folder if (folder / "config.json").is_file() else Path(model_dir)


def qa_prompts(processor, questions: list[str]) -> list[str]:
    """One Vicuna-v1 prompt ``... USER: <video>\\n<question> ASSISTANT:`` per question."""
    return [
        processor.apply_chat_template(conversation, add_generation_prompt=True)
        for conversation in build_conversations(questions, "video")
    ]


def answer_batch(model, processor, items: list[QAItem], max_clips: int, **generate_kwargs) -> list[dict]:
    """Greedy answers for one batch of items; each video is decomposed once per batch.

    Returns:
        One record per item: ``id, video, question, answer, prediction`` and the item's extra fields; an
        item whose video cannot be decoded gets ``error`` (and an empty prediction) instead.
    """
    decompositions, errors = {}, {}
    for item in items:
        if item.video not in decompositions and item.video not in errors:
            try:
                decompositions[item.video] = decompose_video(item.video, max_clips=max_clips)
            except VideoDecodeError as error:
                errors[item.video] = str(error)
    readable = [item for item in items if item.video in decompositions]
    predictions = {}
    if readable:
        inputs = processor(
            text=qa_prompts(processor, [item.question for item in readable]),
            videos=[decompositions[item.video] for item in readable],
            return_tensors="pt",
            padding=True,
            padding_side="left",
        ).to(model.device)
        with torch.no_grad():
            output = model.generate(**inputs, **generate_kwargs)
        answers = processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1] :])
        predictions = {item.id: answer for item, answer in zip(readable, answers)}
    records = []
    for item in items:
        record = {"id": item.id, "video": str(item.video), "question": item.question, "answer": item.answer}
        record.update(item.extra)
        if item.id in predictions:
            record["prediction"] = predictions[item.id]
        else:
            record.update(prediction="", error=errors[item.video])
        records.append(record)
    return records


def predict_video_qa(
    model,
    processor,
    items: list[QAItem],
    predictions: PredictionFile,
    batch_size: int = 8,
    max_clips: int | None = None,
    max_new_tokens: int = 512,
    min_new_tokens: int = 8,
    progress=None,
) -> list[dict]:
    """Answer every item not yet in ``predictions`` (appended batch by batch); returns all records in order.

    Args:
        model: a `VideoLaVITForCausalLM` (the understanding weights), in eval mode.
        processor: its `VideoLaVITProcessor`.
        items: the questions.
        predictions: the resumable JSONL file.
        batch_size: questions per ``generate`` call (left-padded).
        max_clips: clips per video (default: :func:`understanding_clip_count`).
        max_new_tokens, min_new_tokens: answer length bounds in tokens.
        progress: optional ``tqdm``-like wrapper over the batches.
    """
    max_clips = max_clips or understanding_clip_count(processor)
    pending = [item for item in items if item.id not in predictions]
    batches = [pending[start : start + batch_size] for start in range(0, len(pending), batch_size)]
    generate_kwargs = {
        "do_sample": False,
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min(min_new_tokens, max_new_tokens),
        "stop_strings": [ANSWER_END],
        "tokenizer": processor.tokenizer,
    }
    for batch in progress(batches) if progress else batches:
        predictions.add(answer_batch(model, processor, batch, max_clips, **generate_kwargs))
    return predictions.records(item.id for item in items)
