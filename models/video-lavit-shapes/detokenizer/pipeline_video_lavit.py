"""End-to-end Video-LaVIT generation: a text (or text + image) prompt -> a video, clip by clip.

The language model samples each clip's keyframe codes and 135 motion codes; the keyframe detokenizer
(keyframe token decoder + SDXL-style U-Net + VAE) renders the keyframe, and the video detokenizer
(motion condition encoder + motion-conditioned spatio-temporal U-Net + temporal VAE) renders the clip's
24 frames from the keyframe and the decoded motion. In a long video every keyframe after the first is
diffused from the previous clip's last frame, re-noised to 85% of the keyframe schedule.

This module imports only torch, NumPy, PIL, transformers, diffusers and its siblings `detokenizer_sampling`
and `loading` (just as self-contained), never the project's packages: `save_pretrained` writes them next to
the weights (with the detokenizer model modules, which are self-contained too), so
`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True, language_model=..., processor=...)`
rebuilds the pipeline where `diffusers_vlavit` is not installed.

Memory plan for 576 x 320 video on a 24 GB GPU (bf16 weights, `enable_model_cpu_offload()`). Weights, from
the parameter counts of the released checkpoint (2 bytes each): language model (Llama-2-7B with the
49412-entry vocabulary, 6.88 B) 13.8 GB, with its visual tokenizer (EVA-CLIP-g + merger + `vit_proj`,
1.42 B) 2.8 GB and motion tokenizer (0.16 B) 0.3 GB: 16.9 GB; keyframe token decoder (0.41 B) 0.8 GB;
SDXL U-Net (2.57 B) 5.1 GB; SDXL VAE (0.08 B) 0.2 GB (0.3 GB upcast to float32 for decoding); motion
condition encoder (0.05 B) 0.1 GB; 3D U-Net (1.52 B) 3.0 GB; temporal VAE (0.10 B) 0.2 GB. Together
(26.4 GB) they do not fit, so model offload keeps only the component that runs on the GPU, in this order:
(1) the language model for all clips' tokens (16.9 GB + KV cache of 0.5 MB per token and guidance row,
~0.4 GB per clip with guidance, so ~20 GB at 8 clips); the keyframe code embeddings and the decoded
motion are computed in this phase; (2) keyframe decoder, SDXL U-Net, SDXL VAE (5.1 GB U-Net + activations
of a guided batch of 2 at the keyframe size); (3) VAE encode of the keyframe, motion encoder, 3D U-Net
(3.0 GB + activations of 2 x 24 frames of 72 x 40 latents), temporal VAE decoding `decode_chunk_size=8`
frames at a time (lower it to 2-4 if decoding is the peak). Call `component_sizes_gb()` for the sizes of
the components actually loaded. These are weight sizes; activation peaks were not measured here (no GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from diffusers.models import AutoencoderKL, AutoencoderKLTemporalDecoder, ModelMixin, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers import EulerDiscreteScheduler, KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import PreTrainedModel, ProcessorMixin

from .detokenizer_sampling import (
    StepEndCallback,
    added_time_ids,
    clip_conditions,
    decode_clip_latents,
    decode_image_latents,
    denoise_clip_latents,
    denoise_keyframe_latents,
    encode_augmented_keyframes,
    frame_guidance_scales,
    keyframe_conditions,
    scheduler_step_kwargs,
    upcast_vae,
)
from .loading import CustomPipelineSavingMixin, copy_module_files

logger = logging.get_logger(__name__)

# components that the language model checkpoint already holds; saved here only on request
_LANGUAGE_COMPONENTS = ("language_model", "processor")


class VideoLaVITPipelineInputError(ValueError):
    """Raised when the end-to-end pipeline gets prompts, images or options it cannot generate from."""


@dataclass
class VideoLaVITPipelineOutput(BaseOutput):
    r"""Output of :class:`VideoLaVITPipeline`.

    Args:
        frames: per prompt, the ``num_clips * 24`` frames: lists of PIL images, a NumPy array
            ``[batch, frames, height, width, 3]`` or a tensor ``[batch, frames, 3, height, width]``, values
            in [0, 1].
        keyframes: per prompt, the keyframe of every clip (PIL images at the keyframe resolution).
        fps: frame rate of the videos (the detokenizer's 6 fps).
    """

    frames: list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor
    keyframes: list[list[PIL.Image.Image]]
    fps: int


def _onload(component: torch.nn.Module) -> None:
    """Move an offloaded component to the GPU before calling a method other than ``forward`` on it.

    ``enable_model_cpu_offload`` hooks ``forward`` only; diffusers' VAEs do this for ``encode``/``decode``.
    """
    hook = getattr(component, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(component)


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of ``[batch, 3, H, W]`` images in [0, 1] to ``[batch, 3, height, width]``."""
    if images.shape[-2:] == (height, width):
        return images
    resized = F.interpolate(
        images.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )
    return resized.clamp(0, 1)


class VideoLaVITPipeline(CustomPipelineSavingMixin, DiffusionPipeline):
    r"""Video-LaVIT text-to-video, image-to-video and long-video generation.

    Args:
        keyframe_decoder ([`KeyframeTokenDecoder`]): keyframe code embeddings -> SDXL conditioning.
        keyframe_unet ([`UNet2DConditionModel`]): SDXL-style U-Net of the keyframe detokenizer.
        keyframe_vae ([`AutoencoderKL`]): image autoencoder of the keyframe detokenizer.
        keyframe_scheduler: the keyframe detokenizer's scheduler (Euler ancestral in the release).
        motion_encoder ([`MotionConditionEncoder`]): motion -> cross-attention context of the 3D U-Net.
        unet ([`UNetSpatioTemporalMotionModel`]): the 10-channel motion-conditioned 3D U-Net.
        vae ([`AutoencoderKLTemporalDecoder`]): keyframe encoder and temporal frame decoder.
        scheduler ([`EulerDiscreteScheduler`]): EDM Euler scheduler of the video detokenizer.
        language_model ([`VideoLaVITForCausalLM`], *optional*): samples keyframe and motion codes; its
            `visual_tokenizer` and `motion_tokenizer` give the code embeddings and decode the motion.
        processor ([`VideoLaVITProcessor`], *optional*): tokenizes the prompts and preprocesses images.

    The language model and the processor live in the Video-LaVIT checkpoint folder itself; the folder's
    `detokenizer/` holds the other components. Pass the first two to `from_pretrained` when loading it.

    Example:

    ```py
    >>> import torch
    >>> from transformers import AutoModelForCausalLM, AutoProcessor
    >>> from diffusers_vlavit import VideoLaVITPipeline

    >>> model = AutoModelForCausalLM.from_pretrained(
    ...     "video-lavit", dtype=torch.bfloat16, trust_remote_code=True
    ... )
    >>> processor = AutoProcessor.from_pretrained("video-lavit", trust_remote_code=True)
    >>> pipe = VideoLaVITPipeline.from_pretrained(
    ...     "video-lavit/detokenizer", dtype=torch.bfloat16, language_model=model, processor=processor
    ... )
    >>> pipe.enable_model_cpu_offload()
    >>> video = pipe("a red panda climbing a tree", num_clips=2, generator=torch.Generator().manual_seed(0))
    >>> frames = video.frames[0]  # 48 PIL images at 6 fps
    ```
    """

    model_cpu_offload_seq = (
        "language_model->keyframe_decoder->keyframe_unet->keyframe_vae->motion_encoder->unet->vae"
    )
    _optional_components = ["language_model", "processor"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        keyframe_decoder: ModelMixin,
        keyframe_unet: UNet2DConditionModel,
        keyframe_vae: AutoencoderKL,
        keyframe_scheduler: KarrasDiffusionSchedulers,
        motion_encoder: ModelMixin,
        unet: ModelMixin,
        vae: AutoencoderKLTemporalDecoder,
        scheduler: EulerDiscreteScheduler,
        language_model: PreTrainedModel | None = None,
        processor: ProcessorMixin | None = None,
    ):
        super().__init__()
        self.register_modules(
            keyframe_decoder=keyframe_decoder,
            keyframe_unet=keyframe_unet,
            keyframe_vae=keyframe_vae,
            keyframe_scheduler=keyframe_scheduler,
            motion_encoder=motion_encoder,
            unet=unet,
            vae=vae,
            scheduler=scheduler,
            language_model=language_model,
            processor=processor,
        )
        self.keyframe_vae_scale_factor = 2 ** (len(self.keyframe_vae.config.block_out_channels) - 1)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.keyframe_vae_scale_factor)
        # the reference resizes keyframes bicubically
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor, resample="bicubic")
        self._interrupt = False
        self._current_timestep = None
        self._current_phase = None
        self._attention_kwargs = None

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` (from ``callback_on_step_end``) to stop denoising: every remaining
        step of every keyframe and clip is skipped and what was reached is decoded."""
        return self._interrupt

    @property
    def current_timestep(self) -> torch.Tensor | None:
        """Timestep of the denoising step that just ran (None outside a call)."""
        return self._current_timestep

    @property
    def current_phase(self) -> tuple[str, int] | None:
        """``("keyframe" | "video", clip index)`` of the running denoising loop (None outside a call)."""
        return self._current_phase

    @property
    def attention_kwargs(self) -> dict[str, Any] | None:
        """The running call's ``attention_kwargs``."""
        return self._attention_kwargs

    @classmethod
    def from_detokenizer_pipelines(
        cls,
        keyframe_pipeline: DiffusionPipeline,
        video_pipeline: DiffusionPipeline,
        language_model: PreTrainedModel | None = None,
        processor: ProcessorMixin | None = None,
    ) -> VideoLaVITPipeline:
        """Assemble the pipeline from a keyframe pipeline and a video pipeline, sharing their modules (the
        layout `vlavit convert` and `vlavit tiny-checkpoint` write: `detokenizer/{keyframe,video}`).

        Their own visual/motion tokenizers are not used: the language model's are, so that generated codes
        are embedded and decoded with the codebooks the language model was trained on.
        """
        return cls(
            keyframe_decoder=keyframe_pipeline.keyframe_decoder,
            keyframe_unet=keyframe_pipeline.unet,
            keyframe_vae=keyframe_pipeline.vae,
            keyframe_scheduler=keyframe_pipeline.scheduler,
            motion_encoder=video_pipeline.motion_encoder,
            unet=video_pipeline.unet,
            vae=video_pipeline.vae,
            scheduler=video_pipeline.scheduler,
            language_model=language_model,
            processor=processor,
        )

    # ----------------------------------------------------------------------------------------------
    # saving
    # ----------------------------------------------------------------------------------------------
    @classmethod
    def save_code(cls, folder) -> None:
        """Copy this pipeline's module and its sibling modules into ``folder``.

        A checkpoint's ``detokenizer/`` that holds the keyframe and video pipelines gets this code next to
        them, so the text-to-video pipeline assembles this class from the folder alone (no package needed).
        """
        copy_module_files(cls, folder)

    def save_pretrained(self, save_directory, include_language_model: bool = True, **kwargs) -> None:
        """Save every component, this module and the detokenizer model modules as loadable custom code.

        Args:
            save_directory: output folder.
            include_language_model: also save `language_model` and `processor` (they are already in a
                Video-LaVIT checkpoint folder, whose `detokenizer/` is saved without them).
            kwargs: passed to `DiffusionPipeline.save_pretrained` (`safe_serialization`, `variant`, ...).
        """
        if not include_language_model and any(
            getattr(self, name) is not None for name in _LANGUAGE_COMPONENTS
        ):
            components = {**self.components, **{name: None for name in _LANGUAGE_COMPONENTS}}
            type(self)(**components).save_pretrained(save_directory, **kwargs)
            return
        super().save_pretrained(save_directory, **kwargs)

    # ----------------------------------------------------------------------------------------------
    # memory
    # ----------------------------------------------------------------------------------------------
    def component_sizes_gb(self, dtype: torch.dtype | None = None) -> dict[str, float]:
        """GB of parameters (and buffers) of each model component, in its own dtype or in ``dtype``.

        The language model's entry includes its visual and motion tokenizers.
        """
        sizes = {}
        for name, component in self.components.items():
            if not isinstance(component, torch.nn.Module):
                continue
            tensors = [*component.parameters(), *component.buffers()]
            sizes[name] = sum(t.numel() * self._element_size(t, dtype) for t in tensors) / 1e9
        return sizes

    @staticmethod
    def _element_size(tensor: torch.Tensor, dtype: torch.dtype | None) -> int:
        """Bytes per element of ``tensor`` once floating-point tensors are cast to ``dtype``."""
        if dtype is None or not tensor.is_floating_point():
            return tensor.element_size()
        return torch.finfo(dtype).bits // 8

    # ----------------------------------------------------------------------------------------------
    # inputs
    # ----------------------------------------------------------------------------------------------
    def check_inputs(
        self,
        prompt,
        image,
        num_clips: int,
        height: int,
        width: int,
        keyframe_height: int,
        keyframe_width: int,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> tuple[list[str], list[PIL.Image.Image] | None]:
        """Validate the call and return the prompts and images as lists of equal length."""
        if self.language_model is None:
            raise VideoLaVITPipelineInputError(
                "this pipeline has no language_model; load it with "
                "AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True) and pass "
                "language_model=... (and processor=...) to from_pretrained"
            )
        if prompt is None and image is None:
            raise VideoLaVITPipelineInputError("pass a prompt, an image, or both")
        if num_clips < 1:
            raise VideoLaVITPipelineInputError(f"num_clips must be at least 1, got {num_clips}")
        if num_videos_per_prompt < 1:
            raise VideoLaVITPipelineInputError(
                f"num_videos_per_prompt must be at least 1, got {num_videos_per_prompt}"
            )
        if output_type not in ("pil", "np", "pt", "latent"):
            raise VideoLaVITPipelineInputError(
                f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}"
            )
        unknown = [
            name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs
        ]
        if unknown:
            raise VideoLaVITPipelineInputError(
                f"callback_on_step_end_tensor_inputs {unknown} are not among {self._callback_tensor_inputs}"
            )
        for name, size, factor in (
            ("height", height, self.vae_scale_factor),
            ("width", width, self.vae_scale_factor),
            ("keyframe_height", keyframe_height, self.keyframe_vae_scale_factor),
            ("keyframe_width", keyframe_width, self.keyframe_vae_scale_factor),
        ):
            if size % factor != 0:
                raise VideoLaVITPipelineInputError(f"{name} must be a multiple of {factor}, got {size}")
        images = None
        if image is not None:
            images = [image] if isinstance(image, PIL.Image.Image) else list(image)
            if not all(isinstance(item, PIL.Image.Image) for item in images):
                raise VideoLaVITPipelineInputError("image must be a PIL image or a list of PIL images")
        if prompt is None:
            prompts = [""] * len(images)
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if self.processor is None and any(prompts):
            raise VideoLaVITPipelineInputError(
                "this pipeline has no processor to tokenize the prompt; pass processor=..."
            )
        if images is not None and len(images) != len(prompts):
            raise VideoLaVITPipelineInputError(
                f"{len(prompts)} prompts but {len(images)} images; give one image per prompt"
            )
        videos = len(prompts) * num_videos_per_prompt
        if isinstance(generator, list) and len(generator) != videos:
            raise VideoLaVITPipelineInputError(
                f"{len(generator)} generators for {videos} videos ({len(prompts)} prompts x "
                f"num_videos_per_prompt={num_videos_per_prompt}); give one generator per video or a single one"
            )
        return prompts, images

    def encode_prompt(
        self, prompts: list[str], negative_prompt: str | list[str] | None, device: torch.device
    ) -> dict[str, torch.Tensor | None]:
        """Left-padded prompt ids ``[batch, length]`` (no BOS, as the reference tokenizes generation prompts)
        with their attention mask, and the same for the negative prompt (None when not given)."""
        encoded = {
            "input_ids": None,
            "attention_mask": None,
            "negative_prompt_ids": None,
            "negative_prompt_attention_mask": None,
        }
        if not any(prompts) and negative_prompt is None:
            return encoded
        tokenizer = self.processor.tokenizer
        kwargs = {
            "add_special_tokens": False,
            "padding": True,
            "padding_side": "left",
            "return_tensors": "pt",
        }
        if any(prompts):
            tokens = tokenizer(prompts, **kwargs)
            encoded["input_ids"] = tokens["input_ids"].to(device)
            encoded["attention_mask"] = tokens["attention_mask"].to(device)
        if negative_prompt is not None:
            negatives = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
            tokens = tokenizer(negatives, **kwargs)
            encoded["negative_prompt_ids"] = tokens["input_ids"].to(device)
            encoded["negative_prompt_attention_mask"] = tokens["attention_mask"].to(device)
        return encoded

    def preprocess_keyframe_images(self, images: list[PIL.Image.Image]) -> torch.Tensor:
        """The visual tokenizer's input ``[batch, 3, 224, 224]`` (bicubic resize + CLIP normalisation)."""
        if self.processor is None:
            raise VideoLaVITPipelineInputError(
                "image-to-video needs the processor (its image processor); pass processor=..."
            )
        return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

    # ----------------------------------------------------------------------------------------------
    # language model phase
    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_clip_tokens(
        self,
        prompts: list[str],
        images: list[PIL.Image.Image] | None,
        num_clips: int,
        latent_height: int,
        latent_width: int,
        generator: torch.Generator | list[torch.Generator] | None,
        negative_prompt: str | list[str] | None = None,
        **sampling: Any,
    ) -> tuple[Any, list[tuple[torch.Tensor, torch.Tensor] | None], list[torch.Tensor]]:
        """Sample every clip's codes and turn them into detokenizer inputs while the language model is loaded.

        With a list of generators (one per video), each video's codes are sampled with its own generator.

        Returns:
            The language model's `VideoLaVITVideoTokensOutput`; per clip, the keyframe code embeddings
            ``[sum n_i, code_dim]`` with ``token_counts [batch]`` (None for a given first keyframe); per clip,
            the motion at latent resolution ``[batch, 2, frames, latent_height, latent_width]``.
        """
        model = self.language_model
        _onload(model)
        device = model.lm_head.weight.device
        encoded = self.encode_prompt(prompts, negative_prompt, device)
        pixel_values = None
        if images is not None:
            pixel_values = self.preprocess_keyframe_images(images).to(device=device, dtype=model.dtype)
        tokens = self._sample_video_tokens(encoded, pixel_values, num_clips, generator, sampling)
        keyframe_codes = []
        for clip in range(num_clips):
            if clip == 0 and images is not None:
                keyframe_codes.append(None)
                continue
            codes = [sample_clips[clip] for sample_clips in tokens.keyframe_ids]
            counts = torch.tensor([len(c) for c in codes], device=device)
            keyframe_codes.append(
                (model.visual_tokenizer.get_code_embeddings(torch.cat(codes).to(device)), counts)
            )
        motion = [
            model.motion_tokenizer.decode_for_detokenizer(
                tokens.motion_ids[:, clip].to(device), latent_height, latent_width
            )
            for clip in range(num_clips)
        ]
        return tokens, keyframe_codes, motion

    def _sample_video_tokens(
        self,
        encoded: dict[str, torch.Tensor | None],
        pixel_values: torch.Tensor | None,
        num_clips: int,
        generator: torch.Generator | list[torch.Generator] | None,
        sampling: dict[str, Any],
    ):
        """`generate_video_tokens` for the whole batch, or row by row when each video has its own generator."""
        model = self.language_model
        if not isinstance(generator, list):
            return model.generate_video_tokens(
                **encoded, pixel_values=pixel_values, num_clips=num_clips, generator=generator, **sampling
            )
        rows = []
        for row, row_generator in enumerate(generator):
            # a row keeps its left padding (the model drops it); a single row (one negative prompt for
            # all) is shared
            row_inputs = {
                name: value if value is None or value.shape[0] == 1 else value[row : row + 1]
                for name, value in encoded.items()
            }
            rows.append(
                model.generate_video_tokens(
                    **row_inputs,
                    pixel_values=None if pixel_values is None else pixel_values[row : row + 1],
                    num_clips=num_clips,
                    generator=row_generator,
                    **sampling,
                )
            )
        return type(rows[0])(
            keyframe_ids=[clips for output in rows for clips in output.keyframe_ids],
            motion_ids=torch.cat([output.motion_ids for output in rows]),
            sequences=[sequence for output in rows for sequence in output.sequences],
        )

    # ----------------------------------------------------------------------------------------------
    # keyframe detokenizer
    # ----------------------------------------------------------------------------------------------
    def encode_keyframe_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled keyframe-VAE latents (distribution mode) of ``[batch, 3, H, W]`` images in [0, 1]:
        ``[batch, 4, H / 8, W / 8]``."""
        vae = self.keyframe_vae
        with upcast_vae(vae):
            pixels = (images * 2 - 1).to(device=self._execution_device, dtype=vae.dtype)
            latents = vae.encode(pixels).latent_dist.mode()
        return latents * vae.config.scaling_factor

    def decode_keyframe_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Keyframe-VAE decode: scaled latents ``[batch, 4, h, w]`` -> ``[batch, 3, H, W]`` in [0, 1]."""
        return (decode_image_latents(self.keyframe_vae, latents) / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def render_keyframes(
        self,
        code_embeddings: torch.Tensor,
        token_counts: torch.Tensor,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
        generator: torch.Generator | list[torch.Generator] | None,
        init_images: torch.Tensor | None = None,
        renoise_level: float = 0.85,
        on_step_end: StepEndCallback | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Keyframe codes -> keyframes ``[batch, 3, height, width]`` in [0, 1].

        Args:
            code_embeddings: ``[sum n_i, code_dim]`` code embeddings of every keyframe, in order.
            token_counts: ``[batch]`` codes per keyframe.
            init_images: ``[batch, 3, H, W]`` in [0, 1]: start from these images re-noised to the timestep
                found ``renoise_level`` of the way through the schedule (the previous clip's last frame in a
                long video) and run only the remaining steps; None starts from pure noise.
            renoise_level: fraction of the schedule skipped when starting from ``init_images``.
            on_step_end: called after every denoising step (see ``detokenizer_sampling.StepEndCallback``).
            attention_kwargs: passed to the keyframe U-Net's attention processors.
        """
        device = self._execution_device
        batch_size = len(token_counts)
        prompt_embeds, pooled = keyframe_conditions(
            self.keyframe_decoder,
            code_embeddings.to(device=device, dtype=self.keyframe_decoder.dtype),
            token_counts.to(device),
            do_guidance=guidance_scale > 1,
        )
        dtype = self.keyframe_unet.dtype
        prompt_embeds, pooled = prompt_embeds.to(dtype), pooled.to(dtype)
        # SDXL micro-conditioning as the keyframe pipeline's defaults: original = target size, no crop
        time_ids = added_time_ids(
            self.keyframe_unet,
            [height, width, 0, 0, height, width],
            prompt_embeds.shape[0],
            dtype,
            device,
            pooled_dim=pooled.shape[-1],
        )

        scheduler = self.keyframe_scheduler
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        shape = (
            batch_size,
            self.keyframe_unet.config.in_channels,
            height // self.keyframe_vae_scale_factor,
            width // self.keyframe_vae_scale_factor,
        )
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if init_images is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            start = min(int(renoise_level * num_inference_steps), num_inference_steps - 1) * scheduler.order
            timesteps = timesteps[start:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(start)
            clean = self.encode_keyframe_latents(_resize(init_images, height, width)).to(dtype)
            # add_noise already gives the sigma-scaled latent the scheduler expects at that timestep; the
            # reference also multiplied it by init_noise_sigma, which over-scales it for sigma schedulers
            latents = scheduler.add_noise(clean, noise, timesteps[:1].repeat(batch_size))

        with self.progress_bar(total=len(timesteps)) as progress_bar:
            latents = denoise_keyframe_latents(
                self.keyframe_unet,
                scheduler,
                latents,
                timesteps,
                prompt_embeds,
                pooled,
                time_ids,
                guidance_scale,
                progress_bar,
                step_kwargs=scheduler_step_kwargs(scheduler, generator),
                on_step_end=on_step_end,
                cross_attention_kwargs=attention_kwargs,
                interrupted=lambda: self.interrupt,
            )
        return self.decode_keyframe_latents(latents)

    # ----------------------------------------------------------------------------------------------
    # video detokenizer
    # ----------------------------------------------------------------------------------------------
    def decode_video_latents(self, latents: torch.Tensor, decode_chunk_size: int) -> torch.Tensor:
        """Temporal-VAE decode of ``[batch, frames, 4, h, w]``, ``decode_chunk_size`` frames at a time, to
        ``[batch, frames, 3, H, W]`` float32 in [0, 1]."""
        frames = decode_clip_latents(self.vae, latents, decode_chunk_size)
        return (frames / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def render_clip(
        self,
        keyframes: torch.Tensor,
        motion: torch.Tensor,
        num_inference_steps: int,
        min_guidance_scale: float,
        max_guidance_scale: float,
        use_linear_guidance: bool,
        fps: int,
        motion_bucket_id: int,
        noise_aug_strength: float,
        decode_chunk_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        on_step_end: StepEndCallback | None = None,
        decode: bool = True,
    ) -> torch.Tensor:
        """Keyframes ``[batch, 3, H, W]`` in [0, 1] + motion ``[batch, 2, frames, H / 8, W / 8]`` (detokenizer
        scale) -> frames ``[batch, frames, 3, H, W]`` in [0, 1], or with ``decode=False`` the denoised
        latents ``[batch, frames, 4, H / 8, W / 8]``; ``on_step_end`` is called after every denoising step."""
        device = self._execution_device
        dtype = self.unet.dtype
        batch_size, _, num_frames = motion.shape[:3]
        image_latents = encode_augmented_keyframes(
            self.vae, keyframes.to(device) * 2 - 1, noise_aug_strength, generator
        )
        do_guidance = max_guidance_scale > 1
        condition_latents, motion_features = clip_conditions(
            self.motion_encoder, motion.to(device), image_latents, dtype, do_guidance
        )
        # min == max gives max on every frame, as `use_linear_guidance=False` asks
        guidance = frame_guidance_scales(
            min_guidance_scale if use_linear_guidance else max_guidance_scale,
            max_guidance_scale,
            num_frames,
            dtype,
            device,
        )
        time_ids = added_time_ids(
            self.unet, [fps, motion_bucket_id, noise_aug_strength], condition_latents.shape[0], dtype, device
        )

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (batch_size, num_frames, self.vae.config.latent_channels, *motion.shape[-2:])
        latents = (
            randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            * self.scheduler.init_noise_sigma
        )
        timesteps = self.scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            latents = denoise_clip_latents(
                self.unet,
                self.scheduler,
                latents,
                timesteps,
                condition_latents,
                motion_features,
                time_ids,
                guidance,
                do_guidance,
                progress_bar,
                on_step_end=on_step_end,
                interrupted=lambda: self.interrupt,
            )
        return self.decode_video_latents(latents, decode_chunk_size) if decode else latents

    # ----------------------------------------------------------------------------------------------
    # call
    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: PIL.Image.Image | list[PIL.Image.Image] | None = None,
        num_clips: int = 1,
        height: int | None = None,
        width: int | None = None,
        keyframe_height: int | None = None,
        keyframe_width: int | None = None,
        num_inference_steps: int = 25,
        keyframe_num_inference_steps: int = 50,
        keyframe_guidance_scale: float = 4.0,
        motion_guidance_scale: float = 7.0,
        decoder_guidance_scale: float = 3.0,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float = 4.0,
        use_linear_guidance: bool = True,
        keyframe_renoise_level: float = 0.85,
        negative_prompt: str | list[str] | None = None,
        do_sample: bool = True,
        motion_do_sample: bool | None = None,
        top_k: int | None = 200,
        top_p: float = 1.0,
        temperature: float = 1.0,
        fps: int = 6,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        decode_chunk_size: int | None = 8,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
        attention_kwargs: dict[str, Any] | None = None,
    ) -> VideoLaVITPipelineOutput | tuple:
        r"""Generate ``num_videos_per_prompt`` videos per prompt.

        Args:
            prompt: text prompt(s); may be omitted for image-to-video.
            image: image-to-video: one PIL image per prompt, tokenized as the first clip's keyframe (only
                its motion is generated) and used as that clip's keyframe.
            num_clips: clips of 24 frames (4 s at 6 fps) per video; later clips continue the token sequence.
            height, width: video size (default: the 3D U-Net's sample size times 8).
            keyframe_height, keyframe_width: keyframe rendering size (default: the keyframe U-Net's size
                times 8); keyframes are resized bicubically to the video size.
            num_inference_steps: EDM steps of the video detokenizer (25 in the reference).
            keyframe_num_inference_steps: steps of the keyframe detokenizer (50 in the reference).
            keyframe_guidance_scale, motion_guidance_scale: classifier-free guidance on the language model's
                logits while it samples keyframe codes (4.0) and motion codes (7.0).
            decoder_guidance_scale: guidance of the keyframe detokenizer (3.0).
            min_guidance_scale, max_guidance_scale, use_linear_guidance: video detokenizer guidance, linear
                over the frames from min to max (1.0 -> 4.0), or max everywhere.
            keyframe_renoise_level: a later clip's keyframe starts from the previous clip's last frame, noised
                to the timestep this fraction of the way through the keyframe schedule (0.85).
            negative_prompt: unconditional prompt of the language model's guidance (default: empty).
            do_sample, top_k, top_p, temperature: sampling of the language model (top-k 200, top-p 1.0).
            motion_do_sample: sample the motion codes (True) or take the arg-max (False); default (None) is
                the reference's choice: arg-max in text-to-video, ``do_sample`` for a given image's motion.
            fps, motion_bucket_id, noise_aug_strength: the video detokenizer's added time ids (6, 127, 0.02).
            decode_chunk_size: frames decoded by the temporal VAE at once (memory vs speed).
            num_videos_per_prompt: videos sampled per prompt (and image), one after another in the output.
            generator: one torch generator driving the token sampling and every diffusion noise, or one per
                video (``len(prompts) * num_videos_per_prompt``), each driving only its video.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (the video U-Net's denoised latents
                ``[batch, num_clips * frames, 4, H / 8, W / 8]``; only clips that a later clip continues from
                are decoded, for their last frame).
            return_dict: return a :class:`VideoLaVITPipelineOutput` instead of a tuple.
            callback_on_step_end: ``callback(pipe, step, timestep, tensors) -> dict`` called after every
                denoising step of every keyframe and every clip (``pipe.current_phase`` says which); a
                returned ``"latents"`` replaces the latents, ``pipe._interrupt = True`` stops denoising.
            callback_on_step_end_tensor_inputs: names of the tensors passed to the callback
                (``_callback_tensor_inputs``: ``"latents"``).
            attention_kwargs: passed to the keyframe U-Net's attention processors (e.g. ``{"scale": 0.5}``
                with LoRA); Stable Video Diffusion's video U-Net takes none.

        Returns:
            :class:`VideoLaVITPipelineOutput` (or the tuple ``(frames, keyframes)``).
        """
        # 0. Default sizes: the U-Nets' own resolutions
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        keyframe_height = (
            keyframe_height or self.keyframe_unet.config.sample_size * self.keyframe_vae_scale_factor
        )
        keyframe_width = (
            keyframe_width or self.keyframe_unet.config.sample_size * self.keyframe_vae_scale_factor
        )

        # 1. Check inputs; one row per video
        prompts, images = self.check_inputs(
            prompt,
            image,
            num_clips,
            height,
            width,
            keyframe_height,
            keyframe_width,
            num_videos_per_prompt,
            generator,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        if num_videos_per_prompt > 1:
            prompts = [item for item in prompts for _ in range(num_videos_per_prompt)]
            if images is not None:
                images = [item for item in images for _ in range(num_videos_per_prompt)]
            if isinstance(negative_prompt, list):
                negative_prompt = [item for item in negative_prompt for _ in range(num_videos_per_prompt)]
        self._interrupt = False
        self._attention_kwargs = attention_kwargs

        def on_step_end(step: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
            self._current_timestep = timestep
            if callback_on_step_end is None:
                return latents
            tensors = {"latents": latents}
            outputs = callback_on_step_end(
                self, step, timestep, {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
            )
            return outputs.pop("latents", latents)

        # 2. Language model: keyframe and motion codes of every clip
        _, keyframe_codes, motion = self.generate_clip_tokens(
            prompts,
            images,
            num_clips,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
            generator,
            negative_prompt=negative_prompt,
            keyframe_guidance_scale=keyframe_guidance_scale,
            motion_guidance_scale=motion_guidance_scale,
            do_sample=do_sample,
            motion_do_sample=motion_do_sample,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
        )

        # 3. Detokenize clip by clip: keyframe, then its 24 frames
        clips, keyframes_per_clip, last_frames = [], [], None
        for clip in range(num_clips):
            self._current_phase = ("keyframe", clip)
            if keyframe_codes[clip] is None:
                keyframes = (
                    self.video_processor.preprocess(images, height=height, width=width).float() / 2 + 0.5
                )
            else:
                keyframes = self.render_keyframes(
                    *keyframe_codes[clip],
                    height=keyframe_height,
                    width=keyframe_width,
                    num_inference_steps=keyframe_num_inference_steps,
                    guidance_scale=decoder_guidance_scale,
                    generator=generator,
                    init_images=last_frames,
                    renoise_level=keyframe_renoise_level,
                    on_step_end=on_step_end,
                    attention_kwargs=attention_kwargs,
                )
            keyframes_per_clip.append(keyframes.cpu())
            self._current_phase = ("video", clip)
            chunk = decode_chunk_size or motion[clip].shape[2]
            latents = self.render_clip(
                _resize(keyframes, height, width),
                motion[clip],
                num_inference_steps=num_inference_steps,
                min_guidance_scale=min_guidance_scale,
                max_guidance_scale=max_guidance_scale,
                use_linear_guidance=use_linear_guidance,
                fps=fps,
                motion_bucket_id=motion_bucket_id,
                noise_aug_strength=noise_aug_strength,
                decode_chunk_size=chunk,
                generator=generator,
                on_step_end=on_step_end,
                decode=False,
            )
            # the next keyframe continues from this clip's last frame, so that clip is decoded in any case
            if output_type != "latent" or clip < num_clips - 1:
                frames = self.decode_video_latents(latents, chunk)
                last_frames = frames[:, -1]
            clips.append((latents if output_type == "latent" else frames).cpu())
        self._current_timestep = self._current_phase = None

        # 4. Outputs
        video = torch.cat(clips, dim=1)  # [batch, num_clips * frames, 3 (4 for latents), H (h), W (w)]
        keyframes = [
            [
                self.image_processor.pt_to_numpy(clip_keyframes[row : row + 1])
                for clip_keyframes in keyframes_per_clip
            ]
            for row in range(video.shape[0])
        ]
        keyframes = [[self.image_processor.numpy_to_pil(array)[0] for array in row] for row in keyframes]
        if output_type in ("pt", "latent"):
            frames = video
        elif output_type == "np":
            frames = video.permute(0, 1, 3, 4, 2).numpy()
        else:
            frames = [self.image_processor.numpy_to_pil(row.permute(0, 2, 3, 1).numpy()) for row in video]

        self.maybe_free_model_hooks()
        if not return_dict:
            return frames, keyframes
        return VideoLaVITPipelineOutput(frames=frames, keyframes=keyframes, fps=fps)


__all__ = ["VideoLaVITPipeline", "VideoLaVITPipelineInputError", "VideoLaVITPipelineOutput"]
