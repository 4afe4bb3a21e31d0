"""Train Video-LaVIT-Shapes end to end with the project's own scripts: the recipe behind `make shapes-model`.

Every stage runs one script of `datasets/` or `examples/` (or `vlavit`) in a subprocess, with the settings of
`examples/configs/shapes/recipe.json` (step counts, batch sizes, learning rates) and the model sizes of the other
files in that folder, in this order:

    world                 datasets/make_shapes_world.py            the synthetic world (train/validation/test)
    video_text            datasets/prepare_video_text.py           keyframes + motion of every training clip
    instructions          datasets/prepare_instructions.py         the question-answer conversations
    vae_image, vae_video  examples/train_autoencoder.py            the detokenizers' latent spaces
    visual_tokenizer      examples/train_visual_tokenizer.py       keyframe codes
    motion_tokenizer      examples/train_motion_tokenizer.py       motion codes
    motion_ids            datasets/prepare_video_text.py           the same rows with their motion token ids
    assemble              examples/assemble_checkpoint.py          + a new LLM, detokenizer networks, text tokenizer
    keyframe_detokenizer  examples/train_keyframe_detokenizer.py
    video_detokenizer     examples/train_video_detokenizer.py
    install_detokenizers  (here)                                   the trained detokenizers into the checkpoint
    pretrain              examples/pretrain.py                     stage 2: both orders of every video-text pair
    sft                   examples/sft.py                          stage 3: TRL SFTTrainer + LoRA, then merged
    vae_image_refine      examples/train_autoencoder.py            the image VAE trained further (lower rate)
    keyframe_detokenizer_refine                                    the keyframe detokenizer trained further on it
                          examples/train_keyframe_detokenizer.py
    vae_video_refine      examples/train_autoencoder.py            the video VAE trained further (L2 loss)
    video_detokenizer_refine                                       the video detokenizer trained further on it
                          examples/train_video_detokenizer.py
    package               (here)                                   the final folder (``--out``), refined parts in
    evaluate              vlavit evaluate shapes-qa/-t2v/-i2v, reconstruction (and QA before SFT)
    card                  (here)                                   the model card with the measured figures

The refine stages come after the language model because nothing it learned depends on them: the VAEs and
U-Nets only turn visual and motion codes into pixels. They continue the first schedules of those parts where
these were found to be the bottleneck of generation (see the README's Video-LaVIT-Shapes section).

Seeds are fixed. A stage whose output is complete is skipped, so an interrupted recipe resumes where it stopped
(``--force STAGE`` reruns one; long stages also resume from their own checkpoints). Each stage's wall time, its
command and its log file go to ``WORK/recipe.json``; the logs to ``WORK/logs/<stage>.log``.

Usage::

    python examples/recipes/train_shapes.py --work-dir runs/shapes --out models/video-lavit-shapes
    python examples/recipes/train_shapes.py --work-dir runs/smoke --out runs/smoke/model --smoke   # every stage, tiny
    python examples/recipes/train_shapes.py --work-dir runs/shapes --device cuda ...               # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers_vlavit.layout import DETOKENIZER_FOLDER, KEYFRAME_FOLDER, VIDEO_FOLDER
from transformers_vlavit.machine import describe_machine

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "examples" / "configs" / "shapes"
STAGES = (
    "world",
    "video_text",
    "instructions",
    "vae_image",
    "vae_video",
    "visual_tokenizer",
    "motion_tokenizer",
    "motion_ids",
    "assemble",
    "keyframe_detokenizer",
    "video_detokenizer",
    "install_detokenizers",
    "pretrain",
    "sft",
    "vae_image_refine",
    "keyframe_detokenizer_refine",
    "vae_video_refine",
    "video_detokenizer_refine",
    "package",
    "evaluate",
    "card",
)


# the VAE component of a detokenizer pipeline folder (diffusers' name, as in its model_index.json)
VAE_FOLDER = "vae"
CHECKPOINT_FILES = shutil.ignore_patterns("checkpoint*", "checkpoints", "*.log")


class RecipeError(RuntimeError):
    """A stage failed or the recipe's settings are wrong; the message names the stage and its log."""


@dataclass
class Recipe:
    """The settings of one run of the recipe.

    Attributes:
        work_dir: folder of every intermediate output (world, data, stage-1 parts, checkpoints, logs).
        out: the final model folder.
        settings: `recipe.json` with the smoke overrides applied when `smoke`.
        settings_path: where `settings` come from; re-read before every stage, so that the schedule of the
            stages still to come can be changed while a long recipe runs.
        device: `cpu` or `cuda` (passed to every stage).
        num_proc: processes for world generation and data preparation.
        smoke: tiny step counts and world (a check that every stage runs, not a model).
        log: the record written to `work_dir/recipe.json` (stage -> wall seconds, command, log).
    """

    work_dir: Path
    out: Path
    settings: dict
    settings_path: Path | None = None
    device: str = "cpu"
    num_proc: int = 2
    smoke: bool = False
    log: dict = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.work_dir.joinpath(*parts)

    @property
    def world(self) -> Path:
        return self.path("world")

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])


def load_settings(path: Path, smoke: bool) -> dict:
    """`recipe.json`, with its `smoke` section merged over the stages when `smoke` (the section is dropped)."""
    settings = json.loads(Path(path).read_text())
    overrides = settings.pop("smoke", {})
    if smoke:
        for stage, values in overrides.items():
            settings.setdefault(stage, {}).update(values)
    return settings


def options(values: dict, dashed: bool = False) -> list[str]:
    """`{"max_steps": 5, "flag": True}` -> `["--max_steps", "5", "--flag"]` (None values are left out)."""
    argv = []
    for key, value in values.items():
        if value is None or value is False:
            continue
        name = "--" + (key.replace("_", "-") if dashed else key)
        argv += [name] if value is True else [name, str(value)]
    return argv


def script(relative: str) -> list[str]:
    return [sys.executable, str(ROOT / relative)]


def vlavit(*arguments: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from transformers_vlavit.cli import main; sys.exit(main())", *arguments]


def run(recipe: Recipe, stage: str, command: list[str]) -> None:
    """Run one command of `stage`, its output appended to `logs/<stage>.log`; raise `RecipeError` on failure."""
    log_path = recipe.path("logs", f"{stage}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ)
    environment.setdefault("TOKENIZERS_PARALLELISM", "false")
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment)
    recipe.log.setdefault(stage, {}).setdefault("commands", []).append(" ".join(command[1:]))
    if code != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
        raise RecipeError(f"stage {stage!r} failed (exit {code}); log {log_path}:\n{tail}")


# ----------------------------------------------------------------------------------------------- the stages
def stage_world(recipe: Recipe) -> None:
    world = recipe.settings["world"]
    run(recipe, "world", script("datasets/make_shapes_world.py") + [
        "--out", str(recipe.world), "--num-videos", str(world["num_videos"]), "--size", str(world["size"]),
        "--seed", str(recipe.seed), "--num-proc", str(recipe.num_proc),
    ])


def stage_video_text(recipe: Recipe) -> None:
    run(recipe, "video_text", script("datasets/prepare_video_text.py") + [
        "--input", str(recipe.world / "train_video_text.csv"), "--out", str(recipe.path("data", "video_text")),
        "--num-proc", str(recipe.num_proc),
    ])


def stage_instructions(recipe: Recipe) -> None:
    run(recipe, "instructions", script("datasets/prepare_instructions.py") + [
        "--input", str(recipe.world / "train_instructions.json"), "--out", str(recipe.path("data", "instructions")),
        "--num-proc", str(recipe.num_proc),
    ])


def accelerate_device(recipe: Recipe) -> list[str]:
    return ["--cpu"] if recipe.device == "cpu" else []


def stage_vae(recipe: Recipe, kind: str, refine: bool = False) -> None:
    """A new autoencoder from its config (`vae_<kind>`), or with `refine` the trained one trained further on
    its own schedule and a new data order, seed + 1 (`vae_<kind>_refine`)."""
    first = f"vae_{kind}"
    stage = f"{first}_refine" if refine else first
    if refine:
        start = ["--model_name_or_path", str(recipe.path(first))]
    else:
        start = ["--config", str(CONFIGS / f"{first}.json")]
    run(recipe, stage, script("examples/train_autoencoder.py") + [
        "--kind", kind, *start, "--videos", str(recipe.world / "videos" / "train"),
        "--validation-videos", str(recipe.world / "videos" / "validation"),
        "--resolution", str(recipe.settings["world"]["size"]), "--output-dir", str(recipe.path(stage)),
        "--seed", str(recipe.seed + int(refine)), "--resume-from-checkpoint", "latest",
        *options(recipe.settings[stage], dashed=True),
    ])


def stage_visual_tokenizer(recipe: Recipe) -> None:
    run(recipe, "visual_tokenizer", script("examples/train_visual_tokenizer.py") + [
        "--config", str(CONFIGS / "visual_tokenizer.json"), "--videos", str(recipe.world / "videos" / "train"),
        "--output-dir", str(recipe.path("visual_tokenizer")), "--seed", str(recipe.seed),
        "--resume-from-checkpoint", "latest", *options(recipe.settings["visual_tokenizer"], dashed=True),
    ])


def stage_motion_tokenizer(recipe: Recipe) -> None:
    run(recipe, "motion_tokenizer", script("examples/train_motion_tokenizer.py") + [
        "--dataset", str(recipe.path("data", "video_text")), "--config", str(CONFIGS / "motion_tokenizer.json"),
        "--output-dir", str(recipe.path("motion_tokenizer")), "--seed", str(recipe.seed),
        "--resume-from-checkpoint", "latest", *accelerate_device(recipe),
        *options(recipe.settings["motion_tokenizer"], dashed=True),
    ])


def stage_motion_ids(recipe: Recipe) -> None:
    """The video-text rows again, with `motion_token_ids` of the trained tokenizer (pre-training then reads
    the ids instead of running the motion tokenizer on every step)."""
    run(recipe, "motion_ids", script("datasets/prepare_video_text.py") + [
        "--input", str(recipe.world / "train_video_text.csv"), "--out", str(recipe.path("data", "video_text_ids")),
        "--num-proc", str(recipe.num_proc), "--motion-tokenizer", str(recipe.path("motion_tokenizer")),
        "--device", recipe.device,
    ])


def stage_assemble(recipe: Recipe) -> None:
    run(recipe, "assemble", script("examples/assemble_checkpoint.py") + [
        "--config", str(CONFIGS / "model.json"),
        "--visual-tokenizer", str(recipe.path("visual_tokenizer")),
        "--motion-tokenizer", str(recipe.path("motion_tokenizer")),
        "--keyframe-vae", str(recipe.path("vae_image")), "--video-vae", str(recipe.path("vae_video")),
        "--text-corpus", str(recipe.world / "train_video_text.csv"), str(recipe.world / "train_instructions.json"),
        "--output-dir", str(recipe.path("assembled")), "--seed", str(recipe.seed), "--overwrite",
    ])


def detokenizer_data(recipe: Recipe, kind: str) -> list[str]:
    """The data arguments of the `kind` detokenizer's trainer: the keyframe rows, or the training videos."""
    if kind == KEYFRAME_FOLDER:
        return ["--dataset", str(recipe.path("data", "video_text"))]
    return ["--videos", str(recipe.world / "videos" / "train")]


def stage_detokenizer(recipe: Recipe, kind: str) -> None:
    stage = f"{kind}_detokenizer"
    run(recipe, stage, script(f"examples/train_{stage}.py") + [
        "--pipeline", str(recipe.path("assembled", "detokenizer", kind)), *detokenizer_data(recipe, kind),
        "--resolution", str(recipe.settings["world"]["size"]), "--output_dir", str(recipe.path(stage)),
        "--seed", str(recipe.seed), "--resume_from_checkpoint", "latest",
        *options(recipe.settings[stage]),
    ])


def stage_install_detokenizers(recipe: Recipe) -> None:
    """Replace the assembled checkpoint's (untrained) detokenizers by the trained pipelines."""
    for kind in (KEYFRAME_FOLDER, VIDEO_FOLDER):
        trained, target = recipe.path(f"{kind}_detokenizer"), recipe.path("assembled", DETOKENIZER_FOLDER, kind)
        shutil.rmtree(target)
        shutil.copytree(trained, target, ignore=CHECKPOINT_FILES)


def trainer_device(recipe: Recipe) -> list[str]:
    return ["--use_cpu"] if recipe.device == "cpu" else []


def trainer_resume(output: Path) -> list[str]:
    """`--resume_from_checkpoint` with the newest `checkpoint-N` of a Trainer's `output` folder, or nothing.

    The path, not `true`: `TrainingArguments.resume_from_checkpoint` is a string, and the Trainer reads
    `"true"` from the command line as a folder name (`Can't find a valid checkpoint at true`)."""
    from transformers.trainer_utils import get_last_checkpoint  # noqa: PLC0415 (keeps `--help` fast)

    last = get_last_checkpoint(str(output)) if output.is_dir() else None
    return ["--resume_from_checkpoint", last] if last else []


def stage_pretrain(recipe: Recipe) -> None:
    output = recipe.path("pretrain")
    resume = trainer_resume(output)
    run(recipe, "pretrain", script("examples/pretrain.py") + [
        "--model", str(recipe.path("assembled")), "--video_text", str(recipe.path("data", "video_text_ids")),
        "--output_dir", str(output), "--seed", str(recipe.seed), "--report_to", "none",
        "--save_total_limit", "1", "--dataloader_num_workers", "0", *trainer_device(recipe), *resume,
        *options(recipe.settings["pretrain"]),
    ])


def stage_sft(recipe: Recipe) -> None:
    output = recipe.path("sft")
    settings = dict(recipe.settings["sft"])
    resume = trainer_resume(output)
    run(recipe, "sft", script("examples/sft.py") + [
        "--model", str(recipe.path("pretrain")), "--train_data", str(recipe.path("data", "instructions")),
        "--use_lora", "--output_dir", str(output), "--merged_output_dir", str(recipe.path("sft_merged")),
        "--seed", str(recipe.seed), "--report_to", "none", "--save_total_limit", "1",
        "--bf16", "false", "--gradient_checkpointing", "false", *trainer_device(recipe), *resume,
        *options(settings),
    ])


def stage_detokenizer_refine(recipe: Recipe, kind: str) -> None:
    """The trained `kind` detokenizer, its VAE replaced by the refined one, trained further on that VAE."""
    first = f"{kind}_detokenizer"
    stage = f"{first}_refine"
    vae = recipe.path("vae_image_refine" if kind == KEYFRAME_FOLDER else "vae_video_refine")
    start = recipe.path(f"{stage}_start")
    if start.exists():
        shutil.rmtree(start)
    shutil.copytree(recipe.path(first), start, ignore=CHECKPOINT_FILES)
    shutil.rmtree(start / VAE_FOLDER)
    shutil.copytree(vae, start / VAE_FOLDER, ignore=CHECKPOINT_FILES)
    run(recipe, stage, script(f"examples/train_{first}.py") + [
        "--pipeline", str(start), *detokenizer_data(recipe, kind),
        "--resolution", str(recipe.settings["world"]["size"]), "--output_dir", str(recipe.path(stage)),
        "--seed", str(recipe.seed + 1), "--resume_from_checkpoint", "latest",
        *options(recipe.settings[stage]),
    ])


def stage_package(recipe: Recipe) -> None:
    """Copy the merged model (root: LLM + tokenizers + processor; `detokenizer/`) to `--out`, with the refined
    keyframe and video detokenizers in place of the first ones."""
    source = recipe.path("sft_merged")
    if recipe.out.exists():
        shutil.rmtree(recipe.out)
    shutil.copytree(source, recipe.out, ignore=shutil.ignore_patterns("checkpoint-*", "training_args.bin"))
    for kind in (KEYFRAME_FOLDER, VIDEO_FOLDER):
        target = recipe.out / DETOKENIZER_FOLDER / kind
        shutil.rmtree(target)
        shutil.copytree(recipe.path(f"{kind}_detokenizer_refine"), target, ignore=CHECKPOINT_FILES)


def stage_evaluate(recipe: Recipe) -> None:
    settings = recipe.settings["evaluate"]
    size = str(recipe.settings["world"]["size"])
    evaluation = recipe.path("evaluation")

    def limit(key: str) -> list[str]:
        return [] if settings.get(key) is None else ["--limit", str(settings[key])]

    def evaluate(task: str, model: Path, name: str, *extra: str) -> None:
        run(recipe, "evaluate", vlavit(
            "evaluate", task, "--model", str(model), "--out", str(evaluation / name), "--device", recipe.device,
            *extra,
        ))

    world = ["--annotations", str(recipe.world)]
    qa = [*world, *limit("qa_limit"), "--max-new-tokens", "8", "--min-new-tokens", "1"]
    evaluate("shapes-qa", recipe.out, "qa", *qa)
    evaluate("shapes-qa", recipe.path("pretrain"), "qa_before_sft", *qa)
    generation = [
        "--steps", str(settings["steps"]), "--keyframe-steps", str(settings["keyframe_steps"]),
        "--height", size, "--width", size, "--seed", str(recipe.seed),
    ]
    evaluate("shapes-t2v", recipe.out, "t2v", *world, *limit("t2v_limit"), *generation)
    evaluate("shapes-i2v", recipe.out, "i2v", *world, *limit("i2v_limit"), *generation)
    evaluate(
        "reconstruction", recipe.out, "reconstruction", "--video-root", str(recipe.world / "videos" / "test"),
        *limit("reconstruction_limit"), *generation,
    )


def stage_card(recipe: Recipe) -> None:
    from model_card import write_model_card  # noqa: PLC0415 (this folder is on sys.path when run as a script)

    write_model_card(recipe.out, recipe.path("evaluation"), recipe.path("recipe.json"), recipe.settings)


RUNNERS = {
    "world": stage_world,
    "video_text": stage_video_text,
    "instructions": stage_instructions,
    "vae_image": lambda recipe: stage_vae(recipe, "image"),
    "vae_video": lambda recipe: stage_vae(recipe, "video"),
    "visual_tokenizer": stage_visual_tokenizer,
    "motion_tokenizer": stage_motion_tokenizer,
    "motion_ids": stage_motion_ids,
    "assemble": stage_assemble,
    "keyframe_detokenizer": lambda recipe: stage_detokenizer(recipe, "keyframe"),
    "video_detokenizer": lambda recipe: stage_detokenizer(recipe, "video"),
    "install_detokenizers": stage_install_detokenizers,
    "pretrain": stage_pretrain,
    "sft": stage_sft,
    "vae_image_refine": lambda recipe: stage_vae(recipe, "image", refine=True),
    "keyframe_detokenizer_refine": lambda recipe: stage_detokenizer_refine(recipe, KEYFRAME_FOLDER),
    "vae_video_refine": lambda recipe: stage_vae(recipe, "video", refine=True),
    "video_detokenizer_refine": lambda recipe: stage_detokenizer_refine(recipe, VIDEO_FOLDER),
    "package": stage_package,
    "evaluate": stage_evaluate,
    "card": stage_card,
}


def done_marker(recipe: Recipe, stage: str) -> Path:
    return recipe.path("done", f"{stage}.json")


def invalidate_after(recipe: Recipe, stage: str) -> None:
    """Forget that `stage` and every later stage finished (their outputs are rebuilt from the new inputs)."""
    for later in STAGES[STAGES.index(stage):]:
        done_marker(recipe, later).unlink(missing_ok=True)


def run_recipe(recipe: Recipe, stages: list[str] | None = None, force: list[str] | None = None) -> dict:
    """Run the stages in order, skipping finished ones; returns the record of `work_dir/recipe.json`.

    Args:
        recipe: the settings of the run.
        stages: run only these (in recipe order); default all.
        force: rerun these stages and every stage after them.
    """
    record_path = recipe.path("recipe.json")
    recipe.work_dir.mkdir(parents=True, exist_ok=True)
    if record_path.exists():
        recipe.log.update(json.loads(record_path.read_text()).get("stages", {}))
    for stage in force or []:
        invalidate_after(recipe, stage)
    selected = [stage for stage in STAGES if stages is None or stage in stages]
    for stage in selected:
        marker = done_marker(recipe, stage)
        if marker.exists():
            continue
        if recipe.settings_path is not None:
            recipe.settings = load_settings(recipe.settings_path, recipe.smoke)
        recipe.log[stage] = {"commands": []}
        start = time.perf_counter()
        RUNNERS[stage](recipe)
        recipe.log[stage]["wall_seconds"] = round(time.perf_counter() - start, 1)
        recipe.log[stage]["log"] = str(recipe.path("logs", f"{stage}.log"))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(recipe.log[stage], indent=1))
        record = {
            "device": recipe.device,
            "smoke": recipe.smoke,
            "machine": describe_machine(),
            "stages": recipe.log,
            "total_wall_seconds": round(sum(s.get("wall_seconds", 0) for s in recipe.log.values()), 1),
        }
        record_path.write_text(json.dumps(record, indent=1))
    return recipe.log


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", required=True, type=Path, help="folder of intermediate outputs and logs")
    parser.add_argument("--out", required=True, type=Path, help="the final model folder")
    parser.add_argument("--settings", type=Path, default=CONFIGS / "recipe.json", help="recipe settings (JSON)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every stage trains")
    parser.add_argument("--num-proc", type=int, default=2, help="processes of world generation / data prep")
    parser.add_argument("--smoke", action="store_true", help="tiny world and step counts: check every stage runs")
    parser.add_argument("--stages", nargs="+", choices=STAGES, help="run only these stages")
    parser.add_argument("--force", nargs="+", choices=STAGES, default=[], help="rerun these and later stages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 1 when a stage fails (its log's end goes to standard error)."""
    args = parse_args(argv)
    recipe = Recipe(
        work_dir=args.work_dir.resolve(),
        out=args.out.resolve(),
        settings=load_settings(args.settings, args.smoke),
        settings_path=args.settings,
        device=args.device,
        num_proc=args.num_proc,
        smoke=args.smoke,
    )
    try:
        log = run_recipe(recipe, args.stages, args.force)
    except RecipeError as error:
        print(f"train_shapes: {error}", file=sys.stderr)
        return 1
    total = sum(stage.get("wall_seconds", 0) for stage in log.values())
    print(f"recipe finished in {total / 60:.1f} min of stage time; model in {recipe.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
