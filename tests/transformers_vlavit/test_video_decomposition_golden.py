"""Parity with the original implementation's outputs on the five MPEG-4 inputs of golden/preprocess."""

from __future__ import annotations

import json

import pytest
import torch

from transformers_vlavit.image_processing_video_lavit import VideoLaVITImageProcessor
from transformers_vlavit.video_decomposition import decompose_video

NAMES = ["demo_31200691", "demo_video7013", "synthetic_3s", "synthetic_9s", "synthetic_60s"]


@pytest.fixture(scope="module")
def golden_index(golden_dir):
    path = golden_dir / "preprocess" / "index.json"
    if not path.is_file():
        pytest.skip(f"golden preprocess index {path} is missing")
    return json.loads(path.read_text())["preprocess"]


@pytest.mark.parametrize("name", NAMES)
def test_decomposition_matches_golden(name, golden_dir, golden_file, golden_index):
    tensors, description = golden_file(f"preprocess/{name}")
    entry = golden_index[name]
    settings = entry["settings"]
    assert settings["transcode"] is False
    result = decompose_video(
        golden_dir / "preprocess" / entry["input"],
        transcode=False,
        fps=settings["fps"],
        clip_frames=settings["num_frames"],
        max_clips=settings["max_clips"],
    )

    assert result.frame_types == entry["frame_types"] == description["frame_types"]
    assert result.num_frames == entry["num_frames"]
    assert list(result.frame_size) == entry["frame_size"]
    assert result.num_clips == entry["clips"] == tensors["motion_vectors"].shape[0]
    assert all(result.frame_types[index] == "I" for index in result.keyframe_indices)

    pixel_values = VideoLaVITImageProcessor()(result.keyframes, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == tensors["pixel_values"].shape
    torch.testing.assert_close(pixel_values, tensors["pixel_values"], rtol=0, atol=1e-4)
    assert result.motion_vectors.shape == tensors["motion_vectors"].shape
    torch.testing.assert_close(result.motion_vectors, tensors["motion_vectors"], rtol=0, atol=1e-4)
