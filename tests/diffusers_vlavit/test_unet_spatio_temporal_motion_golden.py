"""UNetSpatioTemporalMotionModel against the original implementation: golden outputs and checkpoint names."""

import json
from fnmatch import fnmatchcase

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from diffusers_vlavit.models import MotionConditionEncoder, UNetSpatioTemporalMotionModel
from transformers_vlavit.conversion.motion_condition_encoder import (
    DROPPED_KEYS as ENCODER_DROPPED_KEYS,
)
from transformers_vlavit.conversion.motion_condition_encoder import (
    convert_motion_condition_encoder_state_dict,
)
from transformers_vlavit.conversion.video_unet import DROPPED_KEYS as UNET_DROPPED_KEYS
from transformers_vlavit.conversion.video_unet import (
    UnknownVideoUNetWeightError,
    convert_video_unet_state_dict,
)


def _golden_inputs(tensors):
    return {
        "sample": tensors["input.sample"],
        "timestep": tensors["input.timestep"],
        "encoder_hidden_states": tensors["input.encoder_hidden_states"],
        "added_time_ids": tensors["input.added_time_ids"],
    }


@pytest.fixture(scope="module")
def golden_unet(golden_file):
    tensors, description = golden_file("video_unet")
    original = {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}
    unet = UNetSpatioTemporalMotionModel(**description["config"]).eval()
    unet.load_state_dict(convert_video_unet_state_dict(original), strict=True)
    return unet, tensors, description


def test_golden_video_unet_matches_reference(golden_unet):
    unet, tensors, _ = golden_unet
    with torch.no_grad():
        sample = unet(**_golden_inputs(tensors)).sample
    torch.testing.assert_close(sample, tensors["output.sample"], rtol=0, atol=1e-3)


def test_golden_video_unet_differs_from_image_conditioned_svd(golden_unet):
    """The same weights in diffusers' SVD U-Net (first frame's context only) miss the reference."""
    unet, tensors, description = golden_unet
    svd = UNetSpatioTemporalConditionModel(**description["config"]).eval()
    svd.load_state_dict(unet.state_dict(), strict=True)
    inputs = _golden_inputs(tensors)
    inputs["encoder_hidden_states"] = inputs["encoder_hidden_states"][:, 0]
    with torch.no_grad():
        sample = svd(**inputs).sample
    assert (sample - tensors["output.sample"]).abs().max() > 1e-2


def test_golden_full_size_manifest_maps_one_to_one(golden_dir):
    """The released U-Net file (U-Net + ``motion_encoder.*``) fills both models exactly, on meta."""
    manifest = json.loads((golden_dir / "manifest_full_size.json").read_text())
    with torch.device("meta"):
        unet = UNetSpatioTemporalMotionModel()
        encoder = MotionConditionEncoder()
        released = {name: torch.empty(shape) for name, shape in manifest["video_unet"].items()}
        released.update(
            {
                f"motion_encoder.{name}": torch.empty(s)
                for name, s in manifest["motion_condition_encoder"].items()
            }
        )
    for model, convert in (
        (unet, convert_video_unet_state_dict),
        (encoder, convert_motion_condition_encoder_state_dict),
    ):
        converted = convert(released)
        ours = model.state_dict()
        assert converted.keys() == ours.keys()
        for name, tensor in ours.items():
            assert converted[name].shape == tensor.shape, name
    assert unet.config.in_channels == 10 and unet.conv_in.weight.shape[1] == 10
    # what each converter leaves to the other is listed, with a reason, in its DROPPED_KEYS
    unet_names = set(manifest["video_unet"])
    encoder_names = set(released) - unet_names
    for names, dropped_keys in ((unet_names, ENCODER_DROPPED_KEYS), (encoder_names, UNET_DROPPED_KEYS)):
        assert all(any(fnmatchcase(name, pattern) for pattern in dropped_keys) for name in names)


def test_unknown_weight_names_are_rejected():
    with pytest.raises(UnknownVideoUNetWeightError, match="unet.conv_in.weight"):
        convert_video_unet_state_dict({"unet.conv_in.weight": torch.zeros(1)})
