"""`vlavit reconstruct`: metrics, input-frame resampling and an end-to-end run on a synthetic clip."""

from __future__ import annotations

import math
import re

import av
import numpy as np
import pytest
import torch

from transformers_vlavit.cli import main
from transformers_vlavit.commands.reconstruct import (
    DetokenizerNotFoundError,
    find_detokenizer_folders,
    psnr,
    read_clip_frames,
    ssim,
)


def write_gray_ramp(path, num_frames: int, fps: int, step: int = 10, size: int = 32) -> None:
    """A video whose frame i is uniformly gray at level step * i."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv444p"
        for index in range(num_frames):
            image = np.full((size, size, 3), step * index, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def test_psnr_and_ssim_reference_values():
    image = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-5)
    assert psnr(torch.full((1, 3, 8, 8), 0.5), torch.full((1, 3, 8, 8), 0.6)) == pytest.approx(20.0)

    # constant images: SSIM reduces to the luminance term (2ab + C1) / (a^2 + b^2 + C1); float32 sums
    # of the local moments leave ~1e-5 of noise
    a, b, c1 = 0.2, 0.7, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    constant_ssim = ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b))
    assert constant_ssim == pytest.approx(expected, abs=1e-4)

    noisy = (image + 0.2 * torch.randn(image.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    noisier = (image + 0.5 * torch.randn(image.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert 1 > ssim(noisy, image) > ssim(noisier, image)
    assert psnr(noisy, image) > psnr(noisier, image)


def test_read_clip_frames_resamples_to_the_decomposition_rate(tmp_path):
    video = tmp_path / "ramp.mp4"
    write_gray_ramp(video, num_frames=12, fps=12)
    clips = read_clip_frames(video, starts=[0, 2], num_frames=3, fps=6, size=(8, 10))
    assert [tuple(clip.shape) for clip in clips] == [(3, 3, 8, 10), (3, 3, 8, 10)]
    # output frame k at 6 fps is source frame 2k at 12 fps (frame i has gray level 10 * i)
    source_indices = [[round(float(frame.mean()) * 255 / 10) for frame in clip] for clip in clips]
    assert source_indices == [[0, 2, 4], [4, 6, 8]]

    # frames past the end of the video are left out
    (short,) = read_clip_frames(video, starts=[4], num_frames=4, fps=6, size=(8, 8))
    assert short.shape[0] == 2


def test_missing_detokenizers_raise(tmp_path):
    with pytest.raises(DetokenizerNotFoundError, match="tiny-checkpoint"):
        find_detokenizer_folders(tmp_path)


def test_reconstruct_runs_end_to_end_on_a_synthetic_clip(tmp_path, capsys):
    from diffusers_vlavit import write_tiny_detokenizers
    from transformers_vlavit.synthetic_video import write_synthetic_video

    paths = write_tiny_detokenizers(tmp_path / "model" / "detokenizer", seed=0)
    assert find_detokenizer_folders(tmp_path / "model") == (paths["keyframe"], paths["video"])
    video = tmp_path / "input.mp4"
    write_synthetic_video(video, width=64, height=48, duration=4.0, fps=12)
    out = tmp_path / "recon.mp4"

    code = main(
        [
            "reconstruct",
            "--model",
            str(tmp_path / "model"),
            str(video),
            "--out",
            str(out),
            "--height",
            "16",
            "--width",
            "24",
            "--keyframe-steps",
            "1",
            "--video-steps",
            "1",
            "--max-clips",
            "1",
        ]
    )

    assert code == 0
    printed = capsys.readouterr().out
    video_psnr, video_ssim = re.search(r"video: PSNR ([\d.]+) dB, SSIM (-?[\d.]+)", printed).groups()
    assert 0 < float(video_psnr) < 100 and -1 <= float(video_ssim) <= 1
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(frames) == 24 and frames[0].shape == (16, 24, 3)


def test_reconstruct_a_flat_black_clip(tmp_path, capsys):
    # the tiny visual tokenizer drops every patch of a black keyframe; its most likely patch is kept instead
    from diffusers_vlavit import write_tiny_detokenizers

    write_tiny_detokenizers(tmp_path / "model" / "detokenizer", seed=0)
    video = tmp_path / "black.mp4"
    write_gray_ramp(video, num_frames=48, fps=12, step=0)
    out = tmp_path / "recon.mp4"
    arguments = ["reconstruct", "--model", str(tmp_path / "model"), str(video), "--out", str(out)]
    fast = ["--height", "16", "--width", "16", "--keyframe-steps", "1", "--video-steps", "1", "--max-clips", "1"]
    assert main(arguments + fast) == 0
    assert "clips: 1 x 24 frames at 16x16" in capsys.readouterr().out
    assert out.is_file()
