"""Shared fixtures: the golden reference folder and small helpers every test module may use."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

# Tiny models on a 2-core machine run fastest single-threaded; subprocesses (CLI, accelerate launch)
# inherit the environment variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# transformers and diffusers copy remote code of every local folder into one shared modules cache, where
# files of the same name from other checkouts on this machine would replace ours: use a private one
if "HF_MODULES_CACHE" not in os.environ:
    os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="vlavit-hf-modules-")
    atexit.register(shutil.rmtree, os.environ["HF_MODULES_CACHE"], ignore_errors=True)
torch = pytest.importorskip("torch")
torch.set_num_threads(1)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def golden_path() -> Path:
    """Folder of the original implementation's reference outputs (``$VLAVIT_GOLDEN_DIR``)."""
    return Path(os.environ.get("VLAVIT_GOLDEN_DIR", PROJECT_ROOT.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden folder; skips the requesting test with the reason when it is missing."""
    path = golden_path()
    if not path.is_dir():
        pytest.skip(f"golden reference folder not found at {path} (set VLAVIT_GOLDEN_DIR)")
    return path


@pytest.fixture(scope="session")
def golden_file(golden_dir):
    """Return a loader ``name -> (tensors, description)`` for ``<golden>/<name>.safetensors``."""
    import json

    from safetensors import safe_open

    def load(name: str):
        path = golden_dir / f"{name}.safetensors"
        if not path.is_file():
            pytest.skip(f"golden file {path} is missing")
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = handle.metadata() or {}
        return tensors, json.loads(metadata.get("description", "{}"))

    return load


PROJECT_PACKAGES = ("transformers_vlavit", "diffusers_vlavit")

# Prepended to the scripts of `run_without_project`: any import of our packages fails in that
# interpreter, so only code that save_pretrained copied next to the weights can run. The scripts may
# use `BLOCKED` (the blocked package names).
_BLOCK_PROJECT_IMPORTS = textwrap.dedent(
    f"""
    import importlib.abc
    import sys

    BLOCKED = {PROJECT_PACKAGES!r}


    class BlockProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked: remote code must not need it")
            return None


    sys.meta_path.insert(0, BlockProject())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    """
)


@pytest.fixture(scope="session")
def run_without_project():
    """Run ``(script, *args)`` in a fresh Python where our packages cannot be imported.

    Returns the ``subprocess.CompletedProcess`` (text stdout/stderr); the script gets ``args`` as
    ``sys.argv[1:]``.
    """

    def run(script: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        code = _BLOCK_PROJECT_IMPORTS + textwrap.dedent(script)
        command = [sys.executable, "-c", code, *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    return run


@pytest.fixture(scope="session")
def imports_project():
    """``source text -> bool``: whether Python source imports one of our packages."""
    pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(PROJECT_PACKAGES)})\b", re.MULTILINE)
    return lambda source: bool(pattern.search(source))


# Runs through `run_without_project` on a checkpoint folder: every entry point a hub user has, with
# deprecation warnings raised from the folder's copies of our code (transformers_modules / diffusers_modules)
# and transformers' deprecation log messages collected. argv: folder, video, "run" or "load" (load only:
# for checkpoints too large to generate with in a test).
_HUB_FOLDER_SCRIPT = """
import json
import logging
import sys
import warnings

for category in (FutureWarning, DeprecationWarning):
    warnings.filterwarnings("error", category=category, module=r"(transformers|diffusers)_modules\\.")

import torch
from diffusers import DiffusionPipeline
from transformers import AutoModelForCausalLM, AutoProcessor, pipeline
from transformers.utils import logging as hf_logging

folder, video, mode = sys.argv[1:4]
deprecations = []


class Deprecations(logging.Handler):
    def emit(self, record):
        if "deprecat" in record.getMessage().lower():
            deprecations.append(record.getMessage())


hf_logging.get_logger().addHandler(Deprecations())
report = {"mode": mode}
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
report["model"] = type(model).__module__
report["processor"] = type(processor).__module__
question = [{"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": "What moves?"}]}]
fast = dict(num_inference_steps=1, keyframe_num_inference_steps=2, height=32, width=32,
            keyframe_height=32, keyframe_width=32)
for task in ("text-to-video", None):
    pipe = pipeline(task, model=folder, trust_remote_code=True) if task else pipeline(model=folder, trust_remote_code=True)
    entry = {"task": pipe.task, "class": type(pipe).__module__ + "." + type(pipe).__name__,
             "detokenizer": type(pipe.detokenizer).__module__}
    if mode == "run":
        pipe.detokenizer.set_progress_bar_config(disable=True)
        result = pipe("a red ball", generator=torch.Generator().manual_seed(0), **fast)
        entry["frames"], entry["fps"] = len(result["frames"]), result["fps"]
    report[task or "inferred"] = entry
for name in ("keyframe", "video"):
    detokenizer = DiffusionPipeline.from_pretrained(f"{folder}/detokenizer/{name}", trust_remote_code=True)
    report[name] = {"class": type(detokenizer).__module__,
                    "components": sorted({type(c).__module__.split(".")[0] for c in detokenizer.components.values()
                                          if c is not None})}
    if mode == "run" and name == "keyframe":
        detokenizer.set_progress_bar_config(disable=True)
        codes = [torch.arange(6) % detokenizer.visual_tokenizer.config.codebook_size]
        report[name]["size"] = detokenizer(token_ids=codes, height=32, width=32, num_inference_steps=2).images[0].size
understanding = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
report["image-text-to-text"] = {"class": type(understanding.model).__module__}
if mode == "run":
    answer = understanding(text=question, max_new_tokens=3, return_tensors=True, do_sample=False)
    inputs = processor.apply_chat_template(question, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    direct = model.generate(**inputs, max_new_tokens=3, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    # token ids, not text: random tiny tokenizers decode to broken bytes that defeat the pipeline's prompt cut
    report["image-text-to-text"]["answer"] = answer[0]["generated_token_ids"][-len(direct):].tolist()
    report["image-text-to-text"]["direct"] = direct.tolist()
report["deprecations"] = sorted(set(deprecations))
report["loaded_project"] = sorted({n.split(".")[0] for n in sys.modules if n.split(".")[0] in BLOCKED})
print(json.dumps(report))
"""


@pytest.fixture(scope="session")
def check_hub_folder(run_without_project, tmp_path_factory):
    """``(folder, mode="run") -> report``: every hub entry point on ``folder`` with our packages blocked.

    Asserts that the script succeeded, that no project module was imported, that the model, processor and
    pipelines are the folder's own code, and that no deprecation was reported; returns the JSON report.
    """
    from transformers_vlavit.synthetic_video import write_synthetic_video

    video = tmp_path_factory.mktemp("hub_video") / "clip.mp4"
    write_synthetic_video(video, width=96, height=64, duration=4.0, fps=12, seed=0)

    def check(folder, mode: str = "run") -> dict:
        import json

        result = run_without_project(_HUB_FOLDER_SCRIPT, folder, video, mode)
        assert result.returncode == 0, result.stderr[-4000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["loaded_project"] == []
        assert report["deprecations"] == []
        for module in (report["model"], report["processor"], report["image-text-to-text"]["class"]):
            assert module.startswith("transformers_modules."), module
        for task in ("text-to-video", "inferred"):
            assert report[task]["task"] == "text-to-video"
            assert report[task]["class"].endswith("pipeline_text_to_video.VideoLaVITTextToVideoPipeline")
            assert report[task]["detokenizer"].startswith("diffusers_modules.")
            if mode == "run":
                assert (report[task]["frames"], report[task]["fps"]) == (24, 6)
        for name in ("keyframe", "video"):
            assert report[name]["class"].startswith("diffusers_modules.")
            assert set(report[name]["components"]) <= {"diffusers", "diffusers_modules"}
        if mode == "run":
            assert report["keyframe"]["size"] == [32, 32]
            answer = report["image-text-to-text"]
            assert answer["direct"] and answer["answer"] == answer["direct"]
        return report

    return check
