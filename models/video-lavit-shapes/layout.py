"""Names of the folders and files of a Video-LaVIT checkpoint: the one this project writes, the released one.

The project's layout (written by `vlavit convert`, `vlavit tiny-checkpoint`, `examples/assemble_checkpoint.py`
and the training scripts)::

    <folder>/                       VideoLaVITForCausalLM (generation weights, both tokenizers) + processor,
                                    pipeline_text_to_video.py (the `text-to-video` task as custom code)
    <folder>/understanding/         the same classes with the understanding (SFT) weights (converted only)
    <folder>/detokenizer/           pipeline_video_lavit.py (diffusers' VideoLaVITPipeline as custom code)
    <folder>/detokenizer/keyframe/  VideoLaVITKeyframePipeline
    <folder>/detokenizer/video/     VideoLaVITVideoPipeline

The released layout (`rain1011/Video-LaVIT-v1`, read by `conversion.convert`)::

    language_model/  language_model_sft/  visual_tokenizer/  motion_tokenizer.bin
    image_detokenizer/  video_detokenizer/

This module imports nothing: `pipeline_text_to_video.py` imports it and both travel into checkpoint folders
as custom code. `diffusers_vlavit` imports it too (the dependency runs that way).
"""

# ---- the project's layout ----
# understanding (SFT) weights of a converted checkpoint, next to the generation weights at the top
UNDERSTANDING_FOLDER = "understanding"
# the diffusion detokenizers, one diffusers pipeline per detokenizer below it
DETOKENIZER_FOLDER = "detokenizer"
KEYFRAME_FOLDER = "keyframe"
VIDEO_FOLDER = "video"
# the module and class of diffusers' `VideoLaVITPipeline`, saved as code in `detokenizer/`
DETOKENIZER_PIPELINE_MODULE = "pipeline_video_lavit"
DETOKENIZER_PIPELINE_CLASS = "VideoLaVITPipeline"

# ---- the released layout (names fixed by the reference loading code) ----
LANGUAGE_MODEL_FOLDER = "language_model"
UNDERSTANDING_LANGUAGE_MODEL_FOLDER = "language_model_sft"
VISUAL_TOKENIZER_FOLDER = "visual_tokenizer"
EVA_VIT_FILE = "eva_vitg_psz14.bin"
TOKENIZER_ENCODER_FILE = "tokenizer_encoder.bin"
KEYFRAME_DECODER_FILE = "highres_tokenizer_decoder.bin"
UNDERSTANDING_VISUAL_WEIGHT_FILE = "visual_weight.bin"
MOTION_TOKENIZER_FILE = "motion_tokenizer.bin"
IMAGE_DETOKENIZER_FOLDER = "image_detokenizer"
VIDEO_DETOKENIZER_FOLDER = "video_detokenizer"
SENTENCEPIECE_FILE = "tokenizer.model"

__all__ = [
    "DETOKENIZER_FOLDER",
    "DETOKENIZER_PIPELINE_CLASS",
    "DETOKENIZER_PIPELINE_MODULE",
    "EVA_VIT_FILE",
    "IMAGE_DETOKENIZER_FOLDER",
    "KEYFRAME_DECODER_FILE",
    "KEYFRAME_FOLDER",
    "LANGUAGE_MODEL_FOLDER",
    "MOTION_TOKENIZER_FILE",
    "SENTENCEPIECE_FILE",
    "TOKENIZER_ENCODER_FILE",
    "UNDERSTANDING_FOLDER",
    "UNDERSTANDING_LANGUAGE_MODEL_FOLDER",
    "UNDERSTANDING_VISUAL_WEIGHT_FILE",
    "VIDEO_DETOKENIZER_FOLDER",
    "VIDEO_FOLDER",
    "VISUAL_TOKENIZER_FOLDER",
]
