"""Fixtures of the transformers_vlavit tests: our tokenizer configs at the sizes of the golden files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


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
