"""Generate one video per prompt with fixed seeds (resumable), then score CLIPSIM and FVD.

Item ``i`` of the prompt list is generated with ``torch.Generator().manual_seed(seed + i)``, so a video does
not depend on the batch it ran in, on the items before it or on an interruption: a rerun generates only the
missing videos, and the same command always writes the same videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging

from ..commands.reconstruct import write_video
from .annotations import PromptItem
from .records import PredictionFile

logger = logging.get_logger(__name__)


def load_text_to_video_pipeline(model_dir, device: str = "cpu", dtype=torch.float32):
    """``pipeline("text-to-video", model=model_dir)`` running the installed Video-LaVIT code."""
    from transformers import pipeline

    from ..pipeline_text_to_video import TASK, VideoLaVITTextToVideoPipeline

    return pipeline(
        TASK, model=str(model_dir), device=device, dtype=dtype, pipeline_class=VideoLaVITTextToVideoPipeline
    )


def generate_videos(
    pipe,
    items: list[PromptItem],
    out_dir: Path,
    predictions: PredictionFile,
    seed: int = 0,
    progress=None,
    num_clips_of=None,
    **generation_kwargs,
) -> list[dict]:
    """Generate ``out_dir/<id>.mp4`` for every item not yet in ``predictions``.

    Args:
        pipe: the text-to-video pipeline.
        items: prompts (an ``image`` makes it image-to-video).
        out_dir: folder of the videos.
        predictions: resumable JSONL of ``{id, prompt, video, seed, frames, height, width, fps, ...extra}``.
        seed: item ``i`` uses seed ``seed + i``.
        num_clips_of: optional ``item -> clips`` overriding ``num_clips`` per item (e.g. from ground truth).
        **generation_kwargs: options of the pipeline (``num_clips``, ``height``, ``num_inference_steps``, ...).

    Returns:
        The records of all items, in order.
    """
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    pending = [(index, item) for index, item in enumerate(items) if item.id not in predictions]
    for index, item in progress(pending) if progress else pending:
        image = None
        if item.image is not None:
            with Image.open(item.image) as opened:
                image = opened.convert("RGB")
        options = dict(generation_kwargs)
        if num_clips_of is not None:
            options["num_clips"] = num_clips_of(item)
        result = pipe(
            {"prompt": item.prompt, "image": image},
            generator=torch.Generator().manual_seed(seed + index),
            output_type="pt",
            **options,
        )
        video = out_dir / f"{item.id}.mp4"
        partial = video.with_suffix(".partial.mp4")
        write_video(result["frames"], partial, fps=result["fps"])
        partial.replace(video)  # a record always points at a complete file
        record = {
            "id": item.id,
            "prompt": item.prompt,
            "video": str(video),
            "seed": seed + index,
            "frames": int(result["frames"].shape[0]),
            "height": int(result["frames"].shape[-2]),
            "width": int(result["frames"].shape[-1]),
            "fps": result["fps"],
        }
        if item.image is not None:
            record["image"] = str(item.image)
        record.update(item.extra)
        predictions.add([record])
    return predictions.records(item.id for item in items)


def read_frames(path) -> torch.Tensor:
    """All frames of a video ``[T, 3, H, W]`` in [0, 1]."""
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


def clipsim_scores(records: list[dict], clip_path, device: str = "cpu", progress=None) -> dict:
    """Per-video CLIPSIM (added to each record as ``clipsim``) and their mean."""
    from PIL import Image

    from .clipsim import ClipSimilarity

    similarity = ClipSimilarity(clip_path, device=device)
    for record in progress(records) if progress else records:
        pixels = (read_frames(record["video"]) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        record["clipsim"] = similarity([Image.fromarray(frame) for frame in pixels], record["prompt"])
    return {"clipsim": float(np.mean([r["clipsim"] for r in records])), "clip_model": str(clip_path)}


def fvd_score(
    records: list[dict],
    reference_videos: list[Path],
    i3d_path,
    cache_dir,
    device: str = "cpu",
    fps: float = 6,
    batch_size: int = 8,
    progress=None,
) -> dict:
    """FVD of the generated videos against the real ``reference_videos`` (statistics cached)."""
    from .frechet import frechet_distance, gaussian_statistics
    from .fvd import FVD_FRAMES, fvd_clip, i3d_features, reference_statistics
    from .i3d import load_i3d

    if len(reference_videos) < 2 or len(records) < 2:
        raise ValueError(
            f"FVD needs at least 2 generated and 2 real videos, got {len(records)} and {len(reference_videos)}"
        )
    i3d = load_i3d(i3d_path, device=device)
    reference = reference_statistics(
        i3d, reference_videos, cache_dir, i3d_path, fps, FVD_FRAMES, batch_size, progress
    )
    clips = [fvd_clip(read_frames(record["video"])) for record in records]
    mu, sigma = gaussian_statistics(i3d_features(i3d, clips, batch_size))
    return {
        "fvd": frechet_distance(mu, sigma, reference["mu"], reference["sigma"]),
        "fvd_generated_videos": len(clips),
        "fvd_reference_videos": reference["count"],
        "fvd_reference_skipped": reference["skipped"],
        "fvd_reference_cache": reference["cache"],
        "i3d_weights": str(i3d_path),
    }
