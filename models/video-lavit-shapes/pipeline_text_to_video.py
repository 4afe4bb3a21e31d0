"""`pipeline("text-to-video")` for Video-LaVIT: a prompt (optionally with an image) -> 24 frames per clip.

The transformers pipeline holds the causal LM and the processor; the diffusion part is a diffusers
`VideoLaVITPipeline` (keyframe and video detokenizers) loaded from the checkpoint's `detokenizer/` folder
with the same language model and processor plugged in, so both entry points run the same code.

Loading without the Video-LaVIT packages (`trust_remote_code=True`): every checkpoint folder the project
writes (`vlavit tiny-checkpoint`, `vlavit convert`, the training scripts, `pipe.save_pretrained(folder)`)
records the task under `custom_pipelines` in `config.json` and holds this file next to the model code
(transformers' custom-pipeline mechanism, `write_text_to_video_task`), and its detokenizer folders hold their
pipeline and model modules as diffusers custom code, so the detokenizer also loads from the folder.
This module therefore imports only transformers, diffusers, the standard library and its sibling `layout`
(which travels with it).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import Pipeline
from transformers.utils import logging

# the checkpoint layout's names, re-exported from here for older imports
from .layout import (
    DETOKENIZER_FOLDER,
    DETOKENIZER_PIPELINE_CLASS,
    DETOKENIZER_PIPELINE_MODULE,
    KEYFRAME_FOLDER,
    VIDEO_FOLDER,
)

logger = logging.get_logger(__name__)

TASK = "text-to-video"
# sibling modules this one imports; they travel with it into checkpoint folders as custom code
_CODE_DEPENDENCIES = ("layout",)

# keyword arguments forwarded to `VideoLaVITPipeline.__call__`
_GENERATION_PARAMETERS = (
    "num_clips",
    "height",
    "width",
    "keyframe_height",
    "keyframe_width",
    "num_inference_steps",
    "keyframe_num_inference_steps",
    "keyframe_guidance_scale",
    "motion_guidance_scale",
    "decoder_guidance_scale",
    "min_guidance_scale",
    "max_guidance_scale",
    "use_linear_guidance",
    "keyframe_renoise_level",
    "negative_prompt",
    "do_sample",
    "motion_do_sample",
    "top_k",
    "top_p",
    "temperature",
    "noise_aug_strength",
    "decode_chunk_size",
    "generator",
)


class DetokenizerNotFoundError(FileNotFoundError):
    """The checkpoint has no diffusion detokenizer the text-to-video pipeline can load."""


def _detokenizer_pipeline_class(folder: Path) -> type:
    """diffusers' `VideoLaVITPipeline` class: the copy saved in `folder` when there is one (checkpoints of
    `vlavit tiny-checkpoint`, `vlavit convert` and the training scripts), else the installed package's."""
    module_file = f"{DETOKENIZER_PIPELINE_MODULE}.py"
    if (folder / module_file).is_file():
        from diffusers.utils.dynamic_modules_utils import get_class_from_dynamic_module

        return get_class_from_dynamic_module(
            str(folder), module_file, class_name=DETOKENIZER_PIPELINE_CLASS, trust_remote_code=True
        )
    logger.info(f"{folder} holds no {module_file}; using the installed diffusers_vlavit.")
    return getattr(importlib.import_module("diffusers_vlavit"), DETOKENIZER_PIPELINE_CLASS)


def write_text_to_video_task(
    folder: str | os.PathLike, detokenizer_from: str | os.PathLike | None = None
) -> None:
    """Register `text-to-video` in a saved model folder as transformers custom-pipeline code.

    Adds the task to `custom_pipelines` in `folder/config.json` (what `Pipeline.save_pretrained` writes) and
    copies this module (and `layout.py`, which it imports) there, so that
    `pipeline("text-to-video", model=folder, trust_remote_code=True)` (or
    `pipeline(model=folder, trust_remote_code=True)`) works where the Video-LaVIT packages are not installed.

    Args:
        folder: a folder written by `VideoLaVITForCausalLM.save_pretrained`.
        detokenizer_from: a checkpoint folder whose `detokenizer/` is copied into `folder` (the checkpoint a
            fine-tuned model started from: training changes the language model, not the detokenizers);
            nothing is copied when it has none or `folder` already has one.
    """
    folder = Path(folder)
    if detokenizer_from is not None:
        source, target = Path(detokenizer_from) / DETOKENIZER_FOLDER, folder / DETOKENIZER_FOLDER
        if source.is_dir() and not target.exists():
            shutil.copytree(source, target)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    stem = Path(__file__).stem
    config["custom_pipelines"] = {
        TASK: {
            "impl": f"{stem}.{VideoLaVITTextToVideoPipeline.__name__}",
            "pt": ["AutoModelForCausalLM"],
            "tf": [],
            "type": "multimodal",
        }
    }
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.copyfile(__file__, folder / f"{stem}.py")
    for module in _CODE_DEPENDENCIES:
        shutil.copyfile(Path(__file__).with_name(f"{module}.py"), folder / f"{module}.py")


class VideoLaVITTextToVideoPipeline(Pipeline):
    """
    Text-to-video and image-to-video generation with Video-LaVIT.

    Inputs: a prompt string, a `{"prompt": str, "image": PIL.Image}` dict, or a list of those (one output
    per input). Output per input: `{"frames": [num_clips * 24 PIL images], "fps": 6}`.

    Options (passed at call time): `num_clips` (long video, 4 s per clip), `image` (image-to-video),
    `keyframe_guidance_scale` / `motion_guidance_scale` (guidance on the language model, 4.0 / 7.0),
    `decoder_guidance_scale` (keyframe detokenizer, 3.0), `min_guidance_scale` / `max_guidance_scale`
    (video detokenizer), `top_k` / `top_p` / `temperature` / `do_sample`, `motion_do_sample` (None: motion
    codes greedy in text-to-video and sampled after a given image, as in the reference), `height` / `width`,
    `num_inference_steps` (video) / `keyframe_num_inference_steps`, `decode_chunk_size`, `generator`.

    Example:

    ```python
    >>> import torch, transformers_vlavit
    >>> from transformers import pipeline
    >>> pipe = pipeline("text-to-video", model="video-lavit", dtype=torch.bfloat16)
    >>> pipe.enable_model_cpu_offload()
    >>> video = pipe("a dog surfing a wave", num_clips=2, generator=torch.Generator().manual_seed(0))
    >>> len(video["frames"]), video["fps"]
    (48, 6)
    ```

    A folder written by `save_pretrained` names this pipeline as custom code in its config, so transformers
    loads it with `trust_remote_code=True` (which works without the Video-LaVIT packages), or with
    `pipeline_class=VideoLaVITTextToVideoPipeline` to run the installed code.

    Args:
        detokenizer (`VideoLaVITPipeline`, *optional*): the diffusion part; by default loaded from the
            model folder's `detokenizer/` (a `VideoLaVITPipeline` folder, or the `keyframe/` + `video/`
            pipelines written by `vlavit tiny-checkpoint` and `vlavit convert`, with `pipeline_video_lavit.py`).
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, detokenizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.detokenizer = detokenizer if detokenizer is not None else self._load_detokenizer()
        if self.detokenizer.language_model is None:
            self.detokenizer.register_modules(language_model=self.model, processor=self.processor)
        self.detokenizer.to(self.device)

    def _load_detokenizer(self):
        """Load the diffusers `VideoLaVITPipeline` from `<model folder>/detokenizer`."""
        from diffusers import DiffusionPipeline

        folder = Path(self.model.name_or_path) / DETOKENIZER_FOLDER
        shared = {"language_model": self.model, "processor": self.processor}
        if (folder / DiffusionPipeline.config_name).is_file():
            return DiffusionPipeline.from_pretrained(
                folder, trust_remote_code=True, dtype=self.model.dtype, **shared
            )
        keyframe_folder, video_folder = folder / KEYFRAME_FOLDER, folder / VIDEO_FOLDER
        if all((path / DiffusionPipeline.config_name).is_file() for path in (keyframe_folder, video_folder)):
            loading = {"trust_remote_code": True, "dtype": self.model.dtype}
            # their tokenizer copies are not loaded: the language model's own tokenizers are used
            keyframe = DiffusionPipeline.from_pretrained(keyframe_folder, visual_tokenizer=None, **loading)
            video = DiffusionPipeline.from_pretrained(video_folder, motion_tokenizer=None, **loading)
            return _detokenizer_pipeline_class(folder).from_detokenizer_pipelines(keyframe, video, **shared)
        raise DetokenizerNotFoundError(
            f"no Video-LaVIT detokenizer in {folder}: expected a VideoLaVITPipeline folder "
            f"(model_index.json) or the {KEYFRAME_FOLDER}/ and {VIDEO_FOLDER}/ pipelines of "
            "`vlavit tiny-checkpoint`. Convert the released checkpoint with `vlavit convert`, or pass "
            "detokenizer=VideoLaVITPipeline(...)."
        )

    def enable_model_cpu_offload(self, device: str | None = None) -> None:
        """Keep each component (language model, keyframe and video detokenizer parts) on the GPU only while it
        runs (diffusers' model offload); see `VideoLaVITPipeline` for the 24 GB plan."""
        self.detokenizer.enable_model_cpu_offload(device=device)

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Save the model with this pipeline registered as its custom `text-to-video` pipeline, the processor,
        and the detokenizer (as diffusers custom code) under `detokenizer/`: the folder then loads with
        `pipeline(model=folder, trust_remote_code=True)` where the Video-LaVIT packages are not installed."""
        super().save_pretrained(save_directory, **kwargs)
        write_text_to_video_task(save_directory)
        self.processor.save_pretrained(save_directory)
        self.detokenizer.save_pretrained(
            Path(save_directory) / DETOKENIZER_FOLDER, include_language_model=False
        )

    def _sanitize_parameters(self, image=None, output_type=None, **kwargs):
        unknown = set(kwargs) - set(_GENERATION_PARAMETERS)
        if unknown:
            raise TypeError(
                f"unknown text-to-video options {sorted(unknown)}; supported: image, output_type, "
                f"{', '.join(_GENERATION_PARAMETERS)}"
            )
        preprocess_params = {} if image is None else {"image": image}
        forward_params = dict(kwargs)
        if output_type is not None:
            forward_params["output_type"] = output_type
        return preprocess_params, forward_params, {}

    def preprocess(self, inputs: str | dict, image=None) -> dict[str, Any]:
        """A prompt or `{"prompt", "image"}` dict -> `{"prompt": str | None, "image": PIL image | None}`."""
        if isinstance(inputs, dict):
            prompt, image = inputs.get("prompt", inputs.get("text")), inputs.get("image", image)
        elif isinstance(inputs, str):
            prompt = inputs
        else:
            raise TypeError(
                "text-to-video inputs are a prompt string or a dict with 'prompt' and 'image', "
                f"got {type(inputs)}"
            )
        return {"prompt": prompt or None, "image": image}

    def _forward(
        self, model_inputs: dict[str, Any], output_type: str = "pil", **generate_kwargs
    ) -> dict[str, Any]:
        output = self.detokenizer(
            prompt=model_inputs["prompt"],
            image=model_inputs["image"],
            output_type=output_type,
            **generate_kwargs,
        )
        return {"frames": output.frames[0], "fps": output.fps}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        """`{"frames": num_clips * 24 frames (PIL images unless output_type says otherwise), "fps": 6}`."""
        return {"frames": model_outputs["frames"], "fps": model_outputs["fps"]}


__all__ = [
    "DETOKENIZER_FOLDER",
    "TASK",
    "DetokenizerNotFoundError",
    "VideoLaVITTextToVideoPipeline",
    "write_text_to_video_task",
]
