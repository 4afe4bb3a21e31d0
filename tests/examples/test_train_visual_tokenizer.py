"""Stage 1 visual tokenizer (`examples/train_visual_tokenizer.py`): it over-fits a fixed batch and resumes."""

from __future__ import annotations

import json

import pytest
import torch

from transformers_vlavit import VideoLaVITImageProcessor, VideoLaVITVisualTokenizer
from transformers_vlavit.shapes.world import ShapesVideoSpec, write_video
from transformers_vlavit.visual_tokenizer_training import VideoLaVITFeatureDecoder, visual_tokenizer_training_step

CONFIG = dict(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
              merger_num_hidden_layers=1, merger_num_attention_heads=2, codebook_size=64, code_dim=8,
              llm_hidden_size=16)


@pytest.fixture(scope="module")
def script(scripts):
    return scripts.load(scripts.examples / "train_visual_tokenizer.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vt")
    for name, colour, shape in (("a", "red", "circle"), ("b", "blue", "triangle")):
        spec = ShapesVideoSpec(name, "train", colour, shape, ("right",), (16.0, 24.0), (16.0,), size=48)
        write_video(spec, folder / "videos" / f"{name}.mp4")
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


def _argv(data, output_dir, *extra):
    return [
        "--config", str(data / "config.json"), "--videos", str(data / "videos"), "--frames-per-video", "4",
        "--output-dir", str(output_dir), "--learning-rate", "3e-3", "--train-batch-size", "8",
        "--target-keep-ratio", "0.5", "--decoder-hidden-size", "32", "--decoder-layers", "1", "--seed", "0",
        *extra,
    ]  # fmt: skip


def _fixed_batch_loss(tokenizer, decoder, pixels) -> float:
    with torch.no_grad():
        return float(visual_tokenizer_training_step(tokenizer, decoder, pixels, sample=False).loss)


def test_train_visual_tokenizer_overfits_a_fixed_batch(script, data, tmp_path):
    output_dir = tmp_path / "out"
    argv = _argv(data, output_dir, "--max-steps", "40", "--restart-dead-codes-every", "10", "--logging-steps", "5")
    args = script.parse_args(argv)
    images = script.training_images(args)
    assert len(images) == 8
    pixels = VideoLaVITImageProcessor(size={"height": 56, "width": 56})(images, return_tensors="pt")["pixel_values"]
    torch.manual_seed(0)
    start_tokenizer = script.build_tokenizer(args)
    from transformers_vlavit.visual_tokenizer_training import FeatureDecoderConfig

    start_decoder = VideoLaVITFeatureDecoder(FeatureDecoderConfig.for_tokenizer(start_tokenizer, hidden_size=32,
                                                                                num_layers=1))
    assert script.main(argv) == 0
    tokenizer = VideoLaVITVisualTokenizer.from_pretrained(output_dir)
    decoder = VideoLaVITFeatureDecoder.from_pretrained(output_dir / "feature_decoder")
    before = _fixed_batch_loss(start_tokenizer, start_decoder, pixels)
    after = _fixed_batch_loss(tokenizer, decoder, pixels)
    print(f"visual tokenizer: fixed batch {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before
    # the frozen ViT is the one it started with (same seed), and the codebook stays on the unit sphere
    torch.testing.assert_close(tokenizer.vision_model.state_dict(), start_tokenizer.vision_model.state_dict())
    torch.testing.assert_close(tokenizer.codebook.weight.norm(dim=-1), torch.ones(64))

    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert {"perplexity", "codebook_usage", "kept_tokens_per_image", "reconstruction_loss"} <= set(records[-1])
    assert any(record.get("restarted_codes", 0) > 0 for record in records)


def test_train_visual_tokenizer_resume_is_exact(script, data, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # restarts every 2 steps: the usage counters and latents must come back from the checkpoint too
    common = ("--restart-dead-codes-every", "2", "--train-batch-size", "4")
    assert script.main(_argv(data, straight, "--max-steps", "4", *common)) == 0
    assert script.main(_argv(data, resumed, "--max-steps", "3", "--checkpointing-steps", "3", *common)) == 0
    assert json.loads((resumed / "checkpoint-3" / "step.json").read_text()) == {"step": 3}
    assert script.main(_argv(data, resumed, "--max-steps", "4", "--checkpointing-steps", "3",
                             "--resume-from-checkpoint", "latest", *common)) == 0
    records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3, 4]
    assert records[-1]["restarted_codes"] > 0
    a, b = VideoLaVITVisualTokenizer.from_pretrained(straight), VideoLaVITVisualTokenizer.from_pretrained(resumed)
    for (name, left), right in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-6, msg=name)


def test_train_visual_tokenizer_takes_the_vit_of_a_saved_tokenizer(script, data, tmp_path):
    torch.manual_seed(123)
    source = VideoLaVITVisualTokenizer(VideoLaVITVisualTokenizer.config_class(**CONFIG))
    source.save_pretrained(tmp_path / "source")
    argv = _argv(data, tmp_path / "out", "--max-steps", "1", "--vision-model-from", str(tmp_path / "source"))
    assert script.main(argv) == 0
    trained = VideoLaVITVisualTokenizer.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(trained.vision_model.state_dict(), source.vision_model.state_dict())
