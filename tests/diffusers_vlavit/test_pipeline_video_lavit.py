"""VideoLaVITPipeline on the tiny checkpoint: text/image to video, long video, offload, dtype, saving."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline
from transformers import AutoModelForCausalLM, AutoProcessor

from diffusers_vlavit import VideoLaVITPipeline, VideoLaVITPipelineInputError
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

# small sizes and few steps: every call stays around a second on two CPU cores
FAST = {
    "num_inference_steps": 1,
    "keyframe_num_inference_steps": 2,
    "height": 32,
    "width": 32,
    "keyframe_height": 32,
    "keyframe_width": 32,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("video_lavit") / "tiny")


def load_pipeline(checkpoint, dtype=torch.float32) -> VideoLaVITPipeline:
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    keyframe, video = (
        DiffusionPipeline.from_pretrained(
            checkpoint / "detokenizer" / name, trust_remote_code=True, dtype=dtype
        )
        for name in ("keyframe", "video")
    )
    pipe = VideoLaVITPipeline.from_detokenizer_pipelines(keyframe, video, model, processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return load_pipeline(checkpoint)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_batched_long_video_has_every_clip_and_keyframe(pipe):
    output = pipe(
        ["a red ball rolls", "waves on a beach"], num_clips=2, generator=seeded(), output_type="np", **FAST
    )
    assert output.frames.shape == (2, 48, 32, 32, 3)
    assert output.frames.min() >= 0 and output.frames.max() <= 1
    assert output.fps == 6
    assert [len(row) for row in output.keyframes] == [2, 2]
    assert all(keyframe.size == (32, 32) for row in output.keyframes for keyframe in row)
    # the two prompts sample different tokens, hence different videos
    assert not np.allclose(output.frames[0], output.frames[1])


def test_fixed_generator_is_deterministic_and_seed_matters(pipe):
    first = pipe("a cat", generator=seeded(3), output_type="pt", **FAST).frames
    again = pipe("a cat", generator=seeded(3), output_type="pt", **FAST).frames
    other = pipe("a cat", generator=seeded(4), output_type="pt", **FAST).frames
    assert first.shape == (1, 24, 3, 32, 32)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_image_to_video_keeps_the_image_as_first_keyframe(pipe):
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = PIL.Image.fromarray(pixels)
    _, keyframe_codes, motion = pipe.generate_clip_tokens(["it moves"], [image], 2, 4, 4, seeded())
    assert keyframe_codes[0] is None  # first clip: motion only, the image is the keyframe
    embeddings, counts = keyframe_codes[1]
    assert embeddings.shape == (
        int(counts.sum()),
        pipe.language_model.config.visual_tokenizer_config.code_dim,
    )
    assert [tuple(m.shape) for m in motion] == [(1, 2, 24, 4, 4)] * 2

    output = pipe("it moves", image=image, num_clips=2, generator=seeded(), **FAST)
    assert len(output.frames[0]) == 48
    expected = np.asarray(image.resize((32, 32), PIL.Image.BICUBIC), dtype=np.float32)
    first_keyframe = np.asarray(output.keyframes[0][0], dtype=np.float32)
    assert np.abs(first_keyframe - expected).max() <= 2


def test_image_only_prompt_is_accepted(pipe):
    image = PIL.Image.new("RGB", (40, 40), (200, 30, 30))
    output = pipe(image=[image, image], generator=seeded(), output_type="pt", **FAST)
    assert output.frames.shape == (2, 24, 3, 32, 32)


def test_later_keyframe_is_diffused_from_the_renoised_previous_frame(pipe):
    """Re-noised to 85% of the schedule, only the last 15% of the steps run, starting from the given frame."""
    generator = seeded()
    counts = torch.tensor([5, 9])
    embeddings = pipe.language_model.visual_tokenizer.get_code_embeddings(
        torch.randint(0, 256, (14,), generator=generator)
    )
    previous = torch.rand(2, 3, 32, 32, generator=generator)
    timesteps, decoded_latents = [], []
    hooks = [
        pipe.keyframe_unet.register_forward_hook(
            lambda module, args, output: timesteps.append(float(args[1]))
        ),
        pipe.keyframe_vae.post_quant_conv.register_forward_hook(
            lambda module, args, output: decoded_latents.append(args[0])
        ),
    ]
    try:
        renoised = pipe.render_keyframes(
            embeddings, counts, 32, 32, 20, 3.0, seeded(1), init_images=previous, renoise_level=0.85
        )
        schedule = pipe.keyframe_scheduler.timesteps.tolist()
        assert timesteps == schedule[17:]  # steps 17, 18 and 19 of 20
        timesteps.clear()
        fresh = pipe.render_keyframes(embeddings, counts, 32, 32, 20, 3.0, seeded(1))
        assert timesteps == schedule
    finally:
        for hook in hooks:
            hook.remove()
    assert renoised.shape == fresh.shape == (2, 3, 32, 32)
    clean = pipe.encode_keyframe_latents(previous) / pipe.keyframe_vae.config.scaling_factor
    renoised_latents, fresh_latents = decoded_latents
    assert (renoised_latents - clean).abs().mean() < 0.25 * (fresh_latents - clean).abs().mean()


def test_model_cpu_offload_installs_hooks_and_matches(checkpoint):
    reference_pipe = load_pipeline(checkpoint)
    reference = reference_pipe("a cat", generator=seeded(), output_type="pt", **FAST).frames
    offloaded = load_pipeline(checkpoint)
    offloaded.enable_model_cpu_offload(device="cpu")
    hooked = [name for name, component in offloaded.components.items() if hasattr(component, "_hf_hook")]
    assert set(hooked) == set(VideoLaVITPipeline.model_cpu_offload_seq.split("->"))
    result = offloaded("a cat", generator=seeded(), output_type="pt", **FAST).frames
    torch.testing.assert_close(result, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_run_end_to_end(checkpoint, dtype):
    pipe = load_pipeline(checkpoint, dtype=dtype)
    modules = {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}
    assert {module.dtype for module in modules.values()} == {dtype}
    frames = pipe("a cat", generator=seeded(), output_type="pt", **FAST).frames
    assert frames.dtype == torch.float32 and frames.shape == (1, 24, 3, 32, 32)
    assert torch.isfinite(frames).all()
    sizes = pipe.component_sizes_gb()
    float32_sizes = pipe.component_sizes_gb(dtype=torch.float32)
    for name, module in modules.items():
        # float buffers kept in float32 (rotary frequencies) do not shrink
        saved = sum(
            t.numel() * (4 - t.element_size())
            for t in [*module.parameters(), *module.buffers()]
            if t.is_floating_point()
        )
        assert saved > 0
        assert float32_sizes[name] - sizes[name] == pytest.approx(saved / 1e9, rel=1e-6)


def test_save_pretrained_writes_self_contained_custom_code(pipe, tmp_path, imports_project):
    pipe.save_pretrained(tmp_path / "detokenizer", include_language_model=False)
    folder = tmp_path / "detokenizer"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_video_lavit", "VideoLaVITPipeline"]
    assert index["keyframe_decoder"] == ["keyframe_decoder", "KeyframeTokenDecoder"]
    assert index["motion_encoder"] == ["motion_condition_encoder", "MotionConditionEncoder"]
    assert index["unet"] == ["unet_spatio_temporal_motion", "UNetSpatioTemporalMotionModel"]
    assert index["language_model"] == [None, None] and index["processor"] == [None, None]
    code_files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.py"))
    assert code_files == [
        "detokenizer_sampling.py",
        "keyframe_decoder/keyframe_decoder.py",
        "loading.py",
        "motion_encoder/motion_condition_encoder.py",
        "pipeline_video_lavit.py",
        "unet/unet_spatio_temporal_motion.py",
    ]
    assert not any(imports_project(path.read_text()) for path in folder.rglob("*.py"))

    reloaded = DiffusionPipeline.from_pretrained(
        folder, trust_remote_code=True, language_model=pipe.language_model, processor=pipe.processor
    )
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded).__name__ == "VideoLaVITPipeline"
    expected = pipe("a cat", generator=seeded(), output_type="pt", **FAST).frames
    torch.testing.assert_close(
        reloaded("a cat", generator=seeded(), output_type="pt", **FAST).frames, expected
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({}, "prompt, an image"),
        ({"prompt": "a", "num_clips": 0}, "num_clips"),
        ({"prompt": "a", "height": 36}, "multiple of 8"),
        ({"prompt": ["a", "b"], "image": PIL.Image.new("RGB", (8, 8))}, "one image per prompt"),
        ({"prompt": "a", "output_type": "latents"}, "output_type"),
        ({"prompt": "a", "num_videos_per_prompt": 0}, "num_videos_per_prompt"),
        ({"prompt": ["a", "b"], "generator": [torch.Generator()]}, "one generator per video"),
        ({"prompt": "a", "callback_on_step_end_tensor_inputs": ("noise",)}, "callback_on_step_end_tensor_inputs"),
    ],
)
def test_invalid_calls_say_what_to_fix(pipe, call, message):
    with pytest.raises(VideoLaVITPipelineInputError, match=message):
        pipe(**call)


def test_missing_language_model_is_reported(pipe):
    components = {**pipe.components, "language_model": None}
    with pytest.raises(VideoLaVITPipelineInputError, match="language_model"):
        VideoLaVITPipeline(**components)("a cat")


def test_whole_pipeline_saves_and_loads_with_its_language_model(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "whole")
    index = json.loads((tmp_path / "whole" / "model_index.json").read_text())
    assert index["language_model"][1] == "VideoLaVITForCausalLM"
    assert index["processor"][1] == "VideoLaVITProcessor"
    reloaded = VideoLaVITPipeline.from_pretrained(tmp_path / "whole", trust_remote_code=True)
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.language_model).__name__ == "VideoLaVITForCausalLM"
    expected = pipe("a cat", generator=seeded(), output_type="pt", **FAST).frames
    torch.testing.assert_close(reloaded("a cat", generator=seeded(), output_type="pt", **FAST).frames, expected)


# ---------------------------------------------------------------------------------------------------------
# diffusers conventions
# ---------------------------------------------------------------------------------------------------------
def test_callback_sees_every_step_of_both_phases_and_can_replace_latents(pipe):
    seen = []

    def record(pipeline, step, timestep, tensors):
        seen.append((pipeline.current_phase, step, tuple(tensors["latents"].shape)))
        assert pipeline.current_timestep is timestep
        return {}

    expected = pipe("a cat", num_clips=2, generator=seeded(), output_type="pt", **FAST).frames
    frames = pipe(
        "a cat", num_clips=2, generator=seeded(), output_type="pt", callback_on_step_end=record, **FAST
    ).frames
    # keyframe 2 steps (the second clip's keyframe starts 85% through: 1 step), video 1 step per clip
    assert [(phase, step) for phase, step, _ in seen] == [
        (("keyframe", 0), 0), (("keyframe", 0), 1), (("video", 0), 0), (("keyframe", 1), 0), (("video", 1), 0),
    ]  # fmt: skip
    assert seen[0][2] == (1, 4, 4, 4) and seen[2][2] == (1, 24, 4, 4, 4)
    # a callback that returns nothing changes nothing
    torch.testing.assert_close(frames, expected, rtol=0, atol=0)

    def zero_video(pipeline, step, timestep, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])} if pipeline.current_phase[0] == "video" else {}

    zeroed = pipe("a cat", generator=seeded(), output_type="latent", callback_on_step_end=zero_video, **FAST)
    assert torch.count_nonzero(zeroed.frames) == 0


def test_interrupt_stops_every_remaining_denoising_step(pipe):
    steps = []

    def stop(pipeline, step, timestep, tensors):
        steps.append(pipeline.current_phase)
        pipeline._interrupt = True
        return {}

    output = pipe("a cat", num_clips=2, generator=seeded(), output_type="pt", callback_on_step_end=stop, **FAST)
    assert steps == [("keyframe", 0)]
    assert output.frames.shape == (1, 48, 3, 32, 32)
    pipe("a cat", generator=seeded(), **FAST)
    assert not pipe.interrupt  # a new call starts uninterrupted


def test_latent_output_decodes_to_the_frames(pipe):
    frames = pipe("a cat", num_clips=2, generator=seeded(1), output_type="pt", **FAST).frames
    latents = pipe("a cat", num_clips=2, generator=seeded(1), output_type="latent", **FAST).frames
    assert latents.shape == (1, 48, 4, 4, 4)
    decoded = torch.cat([pipe.decode_video_latents(clip, 8) for clip in latents.split(24, dim=1)], dim=1)
    torch.testing.assert_close(decoded, frames, atol=1e-5, rtol=1e-5)


def test_videos_per_prompt_with_one_generator_per_video_match_single_runs(pipe):
    output = pipe(
        "a cat", num_videos_per_prompt=2, generator=[seeded(5), seeded(6)], output_type="pt", **FAST
    )
    assert output.frames.shape == (2, 24, 3, 32, 32) and len(output.keyframes) == 2
    for row, seed in enumerate((5, 6)):
        alone = pipe("a cat", generator=seeded(seed), output_type="pt", **FAST).frames[0]
        # batched rows differ from a batch of one only by float rounding
        torch.testing.assert_close(output.frames[row], alone, atol=1e-4, rtol=1e-4)
    # one generator for both videos samples two different videos
    shared = pipe("a cat", num_videos_per_prompt=2, generator=seeded(5), output_type="pt", **FAST).frames
    assert not torch.allclose(shared[0], shared[1])


def test_attention_kwargs_reach_the_keyframe_unet_processors(pipe):
    from diffusers.models.attention_processor import AttnProcessor2_0

    received = []

    class Marking(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     marker=None):  # fmt: skip
            received.append(marker)
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    original = pipe.keyframe_unet.attn_processors
    pipe.keyframe_unet.set_attn_processor(Marking())
    try:
        pipe("a cat", generator=seeded(), attention_kwargs={"marker": "here"}, **FAST)
    finally:
        pipe.keyframe_unet.set_attn_processor(original)
    assert received and set(received) == {"here"}
