"""The paper's tokenizer check over a folder: ``vlavit reconstruct`` on every video, PSNR and SSIM.

Each video goes through exactly the code path of ``vlavit reconstruct`` (decompose -> visual and motion
tokens -> keyframe and video detokenizers) and is compared, frame by frame at the rendered size, with the
input frames the decomposition's 6 fps resampling picks. Per video: PSNR / SSIM of all frames and of the
keyframes; the task reports their means over videos.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..commands.reconstruct import psnr, read_clip_frames, reconstruct_clips, ssim, write_video
from ..video_decomposition import decompose_video
from .annotations import VIDEO_EXTENSIONS
from .records import PredictionFile


def list_videos(folder) -> list[Path]:
    """Video files directly under ``folder`` (sorted; any extension in ``VIDEO_EXTENSIONS``)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def load_detokenizers(model_dir, device: str = "cpu", dtype=torch.float32):
    """The keyframe and video pipelines of a checkpoint, as ``vlavit reconstruct`` loads them."""
    from diffusers import DiffusionPipeline

    from ..commands.reconstruct import find_detokenizer_folders
    from ..pipeline_text_to_video import DetokenizerNotFoundError

    keyframe_dir, video_dir = find_detokenizer_folders(model_dir)
    pipes = [
        DiffusionPipeline.from_pretrained(d, trust_remote_code=True, dtype=dtype).to(device)
        for d in (keyframe_dir, video_dir)
    ]
    if pipes[0].visual_tokenizer is None or pipes[1].motion_tokenizer is None:
        raise DetokenizerNotFoundError(
            f"{model_dir} lacks the visual or motion tokenizer inside its detokenizers"
        )
    return pipes


def reconstruct_videos(
    keyframe_pipe,
    video_pipe,
    videos: list[Path],
    out_dir: Path,
    predictions: PredictionFile,
    height: int,
    width: int,
    max_clips: int = 8,
    seed: int = 0,
    progress=None,
    **reconstruct_kwargs,
) -> list[dict]:
    """Reconstruct every video not yet in ``predictions``; records ``{id, video, reconstruction, psnr, ssim,
    keyframe_psnr, keyframe_ssim, clips, frames}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = [video.stem for video in videos]
    pending = [video for video in videos if video.stem not in predictions]
    for video in progress(pending) if progress else pending:
        decomposition = decompose_video(video, max_clips=max_clips)
        frames, keyframes = reconstruct_clips(
            decomposition, keyframe_pipe, video_pipe, height, width, seed=seed, **reconstruct_kwargs
        )
        references = read_clip_frames(
            video, decomposition.keyframe_indices, frames[0].shape[0], decomposition.fps, (height, width)
        )
        reconstruction = torch.cat([clip[: len(ref)] for clip, ref in zip(frames, references)])
        reference = torch.cat(references)
        key_reference = torch.stack([ref[0] for ref in references])
        output = out_dir / f"{video.stem}.mp4"
        write_video(torch.cat(frames), output, decomposition.fps)
        predictions.add(
            [
                {
                    "id": video.stem,
                    "video": str(video),
                    "reconstruction": str(output),
                    "psnr": psnr(reconstruction, reference),
                    "ssim": ssim(reconstruction, reference),
                    "keyframe_psnr": psnr(torch.stack(keyframes), key_reference),
                    "keyframe_ssim": ssim(torch.stack(keyframes), key_reference),
                    "clips": len(frames),
                    "frames": int(reconstruction.shape[0]),
                }
            ]
        )
    return predictions.records(ids)


def reconstruction_scores(records: list[dict]) -> dict:
    """Means over videos of the per-video PSNR / SSIM (frames and keyframes)."""
    keys = ("psnr", "ssim", "keyframe_psnr", "keyframe_ssim")
    return {key: sum(r[key] for r in records) / len(records) for key in keys} | {"videos": len(records)}
