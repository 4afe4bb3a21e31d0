"""Concepts defined once: LLM motion scale, placeholder strings, token layout, motion resize."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transformers_vlavit import VideoLaVITConfig, VideoLaVITMotionTokenizerConfig, VideoLaVITVocabularyMapping
from transformers_vlavit import configuration_motion_tokenizer, configuration_video_lavit, tokenizer_training
from transformers_vlavit import video_decomposition
from transformers_vlavit.motion_grid import resize_motion_frames


def test_llm_motion_scale_is_the_motion_tokenizer_default():
    assert video_decomposition.LLM_MOTION_SCALE is configuration_motion_tokenizer.LLM_MOTION_SCALE
    default = VideoLaVITMotionTokenizerConfig().motion_scale_factor
    assert default == video_decomposition.LLM_MOTION_SCALE == 10.0


def test_placeholder_strings_live_with_the_config_and_stay_importable_from_tokenizer_training():
    for name in ("IMAGE_PLACEHOLDER", "VIDEO_PLACEHOLDER", "IMAGE_START_TOKEN", "MOTION_END_TOKEN"):
        assert getattr(tokenizer_training, name) is getattr(configuration_video_lavit, name)
    assert (configuration_video_lavit.IMAGE_PLACEHOLDER, configuration_video_lavit.VIDEO_PLACEHOLDER) == (
        "<image>",
        "<video>",
    )


def test_vocabulary_mapping_reads_the_config():
    config = VideoLaVITConfig.tiny()
    mapping = VideoLaVITVocabularyMapping(config)
    for name in (
        "image_start_token_id",
        "image_end_token_id",
        "visual_token_offset",
        "visual_codebook_size",
        "motion_start_token_id",
        "motion_end_token_id",
        "motion_token_offset",
        "motion_codebook_size",
    ):
        assert getattr(mapping, name) == getattr(config, name)
        assert name not in vars(mapping)  # read through, not copied


def test_resize_motion_frames_is_a_per_frame_bicubic_resize():
    motion = torch.randn(2, 2, 3, 5, 7)
    resized = resize_motion_frames(motion, (4, 6))
    assert resized.shape == (2, 2, 3, 4, 6)
    frame = F.interpolate(motion[1, :, 2][None], size=(4, 6), mode="bicubic", align_corners=False)[0]
    assert torch.equal(resized[1, :, 2], frame)
