"""The tiny checkpoint loads as transformers remote code in a process where the project cannot be imported."""

from __future__ import annotations

import json
import textwrap

import pytest

from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

# Runs through `run_without_project`: only the files that save_pretrained copied next to the weights
# can make the model and the processor work.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

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


def test_save_pretrained_copies_every_code_file(remote_checkpoint, imports_project):
    checkpoint, _ = remote_checkpoint
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_video_lavit.VideoLaVITConfig",
        "AutoModelForCausalLM": "modeling_video_lavit.VideoLaVITForCausalLM",
        # the standard understanding pipelines ("image-text-to-text", "any-to-any") load these
        "AutoModelForImageTextToText": "modeling_video_lavit.VideoLaVITForCausalLM",
        "AutoModelForMultimodalLM": "modeling_video_lavit.VideoLaVITForCausalLM",
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
        assert not imports_project(code_file.read_text()), code_file


def test_remote_code_processor_and_generate_without_the_package(remote_checkpoint, run_without_project):
    checkpoint, videos = remote_checkpoint
    result = run_without_project(REMOTE_SCRIPT, checkpoint, *videos)
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
