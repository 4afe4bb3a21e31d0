"""Denoising loops and VAE steps shared by the Video-LaVIT detokenizer pipelines.

The keyframe pipeline, the video pipeline and the end-to-end `VideoLaVITPipeline` all run these. This module
imports only torch and diffusers, never the project's packages, because `VideoLaVITPipeline.save_pretrained`
copies it next to `pipeline_video_lavit.py` as custom code (diffusers copies a custom pipeline's relative
imports along with it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from diffusers.models import AutoencoderKLTemporalDecoder
from diffusers.utils.torch_utils import randn_tensor

# on_step_end(step, timestep, latents), called after each scheduler step, returns the latents to go on with
StepEndCallback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
# interrupted() -> True stops a loop before its next step (diffusers' `pipe.interrupt`)
InterruptCheck = Callable[[], bool]


@contextmanager
def upcast_vae(vae: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run a float16 VAE whose config sets ``force_upcast`` in float32 inside the block.

    The SDXL and SVD VAEs overflow in float16; the VAE is cast back when the block ends.
    """
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        yield vae
    finally:
        if upcast:
            vae.to(dtype=torch.float16)


def scheduler_step_kwargs(scheduler, generator, eta: float | None = None) -> dict:
    """The keyword arguments among ``generator`` and ``eta`` that ``scheduler.step`` accepts.

    Stochastic schedulers (Euler ancestral, DDPM) draw noise in ``step``; DDIM also takes ``eta``.
    """
    parameters = set(inspect.signature(scheduler.step).parameters)
    kwargs = {"generator": generator}
    if eta is not None:
        kwargs["eta"] = eta
    return {name: value for name, value in kwargs.items() if name in parameters}


def with_zero_unconditional(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Prepend all-zero rows to each conditioning tensor: ``[batch, ...]`` -> ``[2 * batch, ...]``.

    Both detokenizers were trained with all-zero conditioning as the unconditional branch of
    classifier-free guidance (no keyframe codes; no keyframe latent and no motion).
    """
    return tuple(torch.cat([torch.zeros_like(tensor), tensor]) for tensor in tensors)


def added_time_ids(
    unet: torch.nn.Module,
    time_ids: list[float],
    rows: int,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    pooled_dim: int = 0,
) -> torch.Tensor:
    """A U-Net's micro-conditioning ids ``[rows, len(time_ids)]``, checked against its added embedding.

    The keyframe U-Net (SDXL) takes 6 ids (original size, crop top-left, target size) next to the pooled
    keyframe-decoder embedding of ``pooled_dim``; the video U-Net (SVD) takes 3 (fps, motion bucket id, noise
    augmentation strength) and no pooled embedding.

    Raises:
        ValueError: the U-Net's added embedding takes another number of inputs.
    """
    passed = unet.config.addition_time_embed_dim * len(time_ids) + pooled_dim
    expected = unet.add_embedding.linear_1.in_features
    if passed != expected:
        raise ValueError(
            f"the U-Net's added embedding takes {expected} inputs but {len(time_ids)} time ids"
            f"{f' and a pooled embedding of {pooled_dim}' if pooled_dim else ''} give {passed}; check "
            "unet.config.projection_class_embeddings_input_dim (and "
            "keyframe_decoder.config.pooled_projection_dim)"
        )
    return torch.tensor([list(time_ids)], dtype=dtype, device=device).repeat(rows, 1)


def frame_guidance_scales(
    min_guidance_scale: float,
    max_guidance_scale: float,
    num_frames: int,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The video detokenizer's guidance rising linearly over the frames: ``[1, num_frames, 1, 1, 1]``."""
    scales = torch.linspace(min_guidance_scale, max_guidance_scale, num_frames, device=device, dtype=dtype)
    return scales.view(1, num_frames, 1, 1, 1)


def apply_guidance(noise_pred: torch.Tensor, guidance_scale: torch.Tensor | float) -> torch.Tensor:
    """Classifier-free guidance on a prediction whose first half is the unconditional branch.

    Args:
        noise_pred: ``[2 * batch, ...]``, unconditional rows first.
        guidance_scale: a float, or a tensor broadcasting against ``[batch, ...]`` (per-frame guidance).

    Returns:
        ``[batch, ...]``.
    """
    uncond, cond = noise_pred.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def keyframe_conditions(
    keyframe_decoder: torch.nn.Module,
    code_embeddings: torch.Tensor,
    token_counts: torch.Tensor,
    do_guidance: bool,
    num_images_per_prompt: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The keyframe U-Net's SDXL conditioning from keyframe code embeddings.

    Args:
        keyframe_decoder: the `KeyframeTokenDecoder`.
        code_embeddings: ``[sum n_i, code_dim]`` code embeddings of every keyframe, in order.
        token_counts: ``[batch]`` codes per keyframe.
        do_guidance: prepend the all-zero unconditional half.
        num_images_per_prompt: images rendered per keyframe (rows repeated in place).

    Returns:
        ``prompt_embeds [(2 *) batch * num_images_per_prompt, tokens, dim]`` and
        ``pooled_prompt_embeds [(2 *) batch * num_images_per_prompt, pooled_dim]``.
    """
    prompt_embeds, pooled_prompt_embeds = keyframe_decoder(code_embeddings, token_counts)
    if num_images_per_prompt > 1:
        prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        pooled_prompt_embeds = pooled_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
    if do_guidance:
        prompt_embeds, pooled_prompt_embeds = with_zero_unconditional(prompt_embeds, pooled_prompt_embeds)
    return prompt_embeds, pooled_prompt_embeds


def denoise_keyframe_latents(
    unet: torch.nn.Module,
    scheduler,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    add_time_ids: torch.Tensor,
    guidance_scale: float,
    progress_bar,
    step_kwargs: dict | None = None,
    on_step_end: StepEndCallback | None = None,
    cross_attention_kwargs: dict | None = None,
    interrupted: InterruptCheck | None = None,
) -> torch.Tensor:
    """Run an SDXL-style U-Net over ``timesteps`` under classifier-free guidance (when above 1).

    Args:
        unet: `UNet2DConditionModel` with ``addition_embed_type="text_time"``.
        scheduler: a diffusers scheduler whose timesteps are set (``timesteps`` may be a tail of them).
        latents: ``[batch, 4, h, w]`` noisy latents, already scaled for the first timestep.
        prompt_embeds: ``[(2 *) batch, tokens, dim]``, the unconditional half first when guiding.
        pooled_prompt_embeds: ``[(2 *) batch, pooled_dim]``.
        add_time_ids: ``[(2 *) batch, 6]`` SDXL micro-conditioning.
        guidance_scale: guidance weight; 1 or less runs the conditional branch only.
        progress_bar: an object with ``update()`` (the pipeline's ``progress_bar(total=...)``).
        step_kwargs: extra keyword arguments of ``scheduler.step`` (``generator``, ``eta``).
        on_step_end: see :data:`StepEndCallback`.
        cross_attention_kwargs: passed to the U-Net's attention processors (e.g. ``{"scale": 0.5}``).
        interrupted: see :data:`InterruptCheck`; the latents reached so far are returned.

    Returns:
        The denoised latents ``[batch, 4, h, w]``.
    """
    do_guidance = guidance_scale > 1
    for step, t in enumerate(timesteps):
        if interrupted is not None and interrupted():
            break
        model_input = torch.cat([latents] * 2) if do_guidance else latents
        model_input = scheduler.scale_model_input(model_input, t)
        noise_pred = unet(
            model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            added_cond_kwargs={"text_embeds": pooled_prompt_embeds, "time_ids": add_time_ids},
            cross_attention_kwargs=cross_attention_kwargs,
            return_dict=False,
        )[0]
        if do_guidance:
            noise_pred = apply_guidance(noise_pred, guidance_scale)
        latents = scheduler.step(noise_pred, t, latents, **(step_kwargs or {}), return_dict=False)[0]
        if on_step_end is not None:
            latents = on_step_end(step, t, latents)
        progress_bar.update()
    return latents


def clip_conditions(
    motion_encoder: torch.nn.Module,
    motion: torch.Tensor,
    image_latents: torch.Tensor,
    dtype: torch.dtype,
    do_guidance: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The video U-Net's conditions of a batch of clips, for :func:`denoise_clip_latents`.

    Args:
        motion_encoder: the `MotionConditionEncoder`.
        motion: ``[batch, 2, frames, h, w]`` motion at the latent size (detokenizer scale), on the device.
        image_latents: ``[batch, 4, h, w]`` keyframe latents (:func:`encode_augmented_keyframes`).
        dtype: the U-Net's dtype.
        do_guidance: prepend the all-zero unconditional half.

    Returns:
        ``condition_latents [(2 *) batch, frames, 4 + 2, h, w]`` (keyframe latents repeated over the frames,
        then the motion channels) and ``motion_features [(2 *) batch, frames, tokens, dim]``.
    """
    num_frames = motion.shape[2]
    motion_features = motion_encoder(motion.to(motion_encoder.dtype)).to(dtype)
    motion_channels = motion.transpose(1, 2).to(dtype)  # [batch, frames, 2, h, w]
    image_latents = image_latents.to(dtype).unsqueeze(1).repeat(1, num_frames, 1, 1, 1)
    if do_guidance:
        motion_features, image_latents, motion_channels = with_zero_unconditional(
            motion_features, image_latents, motion_channels
        )
    return torch.cat([image_latents, motion_channels], dim=2), motion_features


def denoise_clip_latents(
    unet: torch.nn.Module,
    scheduler,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    condition_latents: torch.Tensor,
    motion_features: torch.Tensor,
    added_time_ids: torch.Tensor,
    guidance_scale: torch.Tensor | float,
    do_guidance: bool,
    progress_bar,
    on_step_end: StepEndCallback | None = None,
    interrupted: InterruptCheck | None = None,
) -> torch.Tensor:
    """Run the motion-conditioned spatio-temporal U-Net over ``timesteps`` (SVD-style EDM sampling).

    Args:
        unet: `UNetSpatioTemporalMotionModel` (10 input channels at full size).
        scheduler: an EDM Euler scheduler whose timesteps are set.
        latents: ``[batch, frames, 4, h, w]`` initial noise scaled by ``init_noise_sigma``.
        condition_latents: ``[(2 *) batch, frames, 4 + 2, h, w]``: keyframe latents and motion channels,
            concatenated to the noisy latents on the channel axis; the unconditional half first when guiding.
        motion_features: ``[(2 *) batch, frames, tokens, dim]`` cross-attention context.
        added_time_ids: ``[(2 *) batch, 3]`` fps, motion bucket id, noise augmentation strength.
        guidance_scale: a float or a tensor ``[batch or 1, frames, 1, 1, 1]`` (guidance rising over frames).
        do_guidance: whether the inputs carry the unconditional half.
        progress_bar: an object with ``update()``.
        on_step_end: see :data:`StepEndCallback`.
        interrupted: see :data:`InterruptCheck`; the latents reached so far are returned.

    Returns:
        The denoised latents ``[batch, frames, 4, h, w]``.
    """
    dtype = condition_latents.dtype
    for step, t in enumerate(timesteps):
        if interrupted is not None and interrupted():
            break
        model_input = torch.cat([latents] * 2) if do_guidance else latents
        model_input = scheduler.scale_model_input(model_input, t)
        model_input = torch.cat([model_input, condition_latents], dim=2)
        noise_pred = unet(
            model_input.to(dtype),
            t,
            encoder_hidden_states=motion_features,
            added_time_ids=added_time_ids,
            return_dict=False,
        )[0]
        if do_guidance:
            noise_pred = apply_guidance(noise_pred, guidance_scale)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        if on_step_end is not None:
            latents = on_step_end(step, t, latents)
        progress_bar.update()
    return latents


def encode_augmented_keyframes(
    vae: AutoencoderKLTemporalDecoder,
    pixels: torch.Tensor,
    noise_aug_strength: float,
    generator: torch.Generator | list[torch.Generator] | None,
) -> torch.Tensor:
    """Noise-augment keyframes and VAE-encode them (distribution mode, unscaled, as SVD conditions).

    Args:
        pixels: ``[batch, 3, H, W]`` in [-1, 1], on the execution device.
        noise_aug_strength: standard deviation of the Gaussian noise added to the pixels.

    Returns:
        ``[batch, 4, H / 8, W / 8]`` in the VAE's dtype.
    """
    pixels = pixels + noise_aug_strength * randn_tensor(
        pixels.shape, generator=generator, device=pixels.device, dtype=pixels.dtype
    )
    with upcast_vae(vae):
        return vae.encode(pixels.to(vae.dtype)).latent_dist.mode()


def decode_image_latents(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Keyframe-VAE decode (upcast when the VAE asks for it).

    Args:
        latents: ``[batch, 4, h, w]`` scaled latents.

    Returns:
        Images ``[batch, 3, H, W]``, float32 in [-1, 1] (not clamped), whatever the VAE's dtype.
    """
    with upcast_vae(vae):
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return images.float()


def decode_clip_latents(
    vae: AutoencoderKLTemporalDecoder, latents: torch.Tensor, decode_chunk_size: int
) -> torch.Tensor:
    """Temporal-VAE decode, ``decode_chunk_size`` frames at a time.

    Args:
        latents: ``[batch, frames, 4, h, w]`` scaled latents.

    Returns:
        Frames ``[batch, frames, 3, H, W]``, float32 in [-1, 1] (not clamped).
    """
    batch_size, num_frames = latents.shape[:2]
    with upcast_vae(vae):
        flat = (latents.flatten(0, 1) / vae.config.scaling_factor).to(vae.dtype)
        frames = torch.cat(
            [vae.decode(chunk, num_frames=chunk.shape[0]).sample for chunk in flat.split(decode_chunk_size)]
        )
    return frames.reshape(batch_size, num_frames, *frames.shape[1:]).float()
