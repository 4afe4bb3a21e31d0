"""Stage 1 detokenizers (`examples/train_video_detokenizer.py`, `examples/train_keyframe_detokenizer.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusers_vlavit.tiny import write_tiny_detokenizers


@pytest.fixture(scope="module")
def detokenizers(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_detokenizers(tmp_path_factory.mktemp("detokenizers"))


@pytest.fixture(scope="module")
def video_script(scripts):
    """`examples/train_video_detokenizer.py` imported as a module."""
    return scripts.load(scripts.examples / "train_video_detokenizer.py")


@pytest.fixture(scope="module")
def keyframe_script(scripts):
    """`examples/train_keyframe_detokenizer.py` imported as a module."""
    return scripts.load(scripts.examples / "train_keyframe_detokenizer.py")


def test_edm_preconditioning_matches_the_euler_scheduler(video_script, detokenizers):
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_pretrained(detokenizers["video"] / "scheduler")
    sigmas = torch.tensor([0.05, 1.0, 30.0])
    coefficients = video_script.edm_preconditioning(sigmas)
    sample, model_output = torch.randn(3, 2, 4, 2, 2), torch.randn(3, 2, 4, 2, 2)
    for row, sigma in enumerate(sigmas):
        scheduler.set_timesteps(5)
        scheduler.sigmas[0] = sigma  # the scheduler's own formulas at this noise level
        scheduler._step_index = 0
        scaled = scheduler.scale_model_input(sample[row : row + 1], scheduler.timesteps[0])
        torch.testing.assert_close(scaled, coefficients["c_in"][row] * sample[row : row + 1])
        denoised = scheduler.step(
            model_output[row : row + 1], scheduler.timesteps[0], sample[row : row + 1]
        ).pred_original_sample
        expected = (
            coefficients["c_skip"][row] * sample[row : row + 1]
            + coefficients["c_out"][row] * model_output[row : row + 1]
        )
        torch.testing.assert_close(denoised, expected)
    torch.testing.assert_close(coefficients["c_noise"], 0.25 * sigmas.log())


def fixed_batch_loss(script, pipe, args, batch, *extra) -> float:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return float(script.denoising_loss(pipe, *extra, batch, args, generator=generator))


def test_train_video_detokenizer_loss_falls_and_resumes(video_script, detokenizers, tmp_path):
    from diffusers_vlavit.pipelines.pipeline_video import VideoLaVITVideoPipeline

    output_dir = tmp_path / "video"
    argv = [
        "--pipeline", str(detokenizers["video"]), "--synthetic_videos", "1", "--resolution", "32",
        "--output_dir", str(output_dir), "--learning_rate", "1e-3", "--condition_dropout", "0.0",
        "--checkpointing_steps", "3", "--seed", "0",
    ]  # fmt: skip
    losses = video_script.main([*argv, "--max_steps", "3"])
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))

    args = video_script.parse_args([*argv, "--max_steps", "3"])
    batch = video_script.collate(
        video_script.video_clips(output_dir / "synthetic_videos" / "synthetic_0.mp4", args)
    )
    start = VideoLaVITVideoPipeline.from_pretrained(detokenizers["video"], trust_remote_code=True)
    trained = VideoLaVITVideoPipeline.from_pretrained(output_dir, trust_remote_code=True)
    before = fixed_batch_loss(video_script, start, args, batch, start.unet, start.motion_encoder)
    after = fixed_batch_loss(video_script, trained, args, batch, trained.unet, trained.motion_encoder)
    print(
        f"video detokenizer: losses {losses[0]:.4f} .. {losses[-1]:.4f}; fixed batch {before:.4f} -> "
        f"{after:.4f}"
    )
    assert after < 0.8 * before

    # resume: step, model, optimizer and RNG come back from checkpoint-3; only the missing step runs
    assert json.loads((output_dir / "checkpoint-3" / "step.json").read_text()) == {"step": 3}
    resumed = video_script.main([*argv, "--max_steps", "4", "--resume_from_checkpoint", "latest"])
    assert len(resumed) == 1 and (output_dir / "checkpoint-3" / "optimizer.bin").is_file()


def test_train_keyframe_detokenizer_loss_falls_and_resumes(keyframe_script, detokenizers, tmp_path):
    from diffusers_vlavit.pipelines.pipeline_keyframe import VideoLaVITKeyframePipeline

    output_dir = tmp_path / "keyframe"
    argv = [
        "--pipeline", str(detokenizers["keyframe"]), "--synthetic_videos", "2", "--resolution", "64",
        "--output_dir", str(output_dir), "--learning_rate", "2e-3", "--condition_dropout", "0.0",
        "--train_batch_size", "2", "--checkpointing_steps", "8", "--seed", "0",
    ]  # fmt: skip
    losses = keyframe_script.main([*argv, "--max_steps", "8"])
    assert len(losses) == 8

    args = keyframe_script.parse_args([*argv, "--max_steps", "8"])
    batch = keyframe_script.collate(keyframe_script.training_images(args), *args.resolution)
    start = VideoLaVITKeyframePipeline.from_pretrained(detokenizers["keyframe"], trust_remote_code=True)
    trained = VideoLaVITKeyframePipeline.from_pretrained(output_dir, trust_remote_code=True)
    scheduler = keyframe_script.DDPMScheduler.from_config(start.scheduler.config)
    # the same timesteps and noise many times over: a low-variance estimate of the fixed batch's loss
    batch = {"pixels": batch["pixels"].repeat(8, 1, 1, 1), "images": batch["images"] * 8}
    before = fixed_batch_loss(
        keyframe_script, start, args, batch, start.unet, start.keyframe_decoder, scheduler
    )
    after = fixed_batch_loss(
        keyframe_script, trained, args, batch, trained.unet, trained.keyframe_decoder, scheduler
    )
    print(
        f"keyframe detokenizer: losses {losses[0]:.4f} .. {losses[-1]:.4f}; fixed batch {before:.4f} -> "
        f"{after:.4f}"
    )
    assert after < before

    resumed = keyframe_script.main([*argv, "--max_steps", "9", "--resume_from_checkpoint", "latest"])
    assert len(resumed) == 1


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (1.0, 1.0), (-0.5, 0.5)])
def test_keyframe_logit_normal_timesteps_follow_their_closed_form_distribution(keyframe_script, mean, std):
    """P(t < k) = P(sigmoid(n) < k / T) = Phi((logit(k / T) - mean) / std) for n ~ N(mean, std)."""
    args = keyframe_script.parse_args(
        ["--pipeline", "p", "--output_dir", "o", "--timestep_sampling", "logit_normal",
         "--logit_mean", str(mean), "--logit_std", str(std)]
    )  # fmt: skip
    draws = 40_000
    timesteps = keyframe_script.training_timesteps(args, 1000, draws, "cpu", torch.Generator().manual_seed(0))
    assert timesteps.dtype == torch.long and int(timesteps.min()) >= 0 and int(timesteps.max()) <= 999
    normal = torch.distributions.Normal(mean, std)
    for k in (100, 300, 500, 700, 900):
        expected = float(normal.cdf(torch.logit(torch.tensor(k / 1000))))
        observed = float((timesteps < k).double().mean())
        assert abs(observed - expected) < 0.01, (k, observed, expected)  # 5 standard errors at most


def test_keyframe_uniform_timesteps_are_the_default_and_uniform(keyframe_script):
    args = keyframe_script.parse_args(["--pipeline", "p", "--output_dir", "o"])
    assert args.timestep_sampling == "uniform"
    generator = torch.Generator().manual_seed(0)
    timesteps = keyframe_script.training_timesteps(args, 1000, 40_000, "cpu", generator)
    for k in (100, 500, 900):
        assert abs(float((timesteps < k).double().mean()) - k / 1000) < 0.01


def test_keyframe_logit_std_must_be_positive(keyframe_script):
    with pytest.raises(keyframe_script.KeyframeDetokenizerTrainingError, match="logit_std"):
        keyframe_script.parse_args(["--pipeline", "p", "--output_dir", "o", "--logit_std", "0"])


def _clustered_codes(generator: torch.Generator, count: int = 400) -> torch.Tensor:
    """Unit vectors close together around one direction, as a small visual tokenizer's used codes are."""
    base = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
    spread = torch.randn(count, 16, generator=generator) * torch.logspace(-1, -3, 16)
    return torch.nn.functional.normalize(base + spread, dim=-1)


def test_code_whitening_gives_unit_covariance_and_floors_flat_directions(keyframe_script):
    codes = _clustered_codes(torch.Generator().manual_seed(0)).double()
    mean, whitening = keyframe_script.code_whitening(codes, floor=1e-9)
    white = (codes - mean.double()) @ whitening.double().T
    covariance = white.T @ white / (len(codes) - 1)
    torch.testing.assert_close(covariance, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(whitening, whitening.T)
    # rank 1 data (every code on one line): the flat directions get the floor, not an infinite gain
    line = torch.linspace(-1, 1, 50)[:, None] * torch.ones(1, 16)
    _, floored = keyframe_script.code_whitening(line, floor=1e-3)
    eigenvalues = torch.linalg.eigvalsh(torch.cov(line.T))
    assert torch.isfinite(floored).all()
    expected_gain = (1e-3 * eigenvalues.mean()).rsqrt()  # closed form: the floor's gain
    torch.testing.assert_close(torch.linalg.matrix_norm(floored, ord=2), expected_gain, rtol=1e-3, atol=0)


def test_whitened_input_projection_is_w_p_x_minus_mean_and_separates_near_codes(keyframe_script):
    from diffusers_vlavit.models.keyframe_decoder import KeyframeTokenDecoder

    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    decoder = KeyframeTokenDecoder(
        code_dim=16, hidden_size=32, num_layers=1, num_attention_heads=2, num_queries=4, max_code_tokens=8,
        decoder_out_dim=32, prompt_embed_dims=(16, 16), pooled_projection_dim=16,
    )  # fmt: skip
    codes = _clustered_codes(generator)
    weight, bias = decoder.in_proj.weight.detach().clone(), decoder.in_proj.bias.detach().clone()
    before = decoder.in_proj(codes).detach()
    mean, whitening = keyframe_script.code_whitening(codes)
    keyframe_script.whiten_input_projection(decoder, mean, whitening)
    x = torch.randn(5, 16, generator=generator)
    expected = (x.double() - mean.double()) @ (weight.double() @ whitening.double()).T + bias.double()
    torch.testing.assert_close(decoder.in_proj(x).double(), expected, rtol=1e-4, atol=1e-4)
    after = decoder.in_proj(codes).detach()
    # nearby codes: the projection's outputs now vary at the scale of a random projection of unit inputs
    assert float(before.std(0).mean()) < 0.05 < 0.3 < float(after.std(0).mean())


@pytest.mark.parametrize("script_name", ["video_script", "keyframe_script"])
def test_detokenizer_scripts_take_dashed_and_underscored_options(script_name, request):
    script = request.getfixturevalue(script_name)
    common = ["--pipeline", "folder", "--resolution", "32", "48"]
    underscored = script.parse_args(
        [*common, "--output_dir", "out", "--max_steps", "7", "--resume_from_checkpoint", "latest"]
    )
    dashed = script.parse_args(
        [*common, "--output-dir", "out", "--max-steps", "7", "--resume-from-checkpoint", "latest"]
    )
    assert vars(dashed) == vars(underscored)
    assert (dashed.output_dir, dashed.max_steps, dashed.resolution) == ("out", 7, [32, 48])


def test_video_detokenizer_trains_on_the_motion_scale_the_pipeline_decodes_to(
    video_script, detokenizers, tmp_path, monkeypatch
):
    """The motion condition is `motion_vectors / motion_tokenizer.config.motion_scale_factor`, the factor
    `decode_for_detokenizer` divides decoded motion by at generation (not a fixed 10)."""
    import shutil

    from transformers_vlavit import decompose_video

    pipeline = tmp_path / "pipeline"
    shutil.copytree(detokenizers["video"], pipeline)
    config_path = pipeline / "motion_tokenizer" / "config.json"
    config = json.loads(config_path.read_text())
    assert config.get("motion_scale_factor", 10.0) == 10.0
    config["motion_scale_factor"] = 2.5
    config_path.write_text(json.dumps(config))

    seen = []
    original = video_script.video_clips

    def recording(path, args, motion_scale_factor=video_script.LLM_MOTION_SCALE):
        clips = original(path, args, motion_scale_factor)
        seen.append((Path(path), motion_scale_factor, clips))
        return clips

    argv = [
        "--pipeline", str(pipeline), "--synthetic_videos", "1", "--resolution", "32",
        "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--seed", "0",
    ]  # fmt: skip
    monkeypatch.setattr(video_script, "video_clips", recording)
    video_script.main(argv)
    (path, factor, clips), = seen
    assert factor == 2.5
    expected = decompose_video(path, max_clips=len(clips)).motion_vectors
    for clip, sample in enumerate(clips):
        torch.testing.assert_close(sample["motion"], expected[clip] / 2.5, rtol=0, atol=0)
    # the default (a pipeline without a tokenizer, or the release's 10) is the decomposition's unscaled motion
    default = original(path, video_script.parse_args(argv))[0]["motion"]
    torch.testing.assert_close(default, decompose_video(path).motion_vectors_unscaled[0], rtol=0, atol=0)


def _roll_offset(original: torch.Tensor, shifted: torch.Tensor) -> tuple[int, int] | None:
    """The `(rows, columns)` offset that turns `original [..., h, w]` into `shifted`, by exhaustive search."""
    height, width = original.shape[-2:]
    for row in range(height):
        for column in range(width):
            moved = torch.cat([original[..., height - row :, :], original[..., : height - row, :]], dim=-2)
            moved = torch.cat([moved[..., width - column :], moved[..., : width - column]], dim=-1)
            if torch.equal(moved, shifted):
                return row, column
    return None


def test_motion_shift_rolls_chosen_fields_by_uniform_offsets(video_script):
    generator = torch.Generator().manual_seed(0)
    motion = torch.randn(400, 2, 3, 5, 7, generator=generator)
    shifted = video_script.shift_motion(motion, 0.5, torch.Generator().manual_seed(1))
    assert shifted.shape == motion.shape
    offsets = [_roll_offset(original, moved) for original, moved in zip(motion, shifted)]
    assert None not in offsets  # every field is its own, moved whole: no vector lost, none made up
    moved = [offset for offset in offsets if offset != (0, 0)]
    # chance 0.5, and a chosen field still draws (0, 0) one time in 35: 400 * (0.5 + 0.5 / 35) ~ 206 unchanged
    assert 160 <= len(offsets) - len(moved) <= 250
    assert {column for _, column in moved} >= set(range(1, 7))
    assert {row for row, _ in moved} >= set(range(1, 5))
    # never rolled at chance 0 (the default), always at chance 1 (bar the (0, 0) draws)
    assert video_script.shift_motion(motion, 0.0) is motion
    assert video_script.parse_args(["--pipeline", "p", "--output_dir", "o"]).motion_shift_probability == 0.0
    always = video_script.shift_motion(motion, 1.0, torch.Generator().manual_seed(2))
    unchanged = sum(torch.equal(a, b) for a, b in zip(motion, always))
    assert unchanged <= 30


@pytest.mark.parametrize("probability", ["-0.1", "1.5"])
def test_motion_shift_probability_must_be_a_chance(video_script, probability):
    with pytest.raises(video_script.VideoDetokenizerTrainingError, match="motion_shift_probability"):
        video_script.parse_args(
            ["--pipeline", "p", "--output_dir", "o", "--motion_shift_probability", probability]
        )


def test_denoising_loss_conditions_on_the_shifted_motion(video_script, detokenizers):
    """The motion the U-Net is conditioned on is the batch's grid at chance 0 and a roll of it at chance 1."""
    from diffusers_vlavit.pipelines.pipeline_video import VideoLaVITVideoPipeline

    pipe = VideoLaVITVideoPipeline.from_pretrained(detokenizers["video"], trust_remote_code=True)
    frames = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    motion = torch.randn(2, 2, 3, 20, 36, generator=torch.Generator().manual_seed(1))
    seen = []
    original = pipe.motion_at_latent_size

    def recording(image, grid, height, width, device):
        seen.append(grid.clone())
        return original(image, grid, height, width, device)

    pipe.motion_at_latent_size = recording
    for probability in (0.0, 1.0):
        args = video_script.parse_args(
            ["--pipeline", "p", "--output_dir", "o", "--motion_shift_probability", str(probability)]
        )
        batch = {"frames": frames, "motion": motion}
        loss = fixed_batch_loss(video_script, pipe, args, batch, pipe.unet, pipe.motion_encoder)
        assert torch.isfinite(torch.tensor(loss))
    torch.testing.assert_close(seen[0], motion, rtol=0, atol=0)
    offsets = [_roll_offset(original_field, field) for original_field, field in zip(motion, seen[1])]
    assert None not in offsets and (0, 0) not in offsets


def test_keyframe_whitening_runs_on_a_new_run_and_not_on_a_resumed_one(
    keyframe_script, detokenizers, tmp_path, monkeypatch
):
    """A resumed run takes its whitened projection from the checkpoint, so it does not tokenize keyframes."""
    calls = []
    original = keyframe_script.whiten_from_images

    def recording(pipe, images, args, device):
        calls.append(len(images))
        return original(pipe, images, args, device)

    monkeypatch.setattr(keyframe_script, "whiten_from_images", recording)
    argv = [
        "--pipeline", str(detokenizers["keyframe"]), "--synthetic_videos", "2", "--resolution", "64",
        "--output_dir", str(tmp_path / "out"), "--train_batch_size", "2", "--checkpointing_steps", "1",
        "--seed", "0", "--whiten_code_embeddings", "4", "--resume_from_checkpoint", "latest",
    ]  # fmt: skip
    assert len(keyframe_script.main([*argv, "--max_steps", "1"])) == 1
    assert len(calls) == 1  # nothing to resume from: whitened
    assert len(keyframe_script.main([*argv, "--max_steps", "2"])) == 1
    assert len(calls) == 1  # resumed from checkpoint-1: not whitened again


def test_resume_folder_names_the_checkpoint_to_resume(scripts, tmp_path):
    import argparse

    training = scripts.load(scripts.examples / "detokenizer_training.py")
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    latest = argparse.Namespace(resume_from_checkpoint="latest", output_dir=str(tmp_path))
    assert training.resume_folder(latest) == tmp_path / "checkpoint-10"  # by step, not by name
    empty = argparse.Namespace(resume_from_checkpoint="latest", output_dir=str(tmp_path / "none"))
    assert training.resume_folder(empty) is None
    named = argparse.Namespace(resume_from_checkpoint=str(tmp_path / "checkpoint-2"), output_dir="x")
    assert training.resume_folder(named) == tmp_path / "checkpoint-2"
    assert training.resume_folder(argparse.Namespace(resume_from_checkpoint=None, output_dir="x")) is None
