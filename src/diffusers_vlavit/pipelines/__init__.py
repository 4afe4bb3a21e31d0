"""Video-LaVIT detokenizer pipelines: keyframe codes -> image, keyframe + motion -> video clip."""

from .pipeline_keyframe import KeyframeInputError, VideoLaVITKeyframePipeline
from .pipeline_video import VideoInputError, VideoLaVITVideoPipeline, VideoLaVITVideoPipelineOutput
from .pipeline_video_lavit import VideoLaVITPipeline, VideoLaVITPipelineInputError, VideoLaVITPipelineOutput

__all__ = [
    "KeyframeInputError",
    "VideoInputError",
    "VideoLaVITKeyframePipeline",
    "VideoLaVITPipeline",
    "VideoLaVITPipelineInputError",
    "VideoLaVITPipelineOutput",
    "VideoLaVITVideoPipeline",
    "VideoLaVITVideoPipelineOutput",
]
