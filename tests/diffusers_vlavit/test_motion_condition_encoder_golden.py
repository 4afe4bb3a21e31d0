"""MotionConditionEncoder against the original implementation: golden outputs and checkpoint names."""

import json

import pytest
import torch

from diffusers_vlavit.models import MotionConditionEncoder
from transformers_vlavit.conversion.motion_condition_encoder import (
    UnknownMotionConditionEncoderWeightError,
    convert_motion_condition_encoder_state_dict,
)


def _original_weights(tensors):
    return {
        name.removeprefix("model."): tensor for name, tensor in tensors.items() if name.startswith("model.")
    }


def _golden_encoder(description):
    config = description["config"]
    return MotionConditionEncoder(
        out_channels=config["out_channels"],
        num_attention_heads=config["num_heads"],
        attention_head_dim=config["dim"] // config["num_heads"],
        num_layers=config["depth"],
        grid_size=tuple(config["grid_hw"]),
        layer_norm_eps=config["ln_eps"],
    ).eval()


def test_golden_motion_condition_encoder_matches_reference(golden_file):
    tensors, description = golden_file("motion_condition_encoder")
    encoder = _golden_encoder(description)
    encoder.load_state_dict(
        convert_motion_condition_encoder_state_dict(_original_weights(tensors)), strict=True
    )
    with torch.no_grad():
        hidden_states = encoder(tensors["input.motion"])
    torch.testing.assert_close(hidden_states, tensors["output.hidden_states"], rtol=0, atol=1e-4)


def test_golden_motion_condition_encoder_from_combined_unet_file(golden_file):
    """The released U-Net file holds the encoder under ``motion_encoder.`` next to U-Net tensors."""
    tensors, description = golden_file("motion_condition_encoder")
    combined = {f"motion_encoder.{name}": tensor for name, tensor in _original_weights(tensors).items()}
    combined["conv_in.weight"] = torch.zeros(1)
    encoder = _golden_encoder(description)
    encoder.load_state_dict(convert_motion_condition_encoder_state_dict(combined), strict=True)
    with torch.no_grad():
        hidden_states = encoder(tensors["input.motion"])
    torch.testing.assert_close(hidden_states, tensors["output.hidden_states"], rtol=0, atol=1e-4)


def test_golden_full_size_manifest_maps_one_to_one(golden_dir):
    manifest = json.loads((golden_dir / "manifest_full_size.json").read_text())["motion_condition_encoder"]
    with torch.device("meta"):
        encoder = MotionConditionEncoder()
        original = {name: torch.empty(shape) for name, shape in manifest.items()}
    converted = convert_motion_condition_encoder_state_dict(original)
    ours = encoder.state_dict()
    assert converted.keys() == ours.keys()
    assert sum(t.numel() for t in converted.values()) == sum(t.numel() for t in original.values())
    for name, tensor in ours.items():
        assert converted[name].shape == tensor.shape, name


def test_unknown_weight_names_are_rejected():
    with pytest.raises(UnknownMotionConditionEncoderWeightError, match="blocks.0.mystery"):
        convert_motion_condition_encoder_state_dict({"blocks.0.mystery.weight": torch.zeros(1)})
