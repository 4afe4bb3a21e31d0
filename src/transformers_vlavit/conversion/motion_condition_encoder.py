"""Weight names of the released motion condition encoder -> :class:`diffusers_vlavit.MotionConditionEncoder`.

The released encoder has no file of its own: its tensors sit under ``motion_encoder.`` in the video
detokenizer's ``video_detokenizer/unet/diffusion_pytorch_model.bin``, next to the U-Net's. The
converter accepts that combined state dict (it keeps the ``motion_encoder.`` tensors and drops the
U-Net's, which :func:`~transformers_vlavit.conversion.video_unet.convert_video_unet_state_dict` takes)
or the encoder's tensors alone without prefix. Every encoder tensor is kept: the fused attention
``qkv`` projection (with separate ``q_bias`` / ``v_bias``) becomes ``to_q`` / ``to_k`` / ``to_v``, and
the spatial position embedding loses its leading batch axis.
"""

from __future__ import annotations

import re

import torch

from .video_unet import MOTION_ENCODER_PREFIX as PREFIX
from .video_unet import UNET_MODULES

# the U-Net's tensors, present when the combined file is passed
DROPPED_KEYS: dict[str, str] = {
    f"{module}*": "U-Net weights stored in the same file; convert them with convert_video_unet_state_dict"
    for module in UNET_MODULES
}

# original module path -> ours, outside the blocks
_RENAMES = {"in_proj": "proj_in", "norm": "norm_out", "out_proj": "proj_out"}
# module path inside ``blocks.<i>`` -> ours
_BLOCK_RENAMES = {
    "norm0": "norm_spatial",
    "norm1": "norm_temporal",
    "norm2": "norm_ff",
    "spatial_attention.proj": "spatial_attn.to_out",
    "temporal_attention.proj": "temporal_attn.to_out",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
_ATTENTIONS = {"spatial_attention": "spatial_attn", "temporal_attention": "temporal_attn"}
_MODULE_KEY = re.compile(r"^(?:blocks\.(\d+)\.)?(.+)\.(weight|bias)$")
_ATTENTION_KEY = re.compile(
    r"^blocks\.(\d+)\.(spatial_attention|temporal_attention)\.(qkv\.weight|q_bias|v_bias)$"
)


class UnknownMotionConditionEncoderWeightError(KeyError):
    """Raised when a state dict holds a name the motion condition encoder converter does not know."""


def _unknown(name: str) -> UnknownMotionConditionEncoderWeightError:
    return UnknownMotionConditionEncoderWeightError(
        f"unexpected motion condition encoder weight {name!r}; pass the detokenizer's U-Net state dict "
        f"(with '{PREFIX}' names) or the encoder's tensors without prefix"
    )


def _convert_attention(
    index: str, attention: str, kind: str, tensor: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Split the fused ``qkv`` weight, or place the separate query/value bias."""
    ours = f"blocks.{index}.{_ATTENTIONS[attention]}"
    if kind == "qkv.weight":
        query, key, value = tensor.chunk(3, dim=0)
        return {f"{ours}.to_q.weight": query, f"{ours}.to_k.weight": key, f"{ours}.to_v.weight": value}
    projection = "to_q" if kind == "q_bias" else "to_v"
    return {f"{ours}.{projection}.bias": tensor}


def _convert_one(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """Map one original encoder tensor (no prefix) to ours."""
    if name == "pos_embed":
        return {"position_embedding": tensor.squeeze(0)}
    attention = _ATTENTION_KEY.match(name)
    if attention:
        return _convert_attention(*attention.groups(), tensor)
    module = _MODULE_KEY.match(name)
    if module is None:
        raise _unknown(name)
    index, path, kind = module.groups()
    if index is None and path in _RENAMES:
        return {f"{_RENAMES[path]}.{kind}": tensor}
    if index is not None and path in _BLOCK_RENAMES:
        return {f"blocks.{index}.{_BLOCK_RENAMES[path]}.{kind}": tensor}
    raise _unknown(name)


def convert_motion_condition_encoder_state_dict(
    original_state_dict: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Convert the original motion condition encoder weights to ``MotionConditionEncoder`` names.

    Args:
        original_state_dict: the video detokenizer's U-Net state dict (encoder tensors under
            ``motion_encoder.``; everything else is dropped) or the encoder's tensors without prefix.

    Returns:
        A state dict that ``MotionConditionEncoder.load_state_dict(..., strict=True)`` accepts; each
        fused ``[3 * width, width]`` attention projection becomes three ``[width, width]`` tensors and
        the ``[1, cells, width]`` position embedding becomes ``[cells, width]``.

    Raises:
        UnknownMotionConditionEncoderWeightError: for a name that is not an encoder weight.
    """
    if any(name.startswith(PREFIX) for name in original_state_dict):
        original_state_dict = {
            name[len(PREFIX) :]: tensor
            for name, tensor in original_state_dict.items()
            if name.startswith(PREFIX)
        }
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in original_state_dict.items():
        converted.update(_convert_one(name, tensor))
    return converted


__all__ = [
    "DROPPED_KEYS",
    "PREFIX",
    "UnknownMotionConditionEncoderWeightError",
    "convert_motion_condition_encoder_state_dict",
]
