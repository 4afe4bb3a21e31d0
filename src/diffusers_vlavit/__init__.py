"""Video-LaVIT detokenizers for diffusers: motion condition encoder, 3D U-Net, keyframe decoder, pipelines.

Dependency rule: this package may import `transformers_vlavit`, never the reverse at import time. Only
`tiny` (random detokenizers sharing a tiny language model's tokenizers) needs it, so `write_tiny_detokenizers`
is imported on first use: importing a model or a pipeline does not import `transformers_vlavit`.
"""

__version__ = "0.1.0"

from .models import MotionConditionEncoder, UNetSpatioTemporalMotionModel
from .models.keyframe_decoder import KeyframeTokenDecoder
from .pipelines import VideoLaVITKeyframePipeline, VideoLaVITVideoPipeline, VideoLaVITVideoPipelineOutput
from .pipelines import VideoLaVITPipeline, VideoLaVITPipelineInputError, VideoLaVITPipelineOutput

# public names resolved on first access, with the module that defines them
_LAZY_NAMES = {"write_tiny_detokenizers": "tiny"}


def __getattr__(name: str):
    """Import `write_tiny_detokenizers` (and with it `transformers_vlavit`) only when it is used."""
    if name in _LAZY_NAMES:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Module attributes including the lazily imported ones."""
    return sorted({*globals(), *_LAZY_NAMES})
