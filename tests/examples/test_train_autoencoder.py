"""Stage 1 autoencoders (`examples/train_autoencoder.py`): both kinds learn, the scale is 1/std, resume is exact."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder

from transformers_vlavit.shapes.world import ShapesVideoSpec, write_video

IMAGE_CONFIG = {
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [32, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "sample_size": 32,
}
VIDEO_CONFIG = {
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "block_out_channels": [32, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "sample_size": 32,
}


@pytest.fixture(scope="module")
def script(scripts):
    return scripts.load(scripts.examples / "train_autoencoder.py")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    specs = [
        ShapesVideoSpec("a", "train", "red", "circle", ("right",), (16.0, 24.0), (20.0,), size=48),
        ShapesVideoSpec("b", "train", "cyan", "square", ("up",), (30.0, 34.0), (16.0,), size=48),
    ]
    for spec in specs:
        write_video(spec, folder / "train" / f"{spec.video_id}.mp4")
    write_video(ShapesVideoSpec("c", "validation", "red", "square", ("left",), (30.0, 20.0), (14.0,), size=48),
                folder / "validation" / "c.mp4")
    return folder


def _argv(kind, videos, config_path, output_dir, extra=()):
    return [
        "--kind", kind, "--config", str(config_path), "--videos", str(videos / "train"),
        "--validation-videos", str(videos / "validation"), "--resolution", "32", "--output-dir", str(output_dir),
        "--learning-rate", "3e-3", "--seed", "0", "--frames-per-video", "4", "--num-frames", "4",
        "--train-batch-size", "4", "--kl-weight", "1e-6", *extra,
    ]  # fmt: skip


def _fixed_batch_loss(script, model, args, batch) -> float:
    torch.manual_seed(0)  # the posterior sample of the loss
    with torch.no_grad():
        return float(script.autoencoder_loss(model, batch, args))


@pytest.mark.parametrize("kind", ["image", "video"])
def test_train_autoencoder_overfits_and_sets_the_latent_scale(script, videos, tmp_path, kind):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(IMAGE_CONFIG if kind == "image" else VIDEO_CONFIG))
    output_dir = tmp_path / "out"
    argv = _argv(kind, videos, config_path, output_dir, ["--max-steps", "40", "--eval-steps", "20"])
    args = script.parse_args(argv)
    batch = torch.stack(script.load_samples(args.videos, args)[:4])
    model_class = AutoencoderKL if kind == "image" else AutoencoderKLTemporalDecoder
    torch.manual_seed(0)
    start = script.build_model(args)

    assert script.main(argv) == 0
    trained = model_class.from_pretrained(output_dir)
    before = _fixed_batch_loss(script, start, args, batch)
    after = _fixed_batch_loss(script, trained, args, batch)
    print(f"{kind} autoencoder: fixed batch {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before

    # the saved scale makes the training latents unit-variance
    flat = batch.flatten(0, 1) if kind == "video" else batch
    with torch.no_grad():
        latents = trained.encode(flat).latent_dist.mode()
    samples = script.load_samples(args.videos, args)
    expected = script.latent_scaling_factor(trained, samples, kind, 4, "cpu")
    assert trained.config.scaling_factor == pytest.approx(expected, rel=1e-5)
    assert float((latents * trained.config.scaling_factor).std()) == pytest.approx(1.0, rel=0.35)

    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    psnr = [record["validation_psnr"] for record in records if "validation_psnr" in record]
    final = records[-1]
    assert len(psnr) == 2 and final["final"] and final["psnr"] > 12.0
    assert final["psnr"] == pytest.approx(script.psnr(trained, script.load_samples(args.validation_videos, args),
                                                      kind, 4, "cpu"), abs=1e-4)


def test_psnr_against_a_closed_form(script):
    class Shift(torch.nn.Module):
        """An "autoencoder" whose reconstruction is the input plus 0.2 (0.1 on the [0, 1] scale)."""

        def encode(self, x):
            return type("E", (), {"latent_dist": type("D", (), {"mode": lambda self: x})()})()

        def decode(self, z):
            return type("O", (), {"sample": z + 0.2})()

    samples = [torch.zeros(3, 8, 8) for _ in range(3)]
    assert script.psnr(Shift(), samples, "image", 2, "cpu") == pytest.approx(20.0, abs=1e-4)


def test_train_autoencoder_resume_is_exact(script, videos, tmp_path):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(IMAGE_CONFIG))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # 8 frames in batches of 4: the checkpoint of step 3 lies in the middle of the second epoch
    assert script.main(_argv("image", videos, config_path, straight, ["--max-steps", "4"])) == 0
    common = ["--checkpointing-steps", "3"]
    assert script.main(_argv("image", videos, config_path, resumed, ["--max-steps", "3", *common])) == 0
    assert json.loads((resumed / "checkpoint-3" / "step.json").read_text()) == {"step": 3}
    assert script.main(_argv("image", videos, config_path, resumed,
                             ["--max-steps", "4", "--resume-from-checkpoint", "latest", *common])) == 0
    records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["steps"] == 1  # only the missing step ran
    a, b = AutoencoderKL.from_pretrained(straight), AutoencoderKL.from_pretrained(resumed)
    for (name, left), right in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-6, msg=name)


def test_train_autoencoder_refuses_missing_videos(script, tmp_path):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(IMAGE_CONFIG))
    argv = ["--kind", "image", "--config", str(config_path), "--videos", str(tmp_path / "nope"),
            "--output-dir", str(tmp_path / "out"), "--max-steps", "1"]
    assert script.main(argv) == 2
