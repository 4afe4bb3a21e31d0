"""Video-LaVIT detokenizer models: motion condition encoder, motion-conditioned 3D U-Net, keyframe decoder."""

from .keyframe_decoder import KeyframeTokenDecoder
from .motion_condition_encoder import MotionConditionEncoder, MotionShapeError
from .unet_spatio_temporal_motion import (
    MotionContextShapeError,
    MotionTransformerSpatioTemporalModel,
    UNetSpatioTemporalMotionModel,
)

__all__ = [
    "KeyframeTokenDecoder",
    "MotionConditionEncoder",
    "MotionContextShapeError",
    "MotionShapeError",
    "MotionTransformerSpatioTemporalModel",
    "UNetSpatioTemporalMotionModel",
]
