"""Write the model card (`README.md`, Hugging Face model-card format) of a model trained by `train_shapes.py`.

The card states what the model is, how it was trained (the recipe command, each stage's wall time and its main
settings) and the figures measured by `vlavit evaluate` on the world's test split: video QA (after and before
instruction tuning), text-to-video and image-to-video faithfulness scored by the world's detectors, and the
tokenizer round trip (PSNR). Every figure is read from the evaluation runs' `metrics.json`; nothing is typed in.
"""

from __future__ import annotations

import json
from pathlib import Path

# the thresholds the shapes model is held to (issue 10): group "all" of each evaluation
TARGETS = {
    ("qa", "colour"): 0.90,
    ("qa", "shape"): 0.90,
    ("qa", "direction"): 0.90,
    ("t2v", "colour"): 0.90,
    ("t2v", "shape"): 0.70,
    ("t2v", "direction"): 0.80,
    ("i2v", "direction"): 0.80,
}
PSNR_TARGET_DB = 24.0
GROUP_TITLES = {
    "all": "all",
    "seen": "seen colour x shape",
    "held_out": "held-out colour x shape",
    "one_clip": "one-clip videos",
    "two_clip": "two-clip videos",
}
COLUMNS = ("colour", "shape", "direction", "after", "joint")


def read_metrics(folder: Path) -> dict | None:
    """`folder/metrics.json`, or None when that evaluation did not run."""
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def shapes_groups(metrics: dict | None) -> dict:
    """The per-group accuracies of a shapes run (`{"shapes": {group: {...}}}` as `vlavit evaluate` writes)."""
    if not metrics:
        return {}
    return metrics.get("shapes", metrics)


def accuracy_table(groups: dict) -> list[str]:
    """Markdown rows: one per group, a column per attribute (`n/a` where the group has none)."""
    present = [column for column in COLUMNS if any(column in values for values in groups.values())]
    lines = [
        "| items | " + " | ".join(present) + " |",
        "| --- | " + " | ".join("---" for _ in present) + " |",
    ]
    for group, values in groups.items():
        cells = []
        for column in present:
            if column in values:
                cells.append(f"{100 * values[column]:.1f}% (n={values['counts'][column]})")
            else:
                cells.append("n/a")
        lines.append(f"| {GROUP_TITLES.get(group, group)} | " + " | ".join(cells) + " |")
    return lines


def target_lines(results: dict[str, dict], psnr: float | None) -> list[str]:
    """One line per threshold: the target, the measured figure and whether it is met."""
    lines = ["| requirement | target | measured | met |", "| --- | --- | --- | --- |"]
    for (task, attribute), target in TARGETS.items():
        value = results.get(task, {}).get("all", {}).get(attribute)
        shown = "not measured" if value is None else f"{100 * value:.1f}%"
        met = "-" if value is None else ("yes" if value >= target else "**no**")
        lines.append(f"| {task} {attribute} | >= {100 * target:.0f}% | {shown} | {met} |")
    shown = "not measured" if psnr is None else f"{psnr:.2f} dB"
    met = "-" if psnr is None else ("yes" if psnr >= PSNR_TARGET_DB else "**no**")
    lines.append(f"| reconstruction PSNR | >= {PSNR_TARGET_DB:.0f} dB | {shown} | {met} |")
    return lines


def reconstruction_psnr(metrics: dict | None) -> float | None:
    """Mean PSNR over all frames of the reconstruction run (None when it did not run)."""
    if not metrics:
        return None
    for key in ("psnr", "psnr_mean", "mean_psnr"):
        if key in metrics:
            return float(metrics[key])
    return None


def stage_table(record: dict) -> list[str]:
    """Markdown rows: stage, wall time (minutes)."""
    lines = ["| stage | wall time |", "| --- | --- |"]
    total = 0.0
    for stage, values in record.get("stages", {}).items():
        seconds = values.get("wall_seconds")
        if seconds is None:
            continue
        total += seconds
        lines.append(f"| {stage} | {seconds / 60:.1f} min |")
    lines.append(f"| **total** | **{total / 60:.1f} min** |")
    return lines


def write_model_card(model_dir: Path, evaluation_dir: Path, record_path: Path, settings: dict) -> Path:
    """Write `model_dir/README.md` from the evaluation runs and the recipe record; returns its path.

    Args:
        model_dir: the final model folder.
        evaluation_dir: the folder with the `qa`, `qa_before_sft`, `t2v`, `i2v` and `reconstruction` runs.
        record_path: `recipe.json` of the run (stage wall times, machine).
        settings: the recipe settings the run used (step counts, batch sizes, learning rates).
    """
    model_dir, evaluation_dir = Path(model_dir), Path(evaluation_dir)
    record = json.loads(Path(record_path).read_text()) if Path(record_path).exists() else {}
    results = {
        name: shapes_groups(read_metrics(evaluation_dir / name)) for name in ("qa", "qa_before_sft", "t2v", "i2v")
    }
    psnr = reconstruction_psnr(read_metrics(evaluation_dir / "reconstruction"))
    size_mb = sum(path.stat().st_size for path in model_dir.rglob("*") if path.is_file()) / 2**20
    steps = {
        stage: values.get("max_steps")
        for stage, values in settings.items()
        if isinstance(values, dict) and "max_steps" in values
    }
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-to-video",
        "license: apache-2.0",
        "tags:",
        "- video-lavit",
        "- video-language-model",
        "- text-to-video",
        "- video-question-answering",
        "- synthetic-data",
        "---",
        "",
        "# Video-LaVIT-Shapes",
        "",
        "A small Video-LaVIT (a video-language model that tokenizes each clip into one keyframe plus its MPEG-4 motion",
        "vectors) trained from scratch, every component, on the synthetic *shapes* world of this project: one",
        "coloured circle, square or triangle moving left, right, up or down (or staying still) on a dark background,",
        f"{settings['world']['size']}x{settings['world']['size']} pixels. It answers questions about such videos and",
        "generates them from text or from a first frame. It knows nothing else: it is the project's proof that the",
        "recipe learns, and the model its demo runs, not a general-purpose model.",
        "",
        f"Size on disk: {size_mb:.1f} MB (safetensors).",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoProcessor, pipeline",
        "",
        'model = AutoModelForCausalLM.from_pretrained("models/video-lavit-shapes", trust_remote_code=True)',
        'processor = AutoProcessor.from_pretrained("models/video-lavit-shapes", trust_remote_code=True)',
        'text_to_video = pipeline("text-to-video", model="models/video-lavit-shapes", trust_remote_code=True)',
        "```",
        "",
        "or `vlavit ask --model models/video-lavit-shapes VIDEO \"What colour is the object?\"` and",
        '`vlavit generate --model models/video-lavit-shapes "a red circle moves to the left" --out out.mp4`.',
        "",
        "## Training",
        "",
        "Every stage is one script of the project, in order (`examples/recipes/train_shapes.py`, settings in",
        "`examples/configs/shapes/`): world generation, data preparation, the two autoencoders, the visual and",
        "motion tokenizers, assembly with a new language model and text tokenizer, the keyframe and video",
        "detokenizers, stage-2 pre-training (video-text pairs in both orders), stage-3 instruction tuning with TRL's",
        "`SFTTrainer` and a LoRA adapter (merged), evaluation. Reproduce with",
        "",
        "```bash",
        "make shapes-model",
        "```",
        "",
        f"Machine: {record.get('machine', 'unknown')}; device `{record.get('device', 'cpu')}`. Optimizer steps: "
        + ", ".join(f"{stage} {count}" for stage, count in steps.items())
        + ".",
        "",
        *stage_table(record),
        "",
        "## Evaluation (test split of the world)",
        "",
        "Measured with `vlavit evaluate shapes-qa / shapes-t2v / shapes-i2v / reconstruction` on the world's test",
        "split; held-out colour x shape combinations (never seen in training) are reported separately. Generated",
        "videos are scored by the world's own detectors (`transformers_vlavit.shapes.detect_video`).",
        "",
        *target_lines(results, psnr),
        "",
    ]
    for name, title in (
        ("qa", "Video QA after instruction tuning (exact answer after normalisation)"),
        ("qa_before_sft", "Video QA of the pre-trained model, before instruction tuning"),
        ("t2v", "Text-to-video, attributes detected in the generated frames"),
        ("i2v", "Image-to-video (a test keyframe and a direction prompt)"),
    ):
        lines += [f"### {title}", ""]
        lines += accuracy_table(results[name]) if results[name] else ["not measured"]
        lines.append("")
    lines += [
        "### Tokenizer round trip",
        "",
        "not measured" if psnr is None else f"Mean PSNR of test clips through `vlavit reconstruct`: {psnr:.2f} dB.",
        "",
        "## Limits",
        "",
        "- Only the shapes world: one object, six colours, three shapes, four directions or still, dark backgrounds.",
        "- Trained on a CPU with short schedules; the figures above are what it reaches, thresholds not met are",
        "  marked **no**.",
        "- The visual tokenizer's frozen ViT is a small random network (no pre-trained weights were used anywhere).",
        "",
    ]
    path = model_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
