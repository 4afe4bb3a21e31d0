"""Video-LaVIT detokenizers for diffusers: motion condition encoder, 3D U-Net, keyframe decoder, pipelines."""

__version__ = "0.1.0"

from .models import MotionConditionEncoder, UNetSpatioTemporalMotionModel
from .models.keyframe_decoder import KeyframeTokenDecoder
from .pipelines import VideoLaVITKeyframePipeline, VideoLaVITVideoPipeline, VideoLaVITVideoPipelineOutput
from .pipelines import VideoLaVITPipeline, VideoLaVITPipelineInputError, VideoLaVITPipelineOutput
from .tiny import write_tiny_detokenizers
