"""`vlavit ask` and `vlavit generate` on the tiny checkpoint."""

from __future__ import annotations

import json

import av
import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

from transformers_vlavit.cli import build_parser, main
from transformers_vlavit.commands.ask import answer_questions
from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

FAST_GENERATE = ["--steps", "1", "--keyframe-steps", "2", "--height", "32", "--width", "32"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("cli") / "tiny")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    video = folder / "clip.mp4"
    write_synthetic_video(video, width=96, height=64, duration=4.5, fps=12, seed=0)
    image = folder / "still.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    return video, image


def read_video(path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return frames, float(stream.average_rate)


def test_both_commands_are_registered():
    parser = build_parser()
    arguments = parser.parse_args(["ask", "--model", "m", "v.mp4", "q1", "q2"])
    assert (arguments.command, arguments.questions) == ("ask", ["q1", "q2"])
    arguments = parser.parse_args(
        ["generate", "--model", "m", "a cat", "--out", "v.mp4", "--clips", "3", "--seed", "7"]
    )
    assert (arguments.prompt, arguments.clips, arguments.seed) == ("a cat", 3, 7)


def test_generate_writes_a_24_frame_mp4(checkpoint, tmp_path, capsys):
    out = tmp_path / "video.mp4"
    assert (
        main(
            [
                "generate",
                "--model",
                str(checkpoint),
                "a red ball rolls",
                "--out",
                str(out),
                "--seed",
                "1",
                *FAST_GENERATE,
            ]
        )
        == 0
    )
    frames, fps = read_video(out)
    assert frames.shape == (24, 32, 32, 3)
    assert fps == 6
    assert "24 frames at 6 fps" in capsys.readouterr().out


def test_generate_runs_on_a_folder_saved_by_the_pipeline(checkpoint, tmp_path):
    """A saved pipeline registers itself as custom code; the command still runs the installed code."""
    from transformers import pipeline

    folder = tmp_path / "saved"
    pipeline("text-to-video", model=str(checkpoint), trust_remote_code=True).save_pretrained(folder)
    out = tmp_path / "video.mp4"
    assert main(["generate", "--model", str(folder), "a cat", "--out", str(out), *FAST_GENERATE]) == 0
    assert read_video(out)[0].shape == (24, 32, 32, 3)


def test_generate_image_to_video_with_two_clips(checkpoint, media, tmp_path):
    _, image = media
    out = tmp_path / "from_image.mp4"
    arguments = [
        "generate",
        "--model",
        str(checkpoint),
        "--image",
        str(image),
        "--clips",
        "2",
        "--out",
        str(out),
    ]
    assert main([*arguments, *FAST_GENERATE]) == 0
    frames, _ = read_video(out)
    assert frames.shape == (48, 32, 32, 3)


def test_generate_needs_a_prompt_or_an_image(checkpoint, tmp_path, capsys):
    assert main(["generate", "--model", str(checkpoint), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "give a prompt, --image, or both" in capsys.readouterr().err


def test_ask_answers_every_question_about_a_video(checkpoint, media, capsys):
    video, _ = media
    questions = ["What moves?", "Describe the clip in a few words."]
    assert (
        main(["ask", "--model", str(checkpoint), str(video), *questions, "--max-new-tokens", "3", "--json"])
        == 0
    )
    answers = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [item["question"] for item in answers] == questions
    assert all(isinstance(item["answer"], str) for item in answers)


def test_ask_about_an_image_prints_question_and_answer(checkpoint, media, capsys):
    _, image = media
    assert (
        main(["ask", "--model", str(checkpoint), str(image), "What colour is it?", "--max-new-tokens", "2"])
        == 0
    )
    output = capsys.readouterr().out
    assert "Q: What colour is it?\nA:" in output


def test_batched_answers_match_one_by_one_answers(checkpoint, media):
    """Left padding in the batch must not change what greedy decoding answers."""
    video, _ = media
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    questions = ["What moves?", "Is it day or night in this short video clip?"]
    settings = {"max_new_tokens": 4, "do_sample": False}
    batched = answer_questions(model, processor, video, questions, **settings)
    alone = [answer_questions(model, processor, video, [question], **settings)[0] for question in questions]
    assert batched == alone


def test_keyframe_size_keeps_the_video_aspect_ratio_and_the_detokenizer_area():
    from transformers_vlavit.commands.generate import keyframe_size

    height, width = keyframe_size(320, 576, 1024, 8)  # the released video and keyframe sizes
    assert (height % 8, width % 8) == (0, 0)
    assert abs(width / height - 576 / 320) / (576 / 320) < 0.01
    assert abs(height * width - 1024 * 1024) / (1024 * 1024) < 0.01
    assert keyframe_size(64, 64, 32, 8) == (32, 32)
    assert keyframe_size(720, 1280, 1024, 8) == (768, 1368)  # sqrt(1024^2 / (720 * 1280)) = 1.0667


def test_generate_renders_a_wide_video_from_a_wide_keyframe(checkpoint, tmp_path):
    keyframe_latents = []

    def capture(module, args):
        if type(module).__name__ == "UNet2DConditionModel":
            keyframe_latents.append(tuple(args[0].shape[-2:]))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(capture)
    try:
        out = tmp_path / "wide.mp4"
        fast = ["--steps", "1", "--keyframe-steps", "2", "--height", "32", "--width", "64"]
        assert main(["generate", "--model", str(checkpoint), "a cat", "--out", str(out), *fast]) == 0
    finally:
        handle.remove()
    assert read_video(out)[0].shape == (24, 32, 64, 3)
    # the tiny keyframe detokenizer renders 64 x 64 (latents 8 x 8): as many pixels at about the video's 1:2
    # is 48 x 88 in multiples of 8, latents 6 x 11 (a square keyframe would have been 8 x 8)
    assert set(keyframe_latents) == {(6, 11)}
