"""`vlavit tiny-checkpoint DIR` writes a complete, loadable, reproducible tiny checkpoint."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

from transformers_vlavit.cli import main
from transformers_vlavit.modeling_video_lavit import VideoLaVITForCausalLM
from transformers_vlavit.pipeline_text_to_video import DETOKENIZER_FOLDER
from transformers_vlavit.tiny_checkpoint import build_tiny_model_and_processor


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "checkpoint"
    assert main(["tiny-checkpoint", str(folder), "--seed", "3"]) == 0
    return folder


def test_checkpoint_files(checkpoint):
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "processor_config.json",
    ):
        assert (checkpoint / name).is_file(), name
    if importlib.util.find_spec("diffusers_vlavit.tiny") is not None:
        for pipeline in ("keyframe", "video"):
            assert (checkpoint / DETOKENIZER_FOLDER / pipeline / "model_index.json").is_file()


def test_checkpoint_loads_with_the_auto_classes_and_matches_the_seed(checkpoint):
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert isinstance(model, VideoLaVITForCausalLM)
    reference, _ = build_tiny_model_and_processor(seed=3)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert model.generation_config.eos_token_id == 2 and model.generation_config.pad_token_id == 0


def test_tokenizer_follows_the_config_token_layout(checkpoint):
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    config, tokenizer = model.config, AutoProcessor.from_pretrained(checkpoint).tokenizer
    expected = {
        "<|image_start|>": config.image_start_token_id,
        "<|image_end|>": config.image_end_token_id,
        "<|visual_00000|>": config.visual_token_offset,
        "<|motion_start|>": config.motion_start_token_id,
        "<|motion_end|>": config.motion_end_token_id,
        "<|motion_0000|>": config.motion_token_offset,
        "<image>": config.image_token_id,
        "<video>": config.video_token_id,
    }
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in expected} == expected
    assert len(tokenizer) == config.vocab_size + 2
    assert tokenizer("a cat")["input_ids"][0] == config.text_config.bos_token_id


def test_chat_template_and_text_generation(checkpoint):
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}], add_generation_prompt=True
    )
    assert prompt.endswith("USER: Hello there ASSISTANT:")
    inputs = processor(text=[prompt, "Hi"], return_tensors="pt", padding=True)
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape == (2, inputs["input_ids"].shape[1] + 3)
