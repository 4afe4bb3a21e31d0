"""Concepts with one source of truth: the token layout; and the one constant that must be repeated stays equal."""

from __future__ import annotations

from transformers_vlavit import VideoLaVITConfig, VideoLaVITMotionTokenizerConfig, VideoLaVITVocabularyMapping
from transformers_vlavit import video_decomposition


def test_llm_motion_scale_is_the_motion_tokenizer_default():
    """`video_decomposition` travels as one-level custom code with the processor, so it repeats the value."""
    default = VideoLaVITMotionTokenizerConfig().motion_scale_factor
    assert default == video_decomposition.LLM_MOTION_SCALE == 10.0


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
