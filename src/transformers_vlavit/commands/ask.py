"""``vlavit ask --model DIR MEDIA QUESTION [QUESTION ...]``: answer questions about a video or an image.

Each question becomes one Vicuna-v1 conversation (``processor.apply_chat_template``) about ``MEDIA``; all
questions run as one left-padded batch through ``model.generate``. ``MEDIA`` is decomposed once (videos)
or read once (images, recognised by their file extension).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .inputs import check_model, check_video, decompose_input_video, model_load_error, read_image

# still-image extensions PIL reads; anything else is treated as a video
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
# dtypes the commands load weights in
DTYPES = ("float32", "bfloat16", "float16")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ask`` sub-command."""
    parser = subparsers.add_parser(
        "ask",
        help="answer questions about a video or an image with a Video-LaVIT checkpoint",
        description=__doc__,
    )
    parser.add_argument("--model", required=True, help="Video-LaVIT checkpoint folder (or hub id)")
    parser.add_argument("media", type=Path, help="video file (any format FFmpeg reads) or image file")
    parser.add_argument(
        "questions", nargs="+", metavar="QUESTION", help="one or more questions, answered as a batch"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="longest answer in tokens (default 128)"
    )
    parser.add_argument("--do-sample", action="store_true", help="sample answers instead of greedy decoding")
    parser.add_argument(
        "--max-clips",
        type=int,
        default=None,
        help="most clips read from a video (default: the processor's max_clips, 16 as in the original)",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="model dtype (default float32)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    parser.add_argument("--json", action="store_true", help="print the answers as one JSON list")
    parser.set_defaults(func=run)


def build_conversations(questions: list[str], media_type: str) -> list[list[dict]]:
    """One single-turn user conversation per question, the media placeholder before the question."""
    return [
        [{"role": "user", "content": [{"type": media_type}, {"type": "text", "text": question}]}]
        for question in questions
    ]


def read_media(media: str | Path, max_clips: int):
    """``("image", RGB PIL image)`` or ``("video", VideoDecomposition)`` of a media file.

    Images are recognised by their extension (``IMAGE_SUFFIXES``); a file that cannot be read raises
    ``CommandInputError`` naming it and the cause.
    """
    media = Path(media)
    if media.suffix.lower() in IMAGE_SUFFIXES:
        return "image", read_image(media)
    return "video", decompose_input_video(media, max_clips=max_clips)


def answer_questions(
    model, processor, media, questions: list[str], max_clips: int | None = None, **generate_kwargs
) -> list[str]:
    """Answer every question about ``media`` in one batch; returns one answer string per question.

    ``media`` is a file path (read with :func:`read_media`) or the ``(kind, content)`` pair it returns.
    ``max_clips`` defaults to the processor's ``max_clips`` (16, the original's understanding setting).
    """
    if not isinstance(media, tuple):
        media = read_media(media, max_clips=processor.max_clips if max_clips is None else max_clips)
    kind, content = media
    conversations = build_conversations(questions, kind)
    prompts = [
        processor.apply_chat_template(conversation, add_generation_prompt=True)
        for conversation in conversations
    ]
    media_kwargs = {"images" if kind == "image" else "videos": [content] * len(questions)}
    inputs = processor(text=prompts, return_tensors="pt", padding=True, padding_side="left", **media_kwargs)
    inputs = inputs.to(model.device)
    output = model.generate(**inputs, **generate_kwargs)
    return processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1] :])


def run(args: argparse.Namespace) -> int:
    """Check the checkpoint and read the media, then load the checkpoint, answer the questions and print them."""
    check_model(args.model)
    is_image = args.media.suffix.lower() in IMAGE_SUFFIXES
    # an image is read whole now; a video is probed now and decomposed once the processor gives max_clips
    media = read_media(args.media, max_clips=0) if is_image else check_video(args.media)

    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
        if not is_image:
            max_clips = processor.max_clips if args.max_clips is None else args.max_clips
            media = read_media(args.media, max_clips=max_clips)
        model = AutoModelForCausalLM.from_pretrained(
            args.model, trust_remote_code=True, dtype=getattr(torch, args.dtype)
        )
    except OSError as error:
        raise model_load_error("--model", args.model, error) from error
    model = model.to(args.device).eval()
    answers = answer_questions(
        model,
        processor,
        media,
        args.questions,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
    )
    if args.json:
        print(json.dumps([{"question": q, "answer": a} for q, a in zip(args.questions, answers)]))
    else:
        for question, answer in zip(args.questions, answers):
            print(f"Q: {question}\nA: {answer}")
    return 0
