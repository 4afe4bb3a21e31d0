"""Parity of the motion tokenizer with the original implementation (golden reference outputs)."""

from __future__ import annotations

import pytest
import torch

from transformers_vlavit import VideoLaVITMotionTokenizer, VideoLaVITMotionTokenizerConfig
from transformers_vlavit.conversion.motion_tokenizer import convert_motion_tokenizer_state_dict

ORIGINAL_PREFIX = "model."


@pytest.fixture(scope="module")
def golden_motion(golden_file, golden_tokenizer_kwargs):
    """`(outputs, tensors)`: our outputs with the golden weights (converted, loaded strictly), reference."""
    tensors, description = golden_file("motion_tokenizer")
    reference = description["config"]
    config = VideoLaVITMotionTokenizerConfig(**golden_tokenizer_kwargs.motion(reference))
    assert sum(config.stage_depths) == reference["depth"]
    original = {
        name[len(ORIGINAL_PREFIX) :]: tensor
        for name, tensor in tensors.items()
        if name.startswith(ORIGINAL_PREFIX)
    }
    model = VideoLaVITMotionTokenizer(config).eval()
    model.load_state_dict(convert_motion_tokenizer_state_dict(original, config), strict=True)
    with torch.no_grad():
        outputs = {
            "encoder_features": model.encoder_features(tensors["input.motion"]),
            "tokens": model.encode(tensors["input.motion"]),
            "reconstruction_40x72": model.decode_for_detokenizer(tensors["output.tokens"], 40, 72),
        }
    return outputs, tensors


def test_golden_tokens_are_exact(golden_motion):
    outputs, tensors = golden_motion
    assert outputs["tokens"].shape == (2, 135)
    assert torch.equal(outputs["tokens"], tensors["output.tokens"])


def test_golden_encoder_features(golden_motion):
    outputs, tensors = golden_motion
    assert outputs["encoder_features"].shape == (2, 3, 5, 9, 64)
    torch.testing.assert_close(
        outputs["encoder_features"], tensors["output.encoder_features"], atol=1e-4, rtol=0
    )


def test_golden_reconstruction_for_the_detokenizer(golden_motion):
    outputs, tensors = golden_motion
    torch.testing.assert_close(
        outputs["reconstruction_40x72"], tensors["output.reconstruction_40x72"], atol=1e-4, rtol=0
    )
