"""Weight names of the released video U-Net -> :class:`diffusers_vlavit.UNetSpatioTemporalMotionModel`.

The released ``video_detokenizer/unet/diffusion_pytorch_model.bin`` holds the U-Net under diffusers'
``UNetSpatioTemporalConditionModel`` names, which are also ours, so U-Net tensors keep their names.
The same file holds the motion condition encoder under ``motion_encoder.``; those tensors are dropped
here and converted by
:func:`~transformers_vlavit.conversion.motion_condition_encoder.convert_motion_condition_encoder_state_dict`.
"""

from __future__ import annotations

import torch

# the motion condition encoder's tensors share the U-Net's file under this prefix
MOTION_ENCODER_PREFIX = "motion_encoder."

# top-level modules of the U-Net; anything else is not a U-Net weight
UNET_MODULES = (
    "conv_in.",
    "time_embedding.",
    "add_embedding.",
    "down_blocks.",
    "mid_block.",
    "up_blocks.",
    "conv_norm_out.",
    "conv_out.",
)

DROPPED_KEYS: dict[str, str] = {
    f"{MOTION_ENCODER_PREFIX}*": (
        "motion condition encoder weights stored in the U-Net file; convert them with "
        "convert_motion_condition_encoder_state_dict"
    ),
}


class UnknownVideoUNetWeightError(KeyError):
    """Raised when a state dict holds a name that is neither a U-Net nor a motion encoder weight."""


def convert_video_unet_state_dict(original_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert the released video detokenizer U-Net weights to ``UNetSpatioTemporalMotionModel`` names.

    Args:
        original_state_dict: tensors of ``video_detokenizer/unet/diffusion_pytorch_model.bin``.

    Returns:
        The U-Net tensors (names unchanged) that ``UNetSpatioTemporalMotionModel.load_state_dict(...,
        strict=True)`` accepts; ``motion_encoder.*`` tensors are left out (see ``DROPPED_KEYS``).

    Raises:
        UnknownVideoUNetWeightError: for a name outside the U-Net's modules.
    """
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in original_state_dict.items():
        if name.startswith(MOTION_ENCODER_PREFIX):
            continue
        if not name.startswith(UNET_MODULES):
            raise UnknownVideoUNetWeightError(
                f"unexpected video U-Net weight {name!r}; strip any outer prefix (such as 'unet.') first"
            )
        converted[name] = tensor
    return converted


__all__ = [
    "DROPPED_KEYS",
    "MOTION_ENCODER_PREFIX",
    "UNET_MODULES",
    "UnknownVideoUNetWeightError",
    "convert_video_unet_state_dict",
]
