"""Released language-model weight names -> VideoLaVITForCausalLM, through conversion/language_model.py."""

from __future__ import annotations

import json

import pytest
import torch

from transformers_vlavit.configuration_video_lavit import VideoLaVITConfig
from transformers_vlavit.conversion.language_model import (
    DROPPED_KEYS,
    UnknownLanguageModelWeightError,
    convert_language_model_state_dict,
    convert_video_lavit_state_dict,
)
from transformers_vlavit.modeling_motion_tokenizer import VideoLaVITMotionTokenizer
from transformers_vlavit.modeling_video_lavit import VideoLaVITForCausalLM
from transformers_vlavit.modeling_visual_tokenizer import VideoLaVITVisualTokenizer


def original_llama_names(model: VideoLaVITForCausalLM) -> dict[str, torch.Tensor]:
    """What a transformers-4.33 LlamaForCausalLM checkpoint of the same size holds (with rotary buffers)."""
    original = {f"model.{name}": tensor for name, tensor in model.model.language_model.state_dict().items()}
    original["lm_head.weight"] = model.lm_head.weight
    head_dim = model.config.text_config.head_dim
    for layer in range(model.config.text_config.num_hidden_layers):
        original[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = torch.ones(
            head_dim // 2, device="meta"
        )
    return original


def golden_config(
    description_visual: dict, description_motion: dict, golden_tokenizer_kwargs, **text
) -> VideoLaVITConfig:
    """The composite config at the golden tokenizers' sizes."""
    visual, motion = description_visual["config"], description_motion["config"]
    return VideoLaVITConfig(
        text_config={
            "hidden_size": visual["llm_hidden_size"],
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            **text,
        },
        visual_tokenizer_config={
            **golden_tokenizer_kwargs.visual(visual),
            "llm_hidden_size": visual["llm_hidden_size"],
        },
        motion_tokenizer_config=golden_tokenizer_kwargs.motion(motion),
    )


def test_llama_names_map_under_the_base_model_and_rotary_buffers_are_dropped():
    torch.manual_seed(0)
    model = VideoLaVITForCausalLM(VideoLaVITConfig.tiny())
    original = {name: tensor.clone() for name, tensor in original_llama_names(model).items()}
    rotary = {name for name in original if name.endswith("self_attn.rotary_emb.inv_freq")}
    assert "model.layers.0.self_attn.rotary_emb.inv_freq" in rotary
    converted = convert_language_model_state_dict(original)
    # the backbone moves under the base model (`model.language_model.`), the LM head keeps its name
    ours = {
        f"model.language_model.{name.removeprefix('model.')}" if name.startswith("model.") else name: name
        for name in set(original) - rotary
    }
    assert set(converted) == set(ours)
    llama_part = {n for n in model.state_dict() if n.startswith(("model.language_model.", "lm_head."))}
    assert set(converted) == llama_part
    assert all(torch.equal(converted[name], original[ours[name]]) for name in converted)
    assert "model.layers.*.self_attn.rotary_emb.inv_freq" in DROPPED_KEYS
    with pytest.raises(UnknownLanguageModelWeightError, match="model.extra_projection.weight"):
        convert_language_model_state_dict({**original, "model.extra_projection.weight": torch.ones(1)})


def test_golden_sft_checkpoint_loads_strictly_and_its_tokenizers_match(
    golden_file, golden_tokenizer_kwargs
):
    visual_tensors, visual_description = golden_file("visual_tokenizer")
    motion_tensors, motion_description = golden_file("motion_tokenizer")
    config = golden_config(
        visual_description, motion_description, golden_tokenizer_kwargs, num_attention_heads=32
    )
    with torch.device("meta"):
        model = VideoLaVITForCausalLM(config)
    # the tokenizers are small enough to run: build them for real, keep the 49412 x 4096 Llama on meta
    model.visual_tokenizer = VideoLaVITVisualTokenizer(config.visual_tokenizer_config)
    model.motion_tokenizer = VideoLaVITMotionTokenizer(config.motion_tokenizer_config)
    sft_checkpoint = original_llama_names(model)
    for prefix, tensors in (
        ("model.visual_tokenizer.", visual_tensors),
        ("model.motion_tokenizer.", motion_tensors),
    ):
        sft_checkpoint.update(
            {
                prefix + name.removeprefix("model."): t
                for name, t in tensors.items()
                if name.startswith("model.")
            }
        )

    converted = convert_language_model_state_dict(sft_checkpoint, config)
    model.load_state_dict(converted, strict=True, assign=True)

    model.eval()
    with torch.no_grad():
        motion_ids = model.motion_tokenizer.encode(motion_tensors["input.motion"])
        visual_ids = torch.cat(model.visual_tokenizer.tokenize(visual_tensors["input.pixel_values"]))
    assert torch.equal(motion_ids, motion_tensors["output.tokens"].long())
    assert torch.equal(visual_ids, visual_tensors["output.token_ids"].long())


def test_golden_full_size_manifest_maps_onto_the_released_model(golden_dir):
    manifest = json.loads((golden_dir / "manifest_full_size.json").read_text())
    config = VideoLaVITConfig()
    with torch.device("meta"):
        model = VideoLaVITForCausalLM(config)
        language_model = original_llama_names(model)
        visual = {name: torch.empty(shape) for name, shape in manifest["visual_tokenizer"].items()}
        motion = {name: torch.empty(shape) for name, shape in manifest["motion_tokenizer"].items()}
    # generation layout: tokenizers from their own files; SFT layout: inside the language model
    layouts = {
        "generation": convert_video_lavit_state_dict(language_model, visual, motion, config),
        "sft": convert_language_model_state_dict(
            {
                **language_model,
                **{f"model.visual_tokenizer.{name}": t for name, t in visual.items()},
                **{f"model.motion_tokenizer.{name}": t for name, t in motion.items()},
            },
            config,
        ),
    }
    expected = {name: tensor.numel() for name, tensor in model.state_dict().items()}
    assert expected["lm_head.weight"] == 49412 * 4096
    for converted in layouts.values():
        assert {name: tensor.numel() for name, tensor in converted.items()} == expected
