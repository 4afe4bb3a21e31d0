"""The detokenizer pipelines against small re-implementations of the original's sampling loops.

Video detokenizer (`VideoLaVIT/models/video_detokenizer.py`, `reconstruct_from_token`): motion features
with an all-zero unconditional copy; the keyframe noise-augmented in pixel space (`+ 0.02 * noise`) and
VAE-encoded to its latent *mode*, not multiplied by the VAE scaling factor, repeated over the frames, zero
for the unconditional branch; the motion map at latent size as two more channels (zero when
unconditional); `added_time_ids = (fps, motion bucket, noise strength)`; initial noise times the
scheduler's `init_noise_sigma`; guidance `uncond + g * (cond - uncond)` with `g` rising linearly over the
frames from 1 to 4; decoding `latents / scaling_factor` in chunks of frames.

Keyframe detokenizer (`video_lavit_for_generation.py`, `image_decoding`): the token decoder's SDXL
embeddings with all-zero unconditional embeddings, `add_time_ids = original size + crop + target size`,
initial noise times `init_noise_sigma`, guidance 3.0; in a long video a later keyframe starts from the
previous clip's last frame, VAE-encoded (scaled), noised with `add_noise` at `timesteps[int(0.85 * steps)]`
and denoised over the remaining steps only (the original also multiplied that latent by
`init_noise_sigma`; the project leaves that out on purpose, see `render_keyframes`).

The reference loops below call the same modules but none of the pipelines' code, with the same fixed noise.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoProcessor

from diffusers_vlavit import VideoLaVITPipeline
from diffusers_vlavit.tiny import build_tiny_keyframe_pipeline, build_tiny_video_pipeline
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

# non-square, so that a height/width swap shows
HEIGHT, WIDTH, FRAMES, STEPS = 16, 24, 4, 3
ATOL = 1e-5


@pytest.fixture(scope="module")
def video_pipe():
    pipe = build_tiny_video_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def keyframe_pipe():
    pipe = build_tiny_keyframe_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def composite(keyframe_pipe, video_pipe):
    pipe = VideoLaVITPipeline.from_detokenizer_pipelines(keyframe_pipe, video_pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def resize_frames(motion: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic per-frame resize of `[batch, 2, frames, h, w]`."""
    batch, channels, frames = motion.shape[:3]
    flat = motion.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, *motion.shape[-2:])
    flat = F.interpolate(flat, (height, width), mode="bicubic")
    return flat.reshape(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def reference_video_loop(
    pipe,
    pixels,
    motion_latent,
    augmentation_noise,
    noise,
    steps=STEPS,
    min_guidance=1.0,
    max_guidance=4.0,
    linear=True,
    fps=6,
    motion_bucket_id=127,
    noise_aug_strength=0.02,
    decode_chunk_size=8,
):
    """The original's video detokenizer loop: keyframe pixels `[B, 3, H, W]` in [-1, 1] and motion at latent
    size `[B, 2, T, h, w]` -> frames `[B, T, 3, H, W]` in [0, 1]."""
    batch, _, frames = motion_latent.shape[:3]
    unet, vae, scheduler = pipe.unet, pipe.vae, copy.deepcopy(pipe.scheduler)
    # the original resizes the motion to the encoder's grid (16 x 16 at full size) before encoding it
    context = pipe.motion_encoder(resize_frames(motion_latent, *pipe.motion_encoder.config.grid_size))
    context = torch.cat([torch.zeros_like(context), context])

    image_latents = vae.encode(pixels + noise_aug_strength * augmentation_noise).latent_dist.mode()
    image_latents = image_latents.unsqueeze(1).repeat(1, frames, 1, 1, 1)
    image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])
    motion_channels = motion_latent.permute(0, 2, 1, 3, 4)
    motion_channels = torch.cat([torch.zeros_like(motion_channels), motion_channels])
    time_ids = torch.tensor([[fps, motion_bucket_id, noise_aug_strength]]).repeat(2 * batch, 1)

    scheduler.set_timesteps(steps)
    latents = noise * scheduler.init_noise_sigma
    if linear:
        guidance = torch.linspace(min_guidance, max_guidance, frames)[None].repeat(batch, 1)[
            ..., None, None, None
        ]
    else:
        guidance = max_guidance
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        model_input = torch.cat([model_input, image_latents, motion_channels], dim=2)
        prediction = unet(model_input, t, encoder_hidden_states=context, added_time_ids=time_ids).sample
        uncond, cond = prediction.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample

    flat = latents.flatten(0, 1) / vae.config.scaling_factor
    decoded = [
        vae.decode(
            flat[start : start + decode_chunk_size], num_frames=len(flat[start : start + decode_chunk_size])
        ).sample
        for start in range(0, len(flat), decode_chunk_size)
    ]
    decoded = torch.cat(decoded).reshape(batch, frames, *decoded[0].shape[1:])
    return (decoded / 2 + 0.5).clamp(0, 1)


def inputs(batch=2):
    generator = seeded(11)
    keyframes = torch.rand(batch, 3, HEIGHT, WIDTH, generator=generator)
    motion = torch.randn(batch, 2, FRAMES, 20, 36, generator=generator) * 0.5
    noise = torch.randn(batch, FRAMES, 4, HEIGHT // 8, WIDTH // 8, generator=generator)
    return keyframes, motion, noise


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"use_linear_guidance": False, "max_guidance_scale": 2.5},
        {
            "min_guidance_scale": 2.0,
            "max_guidance_scale": 6.0,
            "noise_aug_strength": 0.1,
            "fps": 8,
            "motion_bucket_id": 60,
            "decode_chunk_size": 3,
        },
    ],
)
def test_video_pipeline_matches_the_original_loop(video_pipe, options):
    keyframes, motion, noise = inputs()
    frames = video_pipe(
        keyframes,
        motion=motion,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=STEPS,
        latents=noise,
        generator=seeded(3),
        output_type="pt",
        **options,
    ).frames
    reference_options = {
        "min_guidance": options.get("min_guidance_scale", 1.0),
        "max_guidance": options.get("max_guidance_scale", 4.0),
        "linear": options.get("use_linear_guidance", True),
        "fps": options.get("fps", 6),
        "motion_bucket_id": options.get("motion_bucket_id", 127),
        "noise_aug_strength": options.get("noise_aug_strength", 0.02),
        "decode_chunk_size": options.get("decode_chunk_size", 8),
    }
    augmentation = torch.randn(keyframes.shape, generator=seeded(3))
    expected = reference_video_loop(
        video_pipe,
        keyframes * 2 - 1,
        resize_frames(motion, HEIGHT // 8, WIDTH // 8),
        augmentation,
        noise,
        **reference_options,
    )
    torch.testing.assert_close(frames, expected, rtol=0, atol=ATOL)


def test_video_pipeline_from_motion_ids_matches_the_original_loop(video_pipe):
    keyframes = torch.rand(1, 3, HEIGHT, WIDTH, generator=seeded(4))
    config = video_pipe.motion_tokenizer.config
    motion_ids = torch.randint(0, config.codebook_size, (1, 135), generator=seeded(5))
    noise = torch.randn(1, 24, 4, HEIGHT // 8, WIDTH // 8, generator=seeded(6))
    frames = video_pipe(
        keyframes,
        motion_ids=motion_ids,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=2,
        latents=noise,
        generator=seeded(3),
        output_type="pt",
    ).frames
    motion = video_pipe.motion_tokenizer.decode_for_detokenizer(motion_ids, HEIGHT // 8, WIDTH // 8)
    augmentation = torch.randn(keyframes.shape, generator=seeded(3))
    expected = reference_video_loop(video_pipe, keyframes * 2 - 1, motion, augmentation, noise, steps=2)
    torch.testing.assert_close(frames, expected, rtol=0, atol=ATOL)


def test_end_to_end_clip_rendering_matches_the_original_loop(composite):
    keyframes, motion, _ = inputs()
    motion = resize_frames(motion, HEIGHT // 8, WIDTH // 8)
    frames = composite.render_clip(
        keyframes,
        motion,
        num_inference_steps=STEPS,
        min_guidance_scale=1.0,
        max_guidance_scale=4.0,
        use_linear_guidance=True,
        fps=6,
        motion_bucket_id=127,
        noise_aug_strength=0.02,
        decode_chunk_size=8,
        generator=seeded(8),
    )
    generator = seeded(8)
    augmentation = torch.randn(keyframes.shape, generator=generator)
    noise = torch.randn(2, FRAMES, 4, HEIGHT // 8, WIDTH // 8, generator=generator)
    expected = reference_video_loop(composite, keyframes * 2 - 1, motion, augmentation, noise)
    torch.testing.assert_close(frames, expected, rtol=0, atol=ATOL)


@torch.no_grad()
def reference_keyframe_loop(
    unet,
    vae,
    scheduler,
    decoder,
    code_embeddings,
    token_counts,
    noise,
    generator,
    steps,
    height,
    width,
    guidance=3.0,
    previous_frame=None,
    renoise_level=0.85,
):
    """The original's keyframe loop -> images `[B, 3, H, W]` in [0, 1]; `previous_frame` `[B, 3, H, W]` in
    [0, 1] starts it from that frame re-noised at `timesteps[int(renoise_level * steps)]`."""
    scheduler = copy.deepcopy(scheduler)
    prompt_embeds, pooled = decoder(code_embeddings, token_counts)
    prompt_embeds = torch.cat([torch.zeros_like(prompt_embeds), prompt_embeds])
    pooled = torch.cat([torch.zeros_like(pooled), pooled])
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
    time_ids = time_ids.repeat(prompt_embeds.shape[0], 1)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if previous_frame is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        level = int(renoise_level * steps)
        timesteps = timesteps[level:]
        scheduler.set_begin_index(level)
        clean = vae.encode(previous_frame * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        latents = scheduler.add_noise(clean, noise, timesteps[:1].repeat(len(noise)))
    first_input = None
    for t in timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        first_input = model_input if first_input is None else first_input
        added = {"text_embeds": pooled, "time_ids": time_ids}
        prediction = unet(model_input, t, encoder_hidden_states=prompt_embeds, added_cond_kwargs=added).sample
        uncond, cond = prediction.chunk(2)
        latents = scheduler.step(
            uncond + guidance * (cond - uncond), t, latents, generator=generator
        ).prev_sample
    images = vae.decode(latents / vae.config.scaling_factor).sample
    return (images / 2 + 0.5).clamp(0, 1), first_input


def keyframe_codes(pipe):
    size = pipe.visual_tokenizer.config.codebook_size
    codes = [torch.randint(0, size, (n,), generator=seeded(n)) for n in (5, 9)]
    return codes, pipe.visual_tokenizer.get_code_embeddings(torch.cat(codes)), torch.tensor([5, 9])


def test_keyframe_pipeline_matches_the_original_loop(keyframe_pipe):
    codes, embeddings, counts = keyframe_codes(keyframe_pipe)
    noise = torch.randn(2, 4, HEIGHT // 8, WIDTH // 8, generator=seeded(1))
    images = keyframe_pipe(
        token_ids=codes,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=STEPS,
        latents=noise,
        generator=seeded(2),
        output_type="pt",
    ).images
    expected, _ = reference_keyframe_loop(
        keyframe_pipe.unet,
        keyframe_pipe.vae,
        keyframe_pipe.scheduler,
        keyframe_pipe.keyframe_decoder,
        embeddings,
        counts,
        noise,
        seeded(2),
        STEPS,
        HEIGHT,
        WIDTH,
    )
    torch.testing.assert_close(images, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("previous", [False, True])
def test_end_to_end_keyframes_match_the_original_loop_and_its_renoising(composite, keyframe_pipe, previous):
    _, embeddings, counts = keyframe_codes(keyframe_pipe)
    steps = 20
    previous_frame = torch.rand(2, 3, HEIGHT, WIDTH, generator=seeded(9)) if previous else None
    first_inputs = []
    hook = composite.keyframe_unet.register_forward_pre_hook(
        lambda module, args: first_inputs.append(args[0]) if not first_inputs else None
    )
    try:
        images = composite.render_keyframes(
            embeddings,
            counts,
            HEIGHT,
            WIDTH,
            steps,
            3.0,
            seeded(4),
            init_images=previous_frame,
            renoise_level=0.85,
        )
    finally:
        hook.remove()
    generator = seeded(4)
    noise = torch.randn(2, 4, HEIGHT // 8, WIDTH // 8, generator=generator)
    expected, first_input = reference_keyframe_loop(
        composite.keyframe_unet,
        composite.keyframe_vae,
        composite.keyframe_scheduler,
        composite.keyframe_decoder,
        embeddings,
        counts,
        noise,
        generator,
        steps,
        HEIGHT,
        WIDTH,
        previous_frame=previous_frame,
    )
    # the first denoising input: pure noise, or the previous frame re-noised at step int(0.85 * 20) = 17
    torch.testing.assert_close(first_inputs[0], first_input, rtol=0, atol=ATOL)
    torch.testing.assert_close(images, expected, rtol=0, atol=ATOL)


def test_long_video_starts_each_later_keyframe_from_the_previous_clips_last_frame(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    pipes = [
        build_tiny_keyframe_pipeline(model.visual_tokenizer),
        build_tiny_video_pipeline(model.motion_tokenizer),
    ]
    pipe = VideoLaVITPipeline.from_detokenizer_pipelines(*pipes, language_model=model, processor=processor)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    render_keyframes = pipe.render_keyframes

    def spy(*args, **kwargs):
        state = kwargs["generator"].get_state()
        images = render_keyframes(*args, **kwargs)
        calls.append((args, kwargs, state, images))
        return images

    pipe.render_keyframes = spy
    steps = 10
    output = pipe(
        ["a boat", "a kite"],
        num_clips=2,
        num_inference_steps=1,
        keyframe_num_inference_steps=steps,
        height=HEIGHT,
        width=WIDTH,
        keyframe_height=HEIGHT,
        keyframe_width=WIDTH,
        generator=seeded(0),
        output_type="pt",
    )
    assert len(calls) == 2 and calls[0][1]["init_images"] is None
    args, kwargs, state, images = calls[1]
    frames_per_clip = output.frames.shape[1] // 2
    torch.testing.assert_close(kwargs["init_images"], output.frames[:, frames_per_clip - 1], rtol=0, atol=0)
    assert kwargs["renoise_level"] == 0.85
    generator = torch.Generator().manual_seed(0)
    generator.set_state(state)
    noise = torch.randn(2, 4, HEIGHT // 8, WIDTH // 8, generator=generator)
    expected, _ = reference_keyframe_loop(
        pipe.keyframe_unet,
        pipe.keyframe_vae,
        pipe.keyframe_scheduler,
        pipe.keyframe_decoder,
        *args[:2],
        noise,
        generator,
        steps,
        HEIGHT,
        WIDTH,
        previous_frame=output.frames[:, frames_per_clip - 1],
    )
    torch.testing.assert_close(images, expected, rtol=0, atol=ATOL)


def test_detokenizer_pipelines_default_to_the_originals_settings():
    from diffusers_vlavit import VideoLaVITKeyframePipeline, VideoLaVITVideoPipeline

    video = inspect.signature(VideoLaVITVideoPipeline.__call__).parameters
    names = (
        "num_inference_steps",
        "min_guidance_scale",
        "max_guidance_scale",
        "use_linear_guidance",
        "fps",
        "motion_bucket_id",
        "noise_aug_strength",
        "decode_chunk_size",
    )
    assert [video[name].default for name in names] == [25, 1.0, 4.0, True, 6, 127, 0.02, 8]
    keyframe = inspect.signature(VideoLaVITKeyframePipeline.__call__).parameters
    assert (keyframe["num_inference_steps"].default, keyframe["guidance_scale"].default) == (50, 3.0)
