"""VideoLaVITVideoPipeline at a tiny size: outputs, determinism, guidance, motion inputs, save and load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from diffusers_vlavit.pipelines import VideoInputError, VideoLaVITVideoPipeline
from diffusers_vlavit.tiny import build_tiny_video_pipeline

SIZE = 16  # pixels; 2 x 2 latents
FRAMES = 2  # a short motion grid keeps the tests fast; token ids always decode to the tokenizer's 24


@pytest.fixture(scope="module")
def pipe() -> VideoLaVITVideoPipeline:
    pipe = build_tiny_video_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def keyframes(batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))


def motion(batch: int, frames: int = FRAMES) -> torch.Tensor:
    return torch.randn(batch, 2, frames, 20, 36, generator=torch.Generator().manual_seed(7)) * 0.3


def run(pipe, image, seed=0, **kwargs):
    kwargs = {"height": SIZE, "width": SIZE, "num_inference_steps": 1, "output_type": "pt", **kwargs}
    if "motion_ids" not in kwargs and "motion" not in kwargs:
        kwargs["motion"] = motion(len(image))
    return pipe(image, generator=torch.Generator().manual_seed(seed), **kwargs).frames


def test_output_types_and_shapes(pipe):
    image = keyframes(2)
    as_pt = run(pipe, image)
    assert as_pt.shape == (2, FRAMES, 3, SIZE, SIZE) and as_pt.dtype == torch.float32
    assert 0 <= float(as_pt.min()) and float(as_pt.max()) <= 1

    as_np = run(pipe, image, output_type="np")
    assert isinstance(as_np, np.ndarray) and as_np.shape == (2, FRAMES, SIZE, SIZE, 3)
    np.testing.assert_allclose(as_np, as_pt.permute(0, 1, 3, 4, 2).numpy(), atol=1e-6)

    # what diffusers.utils.export_to_video takes: one list of PIL frames per clip
    as_pil = pipe.video_processor.postprocess_video(as_pt.permute(0, 2, 1, 3, 4) * 2 - 1, output_type="pil")
    assert len(as_pil) == 2 and len(as_pil[0]) == FRAMES
    assert all(isinstance(frame, Image.Image) and frame.size == (SIZE, SIZE) for frame in as_pil[1])
    np.testing.assert_allclose(np.asarray(as_pil[1][0]) / 255.0, as_np[1, 0], atol=1 / 255 + 1e-6)


def test_deterministic_under_a_fixed_generator(pipe):
    image = keyframes(1)
    first = run(pipe, image, seed=5)
    torch.testing.assert_close(run(pipe, image, seed=5), first)
    assert not torch.allclose(run(pipe, image, seed=6), first)


def test_pil_keyframes_and_decode_chunks(pipe):
    image = keyframes(2)
    pil = [
        Image.fromarray((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for frame in image
    ]
    whole = run(pipe, pil, decode_chunk_size=FRAMES, output_type="pil")
    assert len(whole) == 2 and all(isinstance(frame, Image.Image) for frame in whole[0])
    whole = torch.from_numpy(np.stack([np.stack(clip) for clip in whole])).permute(0, 1, 4, 2, 3) / 255.0
    chunked = run(pipe, pil, decode_chunk_size=1)
    assert whole.shape == chunked.shape == (2, FRAMES, 3, SIZE, SIZE)
    # the temporal decoder mixes frames inside a chunk only, so chunking changes the output a little
    assert (whole - chunked).abs().max() < 0.5


def test_motion_and_keyframe_condition_the_clip(pipe):
    image = keyframes(1)
    reference = run(pipe, image, motion=motion(1))
    assert not torch.allclose(run(pipe, image, motion=motion(1) * -1.0), reference, atol=1e-4)
    assert not torch.allclose(run(pipe, 1 - image, motion=motion(1)), reference, atol=1e-4)
    # linear guidance (1 -> 4 over frames) differs from constant guidance at the maximum
    assert not torch.allclose(run(pipe, image, use_linear_guidance=False), reference, atol=1e-4)


def test_motion_ids_decode_through_the_motion_tokenizer(pipe):
    config = pipe.motion_tokenizer.config
    motion_ids = torch.randint(
        0, config.codebook_size, (1, config.num_tokens), generator=torch.Generator().manual_seed(0)
    )
    latents = run(pipe, keyframes(1), motion_ids=motion_ids, output_type="latent")
    assert latents.shape == (1, config.num_frames, 4, SIZE // 8, SIZE // 8)

    # the U-Net sees the decoded motion resized bicubically to the latent size and divided by the scale factor
    with torch.no_grad():
        latent_motion = pipe.motion_at_latent_size(motion_ids, None, 32, 64, pipe.device)
        decoded = pipe.motion_tokenizer.decode(motion_ids)
    assert latent_motion.shape == (1, 2, config.num_frames, 4, 8)
    expected = pipe.motion_at_latent_size(None, decoded / config.motion_scale_factor, 32, 64, pipe.device)
    torch.testing.assert_close(latent_motion, expected, atol=1e-5, rtol=1e-5)


def test_invalid_inputs_raise(pipe):
    with pytest.raises(VideoInputError, match="exactly one"):
        pipe(keyframes(1), height=SIZE, width=SIZE)
    with pytest.raises(VideoInputError, match="2 keyframes but motion for 1"):
        pipe(keyframes(2), motion=motion(1), height=SIZE, width=SIZE)
    with pytest.raises(VideoInputError, match="num_frames"):
        pipe(keyframes(1), motion=motion(1), num_frames=FRAMES + 1, height=SIZE, width=SIZE)
    without_tokenizer = VideoLaVITVideoPipeline(pipe.unet, pipe.motion_encoder, pipe.vae, pipe.scheduler)
    with pytest.raises(VideoInputError, match="no motion_tokenizer"):
        without_tokenizer(
            keyframes(1), motion_ids=torch.zeros(1, 135, dtype=torch.long), height=SIZE, width=SIZE
        )


def test_save_and_load_through_diffusion_pipeline(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "motion_tokenizer" / "model.safetensors").is_file()

    loaded = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    loaded.set_progress_bar_config(disable=True)
    # the folder's own copy of the code, not the installed package
    assert type(loaded).__name__ == "VideoLaVITVideoPipeline"
    assert not type(loaded).__module__.startswith("diffusers_vlavit")
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    image = keyframes(1)
    torch.testing.assert_close(run(loaded, image), run(pipe, image))


def test_unet_inputs_follow_the_reference_conditioning(pipe):
    seen = {}

    def capture(module, args, kwargs):
        seen["sample"], seen["timestep"] = args[0].clone(), args[1]
        seen.update({name: kwargs[name].clone() for name in ("encoder_hidden_states", "added_time_ids")})

    handle = pipe.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        run(pipe, keyframes(2), output_type="latent", fps=6, motion_bucket_id=127, noise_aug_strength=0.02)
    finally:
        handle.remove()

    sample, context = seen["sample"], seen["encoder_hidden_states"]
    latent_channels = pipe.vae.config.latent_channels
    # [uncond x 2, cond x 2] on the batch axis; 4 noisy + 4 keyframe + 2 motion channels
    assert sample.shape == (4, FRAMES, 2 * latent_channels + 2, SIZE // 8, SIZE // 8)
    grid_height, grid_width = pipe.motion_encoder.config.grid_size
    assert context.shape == (4, FRAMES, grid_height * grid_width, pipe.motion_encoder.config.out_channels)
    uncond, cond = sample[:2, :, latent_channels:], sample[2:, :, latent_channels:]
    assert uncond.abs().max() == 0 and context[:2].abs().max() == 0
    assert cond[:, :, :latent_channels].abs().max() > 0
    # the keyframe latent is the same for every frame of a clip
    torch.testing.assert_close(
        cond[:, :1, :latent_channels].expand_as(cond[:, :, :latent_channels]), cond[:, :, :latent_channels]
    )
    assert context[2:].abs().max() > 0 and cond[:, :, latent_channels:].abs().max() > 0
    expected_ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(4, 1)
    torch.testing.assert_close(seen["added_time_ids"].float(), expected_ids)


def test_runs_in_bfloat16():
    pipe = build_tiny_video_pipeline(seed=0).to(dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    frames = run(pipe, keyframes(2))
    assert frames.shape == (2, FRAMES, 3, SIZE, SIZE) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all()


@pytest.mark.parametrize("output_type", ["pil", "np"])
def test_export_to_video_accepts_the_frames(pipe, tmp_path, output_type):
    pytest.importorskip("imageio_ffmpeg", reason="export_to_video needs imageio-ffmpeg (test extra)")
    import av
    from diffusers.utils import export_to_video

    size = 32  # even, and a multiple of the encoder's macro block after imageio's resize
    frames = pipe(
        keyframes(1),
        motion=motion(1, frames=3),
        height=size,
        width=size,
        num_inference_steps=1,
        output_type=output_type,
        generator=torch.Generator().manual_seed(0),
    ).frames[0]
    path = export_to_video(list(frames), str(tmp_path / f"clip_{output_type}.mp4"), fps=6)
    with av.open(path) as container:
        stream = container.streams.video[0]
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert float(stream.average_rate) == 6
    assert len(decoded) == 3 and decoded[0].shape[-1] == 3


def test_interrupt_stops_denoising(pipe):
    image, steps = keyframes(1), []

    def stop_after_first(pipeline, step, timestep, tensors):
        steps.append(step)
        pipeline._interrupt = True
        return {}

    stopped = run(pipe, image, num_inference_steps=3, output_type="latent", callback_on_step_end=stop_after_first)
    first = {}

    def keep_first(pipeline, step, timestep, tensors):
        first.setdefault("latents", tensors["latents"].clone())
        return {}

    run(pipe, image, num_inference_steps=3, output_type="latent", callback_on_step_end=keep_first)
    assert steps == [0]
    torch.testing.assert_close(stopped, first["latents"])
