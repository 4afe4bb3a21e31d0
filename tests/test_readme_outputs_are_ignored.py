"""Everything the README's commands write inside a clone (data, outputs, checkpoints, videos) is git-ignored."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# output options of the README's commands, and the folders named as their inputs (downloads, checkpoints)
OUTPUT_OPTION = re.compile(
    r"(?:--out|--output-dir|--output_dir|--merged_output_dir|--original|--model|tiny-checkpoint)[ =]([\w./-]+)"
)
PLACEHOLDERS = {"DIR", "RUN", "path/to/motion_tokenizer"}


def readme_output_paths() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    return sorted({path for path in OUTPUT_OPTION.findall(text) if path not in PLACEHOLDERS})


def test_readme_names_the_outputs_this_test_checks():
    paths = readme_output_paths()
    assert {"tiny-video-lavit", "video-lavit-hf", "data/webvid", "outputs/mt_tiny", "recon.mp4"} <= set(paths)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_every_readme_output_is_git_ignored():
    paths = readme_output_paths()
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=PROJECT_ROOT, input="\n".join(paths), capture_output=True, text=True,
    )
    if result.returncode not in (0, 1):
        pytest.skip(f"not a git checkout ({result.stderr.strip()})")
    ignored = set(result.stdout.split())
    # a folder the repository ships on purpose (the trained shapes model, which `make shapes-model` rewrites)
    tracked = subprocess.run(["git", "ls-files", "--", *paths], cwd=PROJECT_ROOT, capture_output=True, text=True)
    shipped = {path for path in paths if any(line.startswith(path.rstrip("/") + "/") for line in tracked.stdout.split())}
    assert [path for path in paths if path not in ignored and path not in shipped] == []
