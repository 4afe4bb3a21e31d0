"""Keyframe detokenizer: Video-LaVIT visual codes (or an image, tokenized on the way) -> image, with SDXL.

This module imports only torch, PIL, transformers, diffusers and its siblings, never the project's packages:
`save_pretrained` copies it next to the weights, so the saved folder loads with
`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where they are not installed.
"""

from __future__ import annotations

from collections.abc import Callable

import PIL.Image
import torch
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.models import AutoencoderKL, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedModel
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from .detokenizer_sampling import (
    added_time_ids,
    decode_image_latents,
    denoise_keyframe_latents,
    keyframe_conditions,
    scheduler_step_kwargs,
)
from .loading import CustomPipelineSavingMixin

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DiffusionPipeline

        >>> folder = "tiny-video-lavit/detokenizer/keyframe"  # written by `vlavit tiny-checkpoint`
        >>> pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
        >>> size = pipe.visual_tokenizer.config.codebook_size
        >>> codes = [torch.randint(0, size, (87,)), torch.randint(0, size, (120,))]
        >>> images = pipe(token_ids=codes, generator=torch.Generator().manual_seed(0)).images
        ```
"""


# `transformers_vlavit.VideoLaVITImageProcessor`'s settings (a test keeps them equal): the visual tokenizer's
# 224 x 224 bicubic resize without crop, then CLIP normalisation
VISUAL_TOKENIZER_PREPROCESSING = {
    "resample": PILImageResampling.BICUBIC,
    "image_mean": OPENAI_CLIP_MEAN,
    "image_std": OPENAI_CLIP_STD,
    "size": {"height": 224, "width": 224},
    "do_resize": True,
    "do_center_crop": False,
    "do_rescale": True,
    "do_normalize": True,
    "do_convert_rgb": True,
}


class KeyframeInputError(ValueError):
    """Raised when the keyframe pipeline gets inputs it cannot turn into a batch of keyframes."""


class VideoLaVITKeyframePipeline(CustomPipelineSavingMixin, DiffusionPipeline):
    r"""Render Video-LaVIT keyframes (images) from their discrete visual codes.

    The :class:`KeyframeTokenDecoder` turns the code embeddings of each keyframe into SDXL ``prompt_embeds``
    and ``pooled_prompt_embeds``; an SDXL-style ``UNet2DConditionModel`` (with ``add_time_ids``) denoises
    ``AutoencoderKL`` latents under classifier-free guidance whose unconditional branch is all-zero
    embeddings.

    Args:
        keyframe_decoder ([`KeyframeTokenDecoder`]): code embeddings -> SDXL conditioning.
        unet ([`UNet2DConditionModel`]): SDXL U-Net (``addition_embed_type="text_time"``).
        vae ([`AutoencoderKL`]): image autoencoder.
        scheduler: an SDXL-family diffusers scheduler (the release: ``EulerAncestralDiscreteScheduler``).
        visual_tokenizer ([`VideoLaVITVisualTokenizer`], *optional*): gives the code embeddings of
            ``token_ids`` and tokenizes an ``image`` given instead of codes.
    """

    model_cpu_offload_seq = "visual_tokenizer->keyframe_decoder->unet->vae"
    _optional_components = ["visual_tokenizer"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "pooled_prompt_embeds"]

    def __init__(
        self,
        keyframe_decoder: ModelMixin,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: KarrasDiffusionSchedulers,
        visual_tokenizer: PreTrainedModel | None = None,
    ):
        super().__init__()
        self.register_modules(
            keyframe_decoder=keyframe_decoder,
            unet=unet,
            vae=vae,
            scheduler=scheduler,
            visual_tokenizer=visual_tokenizer,
        )
        self.vae_scale_factor = (
            2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8
        )
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        # the visual tokenizer's own preprocessing (224 bicubic + CLIP normalisation)
        self.tokenizer_image_processor = PilBackend(**VISUAL_TOKENIZER_PREPROCESSING)

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` (from ``callback_on_step_end``) to stop denoising; the latents
        reached so far are decoded."""
        return getattr(self, "_interrupt", False)

    @property
    def guidance_scale(self) -> float:
        """Classifier-free guidance weight of the running call."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the running call evaluates an unconditional branch (guidance scale above 1)."""
        return self._guidance_scale > 1

    def check_inputs(self, token_ids, image, code_embeddings, token_counts, height, width) -> None:
        """Raise :class:`KeyframeInputError` unless exactly one keyframe source and a valid size are given."""
        given = [name for name, value in (("token_ids", token_ids), ("image", image)) if value is not None]
        if code_embeddings is not None:
            given.append("code_embeddings")
        if len(given) != 1:
            raise KeyframeInputError(
                "pass exactly one of token_ids, image or code_embeddings (+ token_counts); "
                f"got {given or 'none'}"
            )
        if (code_embeddings is None) != (token_counts is None):
            raise KeyframeInputError("code_embeddings and token_counts must be passed together")
        if (token_ids is not None or image is not None) and self.visual_tokenizer is None:
            raise KeyframeInputError(
                "this pipeline has no visual_tokenizer, so it cannot embed token_ids or tokenize an image; "
                "load one (pipe.visual_tokenizer = VideoLaVITVisualTokenizer...) or pass code_embeddings"
            )
        if height % self.vae_scale_factor != 0 or width % self.vae_scale_factor != 0:
            raise KeyframeInputError(
                f"height and width must be multiples of {self.vae_scale_factor}, got {height} x {width}"
            )

    def tokenize_images(self, image: PipelineImageInput, device: torch.device) -> list[torch.Tensor]:
        """Tokenize images with the visual tokenizer.

        Args:
            image: a PIL image, a list of them, or CLIP-normalised ``pixel_values [batch, 3, 224, 224]``.

        Returns:
            One LongTensor ``[n_i]`` of 0-based visual codes per image.
        """
        if isinstance(image, torch.Tensor):
            pixel_values = image
        else:
            images = [image] if isinstance(image, PIL.Image.Image) else list(image)
            pixel_values = self.tokenizer_image_processor(images, return_tensors="pt")["pixel_values"]
        pixel_values = pixel_values.to(device=device, dtype=self.visual_tokenizer.dtype)
        return self.visual_tokenizer.tokenize(pixel_values)

    def embed_token_ids(
        self, token_ids: list[torch.Tensor] | torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Look up code embeddings of per-keyframe code ids.

        Args:
            token_ids: a list of LongTensor ``[n_i]`` (0-based visual codes), or a LongTensor ``[batch, n]``.

        Returns:
            ``(code_embeddings [sum n_i, code_dim], token_counts [batch])``.
        """
        ids = list(token_ids) if isinstance(token_ids, (list, tuple)) else list(token_ids.unbind(0))
        if not ids or any(row.ndim != 1 or row.numel() == 0 for row in ids):
            raise KeyframeInputError("token_ids must be non-empty 1-D code sequences, one per keyframe")
        flat = torch.cat([row.to(device=device, dtype=torch.long) for row in ids])
        codebook_size = self.visual_tokenizer.config.codebook_size
        if int(flat.min()) < 0 or int(flat.max()) >= codebook_size:
            raise KeyframeInputError(
                f"visual code ids must lie in [0, {codebook_size}); convert vocabulary ids to 0-based codes "
                "first"
            )
        token_counts = torch.tensor([row.numel() for row in ids], device=device)
        return self.visual_tokenizer.get_code_embeddings(flat), token_counts

    def encode_keyframe_codes(
        self,
        code_embeddings: torch.Tensor,
        token_counts: torch.Tensor,
        num_images_per_prompt: int,
        do_classifier_free_guidance: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL conditioning from code embeddings, with the all-zero unconditional half first when guiding.

        Returns:
            ``prompt_embeds [(2 *) batch * num_images_per_prompt, 256, d1 + d2]`` and
            ``pooled_prompt_embeds [(2 *) batch * num_images_per_prompt, d2]``.
        """
        return keyframe_conditions(
            self.keyframe_decoder,
            code_embeddings,
            token_counts,
            do_classifier_free_guidance,
            num_images_per_prompt=num_images_per_prompt,
        )

    def get_add_time_ids(
        self,
        original_size: tuple[int, int],
        crops_coords_top_left: tuple[int, int],
        target_size: tuple[int, int],
        pooled_dim: int,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """SDXL micro-conditioning ``[1, 6]`` = original size, crop top-left, target size."""
        time_ids = [*original_size, *crops_coords_top_left, *target_size]
        return added_time_ids(self.unet, time_ids, 1, dtype, pooled_dim=pooled_dim)

    def prepare_latents(
        self,
        batch_size: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise ``[batch, unet.in_channels, height / 8, width / 8]`` scaled for the scheduler."""
        shape = (
            batch_size,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise KeyframeInputError(f"got {len(generator)} generators for a batch of {batch_size} images")
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise KeyframeInputError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        else:
            latents = latents.to(device=device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict:
        """Keyword arguments of ``scheduler.step`` this scheduler accepts (``eta``, ``generator``)."""
        return scheduler_step_kwargs(self.scheduler, generator, eta)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode ``[batch, 4, h, w]`` latents to float32 images ``[batch, 3, H, W]`` in [-1, 1]."""
        # outputs are float32 whatever the VAE's dtype, like the video pipeline's frames
        return decode_image_latents(self.vae, latents)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        token_ids: list[torch.Tensor] | torch.Tensor | None = None,
        image: PipelineImageInput | None = None,
        code_embeddings: torch.Tensor | None = None,
        token_counts: torch.Tensor | list[int] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
        attention_kwargs: dict | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""Render one image per keyframe.

        Args:
            token_ids: 0-based visual codes, a list of LongTensor ``[n_i]`` (one per keyframe, any lengths)
                or a LongTensor ``[batch, n]``; needs ``visual_tokenizer`` for the codebook.
            image: instead of codes, images to tokenize first (PIL, list of PIL, or CLIP-normalised
                ``pixel_values [batch, 3, 224, 224]``); needs ``visual_tokenizer``.
            code_embeddings: instead of codes, their embeddings ``[sum n_i, code_dim]``, with
                ``token_counts [batch]``.
            height, width: output size in pixels (default: the U-Net's sample size times the VAE factor).
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance weight; the unconditional branch uses zero embeddings.
            num_images_per_prompt: images rendered per keyframe.
            eta: DDIM eta, ignored by other schedulers.
            generator: torch generator(s) for the initial noise and stochastic schedulers.
            latents: initial noise ``[batch * num_images_per_prompt, 4, height / 8, width / 8]``.
            original_size, crops_coords_top_left, target_size: SDXL micro-conditioning (default: the output
                size and (0, 0)).
            output_type: ``"pil"``, ``"np"`` (``[batch, H, W, 3]`` in [0, 1]), ``"pt"`` (``[batch, 3, H, W]``
                in [0, 1]) or ``"latent"``.
            return_dict: return an :class:`ImagePipelineOutput` instead of a tuple.
            callback_on_step_end: ``callback(pipe, step, timestep, tensors) -> dict`` called after every step.
            callback_on_step_end_tensor_inputs: names of the tensors passed to the callback; the callback may
                set ``pipe._interrupt = True`` to stop denoising.
            attention_kwargs: passed to the U-Net's attention processors (e.g. ``{"scale": 0.5}`` with LoRA).

        Returns:
            :class:`ImagePipelineOutput` with ``images`` (or the tuple ``(images,)``).

        Examples:
        """
        # 0. Default size: the U-Net's own resolution
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        original_size = original_size or (height, width)
        target_size = target_size or (height, width)

        # 1. Check inputs
        self.check_inputs(token_ids, image, code_embeddings, token_counts, height, width)
        for name in callback_on_step_end_tensor_inputs:
            if name not in self._callback_tensor_inputs:
                raise KeyframeInputError(f"{name!r} is not one of {self._callback_tensor_inputs}")
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device

        # 2. Keyframe codes -> code embeddings
        if image is not None:
            token_ids = self.tokenize_images(image, device)
        if token_ids is not None:
            code_embeddings, token_counts = self.embed_token_ids(token_ids, device)
        batch_size = len(token_counts) * num_images_per_prompt

        # 3. Code embeddings -> SDXL conditioning
        prompt_embeds, pooled_prompt_embeds = self.encode_keyframe_codes(
            code_embeddings.to(device), token_counts, num_images_per_prompt, self.do_classifier_free_guidance
        )
        prompt_embeds = prompt_embeds.to(self.unet.dtype)
        pooled_prompt_embeds = pooled_prompt_embeds.to(self.unet.dtype)
        add_time_ids = self.get_add_time_ids(
            original_size,
            crops_coords_top_left,
            target_size,
            pooled_prompt_embeds.shape[-1],
            prompt_embeds.dtype,
        ).to(device)
        add_time_ids = add_time_ids.repeat(prompt_embeds.shape[0], 1)

        # 4. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 5. Initial latents
        latents = self.prepare_latents(
            batch_size, height, width, prompt_embeds.dtype, device, generator, latents
        )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 6. Denoising loop
        on_step_end = None
        if callback_on_step_end is not None:

            def on_step_end(step: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
                tensors = {
                    "latents": latents,
                    "prompt_embeds": prompt_embeds,
                    "pooled_prompt_embeds": pooled_prompt_embeds,
                }
                outputs = callback_on_step_end(
                    self, step, t, {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                )
                return outputs.pop("latents", latents)

        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            latents = denoise_keyframe_latents(
                self.unet,
                self.scheduler,
                latents,
                timesteps,
                prompt_embeds,
                pooled_prompt_embeds,
                add_time_ids,
                self.guidance_scale,
                progress_bar,
                step_kwargs=extra_step_kwargs,
                on_step_end=on_step_end,
                cross_attention_kwargs=attention_kwargs,
                interrupted=lambda: self.interrupt,
            )

        # 7. Decode
        if output_type == "latent":
            images = latents
        else:
            images = self.image_processor.postprocess(self.decode_latents(latents), output_type=output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
