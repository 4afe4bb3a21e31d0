"""Parity of the visual tokenizer with the original implementation, through the weight-name converter."""

from __future__ import annotations

import json

import pytest
import torch

from transformers_vlavit.configuration_visual_tokenizer import VideoLaVITVisualTokenizerConfig
from transformers_vlavit.conversion.visual_tokenizer import (
    DROPPED_KEYS,
    UnknownVisualTokenizerWeightError,
    combine_released_visual_tokenizer_state_dicts,
    convert_visual_tokenizer_state_dict,
)
from transformers_vlavit.modeling_visual_tokenizer import VideoLaVITVisualTokenizer

OUTPUTS = ("vit_features", "keep_logprobs", "keep", "merged", "llm_features")


@pytest.fixture(scope="module")
def golden_model(golden_file, golden_tokenizer_kwargs):
    """The tokenizer at the golden file's size, with the original weights converted and loaded strictly."""
    tensors, description = golden_file("visual_tokenizer")
    sizes = description["config"]
    config = VideoLaVITVisualTokenizerConfig(
        **golden_tokenizer_kwargs.visual(sizes), llm_hidden_size=sizes["llm_hidden_size"]
    )
    model = VideoLaVITVisualTokenizer(config).eval()
    original = {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}
    model.load_state_dict(convert_visual_tokenizer_state_dict(original), strict=True)
    return model, tensors


def test_golden_outputs_match_the_original(golden_model):
    model, tensors = golden_model
    with torch.no_grad():
        output = model(tensors["input.pixel_values"])
    for name in OUTPUTS:
        expected = tensors[f"output.{name}"]
        assert output[name].shape == expected.shape, name
        assert torch.allclose(output[name], expected, atol=1e-4, rtol=0), name
    assert torch.equal(output.token_ids, tensors["output.token_ids"])
    assert torch.equal(output.token_counts, tensors["output.token_counts"])


def test_golden_tokenize_and_encode_features(golden_model):
    model, tensors = golden_model
    pixel_values = tensors["input.pixel_values"]
    counts = tensors["output.token_counts"].tolist()
    with torch.no_grad():
        ids = model.tokenize(pixel_values)
        features = model.encode_features(pixel_values)
    assert [len(image_ids) for image_ids in ids] == counts
    assert torch.equal(torch.cat(ids), tensors["output.token_ids"])
    kept = tensors["output.keep"].bool()
    assert torch.allclose(torch.cat(features), tensors["output.llm_features"][kept], atol=1e-4, rtol=0)


def test_golden_conversion_drops_only_the_listed_names(golden_file):
    tensors, _ = golden_file("visual_tokenizer")
    original = {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}
    converted = convert_visual_tokenizer_state_dict(original)
    assert set(DROPPED_KEYS) <= set(original)
    assert len(converted) == len(original) - len(DROPPED_KEYS)
    assert sum(t.numel() for t in converted.values()) == sum(
        t.numel() for name, t in original.items() if name not in DROPPED_KEYS
    )


def test_golden_full_size_manifest_maps_onto_the_released_size_model(golden_dir):
    manifest = json.loads((golden_dir / "manifest_full_size.json").read_text())["visual_tokenizer"]
    original = {name: torch.empty(shape, device="meta") for name, shape in manifest.items()}
    converted = convert_visual_tokenizer_state_dict(original)
    with torch.device("meta"):
        model = VideoLaVITVisualTokenizer(VideoLaVITVisualTokenizerConfig())
    ours = model.state_dict()
    assert set(converted) == set(ours), "every parameter mapped, none left unset"
    for name, tensor in converted.items():
        assert tensor.shape == ours[name].shape, name
    assert len(converted) == len(manifest) - len(DROPPED_KEYS)


def test_released_files_are_combined_in_loading_order():
    eva = {"cls_token": torch.zeros(1, 1, 4), "head.weight": torch.zeros(2, 4)}
    tokenizer = {"vit_proj.weight": torch.zeros(3, 4), "vit_proj.bias": torch.zeros(3)}
    understanding = {"vit_proj.weight": torch.ones(3, 4)}
    combined = combine_released_visual_tokenizer_state_dicts(eva, tokenizer, understanding)
    assert set(combined) == {"encoder.cls_token", "encoder.head.weight", "vit_proj.weight", "vit_proj.bias"}
    assert torch.equal(combined["vit_proj.weight"], torch.ones(3, 4))
    converted = convert_visual_tokenizer_state_dict(combined)
    assert converted["vision_model.embeddings.class_embedding"].shape == (4,)
    assert "encoder.head.weight" not in converted and "vit_proj.weight" in converted


def test_unknown_names_are_rejected():
    with pytest.raises(UnknownVisualTokenizerWeightError, match="model.visual_tokenizer."):
        convert_visual_tokenizer_state_dict({"model.visual_tokenizer.vit_proj.weight": torch.zeros(1)})
    with pytest.raises(UnknownVisualTokenizerWeightError):
        convert_visual_tokenizer_state_dict(
            {"causal_encoder.blocks.0.token_causal_attn.q_bias": torch.zeros(1)}
        )
