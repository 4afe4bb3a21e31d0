"""`vlavit evaluate` on text-to-video (CLIPSIM, FVD) and reconstruction with tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transformers_vlavit.cli import main
from transformers_vlavit.evaluation.frechet import features_frechet_distance
from transformers_vlavit.evaluation.text_to_video import read_frames

FAST = ["--steps", "1", "--keyframe-steps", "2", "--height", "32", "--width", "32"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def independent_clipsim(clip_folder, frames: torch.Tensor, prompt: str) -> float:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(clip_folder).eval()
    tokens = AutoTokenizer.from_pretrained(clip_folder)([prompt], return_tensors="pt")
    pixels = CLIPImageProcessor.from_pretrained(clip_folder)(
        list((frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()), return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        text = model.text_projection(model.text_model(**tokens).pooler_output)
        images = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    return F.cosine_similarity(images, text, dim=-1).mean().item()


def independent_fvd(i3d_path, generated: list[torch.Tensor], real: list[torch.Tensor]) -> float:
    from transformers_vlavit.evaluation.i3d import load_i3d

    i3d = load_i3d(i3d_path)

    def features(videos):
        clips = [F.interpolate(v[:16], size=(224, 224), mode="bilinear") * 2 - 1 for v in videos]
        with torch.no_grad():
            return torch.cat([i3d(c.permute(1, 0, 2, 3)[None]) for c in clips]).double().numpy()

    return features_frechet_distance(features(generated), features(real))


def test_t2v_run_scores_clipsim_and_fvd_and_is_deterministic_and_resumable(
    tiny_checkpoint, tiny_clip, tiny_i3d, videos, tmp_path
):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball rolls left\na blue square moves up\na green triangle stays\n")
    cache = tmp_path / "cache"
    arguments = [
        "evaluate",
        "t2v",
        "--model",
        str(tiny_checkpoint),
        "--annotations",
        str(prompts),
        "--video-root",
        str(videos[0].parent),
        "--clip",
        str(tiny_clip),
        "--i3d",
        str(tiny_i3d),
        "--cache-dir",
        str(cache),
        "--seed",
        "5",
        *FAST,
    ]
    first, second = tmp_path / "run1", tmp_path / "run2"
    assert main([*arguments, "--out", str(first)]) == 0
    records = read_jsonl(first / "predictions.jsonl")
    assert [(r["id"], r["seed"], r["frames"]) for r in records] == [
        ("00000", 5, 24),
        ("00001", 6, 24),
        ("00002", 7, 24),
    ]
    metrics = json.loads((first / "metrics.json").read_text())

    generated = [read_frames(r["video"]) for r in records]
    assert generated[0].shape == (24, 3, 32, 32) and not torch.equal(generated[0], generated[1])
    clipsims = [independent_clipsim(tiny_clip, frames, r["prompt"]) for frames, r in zip(generated, records)]
    assert metrics["clipsim"] == pytest.approx(np.mean(clipsims), abs=1e-5)

    from transformers_vlavit.evaluation.fvd import read_video_frames

    real = [read_video_frames(v, 16, 6) for v in videos]
    assert metrics["fvd_reference_videos"] == 3 and len(list(cache.glob("fvd_reference_*.npz"))) == 1
    assert metrics["fvd"] > 0.1  # the tiny I3D tells random generations from the synthetic clips
    assert metrics["fvd"] == pytest.approx(independent_fvd(tiny_i3d, generated, real), rel=1e-4)

    # resume: a lost record (and its video) is regenerated with its own seed, the others are kept
    (first / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in records[:1]) + "\n")
    kept = (first / "videos" / "00000.mp4").stat().st_mtime_ns
    (first / "videos" / "00001.mp4").unlink()
    assert main([*arguments, "--out", str(first)]) == 0
    assert (first / "videos" / "00000.mp4").stat().st_mtime_ns == kept
    regenerated = read_frames(first / "videos" / "00001.mp4")
    assert torch.equal(regenerated, generated[1]), (
        f"regenerated video differs: max {(regenerated - generated[1]).abs().max().item() * 255:.0f}/255 over "
        f"{(regenerated != generated[1]).sum().item()} of {regenerated.numel()} values"
    )
    assert json.loads((first / "metrics.json").read_text()) == metrics

    # determinism of the whole run in a fresh folder (the cached reference statistics are reused)
    assert main([*arguments, "--out", str(second)]) == 0
    for name in ("00000", "00001", "00002"):
        assert (second / "videos" / f"{name}.mp4").read_bytes() == (
            first / "videos" / f"{name}.mp4"
        ).read_bytes()
    assert (second / "metrics.json").read_text() == (first / "metrics.json").read_text()
    report = (first / "report.md").read_text()
    assert "![samples](samples.png)" in report and "manual_seed(5 + i)" in report and "| fvd |" in report


def test_t2v_checks_its_weights_before_loading(tiny_checkpoint, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    base = [
        "evaluate",
        "t2v",
        "--model",
        str(tiny_checkpoint),
        "--annotations",
        str(prompts),
        "--out",
        str(tmp_path / "r"),
    ]
    assert main([*base, "--clip", str(tmp_path / "no-clip")]) == 2
    assert main([*base, "--i3d", str(tmp_path / "no.pt")]) == 2
    assert main([*base, "--i3d", str(prompts)]) == 2  # exists, but no real videos to compare with
    language_model_only = tmp_path / "lm-only"
    language_model_only.mkdir()
    (language_model_only / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    assert main([*base[:2], "--model", str(language_model_only), *base[4:]]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert (
        len(errors) == 4 and "--clip" in errors[0] and "--i3d" in errors[1] and "2 real videos" in errors[2]
    )
    assert "no detokenizer pipelines" in errors[3]
    assert not (tmp_path / "r" / "predictions.jsonl").exists()


def test_reconstruction_over_a_folder(tiny_checkpoint, videos, tmp_path):
    from transformers_vlavit.commands.reconstruct import psnr

    out = tmp_path / "run"
    arguments = [
        "evaluate",
        "reconstruction",
        "--model",
        str(tiny_checkpoint),
        "--video-root",
        str(videos[0].parent),
        "--out",
        str(out),
        "--limit",
        "2",
        *FAST,
    ]
    assert main(arguments) == 0
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["id"] for r in records] == ["clip0", "clip1"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["videos"] == 2
    assert metrics["psnr"] == pytest.approx((records[0]["psnr"] + records[1]["psnr"]) / 2)
    assert 0 < records[0]["psnr"] < 40 and -1 <= records[0]["ssim"] <= 1
    # the written reconstruction is what was scored (up to H.264 re-encoding)
    from transformers_vlavit.evaluation.fvd import read_video_frames

    reference = read_video_frames(videos[0], records[0]["frames"], 6)
    reference = F.interpolate(reference, size=(32, 32), mode="bicubic").clamp(0, 1)
    reconstruction = read_frames(out / "videos" / "clip0.mp4")[: records[0]["frames"]]
    assert psnr(reconstruction, reference) == pytest.approx(records[0]["psnr"], abs=1.5)
    assert main(arguments) == 0 and read_jsonl(out / "predictions.jsonl") == records
