"""VideoLaVITKeyframePipeline at a tiny size: outputs, determinism, batching, image input, save and load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from diffusers_vlavit.pipelines import KeyframeInputError, VideoLaVITKeyframePipeline
from diffusers_vlavit.tiny import build_tiny_keyframe_pipeline

SIZE = 16  # pixels; 2 x 2 latents


@pytest.fixture(scope="module")
def pipe() -> VideoLaVITKeyframePipeline:
    pipe = build_tiny_keyframe_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def codes(pipe, *lengths: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = pipe.visual_tokenizer.config.codebook_size
    return [torch.randint(0, size, (length,), generator=generator) for length in lengths]


def run(pipe, token_ids, seed=0, **kwargs):
    kwargs = {"height": SIZE, "width": SIZE, "num_inference_steps": 1, "output_type": "pt", **kwargs}
    return pipe(token_ids=token_ids, generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_output_types_and_shapes(pipe):
    token_ids = codes(pipe, 5, 9)
    as_pt = run(pipe, token_ids)
    assert as_pt.shape == (2, 3, SIZE, SIZE) and as_pt.dtype == torch.float32
    assert 0 <= float(as_pt.min()) and float(as_pt.max()) <= 1

    as_np = run(pipe, token_ids, output_type="np")
    assert isinstance(as_np, np.ndarray) and as_np.shape == (2, SIZE, SIZE, 3)
    np.testing.assert_allclose(as_np, as_pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)

    as_pil = pipe.image_processor.postprocess(as_pt * 2 - 1, output_type="pil")
    assert len(as_pil) == 2 and all(
        isinstance(image, Image.Image) and image.size == (SIZE, SIZE) for image in as_pil
    )

    latents = run(pipe, token_ids[:1], output_type="latent")
    assert latents.shape == (1, 4, SIZE // 8, SIZE // 8)


def test_deterministic_under_a_fixed_generator_and_batch_consistent(pipe):
    token_ids = codes(pipe, 5, 9)
    first = run(pipe, token_ids, seed=3)
    torch.testing.assert_close(run(pipe, token_ids, seed=3), first)
    assert not torch.allclose(run(pipe, token_ids, seed=4), first)

    # the same keyframe, its own noise: batch member 1 equals a batch of one with that member's generator
    generators = [torch.Generator().manual_seed(10), torch.Generator().manual_seed(11)]
    batch = pipe(
        token_ids=token_ids,
        height=SIZE,
        width=SIZE,
        num_inference_steps=1,
        output_type="pt",
        generator=generators,
    ).images
    alone = pipe(
        token_ids=token_ids[1:],
        height=SIZE,
        width=SIZE,
        num_inference_steps=1,
        output_type="pt",
        generator=[torch.Generator().manual_seed(11)],
    ).images
    # float32 rounding of the batched matmuls reaches ~2e-5 in the images (the decoder alone agrees to 1e-15 in
    # float64); a code of the other keyframe leaking through the padding mask would move them by ~1e-2
    torch.testing.assert_close(batch[1:], alone, atol=1e-4, rtol=1e-4)


def test_codes_and_guidance_change_the_image(pipe):
    images = run(pipe, codes(pipe, 7, 7, seed=1), guidance_scale=7.0)
    assert not torch.allclose(images[0], images[1], atol=1e-4)
    unguided = run(pipe, codes(pipe, 7, 7, seed=1), guidance_scale=1.0)
    assert not torch.allclose(images, unguided, atol=1e-4)


def test_image_input_is_tokenized_like_token_ids(pipe):
    keyframe = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    token_ids = pipe.tokenize_images([keyframe], pipe.device)
    assert len(token_ids) == 1 and token_ids[0].dtype == torch.long and token_ids[0].numel() > 0

    from_image = pipe(
        image=keyframe,
        height=SIZE,
        width=SIZE,
        num_inference_steps=1,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    torch.testing.assert_close(from_image, run(pipe, token_ids))


def test_a_flat_black_image_is_rendered_from_its_one_kept_token(pipe):
    # the tiny tokenizer's predictor drops every patch of a black image; the most likely one is kept
    black = Image.new("RGB", (80, 60))
    (token_ids,) = pipe.tokenize_images([black], pipe.device)
    assert token_ids.numel() == 1
    from_image = pipe(
        image=black, height=SIZE, width=SIZE, num_inference_steps=1, output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert from_image.shape == (1, 3, SIZE, SIZE) and torch.isfinite(from_image).all()


def test_code_embeddings_input_and_images_per_prompt(pipe):
    token_ids = codes(pipe, 4)
    embeddings = pipe.visual_tokenizer.get_code_embeddings(token_ids[0])
    images = pipe(
        code_embeddings=embeddings,
        token_counts=[4],
        num_images_per_prompt=2,
        height=SIZE,
        width=SIZE,
        num_inference_steps=1,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert images.shape == (2, 3, SIZE, SIZE)
    assert not torch.allclose(images[0], images[1])


def test_invalid_inputs_raise(pipe):
    with pytest.raises(KeyframeInputError, match="exactly one"):
        pipe(height=SIZE, width=SIZE)
    with pytest.raises(KeyframeInputError, match="multiples of 8"):
        pipe(token_ids=codes(pipe, 3), height=30, width=SIZE)
    with pytest.raises(KeyframeInputError, match="0-based"):
        pipe(token_ids=[torch.tensor([pipe.visual_tokenizer.config.codebook_size])], height=SIZE, width=SIZE)
    without_tokenizer = VideoLaVITKeyframePipeline(pipe.keyframe_decoder, pipe.unet, pipe.vae, pipe.scheduler)
    with pytest.raises(KeyframeInputError, match="no visual_tokenizer"):
        without_tokenizer(token_ids=codes(pipe, 3), height=SIZE, width=SIZE)


def test_save_and_load_through_diffusion_pipeline(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").is_file()
    assert (tmp_path / "keyframe_decoder" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "visual_tokenizer" / "model.safetensors").is_file()

    loaded = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    loaded.set_progress_bar_config(disable=True)
    # the folder's own copy of the code, not the installed package
    assert type(loaded).__name__ == "VideoLaVITKeyframePipeline"
    assert type(loaded).__module__.endswith("pipeline_keyframe")
    assert not type(loaded).__module__.startswith("diffusers_vlavit")
    assert type(loaded.visual_tokenizer).__name__ == type(pipe.visual_tokenizer).__name__
    token_ids = codes(pipe, 6, 2)
    torch.testing.assert_close(run(loaded, token_ids), run(pipe, token_ids))

    without_tokenizer = VideoLaVITKeyframePipeline(pipe.keyframe_decoder, pipe.unet, pipe.vae, pipe.scheduler)
    without_tokenizer.save_pretrained(tmp_path / "no_tokenizer")
    reloaded = VideoLaVITKeyframePipeline.from_pretrained(tmp_path / "no_tokenizer", trust_remote_code=True)
    assert reloaded.visual_tokenizer is None


def test_unet_inputs_follow_the_reference_conditioning(pipe):
    seen = {}

    def capture(module, args, kwargs):
        seen["prompt_embeds"] = kwargs["encoder_hidden_states"].clone()
        seen.update({name: value.clone() for name, value in kwargs["added_cond_kwargs"].items()})

    handle = pipe.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        run(pipe, codes(pipe, 3, 8), output_type="latent", height=SIZE, width=2 * SIZE)
    finally:
        handle.remove()

    decoder = pipe.keyframe_decoder.config
    prompt_embeds, pooled = seen["prompt_embeds"], seen["text_embeds"]
    assert prompt_embeds.shape == (4, decoder.num_queries, sum(decoder.prompt_embed_dims))
    assert pooled.shape == (4, decoder.pooled_projection_dim)
    # unconditional half first, all zeros (the reference's negative embeddings)
    assert prompt_embeds[:2].abs().max() == 0 and pooled[:2].abs().max() == 0
    assert prompt_embeds[2:].abs().max() > 0 and pooled[2:].abs().max() > 0
    # SDXL micro-conditioning: original size, crop top-left, target size (height, width)
    expected = torch.tensor([[SIZE, 2 * SIZE, 0, 0, SIZE, 2 * SIZE]], dtype=seen["time_ids"].dtype).repeat(
        4, 1
    )
    torch.testing.assert_close(seen["time_ids"], expected)


def test_runs_in_bfloat16():
    pipe = build_tiny_keyframe_pipeline(seed=0).to(dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    images = run(pipe, codes(pipe, 5, 3))
    assert images.shape == (2, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert torch.isfinite(images).all()


def test_interrupt_stops_denoising_and_attention_kwargs_reach_the_unet(pipe):
    from diffusers.models.attention_processor import AttnProcessor2_0

    token_ids = codes(pipe, 6)
    steps = []

    def stop_after_first(pipeline, step, timestep, tensors):
        steps.append(step)
        pipeline._interrupt = True
        return {}

    stopped = run(pipe, token_ids, num_inference_steps=3, callback_on_step_end=stop_after_first)
    assert steps == [0]
    # what the first step reached, decoded: the same as a run whose callback records the first latents
    first = {}

    def keep_first(pipeline, step, timestep, tensors):
        first.setdefault("latents", tensors["latents"].clone())
        return {}

    run(pipe, token_ids, num_inference_steps=3, callback_on_step_end=keep_first)
    expected = pipe.image_processor.postprocess(pipe.decode_latents(first["latents"]), output_type="pt")
    torch.testing.assert_close(stopped, expected)

    received = []

    class Marking(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     marker=None):  # fmt: skip
            received.append(marker)
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    original = pipe.unet.attn_processors
    pipe.unet.set_attn_processor(Marking())
    try:
        run(pipe, token_ids, attention_kwargs={"marker": 7})
    finally:
        pipe.unet.set_attn_processor(original)
    assert received and set(received) == {7}
