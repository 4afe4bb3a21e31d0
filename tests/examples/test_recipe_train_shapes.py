"""The Video-LaVIT-Shapes recipe (`examples/recipes/train_shapes.py`): every stage runs end to end (smoke
settings: a 24-video world and one or two optimizer steps per stage), the result is a complete model folder with
a model card, a rerun skips finished stages, and `--force` reruns a stage and those after it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from transformers_vlavit.evaluation.shapes_tasks import grouped_accuracy

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs" / "shapes"

STAGES_WITH_OUTPUT = {
    "world": "world/world.json",
    "video_text": "data/video_text",
    "instructions": "data/instructions",
    "vae_image": "vae_image/config.json",
    "vae_video": "vae_video/config.json",
    "visual_tokenizer": "visual_tokenizer/config.json",
    "motion_tokenizer": "motion_tokenizer/config.json",
    "motion_ids": "data/video_text_ids",
    "assemble": "assembled/config.json",
    "keyframe_detokenizer": "keyframe_detokenizer/model_index.json",
    "video_detokenizer": "video_detokenizer/model_index.json",
    "pretrain": "pretrain/config.json",
    "sft": "sft_merged/config.json",
    "vae_image_refine": "vae_image_refine/config.json",
    "keyframe_detokenizer_refine": "keyframe_detokenizer_refine/model_index.json",
    "vae_video_refine": "vae_video_refine/config.json",
    "video_detokenizer_refine": "video_detokenizer_refine/model_index.json",
    "evaluate": "evaluation/qa/metrics.json",
}


@pytest.fixture(scope="module")
def smoke_run(scripts, tmp_path_factory):
    """One smoke run of the whole recipe: (work folder, model folder, the run's output)."""
    work = tmp_path_factory.mktemp("recipe")
    model = work / "model"
    command = [scripts.python, scripts.examples / "recipes" / "train_shapes.py", "--work-dir", work, "--out", model]
    result = scripts.run([*command, "--smoke", "--num-proc", "1"], work / "cache", timeout=900)
    return work, model, command, result


def test_recipe_runs_every_stage_and_writes_a_loadable_model_with_a_card(smoke_run, scripts):
    work, model, _, result = smoke_run
    assert "recipe finished" in result.stdout
    record = json.loads((work / "recipe.json").read_text())
    recipe = _recipe_module(scripts)
    assert list(record["stages"]) == list(recipe.STAGES)
    assert all(stage["wall_seconds"] >= 0 for stage in record["stages"].values())
    for stage, output in STAGES_WITH_OUTPUT.items():
        assert (work / output).exists(), f"{stage} left no {output}"
    # the pre-training data carries the trained motion tokenizer's ids
    from datasets import load_from_disk

    rows = load_from_disk(str(work / "data" / "video_text_ids"))
    assert "motion_token_ids" in rows.column_names and len(rows[0]["motion_token_ids"][0]) == 135

    from transformers import AutoModelForCausalLM, AutoProcessor

    loaded = AutoModelForCausalLM.from_pretrained(model)
    processor = AutoProcessor.from_pretrained(model)
    assert type(loaded).__name__ == "VideoLaVITForCausalLM" and processor.tokenizer.chat_template
    assert (model / "detokenizer" / "keyframe" / "model_index.json").exists()
    assert (model / "detokenizer" / "video" / "model_index.json").exists()
    assert not list(model.rglob("*.bin")) and not list(model.rglob("*.pt"))
    # the package holds the refined keyframe and video detokenizers, each on its refined VAE

    def same_file(a, b):
        return a.read_bytes() == b.read_bytes()

    weights = "diffusion_pytorch_model.safetensors"
    for kind, vae in (("keyframe", "vae_image"), ("video", "vae_video")):
        folder = model / "detokenizer" / kind
        assert same_file(folder / "vae" / weights, work / f"{vae}_refine" / weights), kind
        assert not same_file(folder / "vae" / weights, work / vae / weights), kind
        unet_weights = folder / "unet" / weights
        assert same_file(unet_weights, work / f"{kind}_detokenizer_refine" / "unet" / weights), kind
        assert not same_file(unet_weights, work / f"{kind}_detokenizer" / "unet" / weights), kind

    card = (model / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: text-to-video" in card
    assert "make shapes-model" in card and "| pretrain |" in card
    # the card's QA figure is the evaluation's, not typed in
    qa = json.loads((work / "evaluation" / "qa" / "metrics.json").read_text())["shapes"]["all"]
    assert f"| qa colour | >= 90% | {100 * qa['colour']:.1f}% |" in card


def test_recipe_rerun_skips_finished_stages_and_force_reruns_from_a_stage(smoke_run, scripts):
    work, _, command, _ = smoke_run
    before = json.loads((work / "recipe.json").read_text())["stages"]
    scripts.run([*command, "--smoke"], work / "cache", timeout=300)
    after = json.loads((work / "recipe.json").read_text())["stages"]
    assert after == before  # nothing ran again

    card = work / "model" / "README.md"
    card.unlink()
    scripts.run([*command, "--smoke", "--force", "card"], work / "cache", timeout=300)
    assert card.exists()
    forced = json.loads((work / "recipe.json").read_text())["stages"]
    assert {stage for stage in forced if forced[stage] != before[stage]} <= {"card"}


def test_recipe_settings_merge_the_smoke_section_and_options_render_flags(scripts, tmp_path):
    recipe = _recipe_module(scripts)
    settings = tmp_path / "recipe.json"
    settings.write_text(json.dumps({"seed": 1, "sft": {"max_steps": 9, "lr": 1}, "smoke": {"sft": {"max_steps": 2}}}))
    assert recipe.load_settings(settings, smoke=False) == {"seed": 1, "sft": {"max_steps": 9, "lr": 1}}
    assert recipe.load_settings(settings, smoke=True) == {"seed": 1, "sft": {"max_steps": 2, "lr": 1}}
    assert recipe.options({"max_steps": 3, "flag": True, "off": False, "unset": None}) == [
        "--max_steps",
        "3",
        "--flag",
    ]
    assert recipe.options({"batch_size": 4}, dashed=True) == ["--batch-size", "4"]


def test_trainer_stages_resume_from_their_newest_checkpoint_by_path(scripts, tmp_path, monkeypatch):
    """An interrupted `pretrain` / `sft` resumes from its newest `checkpoint-N` (by step, not by name), passed
    as a path: the Trainer takes `--resume_from_checkpoint true` for a folder called `true` and stops."""
    recipe_module = _recipe_module(scripts)
    settings = recipe_module.load_settings(CONFIGS / "recipe.json", smoke=True)
    recipe = recipe_module.Recipe(work_dir=tmp_path, out=tmp_path / "model", settings=settings)
    commands = {}

    def record(recipe, stage: str, command: list[str]) -> None:
        commands[stage] = command

    monkeypatch.setattr(recipe_module, "run", record)

    def resume_argument(stage: str) -> str | None:
        getattr(recipe_module, f"stage_{stage}")(recipe)
        command = commands[stage]
        flag = "--resume_from_checkpoint"
        return command[command.index(flag) + 1] if flag in command else None

    for stage in ("pretrain", "sft"):
        assert resume_argument(stage) is None  # a first run starts fresh
        for step in (200, 1200, 600):
            (tmp_path / stage / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / stage / "checkpoint-5000.log").write_text("not a checkpoint")
        assert resume_argument(stage) == str(tmp_path / stage / "checkpoint-1200"), stage


def test_model_card_reports_measured_figures_and_marks_missed_targets(scripts, tmp_path):
    card_module = _recipe_module(scripts, "model_card")
    evaluation, model = tmp_path / "evaluation", tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"x" * 1024)
    outcomes = [
        {"attribute": "colour", "held_out": False, "num_clips": 1, "correct": True},
        {"attribute": "colour", "held_out": True, "num_clips": 1, "correct": False},
        {"attribute": "direction", "held_out": False, "num_clips": 1, "correct": True},
    ]
    for name in ("qa", "t2v"):
        (evaluation / name).mkdir(parents=True)
        (evaluation / name / "metrics.json").write_text(json.dumps({"shapes": grouped_accuracy(outcomes)}))
    (evaluation / "reconstruction").mkdir()
    (evaluation / "reconstruction" / "metrics.json").write_text(json.dumps({"psnr": 25.5}))
    record = tmp_path / "recipe.json"
    record.write_text(json.dumps({"machine": "test cpu", "stages": {"world": {"wall_seconds": 90}}}))
    path = card_module.write_model_card(model, evaluation, record, {"world": {"size": 64}, "sft": {"max_steps": 7}})
    card = path.read_text()
    assert "| qa colour | >= 90% | 50.0% | **no** |" in card
    assert "| qa direction | >= 90% | 100.0% | yes |" in card
    assert "| i2v direction | >= 80% | not measured | - |" in card
    assert "| reconstruction PSNR | >= 24 dB | 25.50 dB | yes |" in card
    assert "| held-out colour x shape | 0.0% (n=1) |" in card
    assert "| world | 1.5 min |" in card and "sft 7" in card and "test cpu" in card


def _recipe_module(scripts, name: str = "train_shapes"):
    return scripts.load(scripts.examples / "recipes" / f"{name}.py")


def moving_blob_motion(num_clips: int, seed: int = 0) -> torch.Tensor:
    """Motion grids like the shapes world's `[num_clips, 2, 24, 20, 36]`: one Gaussian blob of motion (sigma 3
    cells, peak speed 1.5, the world's magnitude) translating in one of four directions; frame 0 is the keyframe
    (no motion)."""
    generator = np.random.default_rng(seed)
    rows, columns = np.meshgrid(np.arange(20), np.arange(36), indexing="ij")
    grids = np.zeros((num_clips, 2, 24, 20, 36), dtype=np.float32)
    for clip in range(num_clips):
        direction = [(1, 0), (-1, 0), (0, 1), (0, -1)][clip % 4]
        row, column = generator.uniform(6, 14), generator.uniform(8, 28)
        for frame in range(1, 24):
            row, column = row + 0.25 * direction[1], column + 0.25 * direction[0]
            blob = np.exp(-((rows - row) ** 2 + (columns - column) ** 2) / (2 * 3.0**2))
            grids[clip, 0, frame] = 1.5 * direction[0] * blob
            grids[clip, 1, frame] = 1.5 * direction[1] * blob
    return torch.from_numpy(grids)


def test_shapes_motion_tokenizer_config_starts_learning_within_30_steps():
    """The shapes motion tokenizer (width 32) with the released initialiser (std 0.02, tuned for width 512)
    stays at the predict-zero loss for hundreds of steps: its decoder gave the same field for every clip. The
    shapes config's std 0.1 must fit two clips' motion (encoder -> decoder, no quantiser) well below that in 30
    steps."""
    from transformers_vlavit.configuration_motion_tokenizer import VideoLaVITMotionTokenizerConfig
    from transformers_vlavit.modeling_motion_tokenizer import VideoLaVITMotionTokenizer

    fields = json.loads((CONFIGS / "motion_tokenizer.json").read_text())
    torch.manual_seed(0)
    model = VideoLaVITMotionTokenizer(VideoLaVITMotionTokenizerConfig(**fields)).train()
    motion = moving_blob_motion(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(model.decode_codes(model.encode_latents(motion)), motion)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predict_zero = motion.pow(2).mean().item()
    assert loss.item() < 0.7 * predict_zero, (loss.item(), predict_zero)
