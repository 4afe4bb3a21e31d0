"""VideoLaVITImageProcessor: 224 bicubic resize (PIL) + CLIP normalisation, inputs, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_vlavit.image_processing_video_lavit import VideoLaVITImageProcessor

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@pytest.fixture(scope="module")
def processor() -> VideoLaVITImageProcessor:
    return VideoLaVITImageProcessor()


def _reference(image: Image.Image) -> torch.Tensor:
    """The original's transform: PIL bicubic resize to 224 x 224, to [0, 1], CLIP normalisation."""
    array = (
        np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    )
    return torch.from_numpy(((array - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1))


def test_matches_the_original_transform(processor):
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((240, 320), (50, 31))
    ]
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (2, 3, 224, 224) and pixel_values.dtype == torch.float32
    for image, values in zip(images, pixel_values):
        torch.testing.assert_close(values, _reference(image), rtol=0, atol=1e-5)


def test_constant_image_values(processor):
    pixel_values = processor(Image.new("RGB", (10, 7), (255, 0, 128)), return_tensors="pt")["pixel_values"]
    expected = (np.array([255, 0, 128], dtype=np.float32) / 255 - CLIP_MEAN) / CLIP_STD
    torch.testing.assert_close(pixel_values[0, :, 100, 100], torch.from_numpy(expected), rtol=0, atol=1e-5)


def test_numpy_grayscale_and_rgba_inputs(processor):
    rgb = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    from_numpy = processor(rgb, return_tensors="pt")["pixel_values"]
    from_pil = processor(Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(from_numpy, from_pil)
    gray_and_rgba = processor(
        [Image.fromarray(rgb).convert("L"), Image.fromarray(rgb).convert("RGBA")], return_tensors="pt"
    )["pixel_values"]
    assert gray_and_rgba.shape == (2, 3, 224, 224)
    torch.testing.assert_close(gray_and_rgba[1], from_pil[0])


def test_save_and_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = VideoLaVITImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.to_dict()["image_processor_type"] == "VideoLaVITImageProcessor"
    assert loaded.size.height == loaded.size.width == 224
    image = Image.new("RGB", (64, 48), (10, 200, 30))
    torch.testing.assert_close(
        loaded(image, return_tensors="pt")["pixel_values"],
        processor(image, return_tensors="pt")["pixel_values"],
    )


def test_custom_size(tmp_path):
    processor = VideoLaVITImageProcessor(size={"height": 32, "width": 48})
    assert processor(Image.new("RGB", (64, 48)), return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 48)
