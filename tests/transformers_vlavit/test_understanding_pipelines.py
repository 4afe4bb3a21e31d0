"""`pipeline("image-text-to-text")` and `pipeline("any-to-any")` answer chat questions about videos and images."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
import transformers.pipelines.any_to_any as any_to_any
from transformers import AutoModelForImageTextToText, AutoModelForMultimodalLM, pipeline

from transformers_vlavit import VideoLaVITForCausalLM, VideoLaVITProcessor
from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("understanding")
    video = folder / "clip.mp4"
    write_synthetic_video(video, width=96, height=64, duration=4.0, fps=12, seed=3)
    image = folder / "image.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(image)
    return write_tiny_checkpoint(folder / "tiny", with_detokenizers=False), video, image


def direct_answer(folder, messages, max_new_tokens):
    """The same question through the processor and `generate` (the reference for the pipelines)."""
    model = VideoLaVITForCausalLM.from_pretrained(folder).eval()
    processor = VideoLaVITProcessor.from_pretrained(folder)
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.post_process_image_text_to_text(ids[:, inputs["input_ids"].shape[1] :])[0]


def test_model_declares_its_modalities_and_auto_classes(checkpoint):
    folder, _, _ = checkpoint
    assert VideoLaVITForCausalLM.input_modalities == ("image", "video", "text")
    assert "text" in VideoLaVITForCausalLM.output_modalities
    for auto_class in (AutoModelForImageTextToText, AutoModelForMultimodalLM):
        assert type(auto_class.from_pretrained(folder)) is VideoLaVITForCausalLM


@pytest.mark.parametrize("kind", ["video", "image"])
def test_image_text_to_text_answers_like_generate(checkpoint, kind):
    folder, video, image = checkpoint
    media = {"type": "video", "path": str(video)} if kind == "video" else {"type": "image", "path": str(image)}
    messages = [{"role": "user", "content": [media, {"type": "text", "text": "What is shown?"}]}]
    answer = pipeline("image-text-to-text", model=str(folder))(
        text=messages, max_new_tokens=4, return_full_text=False, do_sample=False
    )
    assert answer[0]["generated_text"].strip() == direct_answer(folder, messages, 4).strip()


def test_any_to_any_answers_like_generate(checkpoint, monkeypatch):
    folder, video, _ = checkpoint
    # transformers 5.24's any-to-any constructor requires torchvision for every image/video model, although
    # nothing it then runs for this model uses it; torchvision does not load here
    monkeypatch.setattr(any_to_any, "requires_backends", lambda *args, **kwargs: None)
    messages = [{"role": "user", "content": [{"type": "video", "path": str(video)}, {"type": "text", "text": "Why?"}]}]
    answer = pipeline("any-to-any", model=str(folder))(
        text=messages, max_new_tokens=4, return_full_text=False, do_sample=False
    )
    assert answer[0]["generated_text"].strip() == direct_answer(folder, messages, 4).strip()
    assert direct_answer(folder, messages, 4).strip(), "an empty answer would make the comparison vacuous"
