"""Frechet Video Distance: I3D logits of 16-frame clips at 224 x 224 in [-1, 1], Frechet distance of their
Gaussians; the statistics of the real videos are cached.

Protocol: the first ``FVD_FRAMES`` frames of each video (generated videos as generated, 6 fps; real videos
resampled to the same frame rate with the decomposition's frame choice), resized bilinearly to 224 x 224
(no crop, as StyleGAN-V's and VideoGPT's FVD code resize), scaled to [-1, 1], through the Kinetics-400
I3D (:mod:`.i3d`); features are its 400 logits.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .frechet import gaussian_statistics

FVD_FRAMES = 16
FVD_SIZE = 224


def fvd_clip(frames: torch.Tensor, num_frames: int = FVD_FRAMES, size: int = FVD_SIZE) -> torch.Tensor:
    """``frames [T, 3, H, W]`` in [0, 1] -> I3D input ``[3, num_frames, size, size]`` in [-1, 1].

    Raises:
        ValueError: the video has fewer than ``num_frames`` frames.
    """
    if frames.shape[0] < num_frames:
        raise ValueError(f"FVD needs {num_frames} frames per video, got {frames.shape[0]}")
    clip = F.interpolate(frames[:num_frames].float(), size=(size, size), mode="bilinear", align_corners=False)
    return (clip * 2 - 1).clamp(-1, 1).permute(1, 0, 2, 3)


@torch.no_grad()
def i3d_features(i3d, clips: list[torch.Tensor], batch_size: int = 8) -> np.ndarray:
    """I3D logits ``[N, 400]`` (float64) of clips ``[3, T, 224, 224]`` in [-1, 1]."""
    device = next(i3d.parameters()).device
    features = [
        i3d(torch.stack(clips[start : start + batch_size]).to(device)).double().cpu()
        for start in range(0, len(clips), batch_size)
    ]
    return torch.cat(features).numpy()


def read_video_frames(path: str | os.PathLike, num_frames: int, fps: float) -> torch.Tensor:
    """The first ``num_frames`` frames of a video resampled to ``fps``: ``[T, 3, H, W]`` in [0, 1]."""
    import av

    from ..commands.reconstruct import read_clip_frames

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        size = (stream.codec_context.height, stream.codec_context.width)
    return read_clip_frames(path, [0], num_frames, fps, size)[0]


def _fingerprint(paths: list[Path], extra: dict) -> str:
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def reference_statistics(
    i3d,
    videos: list[Path],
    cache_dir: str | os.PathLike,
    i3d_path: str | os.PathLike,
    fps: float,
    num_frames: int = FVD_FRAMES,
    batch_size: int = 8,
    progress=None,
) -> dict:
    """Mean and covariance of the I3D features of the real videos, cached in ``cache_dir``.

    The cache file is named by a fingerprint of the video files (path, size, time), the I3D weights file and
    the protocol (frames, fps), so a changed input recomputes it. Videos shorter than ``num_frames`` at
    ``fps`` are skipped and counted.

    Returns:
        ``{"mu": [D], "sigma": [D, D], "count": int, "skipped": int, "cache": path}``.
    """
    cache_dir = Path(cache_dir)
    key = _fingerprint(
        sorted(videos) + [Path(i3d_path)], {"frames": num_frames, "fps": fps, "size": FVD_SIZE}
    )
    cache = cache_dir / f"fvd_reference_{key}.npz"
    if cache.is_file():
        stored = np.load(cache)
        return {
            "mu": stored["mu"],
            "sigma": stored["sigma"],
            "count": int(stored["count"]),
            "skipped": int(stored["skipped"]),
            "cache": str(cache),
        }
    clips, skipped = [], 0
    for video in progress(videos) if progress else videos:
        frames = read_video_frames(video, num_frames, fps)
        if frames.shape[0] < num_frames:
            skipped += 1
            continue
        clips.append(fvd_clip(frames, num_frames))
    mu, sigma = gaussian_statistics(i3d_features(i3d, clips, batch_size))
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache.with_suffix(".tmp.npz"), mu=mu, sigma=sigma, count=len(clips), skipped=skipped)
    cache.with_suffix(".tmp.npz").replace(cache)
    return {"mu": mu, "sigma": sigma, "count": len(clips), "skipped": skipped, "cache": str(cache)}
