"""The processor's video inputs equal the original preprocessing (golden/preprocess) end to end."""

from __future__ import annotations

import torch

from transformers_vlavit.image_processing_video_lavit import VideoLaVITImageProcessor
from transformers_vlavit.processing_video_lavit import VideoLaVITProcessor
from transformers_vlavit.tokenizer_training import train_video_lavit_tokenizer


def test_processor_video_inputs_match_golden_preprocess(golden_dir, golden_file):
    tokenizer = train_video_lavit_tokenizer(
        text_vocab_size=280, visual_codebook_size=4, motion_codebook_size=4
    )
    processor = VideoLaVITProcessor(image_processor=VideoLaVITImageProcessor(), tokenizer=tokenizer)
    names = ("demo_video7013", "synthetic_3s")
    references = [golden_file(f"preprocess/{name}")[0] for name in names]
    # golden inputs are already 6 fps MPEG-4 Part 2: read them as they are, like the reference did
    out = processor(
        text=["USER: <video>\nWhat happens? ASSISTANT:", "<video> then <|image_start|>"],
        videos=[golden_dir / "preprocess" / f"{name}.m4v" for name in names],
        transcode=False,
        return_tensors="pt",
        padding=True,
    )
    assert out["clips_per_video"].tolist() == [len(reference["pixel_values"]) for reference in references]
    expected_pixels = torch.cat([reference["pixel_values"] for reference in references])
    expected_motion = torch.cat([reference["motion_vectors"] for reference in references])
    torch.testing.assert_close(out["pixel_values_videos"], expected_pixels, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["motion_vectors"], expected_motion, atol=1e-4, rtol=0)
