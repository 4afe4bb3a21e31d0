"""Fixtures of the transformers_vlavit tests: our tokenizer configs at the sizes of the golden files, and the tiny
language model with its media of the modelling tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


def _motion_tokenizer_kwargs(reference: dict) -> dict:
    """`VideoLaVITMotionTokenizerConfig` keyword arguments for the golden `description["config"]`."""
    return {
        "hidden_size": reference["dim"],
        "num_attention_heads": reference["num_heads"],
        "stage_depths": tuple(reference["stages"]),
        "grid_size": tuple(reference["grid_hw"]),
        "num_frames": reference["num_frames"],
        "codebook_size": reference["codebook_size"],
        "code_dim": reference["code_dim"],
        "layer_norm_eps": reference["ln_eps"],
    }


def _visual_tokenizer_kwargs(reference: dict) -> dict:
    """`VideoLaVITVisualTokenizerConfig` keyword arguments for `visual_tokenizer`'s `description["config"]`.

    `llm_hidden_size` is left to the caller: it follows the language model the tokenizer is used with.
    """
    return {
        "image_size": reference["image_size"],
        "patch_size": reference["patch_size"],
        "hidden_size": reference["vit_width"],
        "num_hidden_layers": reference["vit_layers"],
        "num_attention_heads": reference["vit_heads"],
        "merger_num_hidden_layers": reference["merger_layers"],
        "merger_num_attention_heads": reference["vit_heads"],
        "codebook_size": reference["codebook_size"],
        "code_dim": reference["code_dim"],
    }


@pytest.fixture(scope="session")
def golden_tokenizer_kwargs() -> SimpleNamespace:
    """`.motion(reference)` / `.visual(reference)`: a golden `description["config"]` -> our config kwargs."""
    return SimpleNamespace(motion=_motion_tokenizer_kwargs, visual=_visual_tokenizer_kwargs)


# `model` and `media` of the language-model tests (test_modeling_video_lavit*.py); a module that needs other
# media (the splice reference, the CLI) defines its own fixture of the same name, which takes precedence.
@pytest.fixture(scope="module")
def model():
    """A tiny random `VideoLaVITForCausalLM` (seed 0), in eval mode."""
    from transformers_vlavit import VideoLaVITConfig, VideoLaVITForCausalLM

    torch.manual_seed(0)
    return VideoLaVITForCausalLM(VideoLaVITConfig.tiny()).eval()


@pytest.fixture(scope="module")
def media():
    """One image `[1, 3, 224, 224]`, and one video of two clips (random keyframes `[2, 3, 224, 224]` and motion
    `[2, 2, 24, 20, 36]`)."""
    generator = torch.Generator().manual_seed(1)
    return {
        "pixel_values": torch.randn(1, 3, 224, 224, generator=generator),
        "pixel_values_videos": torch.randn(2, 3, 224, 224, generator=generator),
        "motion_vectors": torch.randn(2, 2, 24, 20, 36, generator=generator),
        "clips_per_video": torch.tensor([2]),
    }
