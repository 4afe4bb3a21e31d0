"""Tiny random-weight Video-LaVIT detokenizers, for tests, demos and ``vlavit tiny-checkpoint``.

They have the released architecture at a few thousandth of its width, so a whole reconstruction runs on a
CPU in seconds; their outputs are noise-like, not videos.

The tiny factories are layered, each size defined once: `VideoLaVITConfig.tiny()` sizes the language model
and both tokenizers; this module sizes the detokenizers around those tokenizers;
`transformers_vlavit.tiny_checkpoint` writes a whole checkpoint folder from the two (it imports this module
only when it writes the detokenizers).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)

from transformers_vlavit.configuration_video_lavit import VideoLaVITConfig
from transformers_vlavit.modeling_motion_tokenizer import VideoLaVITMotionTokenizer
from transformers_vlavit.modeling_visual_tokenizer import VideoLaVITVisualTokenizer
from transformers_vlavit.layout import KEYFRAME_FOLDER, VIDEO_FOLDER

from .models.keyframe_decoder import KeyframeTokenDecoder
from .models.motion_condition_encoder import MotionConditionEncoder
from .models.unet_spatio_temporal_motion import UNetSpatioTemporalMotionModel
from .pipelines.pipeline_keyframe import VideoLaVITKeyframePipeline
from .pipelines.pipeline_video import VideoLaVITVideoPipeline
from .pipelines.pipeline_video_lavit import VideoLaVITPipeline

# latent side of both tiny U-Nets; with the 8x VAEs the default output is 64 x 64 pixels
TINY_LATENT_SIZE = 8
# four levels keep the real 8x down-sampling; 32 channels is the smallest the fixed GroupNorm(32) allows
_TINY_VAE_CHANNELS = (32, 32, 32, 32)
_TINY_VAE_SAMPLE_SIZE = TINY_LATENT_SIZE * 2 ** (len(_TINY_VAE_CHANNELS) - 1)
# SDXL conditions on 6 micro-conditioning ids (sizes and crop), SVD on 3 (fps, motion bucket, noise level)
_SDXL_TIME_IDS, _SVD_TIME_IDS = 6, 3


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_sdxl_scheduler() -> EulerAncestralDiscreteScheduler:
    """The SDXL Euler-ancestral scheduler configuration the released keyframe detokenizer uses."""
    return EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def tiny_edm_scheduler() -> EulerDiscreteScheduler:
    """Stable Video Diffusion's EDM Euler scheduler configuration (the video detokenizer's)."""
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_type="continuous",
        timestep_spacing="leading",
        steps_offset=1,
    )


def build_tiny_keyframe_pipeline(
    visual_tokenizer: VideoLaVITVisualTokenizer | None = None, seed: int = 0
) -> VideoLaVITKeyframePipeline:
    """A tiny random keyframe pipeline (64 x 64 images by default).

    Args:
        visual_tokenizer: the visual tokenizer whose codes it renders; default: a random one with the
            ``VideoLaVITConfig.tiny()`` visual tokenizer configuration.
        seed: seed of every random weight.
    """
    if visual_tokenizer is None:
        with _seeded(seed):
            visual_tokenizer = VideoLaVITVisualTokenizer(VideoLaVITConfig.tiny().visual_tokenizer_config)
    # the detokenizer's own weights depend on the seed only, whichever tokenizer it is paired with
    with _seeded(seed):
        token_config = visual_tokenizer.config
        prompt_embed_dims, pooled_dim = (16, 32), 32
        keyframe_decoder = KeyframeTokenDecoder(
            code_dim=token_config.code_dim,
            hidden_size=32,
            num_layers=1,
            num_attention_heads=2,
            num_queries=16,
            max_code_tokens=token_config.num_patches,
            decoder_out_dim=32,
            prompt_embed_dims=prompt_embed_dims,
            pooled_projection_dim=pooled_dim,
        )
        addition_time_embed_dim = 8
        unet = UNet2DConditionModel(
            sample_size=TINY_LATENT_SIZE,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            attention_head_dim=(2, 4),
            cross_attention_dim=sum(prompt_embed_dims),
            addition_embed_type="text_time",
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=_SDXL_TIME_IDS * addition_time_embed_dim + pooled_dim,
            use_linear_projection=True,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(_TINY_VAE_CHANNELS),
            up_block_types=("UpDecoderBlock2D",) * len(_TINY_VAE_CHANNELS),
            block_out_channels=_TINY_VAE_CHANNELS,
            layers_per_block=1,
            latent_channels=4,
            sample_size=_TINY_VAE_SAMPLE_SIZE,
        )
    return VideoLaVITKeyframePipeline(
        keyframe_decoder=keyframe_decoder,
        unet=unet,
        vae=vae,
        scheduler=tiny_sdxl_scheduler(),
        visual_tokenizer=visual_tokenizer,
    )


def build_tiny_video_pipeline(
    motion_tokenizer: VideoLaVITMotionTokenizer | None = None, seed: int = 0
) -> VideoLaVITVideoPipeline:
    """A tiny random video pipeline (24 frames of 64 x 64 by default).

    Args:
        motion_tokenizer: the motion tokenizer whose codes it decodes; default: a random one with the
            ``VideoLaVITConfig.tiny()`` motion tokenizer configuration.
        seed: seed of every random weight.
    """
    if motion_tokenizer is None:
        with _seeded(seed):
            motion_tokenizer = VideoLaVITMotionTokenizer(VideoLaVITConfig.tiny().motion_tokenizer_config)
    with _seeded(seed):
        motion_grid_size, cross_attention_dim = (8, 8), 32
        motion_encoder = MotionConditionEncoder(
            out_channels=cross_attention_dim,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=1,
            grid_size=motion_grid_size,
        )
        addition_time_embed_dim = 8
        unet = UNetSpatioTemporalMotionModel(
            sample_size=TINY_LATENT_SIZE,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            block_out_channels=(32, 64),
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=_SVD_TIME_IDS * addition_time_embed_dim,
            layers_per_block=1,
            cross_attention_dim=cross_attention_dim,
            num_attention_heads=(2, 4),
            num_frames=motion_tokenizer.config.num_frames,
            motion_grid_size=motion_grid_size,
        )
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=_TINY_VAE_CHANNELS,
            down_block_types=("DownEncoderBlock2D",) * len(_TINY_VAE_CHANNELS),
            layers_per_block=1,
            latent_channels=4,
            sample_size=_TINY_VAE_SAMPLE_SIZE,
        )
    return VideoLaVITVideoPipeline(
        unet=unet,
        motion_encoder=motion_encoder,
        vae=vae,
        scheduler=tiny_edm_scheduler(),
        motion_tokenizer=motion_tokenizer,
    )


def write_tiny_detokenizers(
    folder: str | os.PathLike,
    seed: int = 0,
    visual_tokenizer: VideoLaVITVisualTokenizer | None = None,
    motion_tokenizer: VideoLaVITMotionTokenizer | None = None,
) -> dict[str, Path]:
    """Save tiny random keyframe and video pipelines under ``folder/keyframe`` and ``folder/video``, and the
    end-to-end ``VideoLaVITPipeline``'s code in ``folder``.

    Pass the tiny causal LM's ``visual_tokenizer`` and ``motion_tokenizer`` so that the codes it generates
    decode with the same codebooks; otherwise random ``VideoLaVITConfig.tiny()`` tokenizers are used.

    Returns:
        ``{"keyframe": path, "video": path}``; load either with ``DiffusionPipeline.from_pretrained(path,
        trust_remote_code=True)``.
    """
    folder = Path(folder)
    paths = {KEYFRAME_FOLDER: folder / KEYFRAME_FOLDER, VIDEO_FOLDER: folder / VIDEO_FOLDER}
    build_tiny_keyframe_pipeline(visual_tokenizer, seed=seed).save_pretrained(paths[KEYFRAME_FOLDER])
    build_tiny_video_pipeline(motion_tokenizer, seed=seed + 1).save_pretrained(paths[VIDEO_FOLDER])
    VideoLaVITPipeline.save_code(folder)
    return paths
