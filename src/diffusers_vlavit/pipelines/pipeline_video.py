"""Video detokenizer: a keyframe plus motion (tokens or a motion grid) -> a clip of frames.

This module imports only torch, NumPy, PIL, transformers, diffusers and its siblings, never the project's
packages: `save_pretrained` copies it next to the weights, so the saved folder loads with
`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where they are not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.image_processor import PipelineImageInput
from diffusers.models import AutoencoderKLTemporalDecoder
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers import EulerDiscreteScheduler
from diffusers.utils import BaseOutput, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import PreTrainedModel

from .detokenizer_sampling import (
    added_time_ids,
    clip_conditions,
    decode_clip_latents,
    denoise_clip_latents,
    encode_augmented_keyframes,
    frame_guidance_scales,
)
from .loading import CustomPipelineSavingMixin

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DiffusionPipeline
        >>> from diffusers.utils import export_to_video, load_image

        >>> folder = "tiny-video-lavit/detokenizer/video"  # written by `vlavit tiny-checkpoint`
        >>> pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
        >>> keyframe = load_image("keyframe.png")
        >>> config = pipe.motion_tokenizer.config
        >>> motion_ids = torch.randint(0, config.codebook_size, (1, config.num_tokens))
        >>> frames = pipe(keyframe, motion_ids=motion_ids, height=64, width=64).frames[0]
        >>> export_to_video(frames, "clip.mp4", fps=6)
        ```
"""


class VideoInputError(ValueError):
    """Raised when the video pipeline gets inputs it cannot turn into a batch of clips."""


@dataclass
class VideoLaVITVideoPipelineOutput(BaseOutput):
    r"""Output of :class:`VideoLaVITVideoPipeline`.

    Args:
        frames: ``batch`` lists of ``num_frames`` PIL images, a NumPy array
            ``[batch, num_frames, height, width, 3]`` or a tensor ``[batch, num_frames, 3, height, width]``
            (values in [0, 1]), or latents for ``"latent"``.
    """

    frames: list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor


class VideoLaVITVideoPipeline(CustomPipelineSavingMixin, DiffusionPipeline):
    r"""Decode a Video-LaVIT clip from its keyframe and its motion.

    The motion (decoded from motion tokens by the motion tokenizer, or given as a motion grid) conditions the
    motion-aware spatio-temporal U-Net twice: through :class:`MotionConditionEncoder` features in every
    cross-attention, and as two input channels at latent resolution next to the noisy latents and the keyframe
    latent (10 channels). Sampling is Stable-Video-Diffusion-style EDM with classifier-free guidance whose
    unconditional branch zeroes the keyframe latent and every motion input.

    Args:
        unet ([`UNetSpatioTemporalMotionModel`]): the 10-channel denoiser.
        motion_encoder ([`MotionConditionEncoder`]): motion -> cross-attention context.
        vae ([`AutoencoderKLTemporalDecoder`]): keyframe encoder and temporal frame decoder.
        scheduler ([`EulerDiscreteScheduler`]): EDM Euler scheduler.
        motion_tokenizer ([`VideoLaVITMotionTokenizer`], *optional*): decodes ``motion_ids``.
    """

    model_cpu_offload_seq = "motion_tokenizer->motion_encoder->unet->vae"
    _optional_components = ["motion_tokenizer"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        unet: ModelMixin,
        motion_encoder: ModelMixin,
        vae: AutoencoderKLTemporalDecoder,
        scheduler: EulerDiscreteScheduler,
        motion_tokenizer: PreTrainedModel | None = None,
    ):
        super().__init__()
        self.register_modules(
            unet=unet,
            motion_encoder=motion_encoder,
            vae=vae,
            scheduler=scheduler,
            motion_tokenizer=motion_tokenizer,
        )
        self.vae_scale_factor = (
            2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8
        )
        # the reference resizes keyframes bicubically
        self.video_processor = VideoProcessor(
            do_resize=True, vae_scale_factor=self.vae_scale_factor, resample="bicubic"
        )

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` (from ``callback_on_step_end``) to stop denoising; the latents
        reached so far are decoded."""
        return getattr(self, "_interrupt", False)

    @property
    def guidance_scale(self) -> torch.Tensor | float:
        """Guidance weight of the running call: ``[batch, frames, 1, 1, 1]`` when linear over frames."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the running call evaluates an unconditional branch (largest guidance scale above 1)."""
        scale = self._guidance_scale
        return (scale.max() if isinstance(scale, torch.Tensor) else scale) > 1

    def check_inputs(self, image, motion_ids, motion, height: int, width: int) -> int:
        """Validate the inputs and return the batch size."""
        if (motion_ids is None) == (motion is None):
            raise VideoInputError("pass exactly one of motion_ids (motion tokens) or motion (a motion grid)")
        if motion_ids is not None and self.motion_tokenizer is None:
            raise VideoInputError(
                "this pipeline has no motion_tokenizer to decode motion_ids; add one "
                "(pipe.motion_tokenizer = VideoLaVITMotionTokenizer...) or pass a motion grid as `motion`"
            )
        if motion is not None and (motion.ndim != 5 or motion.shape[1] != 2):
            raise VideoInputError(
                f"motion must be [batch, 2, frames, height, width], got {tuple(motion.shape)}"
            )
        if motion_ids is not None and motion_ids.ndim != 2:
            raise VideoInputError(f"motion_ids must be [batch, num_tokens], got {tuple(motion_ids.shape)}")
        if height % self.vae_scale_factor != 0 or width % self.vae_scale_factor != 0:
            raise VideoInputError(
                f"height and width must be multiples of {self.vae_scale_factor}, got {height} x {width}"
            )

        if isinstance(image, PIL.Image.Image):
            batch_size = 1
        elif isinstance(image, torch.Tensor):
            batch_size = image.shape[0] if image.ndim == 4 else 1
        elif isinstance(image, (list, np.ndarray)):
            batch_size = len(image)
        else:
            raise VideoInputError(
                f"image must be a PIL image, a list of them, an array or a tensor, got {type(image)}"
            )
        motion_batch = (motion_ids if motion is None else motion).shape[0]
        if motion_batch != batch_size:
            raise VideoInputError(f"{batch_size} keyframes but motion for {motion_batch} clips")
        return batch_size

    def motion_at_latent_size(
        self, motion_ids: torch.Tensor | None, motion: torch.Tensor | None, height: int, width: int, device
    ) -> torch.Tensor:
        """The motion map the U-Net sees: ``[batch, 2, frames, height / 8, width / 8]`` in detokenizer scale.

        Motion ids go through ``motion_tokenizer.decode_for_detokenizer`` (decode, bicubic resize, divide by
        the tokenizer's ``motion_scale_factor``); a motion grid, already in detokenizer scale, is resized
        bicubically.
        """
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        if motion_ids is not None:
            return self.motion_tokenizer.decode_for_detokenizer(motion_ids.to(device), *latent_size)
        # the per-frame bicubic resize of `decompose_video` and the motion tokenizer's
        # `decode_for_detokenizer`, repeated: each of these modules travels alone as custom code
        batch, channels, frames = motion.shape[:3]
        per_frame = motion.to(device).transpose(1, 2).flatten(0, 1).float()
        resized = F.interpolate(per_frame, size=latent_size, mode="bicubic", align_corners=False)
        return resized.view(batch, frames, channels, *latent_size).transpose(1, 2)

    def encode_keyframe(
        self,
        image: PipelineImageInput,
        height: int,
        width: int,
        noise_aug_strength: float,
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
    ) -> torch.Tensor:
        """Noise-augmented VAE latents (distribution mode, unscaled): ``[batch, 4, h / 8, w / 8]``."""
        pixels = self.video_processor.preprocess(image, height=height, width=width).to(device)
        return encode_augmented_keyframes(self.vae, pixels, noise_aug_strength, generator)

    def get_add_time_ids(
        self, fps: int, motion_bucket_id: int, noise_aug_strength: float, batch_size: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """SVD micro-conditioning ``[batch, 3]``: fps, motion bucket id, noise augmentation strength."""
        return added_time_ids(self.unet, [fps, motion_bucket_id, noise_aug_strength], batch_size, dtype)

    def prepare_latents(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise ``[batch, frames, 4, h / 8, w / 8]`` scaled by the scheduler's initial sigma."""
        if isinstance(generator, list) and len(generator) != shape[0]:
            raise VideoInputError(f"got {len(generator)} generators for a batch of {shape[0]} clips")
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise VideoInputError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        else:
            latents = latents.to(device=device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int) -> torch.Tensor:
        """Decode ``[batch, frames, 4, h, w]`` latents, ``decode_chunk_size`` frames at a time.

        Returns:
            ``[batch, 3, frames, H, W]`` float32 in [-1, 1] (the layout of `postprocess_video`).
        """
        return decode_clip_latents(self.vae, latents, decode_chunk_size).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: PipelineImageInput,
        motion_ids: torch.LongTensor | None = None,
        motion: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int = 25,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float = 4.0,
        use_linear_guidance: bool = True,
        fps: int = 6,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        decode_chunk_size: int | None = 8,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> VideoLaVITVideoPipelineOutput | tuple:
        r"""Decode one clip per keyframe.

        Args:
            image: the keyframes: a PIL image, a list of them, a NumPy array or a tensor ``[batch, 3, H, W]``
                in [0, 1] (resized bicubically to ``height`` x ``width``).
            motion_ids: ``[batch, num_tokens]`` 0-based motion codes (135 at full size); needs
                ``motion_tokenizer``.
            motion: instead of codes, a motion grid ``[batch, 2, frames, h, w]`` of any spatial size in the
                *detokenizer* scale, the scale the motion tokenizer decodes codes to: ``decompose_video(...)
                .motion_vectors`` divided by ``motion_tokenizer.config.motion_scale_factor``. In the release
                that factor is 10, so the grid is ``motion_vectors_unscaled``; a model trained with another
                factor (Video-LaVIT-Shapes: 1) needs its own. It is resized bicubically to the latent size.
            height, width: frame size in pixels (default: the U-Net's sample size times the VAE factor).
            num_frames: frames per clip; must equal the motion's (default: the motion's, 24 at full size).
            num_inference_steps: EDM sampling steps.
            min_guidance_scale, max_guidance_scale: guidance rises linearly over the frames from min to max.
            use_linear_guidance: if False, every frame uses ``max_guidance_scale``.
            fps, motion_bucket_id, noise_aug_strength: the added time ids; ``noise_aug_strength`` also scales
                the noise added to the keyframe before encoding.
            decode_chunk_size: frames decoded by the VAE at once (default: all).
            generator: torch generator(s) for the keyframe noise augmentation and the initial noise.
            latents: initial noise ``[batch, frames, 4, height / 8, width / 8]``.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: return a :class:`VideoLaVITVideoPipelineOutput` instead of a tuple.
            callback_on_step_end: ``callback(pipe, step, timestep, tensors) -> dict`` called after every step.
            callback_on_step_end_tensor_inputs: names of the tensors passed to the callback; the callback may
                set ``pipe._interrupt = True`` to stop denoising.

        Returns:
            :class:`VideoLaVITVideoPipelineOutput` with ``frames`` (or the tuple ``(frames,)``);
            ``diffusers.utils.export_to_video(output.frames[0], path, fps=6)`` writes a clip.

        Examples:
        """
        # 0. Default size: the U-Net's own resolution
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor

        # 1. Check inputs
        batch_size = self.check_inputs(image, motion_ids, motion, height, width)
        for name in callback_on_step_end_tensor_inputs:
            if name not in self._callback_tensor_inputs:
                raise VideoInputError(f"{name!r} is not one of {self._callback_tensor_inputs}")
        device = self._execution_device
        dtype = self.unet.dtype
        self._guidance_scale = max_guidance_scale
        self._interrupt = False

        # 2. Motion at latent resolution and its cross-attention features
        motion_latents = self.motion_at_latent_size(motion_ids, motion, height, width, device)
        frames_in_motion = motion_latents.shape[2]
        num_frames = num_frames or frames_in_motion
        if num_frames != frames_in_motion:
            raise VideoInputError(f"num_frames={num_frames} but the motion has {frames_in_motion} frames")

        # 3. Keyframe latents; with the motion, the U-Net's conditions (shared with VideoLaVITPipeline)
        image_latents = self.encode_keyframe(image, height, width, noise_aug_strength, generator, device)
        condition_latents, motion_features = clip_conditions(
            self.motion_encoder, motion_latents, image_latents, dtype, self.do_classifier_free_guidance
        )

        # 4. Added time ids
        time_ids = self.get_add_time_ids(
            fps, motion_bucket_id, noise_aug_strength, condition_latents.shape[0], dtype
        ).to(device)

        # 5. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 6. Initial latents
        num_channels_latents = self.vae.config.latent_channels
        expected_in = 2 * num_channels_latents + motion_latents.shape[1]
        if self.unet.config.in_channels != expected_in:
            raise ValueError(
                f"the U-Net takes {self.unet.config.in_channels} input channels but noisy latents, keyframe "
                f"latents and motion give {expected_in}"
            )
        latent_shape = (
            batch_size,
            num_frames,
            num_channels_latents,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        latents = self.prepare_latents(latent_shape, dtype, device, generator, latents)

        # 7. Guidance scale per frame
        if use_linear_guidance:
            guidance = frame_guidance_scales(
                min_guidance_scale, max_guidance_scale, num_frames, dtype, device
            )
            self._guidance_scale = guidance.repeat(batch_size, 1, 1, 1, 1)

        # 8. Denoising loop
        on_step_end = None
        if callback_on_step_end is not None:

            def on_step_end(step: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
                return callback_on_step_end(self, step, t, {"latents": latents}).pop("latents", latents)

        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            latents = denoise_clip_latents(
                self.unet,
                self.scheduler,
                latents,
                timesteps,
                condition_latents,
                motion_features,
                time_ids,
                self.guidance_scale,
                self.do_classifier_free_guidance,
                progress_bar,
                on_step_end=on_step_end,
                interrupted=lambda: self.interrupt,
            )

        # 9. Decode
        if output_type == "latent":
            frames = latents
        else:
            frames = self.decode_latents(latents, decode_chunk_size or num_frames)
            frames = self.video_processor.postprocess_video(video=frames, output_type=output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return VideoLaVITVideoPipelineOutput(frames=frames)
