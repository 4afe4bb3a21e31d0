"""Defaults taken from the original: clips per video for understanding, motion sampling in generation.

- The original's understanding entry point (`build_model(max_video_clips=16)`) reads up to 16 clips per video;
  the processor saves that as its `max_clips` setting, `vlavit ask` uses it, `decompose_video` keeps its 8.
- The original's text-to-video takes motion codes greedily; only image-to-video samples them. The switch
  (`motion_do_sample`, None = the original's choice) reaches the language model from `VideoLaVITPipeline`,
  `pipeline("text-to-video")` and `vlavit generate --sample-motion/--no-sample-motion`.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoProcessor, pipeline

import transformers_vlavit.processing_video_lavit as processing
from transformers_vlavit import VideoLaVITTextToVideoPipeline, video_decomposition
from transformers_vlavit.cli import build_parser, main
from transformers_vlavit.commands.ask import answer_questions
from transformers_vlavit.processing_video_lavit import VideoLaVITProcessor
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

FAST = {
    "num_inference_steps": 1,
    "keyframe_num_inference_steps": 1,
    "height": 16,
    "width": 16,
    "keyframe_height": 16,
    "keyframe_width": 16,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("defaults") / "tiny")


@pytest.fixture(scope="module")
def processor(checkpoint):
    return AutoProcessor.from_pretrained(checkpoint)


def fake_decomposition(calls: list):
    """A stand-in for `decompose_video` that records its keyword arguments (one clip of zeros)."""

    def decompose(video, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(
            keyframes=[torch.zeros(3, 32, 32, dtype=torch.uint8).permute(1, 2, 0).numpy()],
            motion_vectors=torch.zeros(1, 2, 24, 20, 36),
        )

    return decompose


def test_understanding_reads_16_clips_by_default_and_decompose_video_keeps_8(processor, monkeypatch):
    assert processor.max_clips == 16
    assert inspect.signature(video_decomposition.decompose_video).parameters["max_clips"].default == 8
    calls = []
    monkeypatch.setattr(processing, "decompose_video", fake_decomposition(calls))
    processor(text=["<video> what?"], videos=["clip.mp4"], return_tensors="pt")
    processor(text=["<video> what?"], videos=["clip.mp4"], max_clips=3, return_tensors="pt")
    assert [call["max_clips"] for call in calls] == [16, 3]


def test_max_clips_is_saved_with_the_processor(processor, tmp_path, monkeypatch):
    changed = VideoLaVITProcessor(processor.image_processor, processor.tokenizer, max_clips=5)
    changed.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert loaded.max_clips == 5
    calls = []
    monkeypatch.setattr(processing, "decompose_video", fake_decomposition(calls))
    loaded(text=["<video>"], videos=["clip.mp4"], return_tensors="pt")
    assert calls[0]["max_clips"] == 5
    with pytest.raises(ValueError, match="max_clips must be at least 1"):
        VideoLaVITProcessor(processor.image_processor, processor.tokenizer, max_clips=0)


def test_ask_reads_the_processors_clip_count(checkpoint, processor, monkeypatch):
    assert build_parser().parse_args(["ask", "--model", "m", "v.mp4", "q"]).max_clips is None
    calls = []
    monkeypatch.setattr(video_decomposition, "decompose_video", fake_decomposition(calls))
    model = SimpleNamespace(
        device=torch.device("cpu"), generate=lambda input_ids, **kwargs: input_ids
    )  # answers are not looked at here
    answer_questions(model, processor, checkpoint / "clip.mp4", ["what?"])
    answer_questions(model, processor, checkpoint / "clip.mp4", ["what?"], max_clips=2)
    assert [call["max_clips"] for call in calls] == [16, 2]


def spy_on_video_tokens(language_model, monkeypatch) -> list:
    calls = []
    generate_video_tokens = language_model.generate_video_tokens

    def spy(**kwargs):
        calls.append(kwargs)
        output = generate_video_tokens(**kwargs)
        kwargs["output"] = output
        return output

    monkeypatch.setattr(language_model, "generate_video_tokens", spy)
    return calls


def without_output(call: dict) -> dict:
    return {key: value for key, value in call.items() if key != "output"}


@pytest.fixture(scope="module")
def text_to_video(checkpoint):
    # the folder names its own copy of the pipeline as custom code; pipeline_class runs the installed one
    pipe = pipeline("text-to-video", model=str(checkpoint), pipeline_class=VideoLaVITTextToVideoPipeline)
    pipe.detokenizer.set_progress_bar_config(disable=True)
    return pipe


def test_motion_sampling_switch_reaches_the_language_model(text_to_video, monkeypatch):
    calls = spy_on_video_tokens(text_to_video.detokenizer.language_model, monkeypatch)
    generator = torch.Generator().manual_seed(0)
    text_to_video("a cat", generator=generator, **FAST)
    text_to_video("a cat", generator=generator, motion_do_sample=True, **FAST)
    text_to_video.detokenizer("a cat", generator=generator, motion_do_sample=False, **FAST)
    assert [call["motion_do_sample"] for call in calls] == [None, True, False]
    assert all(call["do_sample"] for call in calls)
    # None: the original's greedy motion after a generated keyframe
    greedy = text_to_video.detokenizer.language_model.generate_video_tokens(
        **{
            **without_output(calls[0]),
            "generator": torch.Generator().manual_seed(1),
            "motion_do_sample": False,
        }
    )
    default = text_to_video.detokenizer.language_model.generate_video_tokens(
        **{
            **without_output(calls[0]),
            "generator": torch.Generator().manual_seed(1),
            "motion_do_sample": None,
        }
    )
    assert torch.equal(greedy.motion_ids, default.motion_ids)


@pytest.mark.parametrize(
    ("flag", "expected"), [([], None), (["--sample-motion"], True), (["--no-sample-motion"], False)]
)
def test_generate_command_passes_the_motion_sampling_switch(flag, expected, monkeypatch, tmp_path):
    import transformers

    from transformers_vlavit.commands import reconstruct

    received = {}

    def fake_pipeline(task, **options):
        def run(inputs, **kwargs):
            received.update(kwargs)
            return {"frames": torch.zeros(24, 3, 16, 16), "fps": 6}

        return run

    monkeypatch.setattr(transformers, "pipeline", fake_pipeline)
    monkeypatch.setattr(reconstruct, "write_video", lambda frames, path, fps: None)
    model = tmp_path / "m"  # `vlavit generate` checks the checkpoint folder before it loads the (faked) pipeline
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert main(["generate", "--model", str(model), "a cat", "--out", str(tmp_path / "v.mp4"), *flag]) == 0
    assert received["motion_do_sample"] is expected


def test_end_to_end_generation_runs_with_the_originals_settings(text_to_video, monkeypatch):
    """Every stage of `VideoLaVITPipeline.__call__` gets the original `generate_video`'s defaults."""
    pipe = text_to_video.detokenizer
    calls = {"tokens": spy_on_video_tokens(pipe.language_model, monkeypatch)}
    for name in ("render_keyframes", "render_clip"):
        calls[name] = []
        method = getattr(pipe, name)

        def spy(*args, _method=method, _calls=calls[name], **kwargs):
            _calls.append(inspect.signature(_method).bind(*args, **kwargs).arguments)
            return _method(*args, **kwargs)

        monkeypatch.setattr(pipe, name, spy)
    pipe("a cat", num_clips=2, generator=torch.Generator().manual_seed(0), **FAST)
    tokens = calls["tokens"][0]
    assert {
        key: tokens[key]
        for key in (
            "keyframe_guidance_scale",
            "motion_guidance_scale",
            "top_k",
            "top_p",
            "temperature",
            "do_sample",
        )
    } == {
        "keyframe_guidance_scale": 4.0,
        "motion_guidance_scale": 7.0,
        "top_k": 200,
        "top_p": 1.0,
        "temperature": 1.0,
        "do_sample": True,
    }
    assert tokens["negative_prompt_ids"] is None
    for keyframe_call in calls["render_keyframes"]:
        assert (keyframe_call["guidance_scale"], keyframe_call["renoise_level"]) == (3.0, 0.85)
    assert len(calls["render_clip"]) == 2
    motion_ids = tokens["output"].motion_ids
    latent_size = (FAST["height"] // pipe.vae_scale_factor, FAST["width"] // pipe.vae_scale_factor)
    for clip, clip_call in enumerate(calls["render_clip"]):
        expected_motion = pipe.language_model.motion_tokenizer.decode_for_detokenizer(
            motion_ids[:, clip], *latent_size
        )
        torch.testing.assert_close(clip_call["motion"], expected_motion, rtol=0, atol=0)
        settings = {
            key: clip_call[key]
            for key in (
                "min_guidance_scale",
                "max_guidance_scale",
                "use_linear_guidance",
                "fps",
                "motion_bucket_id",
                "noise_aug_strength",
            )
        }
        assert settings == {
            "min_guidance_scale": 1.0,
            "max_guidance_scale": 4.0,
            "use_linear_guidance": True,
            "fps": 6,
            "motion_bucket_id": 127,
            "noise_aug_strength": 0.02,
        }
    steps = inspect.signature(type(pipe).__call__).parameters
    assert (steps["num_inference_steps"].default, steps["keyframe_num_inference_steps"].default) == (25, 50)
    assert steps["decode_chunk_size"].default == 8
    # the language model's own defaults are the original's too
    parameters = inspect.signature(type(pipe.language_model).generate_video_tokens).parameters
    defaults = {
        name: parameters[name].default
        for name in (
            "keyframe_guidance_scale",
            "motion_guidance_scale",
            "do_sample",
            "motion_do_sample",
            "top_k",
            "top_p",
            "temperature",
            "min_keyframe_tokens",
        )
    }
    assert defaults == {
        "keyframe_guidance_scale": 4.0,
        "motion_guidance_scale": 7.0,
        "do_sample": True,
        "motion_do_sample": None,
        "top_k": 200,
        "top_p": 1.0,
        "temperature": 1.0,
        "min_keyframe_tokens": None,
    }
    # None: the checkpoint's generation_config.min_keyframe_tokens, else the reference's 20
    assert getattr(pipe.language_model.generation_config, "min_keyframe_tokens", None) is None
    assert pipe.language_model._min_keyframe_tokens(None) == 20
