"""Video-LaVIT for transformers: video decomposition, processor, tokenizers, the base model and the causal LM.

Importing this package registers the Video-LaVIT classes with the transformers Auto classes.
"""

from .configuration_motion_tokenizer import VideoLaVITMotionTokenizerConfig
from .modeling_motion_tokenizer import (
    MotionTokenizerInputError,
    VideoLaVITMotionTokenizer,
    VideoLaVITMotionTokenizerOutput,
)
from .configuration_visual_tokenizer import VideoLaVITVisualTokenizerConfig
from .modeling_visual_tokenizer import (
    VideoLaVITVisualTokenizer,
    VideoLaVITVisualTokenizerOutput,
    VisualTokenizerInputError,
)
from .configuration_video_lavit import VideoLaVITConfig
from .modeling_video_lavit import (
    VideoLaVITCausalLMOutputWithPast,
    VideoLaVITForCausalLM,
    VideoLaVITInputError,
    VideoLaVITModel,
    VideoLaVITModelOutputWithPast,
    VideoLaVITTokenRangeLogitsProcessor,
    VideoLaVITVideoFeaturesOutput,
    VideoLaVITVideoTokensOutput,
    VideoLaVITVocabularyMapping,
    pretraining_text,
)
from .processing_video_lavit import VICUNA_V1_CHAT_TEMPLATE, PlaceholderMismatchError, VideoLaVITProcessor
from .tokenizer_training import TokenizerTrainingError, synthetic_english_corpus, train_video_lavit_tokenizer
from .image_processing_video_lavit import VideoLaVITImageProcessor
from .motion_visualization import motion_to_rgb
from .synthetic_video import write_synthetic_video
from .video_decomposition import VideoDecodeError, VideoDecomposition, decompose_video, select_clip_starts
from .tiny_checkpoint import write_tiny_checkpoint
from .data_collator import (
    CollatorInputError,
    PrecomputedClips,
    VideoLaVITPretrainingCollator,
    VideoLaVITSFTCollator,
)
from .conversion.convert import IncompleteCheckpointError, convert_video_lavit
from .pipeline_text_to_video import TASK as TEXT_TO_VIDEO_TASK
from .pipeline_text_to_video import DetokenizerNotFoundError, VideoLaVITTextToVideoPipeline

__version__ = "0.1.0"


def _register_auto_classes() -> None:
    """Make the Auto classes resolve Video-LaVIT, and `save_pretrained` write `auto_map` + code files."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor

    from .modeling_video_lavit import UNDERSTANDING_AUTO_CLASSES

    for config_class in (VideoLaVITConfig, VideoLaVITMotionTokenizerConfig, VideoLaVITVisualTokenizerConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModelForCausalLM.register(VideoLaVITConfig, VideoLaVITForCausalLM, exist_ok=True)
    for auto_class in UNDERSTANDING_AUTO_CLASSES:
        getattr(transformers, auto_class).register(VideoLaVITConfig, VideoLaVITForCausalLM, exist_ok=True)
    AutoModel.register(VideoLaVITConfig, VideoLaVITModel, exist_ok=True)
    AutoModel.register(VideoLaVITMotionTokenizerConfig, VideoLaVITMotionTokenizer, exist_ok=True)
    AutoModel.register(VideoLaVITVisualTokenizerConfig, VideoLaVITVisualTokenizer, exist_ok=True)
    AutoProcessor.register(VideoLaVITConfig, VideoLaVITProcessor, exist_ok=True)
    AutoImageProcessor.register(VideoLaVITConfig, slow_image_processor_class=VideoLaVITImageProcessor, exist_ok=True)
    VideoLaVITConfig.register_for_auto_class()
    VideoLaVITForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    VideoLaVITProcessor.register_for_auto_class("AutoProcessor")
    VideoLaVITImageProcessor.register_for_auto_class("AutoImageProcessor")
    _register_text_to_video_pipeline()


def _register_text_to_video_pipeline() -> None:
    """Make `pipeline("text-to-video", model=...)` build a `VideoLaVITTextToVideoPipeline`."""
    from transformers import AutoModelForCausalLM
    from transformers.pipelines import PIPELINE_REGISTRY

    registered = PIPELINE_REGISTRY.supported_tasks.get(TEXT_TO_VIDEO_TASK, {}).get("impl")
    if registered is not VideoLaVITTextToVideoPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            TEXT_TO_VIDEO_TASK,
            pipeline_class=VideoLaVITTextToVideoPipeline,
            pt_model=AutoModelForCausalLM,
            type="multimodal",
        )


_register_auto_classes()
