"""Weight-name conversion of the released motion tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from transformers_vlavit import VideoLaVITMotionTokenizer, VideoLaVITMotionTokenizerConfig
from transformers_vlavit.conversion.motion_tokenizer import (
    DROPPED_KEYS,
    UnknownMotionTokenizerWeightError,
    convert_motion_tokenizer_state_dict,
)


def test_full_size_manifest_golden_maps_onto_every_parameter(golden_dir):
    """Every released name maps to our full-size model (built on `meta`), covering each parameter once."""
    manifest = json.loads((golden_dir / "manifest_full_size.json").read_text())["motion_tokenizer"]
    original = {name: torch.empty(shape, device="meta") for name, shape in manifest.items()}
    converted = convert_motion_tokenizer_state_dict(original)
    with torch.device("meta"):
        model = VideoLaVITMotionTokenizer(VideoLaVITMotionTokenizerConfig())
    ours = model.state_dict()
    assert sorted(converted) == sorted(ours)
    for name, tensor in ours.items():
        assert converted[name].shape == tensor.shape, name
    kept = sum(tensor.numel() for name, tensor in original.items() if name not in DROPPED_KEYS)
    assert kept == sum(tensor.numel() for tensor in ours.values()) == 158_476_322


def test_blocks_are_regrouped_by_stage_and_attention_is_split():
    config = VideoLaVITMotionTokenizerConfig(stage_depths=(1, 2, 1, 1), hidden_size=8, num_attention_heads=2)
    qkv = torch.arange(24 * 8, dtype=torch.float32).reshape(24, 8)
    converted = convert_motion_tokenizer_state_dict(
        {
            "decoder.blocks.2.temporal_attention.qkv.weight": qkv,
            "decoder.blocks.2.temporal_attention.v_bias": torch.ones(8),
            "encoder.blocks.3.norm1.weight": torch.zeros(8),
            "encoder.pos_embed": torch.zeros(1, 720, 8),
            "encoder.down_sample_layers.3.conv.bias": torch.zeros(8),
        },
        config,
    )
    prefix = "decoder.stages.1.blocks.1.temporal_attention"
    assert torch.equal(converted[f"{prefix}.q_proj.weight"], qkv[:8])
    assert torch.equal(converted[f"{prefix}.k_proj.weight"], qkv[8:16])
    assert torch.equal(converted[f"{prefix}.v_proj.weight"], qkv[16:])
    assert f"{prefix}.v_proj.bias" in converted
    assert "encoder.stages.2.blocks.0.temporal_norm.weight" in converted
    assert converted["encoder.spatial_position_embeddings"].shape == (720, 8)
    assert "encoder.stages.3.downsample.conv.bias" in converted


@pytest.mark.parametrize(
    "name",
    ["model.encoder.in_proj.weight", "encoder.blocks.12.norm0.weight", "encoder.blocks.0.attn.qkv.weight"],
)
def test_unknown_names_are_rejected(name):
    with pytest.raises(UnknownMotionTokenizerWeightError, match="strip any outer prefix"):
        convert_motion_tokenizer_state_dict({name: torch.zeros(1)})
