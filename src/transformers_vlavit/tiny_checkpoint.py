"""A tiny random but complete Video-LaVIT checkpoint, for tests, docs and demos.

`write_tiny_checkpoint(folder)` saves, loadable with `trust_remote_code=True` and no Video-LaVIT
package installed: the causal LM with both tokenizers (`VideoLaVITConfig.tiny()`), the processor
(image processor + a Llama-style tokenizer trained locally, with the visual/motion tokens and the
Vicuna-v1 chat template), the `text-to-video` pipeline code and, when `diffusers_vlavit` is importable,
the tiny detokenizer pipelines under `folder/detokenizer`.

It is the top of the tiny factories: sizes come from `VideoLaVITConfig.tiny()` (language model, tokenizers)
and `diffusers_vlavit.tiny` (detokenizers), imported where they are written (the dependency rule).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import GenerationConfig
from transformers.utils import logging

from .configuration_video_lavit import VideoLaVITConfig
from .image_processing_video_lavit import VideoLaVITImageProcessor
from .modeling_video_lavit import VideoLaVITForCausalLM
from .layout import DETOKENIZER_FOLDER
from .pipeline_text_to_video import write_text_to_video_task
from .processing_video_lavit import VICUNA_V1_CHAT_TEMPLATE, VideoLaVITProcessor
from .tokenizer_training import train_video_lavit_tokenizer

logger = logging.get_logger(__name__)


class TinyCheckpointError(RuntimeError):
    """The tokenizer and the model config disagree on the token layout (a bug, not a user error)."""


def build_tiny_model_and_processor(seed: int = 0) -> tuple[VideoLaVITForCausalLM, VideoLaVITProcessor]:
    """A tiny random `VideoLaVITForCausalLM` (weights drawn from `seed`) and its processor."""
    config = VideoLaVITConfig.tiny()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoLaVITForCausalLM(config).eval()
    tokenizer = train_video_lavit_tokenizer(
        text_vocab_size=config.text_vocab_size,
        visual_codebook_size=config.visual_codebook_size,
        motion_codebook_size=config.motion_codebook_size,
        chat_template=VICUNA_V1_CHAT_TEMPLATE,
    )
    expected = {"image_token_id": config.image_token_id, "video_token_id": config.video_token_id}
    found = {name: getattr(tokenizer, name) for name in expected}
    if found != expected:
        raise TinyCheckpointError(f"tokenizer placeholder ids {found} differ from the config's {expected}.")
    text_config = config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text_config.bos_token_id,
        eos_token_id=text_config.eos_token_id,
        pad_token_id=text_config.pad_token_id,
    )
    processor = VideoLaVITProcessor(image_processor=VideoLaVITImageProcessor(), tokenizer=tokenizer)
    return model, processor


def write_tiny_checkpoint(folder: str | os.PathLike, seed: int = 0, with_detokenizers: bool = True) -> Path:
    """Save a tiny random Video-LaVIT checkpoint under `folder` and return its path.

    Args:
        folder: output folder (created if missing).
        seed: seed of every random weight.
        with_detokenizers: also write the tiny keyframe/video detokenizer pipelines under
            `folder/detokenizer` when `diffusers_vlavit` is installed.

    Example:

    ```python
    path = write_tiny_checkpoint("tiny-video-lavit")
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    ```
    """
    folder = Path(folder)
    model, processor = build_tiny_model_and_processor(seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_text_to_video_task(folder)
    if with_detokenizers:
        _write_detokenizers(folder / DETOKENIZER_FOLDER, model, seed)
    return folder


def _write_detokenizers(folder: Path, model: VideoLaVITForCausalLM, seed: int) -> None:
    """Tiny detokenizers sharing the model's codebooks; skipped when diffusers_vlavit is missing."""
    try:
        from diffusers_vlavit.tiny import write_tiny_detokenizers
    except ImportError as error:
        logger.warning("Skipping the detokenizers (%s); install diffusers_vlavit to include them.", error)
        return
    write_tiny_detokenizers(
        folder, seed=seed, visual_tokenizer=model.visual_tokenizer, motion_tokenizer=model.motion_tokenizer
    )


__all__ = [
    "TinyCheckpointError",
    "build_tiny_model_and_processor",
    "write_tiny_checkpoint",
]
