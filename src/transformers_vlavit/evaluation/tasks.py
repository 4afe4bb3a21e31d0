"""``evaluate(task, model, out, ...)``: one benchmark run from inputs to ``metrics.json`` and ``report.md``.

Every task follows the same steps: (1) check the inputs and read the annotations (no model loaded yet, so a
wrong path fails in a second), (2) load the model, (3) predict or generate for every item not yet in
``out/predictions.jsonl`` (resumable), (4) score, (5) write ``metrics.json``, ``report.md`` and the pictures.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers.utils import logging

from . import annotations as data
from .annotations import EvaluationInputError
from .records import PredictionFile, write_json
from .report import contact_sheet, sample_frames, write_report

logger = logging.get_logger(__name__)

QA_TASKS = ("msvd-qa", "msrvtt-qa", "activitynet-qa", "video-qa")
T2V_TASKS = ("msrvtt-t2v", "ucf101-t2v", "t2v")
SHAPES_TASKS = ("shapes-qa", "shapes-t2v", "shapes-i2v")
TASKS = QA_TASKS + T2V_TASKS + ("reconstruction",) + SHAPES_TASKS
PREDICTIONS_FILE, RUN_FILE = "predictions.jsonl", "run.json"
# options that change what a prediction or generated video is: a run folder resumes only under the same ones
# (``limit`` may grow, and ``batch_size`` / ``device`` / the judge / the metric weights may change)
PREDICTION_SETTINGS = (
    "annotations",
    "video_root",
    "answers",
    "mapping",
    "class_index",
    "samples_per_class",
    "split",
    "max_clips",
    "max_new_tokens",
    "min_new_tokens",
    "seed",
    "num_clips",
    "height",
    "width",
    "steps",
    "keyframe_steps",
    "dtype",
)
METRICS_FILE, REPORT_FILE = "metrics.json", "report.md"


@dataclass
class EvaluationOptions:
    """Inputs and settings of one run (every field is a ``vlavit evaluate`` option of the same name).

    Data: ``annotations`` (the task's annotation / prompt file, or the shapes world folder), ``video_root``,
    ``answers`` (ActivityNet-QA ``*_a.json``), ``mapping`` (MSVD-QA ``youtube_mapping.txt``), ``class_index``
    (UCF-101 ``classInd.txt``), ``samples_per_class``, ``split`` (shapes world), ``limit`` (first N items),
    ``skip_missing``.
    QA: ``judge`` (local chat model folder or an OpenAI-compatible URL), ``judge_model``,
    ``judge_api_key_env`` (name of the environment variable holding the key), ``batch_size``, ``max_clips``
    (default: the processor's saved value, else the original's 16), ``max_new_tokens``, ``min_new_tokens``.
    Generation: ``seed``, ``num_clips``, ``height``, ``width``, ``steps``, ``keyframe_steps``, ``clip``
    (CLIP model folder), ``i3d`` (I3D weights file), ``cache_dir`` (reference statistics; default
    ``out/cache``). Everywhere: ``device``, ``dtype``, ``num_examples`` (rows of the pictures).
    """

    annotations: str | None = None
    video_root: str | None = None
    answers: str | None = None
    mapping: str | None = None
    class_index: str | None = None
    samples_per_class: int = 100
    split: str = "test"
    limit: int | None = None
    skip_missing: bool = False
    judge: str | None = None
    judge_model: str = "gpt-3.5-turbo"
    judge_api_key_env: str = "OPENAI_API_KEY"
    batch_size: int = 8
    max_clips: int | None = None
    max_new_tokens: int = 512
    min_new_tokens: int = 8
    seed: int = 0
    num_clips: int = 1
    height: int | None = None
    width: int | None = None
    steps: int = 25
    keyframe_steps: int = 50
    clip: str | None = None
    i3d: str | None = None
    cache_dir: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    num_examples: int = 8


def _progress(description: str):
    """A progress-bar wrapper that follows transformers' ``enable/disable_progress_bar``."""
    return lambda iterable: logging.tqdm(iterable, desc=description)


def _existing(path, what: str) -> Path:
    if path is None:
        raise EvaluationInputError(f"{what} is required")
    if not Path(path).exists():
        raise EvaluationInputError(f"{what} {path} does not exist")
    return Path(path)


def _check_model(task: str, model) -> None:
    """The checkpoint has what the task loads: the language model (not for reconstruction) and the
    detokenizers (not for QA)."""
    from ..commands.reconstruct import find_detokenizer_folders
    from ..layout import UNDERSTANDING_FOLDER
    from ..pipeline_text_to_video import DetokenizerNotFoundError

    model = Path(model)
    has_language_model = (model / "config.json").is_file() or (
        model / UNDERSTANDING_FOLDER / "config.json"
    ).is_file()
    if task != "reconstruction" and not has_language_model:
        raise EvaluationInputError(f"--model {model} is not a Video-LaVIT checkpoint folder (no config.json)")
    if task in QA_TASKS or task == "shapes-qa":
        return
    try:
        find_detokenizer_folders(model)
    except DetokenizerNotFoundError as error:
        raise EvaluationInputError(str(error)) from error


def _limited(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def _dtype(options: EvaluationOptions) -> torch.dtype:
    return getattr(torch, options.dtype)


# ---------------------------------------------------------------------------------------------- video QA
def read_qa_items(task: str, options: EvaluationOptions) -> list[data.QAItem]:
    """The task's questions, checked to have their videos (step 1 of a QA run)."""
    annotations = _existing(options.annotations, "--annotations")
    root = options.video_root
    if task != "video-qa":
        root = _existing(root, "--video-root")
    if task == "msvd-qa":
        items = data.load_msvd_qa(annotations, root, options.mapping)
    elif task == "msrvtt-qa":
        items = data.load_msrvtt_qa(annotations, root)
    elif task == "activitynet-qa":
        items = data.load_activitynet_qa(annotations, root, options.answers)
    else:
        items = data.load_video_qa(annotations, root)
    items, _ = data.check_videos(_limited(items, options.limit), options.skip_missing)
    if not items:
        raise EvaluationInputError(f"no questions to evaluate in {annotations}")
    return items


def make_judge(options: EvaluationOptions):
    """A :class:`LocalChatJudge` for a folder, an :class:`EndpointJudge` for an ``http(s)://`` URL."""
    from .judges import EndpointJudge, LocalChatJudge

    if options.judge.startswith(("http://", "https://")):
        return EndpointJudge(
            options.judge, model=options.judge_model, api_key=os.environ.get(options.judge_api_key_env)
        )
    return LocalChatJudge(options.judge, device=options.device)


def judgements_file(judge_name: str) -> str:
    """One judgement file per judge (``judgements-endpoint-gpt-3.5-turbo.jsonl``), so rescoring the same
    predictions with another judge starts afresh instead of mixing verdicts."""
    return "judgements-" + re.sub(r"[^A-Za-z0-9._-]+", "-", judge_name) + ".jsonl"


def check_judge(options: EvaluationOptions) -> None:
    if options.judge and not options.judge.startswith(("http://", "https://")):
        _existing(options.judge, "--judge")


def run_video_qa(
    task: str, model_dir, out: Path, options: EvaluationOptions, items=None, extra_scores=None
) -> dict:
    """Predict, score offline (and with the judge when given), write metrics and report.

    ``items`` replaces the task's own annotations; ``extra_scores(records) -> dict`` adds task metrics.
    """
    from transformers import AutoModelForCausalLM, AutoProcessor

    from .judges import ORIGINAL_JUDGE, judge_records, judge_scores
    from .scoring import offline_scores
    from .video_qa import predict_video_qa, understanding_clip_count, understanding_model_folder

    items = items if items is not None else read_qa_items(task, options)
    check_judge(options)
    start_run(out, task, model_dir, options)
    folder = understanding_model_folder(model_dir)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=_dtype(options)).to(options.device).eval()
    processor = AutoProcessor.from_pretrained(folder)
    max_clips = options.max_clips or understanding_clip_count(processor)
    records = predict_video_qa(
        model,
        processor,
        items,
        PredictionFile(out / PREDICTIONS_FILE),
        batch_size=options.batch_size,
        max_clips=max_clips,
        max_new_tokens=options.max_new_tokens,
        min_new_tokens=options.min_new_tokens,
        progress=_progress(f"{task} answers"),
    )
    answered = [r for r in records if "error" not in r]
    metrics = {"task": task, "questions": len(records), "unreadable_videos": len(records) - len(answered)}
    metrics["offline"] = offline_scores(answered)
    if extra_scores is not None:
        metrics.update(extra_scores(answered))
    if options.judge:
        judge = make_judge(options)
        del model  # the judge may be as large as the model under test
        judgements = judge_records(
            judge, answered, PredictionFile(out / judgements_file(judge.name)), progress=_progress("judge")
        )
        metrics["judge"] = {"name": judge.name, **judge_scores(judgements)}
        verdicts = {j["id"]: j for j in judgements}
        for record in answered:
            record["judge"] = verdicts[record["id"]].get("pred", "error")
    protocol = {
        "prompt": "Vicuna-v1, one user turn '<video>\\n{question}' (processor.apply_chat_template)",
        "decoding": f"greedy, {options.min_new_tokens}-{options.max_new_tokens} new tokens, stop at the turn end",
        "clips per video": max_clips,
        "batch size": options.batch_size,
        "offline scoring": "normalised (lower case, no punctuation or articles) exact match / answer contained",
        "judge": (
            f"Video-ChatGPT protocol with {metrics['judge']['name']} (published numbers: {ORIGINAL_JUDGE})"
            if options.judge
            else "none (offline scores only)"
        ),
        "model": str(folder),
    }
    examples = answered[: options.num_examples]
    rows = [
        (sample_frames(r["video"], 4), f"Q: {r['question']}\nA: {r['answer']}\nPred: {r['prediction']}")
        for r in examples
    ]
    images = [contact_sheet(rows, out / "examples.png").name] if rows else []
    keys = ("id", "question", "answer", "prediction") + (("judge",) if options.judge else ())
    return _finish(out, task, metrics, protocol, images, examples, keys)


# ---------------------------------------------------------------------------------------- text-to-video
def read_prompt_items(task: str, options: EvaluationOptions) -> tuple[list[data.PromptItem], list[Path]]:
    """The prompts and the real reference videos of a text-to-video task (step 1)."""
    if task == "msrvtt-t2v":
        prompts, references = data.load_msrvtt_prompts(
            _existing(options.annotations, "--annotations"), options.video_root
        )
    elif task == "ucf101-t2v":
        class_index = _existing(options.class_index or options.annotations, "--class-index")
        prompts, references = data.load_ucf101_prompts(
            class_index, options.video_root, options.samples_per_class
        )
    else:
        prompts = data.load_prompts(_existing(options.annotations, "--annotations"))
        references = data.reference_folder_videos(options.video_root)
    if options.video_root:
        _existing(options.video_root, "--video-root")
    prompts = _limited(prompts, options.limit)
    for item in prompts:
        if item.image is not None and not item.image.is_file():
            raise EvaluationInputError(f"image {item.image} of prompt {item.id} does not exist")
    return prompts, references


def check_metric_weights(options: EvaluationOptions, references: list[Path]) -> None:
    if options.clip:
        _existing(options.clip, "--clip")
    if options.i3d:
        _existing(options.i3d, "--i3d")
        if len(references) < 2:
            raise EvaluationInputError("FVD (--i3d) needs at least 2 real videos under --video-root")


def generation_options(options: EvaluationOptions) -> dict:
    """Keyword arguments of the text-to-video pipeline for this run."""
    return {
        "num_clips": options.num_clips,
        "height": options.height,
        "width": options.width,
        "num_inference_steps": options.steps,
        "keyframe_num_inference_steps": options.keyframe_steps,
    }


def run_generation(task: str, model_dir, out: Path, options: EvaluationOptions, prompts, num_clips_of=None):
    """Generate every prompt's video (resumable); returns the records."""
    from .text_to_video import generate_videos, load_text_to_video_pipeline

    pipe = load_text_to_video_pipeline(model_dir, device=options.device, dtype=_dtype(options))
    return generate_videos(
        pipe,
        prompts,
        out / "videos",
        PredictionFile(out / PREDICTIONS_FILE),
        seed=options.seed,
        progress=_progress(f"{task} videos"),
        num_clips_of=num_clips_of,
        **generation_options(options),
    )


def generation_protocol(options: EvaluationOptions, records: list[dict]) -> dict:
    first = records[0] if records else {}
    return {
        "videos": len(records),
        "seeds": f"item i uses torch.Generator().manual_seed({options.seed} + i)",
        "frames": f"{first.get('frames')} per video ({options.num_clips} clip(s) of 24 at {first.get('fps')} fps)",
        "resolution": f"{first.get('width')} x {first.get('height')}",
        "sampling": f"{options.keyframe_steps} keyframe / {options.steps} video denoising steps, LLM top-k 200, "
        "guidance 4.0 keyframe / 7.0 motion / 3.0 decoder / 1.0-4.0 video",
    }


def run_text_to_video(task: str, model_dir, out: Path, options: EvaluationOptions, prepared=None) -> dict:
    """Generate, then CLIPSIM (``--clip``) and FVD (``--i3d`` with real videos)."""
    from .text_to_video import clipsim_scores, fvd_score

    prompts, references = prepared or read_prompt_items(task, options)
    check_metric_weights(options, references)
    start_run(out, task, model_dir, options)
    records = run_generation(task, model_dir, out, options, prompts)
    metrics: dict = {"task": task, "videos": len(records)}
    if options.clip:
        metrics.update(clipsim_scores(records, options.clip, options.device, _progress("CLIPSIM")))
    if options.i3d:
        metrics.update(
            fvd_score(
                records,
                references,
                options.i3d,
                options.cache_dir or out / "cache",
                options.device,
                fps=records[0]["fps"],
                progress=_progress("I3D reference"),
            )
        )
    protocol = generation_protocol(options, records)
    protocol["CLIPSIM"] = (
        "mean over frames and videos of the frame-prompt cosine of the CLIP model's projected embeddings"
    )
    protocol["FVD"] = (
        "I3D (Kinetics-400) logits of the first 16 frames at 224 x 224 in [-1, 1] (bilinear resize); "
        "real videos resampled to the generated frame rate; Frechet distance of the Gaussians"
    )
    if task == "ucf101-t2v":
        protocol["UCF-101 prompts"] = (
            f"the class name in lower-case words, {options.samples_per_class} videos per class"
        )
    if task == "msrvtt-t2v":
        protocol["MSR-VTT prompts"] = "the first caption (lowest sen_id) of each test video"
    return _finish(
        out,
        task,
        metrics,
        protocol,
        _generation_sheet(records, out, options),
        records[: options.num_examples],
        ("id", "prompt", "clipsim"),
    )


def _generation_sheet(records: list[dict], out: Path, options: EvaluationOptions, text=None) -> list[str]:
    import numpy as np

    if not records:
        return []
    picks = np.linspace(0, len(records) - 1, min(options.num_examples, len(records))).round().astype(int)
    rows = [
        (sample_frames(records[i]["video"], 4), text(records[i]) if text else records[i]["prompt"])
        for i in picks
    ]
    return [contact_sheet(rows, out / "samples.png").name]


# ---------------------------------------------------------------------------------------- reconstruction
def run_reconstruction(task: str, model_dir, out: Path, options: EvaluationOptions) -> dict:
    """``vlavit reconstruct`` over ``--video-root`` (or ``--annotations`` as a folder): PSNR / SSIM."""
    from .reconstruction import list_videos, load_detokenizers, reconstruct_videos, reconstruction_scores

    folder = _existing(options.video_root or options.annotations, "--video-root")
    videos = _limited(list_videos(folder), options.limit)
    if not videos:
        raise EvaluationInputError(f"no videos in {folder}")
    start_run(out, task, model_dir, options)
    keyframe_pipe, video_pipe = load_detokenizers(model_dir, options.device, _dtype(options))
    height = options.height or video_pipe.unet.config.sample_size * video_pipe.vae_scale_factor
    width = options.width or video_pipe.unet.config.sample_size * video_pipe.vae_scale_factor
    records = reconstruct_videos(
        keyframe_pipe,
        video_pipe,
        videos,
        out / "videos",
        PredictionFile(out / PREDICTIONS_FILE),
        height,
        width,
        max_clips=options.max_clips or 8,
        seed=options.seed,
        progress=_progress("reconstruction"),
        keyframe_steps=options.keyframe_steps,
        video_steps=options.steps,
    )
    metrics = {"task": task, **reconstruction_scores(records)}
    protocol = {
        "code path": "vlavit reconstruct (decompose, tokenize, keyframe + video detokenizers)",
        "size": f"{width} x {height}",
        "steps": f"{options.keyframe_steps} keyframe / {options.steps} video",
        "seed": f"clip i of each video: {options.seed} + i",
        "reference": "input frames at 6 fps (the decomposition's frame choice), bicubic to the size",
        "PSNR / SSIM": "per video over all frames (SSIM: Gaussian window 11, sigma 1.5), mean over videos",
    }
    rows = []
    for record in records[: options.num_examples]:
        rows.append((sample_frames(record["video"], 2), f"{record['id']} input"))
        rows.append(
            (
                sample_frames(record["reconstruction"], 2),
                f"reconstruction: PSNR {record['psnr']:.2f} dB, SSIM {record['ssim']:.3f}",
            )
        )
    images = [contact_sheet(rows, out / "samples.png", frames_per_row=2).name]
    return _finish(
        out, task, metrics, protocol, images, records[: options.num_examples], ("id", "psnr", "ssim")
    )


# ---------------------------------------------------------------------------------------------- running
def _finish(out: Path, task, metrics, protocol, images, examples, keys) -> dict:
    write_json(out / METRICS_FILE, metrics)
    write_report(out / REPORT_FILE, task, metrics, protocol, images, examples, keys)
    return metrics


def start_run(out: Path, task: str, model, settings: EvaluationOptions) -> None:
    """Record the run's prediction settings in ``out/run.json``; refuse to resume a folder made with others.

    Called by every task once its inputs are checked, before a model is loaded.
    """
    chosen = {key: value for key, value in asdict(settings).items() if key in PREDICTION_SETTINGS}
    run = {"task": task, "model": str(Path(model).resolve()), **chosen}
    path = out / RUN_FILE
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(key for key in run.keys() | previous.keys() if run.get(key) != previous.get(key))
        if changed:
            raise EvaluationInputError(
                f"{out} holds a run with other settings ({', '.join(changed)}); resume it with the same "
                "options or give a new --out"
            )
    write_json(path, run)


def evaluate(task: str, model: str | os.PathLike, out: str | os.PathLike, **options) -> dict:
    """Run one benchmark; returns the metrics (also written to ``out/metrics.json``).

    Args:
        task: one of :data:`TASKS`.
        model: the Video-LaVIT checkpoint folder (``understanding/`` is used for QA when present).
        out: output folder; ``predictions.jsonl`` there makes a rerun resume (with the same prediction
            settings, recorded in ``run.json``).
        **options: fields of :class:`EvaluationOptions`.

    Raises:
        EvaluationInputError: a missing or invalid input, before any model is loaded.
    """
    settings = EvaluationOptions(**options)
    if task not in TASKS:
        raise EvaluationInputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if settings.dtype not in ("float32", "bfloat16", "float16"):
        raise EvaluationInputError(f"--dtype {settings.dtype} is not float32, bfloat16 or float16")
    _check_model(task, model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if task in QA_TASKS:
        return run_video_qa(task, model, out, settings)
    if task in T2V_TASKS:
        return run_text_to_video(task, model, out, settings)
    if task == "reconstruction":
        return run_reconstruction(task, model, out, settings)
    from .shapes_tasks import run_shapes_task

    return run_shapes_task(task, model, out, settings)


__all__ = ["TASKS", "EvaluationOptions", "evaluate"]
