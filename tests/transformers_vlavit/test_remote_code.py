"""The tiny checkpoint loads as transformers remote code in a process where the project cannot be imported."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

PROJECT_IMPORT = re.compile(r"^\s*(from|import)\s+(transformers_vlavit|diffusers_vlavit)\b", re.MULTILINE)

# Runs in a fresh interpreter: any import of the project's packages fails, so only the files that
# save_pretrained copied next to the weights can make the model and the processor work.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    BLOCKED = ("transformers_vlavit", "diffusers_vlavit")


    class BlockProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: remote code must not need it")
            return None


    sys.meta_path.insert(0, BlockProject())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]

    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor

    checkpoint, first_video, second_video = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True,
        )
        for question in ("What moves?", "Describe the clip in a few words.")
    ]
    inputs = processor(text=prompts, videos=[first_video, second_video], return_tensors="pt", padding=True)
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    print(json.dumps({
        "model_module": type(model).__module__,
        "processor_module": type(processor).__module__,
        "input_ids": list(inputs["input_ids"].shape),
        "clips_per_video": inputs["clips_per_video"].tolist(),
        "new_tokens": new_tokens.tolist(),
        "text_vocab_size": model.config.text_vocab_size,
        "loaded_project": sorted({n.split(".")[0] for n in sys.modules if n.split(".")[0] in BLOCKED}),
    }))
    """
)


@pytest.fixture(scope="module")
def remote_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("remote")
    write_tiny_checkpoint(folder / "checkpoint", with_detokenizers=False)
    videos = []
    for seed, duration in ((0, 4.0), (1, 5.0)):
        path = folder / f"video_{seed}.mp4"
        write_synthetic_video(path, width=96, height=64, duration=duration, fps=12, seed=seed)
        videos.append(path)
    return folder / "checkpoint", videos


def test_save_pretrained_copies_every_code_file(remote_checkpoint):
    checkpoint, _ = remote_checkpoint
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_video_lavit.VideoLaVITConfig",
        "AutoModelForCausalLM": "modeling_video_lavit.VideoLaVITForCausalLM",
    }
    processor_config = json.loads((checkpoint / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_video_lavit.VideoLaVITProcessor"
    for name in (
        "configuration_video_lavit.py",
        "configuration_motion_tokenizer.py",
        "configuration_visual_tokenizer.py",
        "modeling_video_lavit.py",
        "modeling_motion_tokenizer.py",
        "modeling_visual_tokenizer.py",
        "processing_video_lavit.py",
        "image_processing_video_lavit.py",
        "video_decomposition.py",
    ):
        assert (checkpoint / name).is_file(), name
    for code_file in checkpoint.glob("*.py"):
        assert not PROJECT_IMPORT.search(code_file.read_text()), code_file


def test_remote_code_processor_and_generate_without_the_package(remote_checkpoint):
    checkpoint, videos = remote_checkpoint
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(checkpoint), *map(str, videos)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded_project"] == []
    assert not report["model_module"].startswith("transformers_vlavit")
    assert "modeling_video_lavit" in report["model_module"]
    assert "processing_video_lavit" in report["processor_module"]
    assert report["input_ids"][0] == 2
    assert len(report["clips_per_video"]) == 2 and min(report["clips_per_video"]) >= 1
    assert [len(tokens) for tokens in report["new_tokens"]] == [4, 4]
    # answers are text only: no visual or motion ids
    assert all(0 <= token < report["text_vocab_size"] for tokens in report["new_tokens"] for token in tokens)
