"""The shipped model, `models/video-lavit-shapes` (issue 10): its folder, its loaders, and what it knows.

The knowledge checks run on a world drawn from a seed the recipe never used (`SEED`), so every video is
unseen; the thresholds are the issue's CI ones (QA >= 85% on ~20 videos; seeded generations pass the
world's detectors for colour and direction). Where the shipped model does not reach one yet, the test is a
strict xfail whose reason carries the measured figure: it turns red the day the model passes, so the mark
cannot outlive the shortfall.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from transformers_vlavit.cli import main
from transformers_vlavit.evaluation.shapes_tasks import detect_generated

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = PROJECT_ROOT / "models" / "video-lavit-shapes"
SEED = 11  # the recipe's world uses seed 0, the demo seed 7
QA_THRESHOLD = 0.85
GENERATION_PROMPTS = 4


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def unseen_world(tmp_path_factory) -> Path:
    """Twenty test videos of 64x64 (the model's size) from an unused seed, a fifth of them two-clip."""
    folder = tmp_path_factory.mktemp("unseen") / "world"
    subprocess.run(
        [
            sys.executable, str(PROJECT_ROOT / "datasets" / "make_shapes_world.py"), "--out", str(folder),
            "--num-videos", "20", "--size", "64", "--seed", str(SEED), "--test-fraction", "1",
            "--validation-fraction", "0", "--num-proc", "1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return folder


def test_the_folder_is_small_safetensors_only_and_carries_its_card():
    files = [path for path in MODEL.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 40 * 2**20
    weights = [path for path in files if path.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl"}]
    assert weights and all(path.suffix == ".safetensors" for path in weights)
    for part in ("detokenizer/keyframe", "detokenizer/video"):
        assert (MODEL / part / "model_index.json").is_file(), part
    card = (MODEL / "README.md").read_text()
    assert card.startswith("---\n") and "make shapes-model" in card and "## Evaluation" in card


def test_its_motion_tokenizers_follow_the_recipe_config():
    """Both copies of the motion tokenizer (the language model's, the video detokenizer's) carry the shapes
    config's settings, `motion_scale_factor` included: the scale the video detokenizer was trained and is
    sampled on."""
    recipe_config = PROJECT_ROOT / "examples" / "configs" / "shapes" / "motion_tokenizer.json"
    wanted = json.loads(recipe_config.read_text())
    detokenizer_config = MODEL / "detokenizer" / "video" / "motion_tokenizer" / "config.json"
    copies = {
        "language model": json.loads((MODEL / "config.json").read_text())["motion_tokenizer_config"],
        "video detokenizer": json.loads(detokenizer_config.read_text()),
    }
    for name, config in copies.items():
        assert {key: config.get(key) for key in wanted} == wanted, name


def test_its_custom_code_is_the_packages_current_code():
    # trust_remote_code runs these copies: a stale one would load the weights with yesterday's behaviour
    sources: dict[str, list[bytes]] = {}  # a few names exist twice in src/ (conversion/ and models/)
    for path in (PROJECT_ROOT / "src").rglob("*.py"):
        sources.setdefault(path.name, []).append(path.read_bytes())
    copies = sorted(MODEL.rglob("*.py"))
    assert len(copies) > 10
    stale = [str(path.relative_to(MODEL)) for path in copies if path.read_bytes() not in sources.get(path.name, [])]
    assert not stale, f"refresh these copies from src/: {stale}"

def test_it_loads_with_the_auto_classes_and_both_pipelines():
    import torch
    from diffusers import DiffusionPipeline
    from transformers import AutoModelForCausalLM, AutoProcessor, pipeline

    model = AutoModelForCausalLM.from_pretrained(MODEL)
    processor = AutoProcessor.from_pretrained(MODEL)
    assert type(model).__name__ == "VideoLaVITForCausalLM" and type(processor).__name__ == "VideoLaVITProcessor"
    text = model.config.text_config
    assert (text.num_hidden_layers, text.hidden_size) == (4, 192) and model.config.text_vocab_size == 384
    # the folders carry their pipeline code (custom pipelines), which diffusers runs only when trusted
    keyframe = DiffusionPipeline.from_pretrained(MODEL / "detokenizer" / "keyframe", trust_remote_code=True)
    video = DiffusionPipeline.from_pretrained(MODEL / "detokenizer" / "video", trust_remote_code=True)
    assert type(keyframe).__name__ == "VideoLaVITKeyframePipeline" and type(video).__name__ == "VideoLaVITVideoPipeline"
    generator = pipeline("text-to-video", model=str(MODEL), trust_remote_code=True)
    result = generator(
        "a red circle moves to the left", num_inference_steps=1, keyframe_num_inference_steps=1,
        height=64, width=64, keyframe_height=64, keyframe_width=64, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert len(result["frames"]) == 24 and result["frames"][0].size == (64, 64)


# Runs through `run_without_project` on a copy of the shipped folder with the current code: one line of JSON,
# a digest of every weight (name -> sha256 of its bytes) and the logits of a fixed prompt.
REMOTE_DIGEST_SCRIPT = """
import hashlib
import json
import sys

import torch
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor([[1, 20, 30, 40]])).logits
digests = {name: hashlib.sha256(t.numpy().tobytes()).hexdigest() for name, t in model.state_dict().items()}
print(json.dumps({"module": type(model).__module__, "base": type(model.model).__name__, "digests": digests,
                  "logits": logits.flatten().tolist()}))
"""


def test_its_weights_saved_before_the_base_model_load_unchanged():
    import re

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(MODEL / "model.safetensors")
    model, info = AutoModelForCausalLM.from_pretrained(MODEL, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(model.model).__name__ == "VideoLaVITModel"
    ours = model.state_dict()
    assert len(saved) == len(ours)
    for name, tensor in saved.items():
        for pattern, replacement in type(model)._checkpoint_conversion_mapping.items():
            name = re.sub(pattern, replacement, name)
        assert torch.equal(ours[name], tensor), name


def test_its_weights_load_unchanged_with_the_current_code_as_remote_code(tmp_path, run_without_project):
    import hashlib
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "video-lavit-shapes"
    folder.mkdir()
    source = PROJECT_ROOT / "src" / "transformers_vlavit"
    for path in MODEL.iterdir():
        if path.name == "model.safetensors":
            (folder / path.name).symlink_to(path)  # the shipped weights as they are
        elif path.is_file():
            shutil.copy(source / path.name if path.suffix == ".py" else path, folder / path.name)
    result = run_without_project(REMOTE_DIGEST_SCRIPT, folder)
    assert result.returncode == 0, result.stderr[-4000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["module"].startswith("transformers_modules") and remote["base"] == "VideoLaVITModel"

    model = AutoModelForCausalLM.from_pretrained(MODEL).eval()
    state = model.state_dict()
    digests = {name: hashlib.sha256(tensor.numpy().tobytes()).hexdigest() for name, tensor in state.items()}
    assert remote["digests"] == digests
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 20, 30, 40]])).logits
    assert remote["logits"] == logits.flatten().tolist()


@pytest.mark.xfail(
    strict=True,
    reason="issue 10: not reached yet; measured on these 20 videos (2026-12-03, 1600 pre-training steps): "
    "colour 95%, shape 65%, direction 85% (needs >= 85% each)",
)
def test_it_answers_questions_about_unseen_videos(unseen_world, tmp_path):
    out = tmp_path / "qa"
    arguments = ["evaluate", "shapes-qa", "--model", str(MODEL), "--annotations", str(unseen_world),
                 "--out", str(out), "--max-new-tokens", "8", "--min-new-tokens", "1"]  # fmt: skip
    assert main(arguments) == 0
    records = read_jsonl(out / "predictions.jsonl")
    assert len(records) >= 60  # colour, shape and direction questions of twenty videos
    scores = json.loads((out / "metrics.json").read_text())["shapes"]["all"]
    for attribute in ("colour", "shape", "direction"):
        assert scores[attribute] >= QA_THRESHOLD, scores


@pytest.mark.xfail(
    strict=True,
    reason="issue 10: not reached yet; measured (2026-12-04, motion-shift video detokenizer): colour 3 of 4, "
    "first direction 0 of 4 (two stay still, two drift right)",
)
def test_its_seeded_generations_pass_the_detectors(unseen_world, tmp_path):
    out = tmp_path / "t2v"
    arguments = ["evaluate", "shapes-t2v", "--model", str(MODEL), "--annotations", str(unseen_world),
                 "--out", str(out), "--limit", str(GENERATION_PROMPTS), "--steps", "16", "--keyframe-steps", "20",
                 "--height", "64", "--width", "64", "--seed", "0"]  # fmt: skip
    assert main(arguments) == 0
    records = read_jsonl(out / "predictions.jsonl")
    assert len(records) == GENERATION_PROMPTS
    for record in records:
        record.update(detect_generated(record))
        assert record["detected_colour"] == record["colour"], record
        assert record["detected_directions"][0] == record["directions"][0], record
