"""Our code paths use no API that transformers 5.24 / diffusers 0.42.1 deprecate.

pyproject's pytest filters turn deprecation warnings attributed to our modules into errors for the whole
suite; but transformers' `deprecate_kwarg` attributes its FutureWarning to torch's module call, and the
`cache` rename is only logged. So while generation, the pipelines and a training step run, this records
every FutureWarning / DeprecationWarning and fails on those raised from our files (the packages or the
copies that remote code runs) or by `deprecate_kwarg` (a deprecated argument some caller passed: in these
paths, our code or transformers' own `generate`), and on transformers' deprecation log messages.
(Third-party internals, e.g. a NumPy deprecation inside diffusers' scheduler set-up, are not ours.)
"""

from __future__ import annotations

import logging
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import pipeline
from transformers.utils import logging as hf_logging

from diffusers_vlavit import VideoLaVITKeyframePipeline, VideoLaVITVideoPipeline
from transformers_vlavit import VideoLaVITForCausalLM, VideoLaVITProcessor, VideoLaVITTextToVideoPipeline
from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

SOURCE = Path(__file__).resolve().parents[2] / "src"
# transformers.utils.deprecation.deprecate_kwarg's two messages
DEPRECATED_ARGUMENT = re.compile(r"^`\w+` is deprecated .* for `[\w.]+`|^Both `\w+` and `\w+` are set for")
FAST = {"num_inference_steps": 1, "keyframe_num_inference_steps": 2, "height": 32, "width": 32}


class _Deprecations(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        if "deprecat" in record.getMessage().lower():
            self.messages.append(record.getMessage())


def _is_ours(warning: warnings.WarningMessage) -> bool:
    filename = Path(warning.filename).resolve()
    from_our_code = filename.is_relative_to(SOURCE) or any(
        part in ("transformers_modules", "diffusers_modules") for part in filename.parts
    )
    return from_our_code or bool(DEPRECATED_ARGUMENT.search(str(warning.message)))


@contextmanager
def no_deprecations():
    """Fail when the block causes a deprecation (warning or log message) from our code."""
    handler = _Deprecations()
    logger = hf_logging.get_logger()
    logger.addHandler(handler)
    # `warning_once` remembers what it already said in this process; forget it so nothing is hidden
    hf_logging.warning_once.cache_clear()
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        warnings.simplefilter("always", DeprecationWarning)
        yield
    logger.removeHandler(handler)
    found.extend(handler.messages)
    found.extend(
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning)) and _is_ours(w)
    )
    assert found == []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deprecations")
    video = folder / "clip.mp4"
    write_synthetic_video(video, width=96, height=64, duration=4.0, fps=12, seed=0)
    return write_tiny_checkpoint(folder / "tiny"), video


def test_generation_and_a_training_step_use_no_deprecated_api(checkpoint):
    folder, video = checkpoint
    with no_deprecations():
        model = VideoLaVITForCausalLM.from_pretrained(folder).eval()
        processor = VideoLaVITProcessor.from_pretrained(folder)
        question = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
        prompt = processor.apply_chat_template(question, add_generation_prompt=True)
        inputs = processor(text=[prompt], videos=[str(video)], return_tensors="pt", padding=True)
        model.generate(**inputs, max_new_tokens=3, do_sample=False)
        prompt_ids = processor.tokenizer(["a boat"], add_special_tokens=False, return_tensors="pt")
        model.generate_video_tokens(**prompt_ids, num_clips=1, generator=torch.Generator().manual_seed(0))
        model.train()
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()


def test_pipelines_use_no_deprecated_api(checkpoint):
    folder, video = checkpoint
    with no_deprecations():
        text_to_video = pipeline("text-to-video", model=str(folder), pipeline_class=VideoLaVITTextToVideoPipeline)
        text_to_video.detokenizer.set_progress_bar_config(disable=True)
        text_to_video("a red ball", generator=torch.Generator().manual_seed(0), **FAST)
        keyframe = VideoLaVITKeyframePipeline.from_pretrained(folder / "detokenizer" / "keyframe", trust_remote_code=True)
        keyframe.set_progress_bar_config(disable=True)
        keyframe(token_ids=[torch.arange(6)], height=32, width=32, num_inference_steps=2)
        video_pipe = VideoLaVITVideoPipeline.from_pretrained(folder / "detokenizer" / "video", trust_remote_code=True)
        video_pipe.set_progress_bar_config(disable=True)
        motion_ids = torch.zeros(1, video_pipe.motion_tokenizer.config.num_tokens, dtype=torch.long)
        video_pipe(keyframe(token_ids=[torch.arange(6)], height=32, width=32, num_inference_steps=1).images[0],
                   motion_ids=motion_ids, height=32, width=32, num_inference_steps=1)
        understanding = pipeline("image-text-to-text", model=str(folder))
        messages = [{"role": "user", "content": [{"type": "video", "path": str(video)}, {"type": "text", "text": "Why?"}]}]
        understanding(text=messages, max_new_tokens=2, return_full_text=False)
