"""`pipeline("text-to-video")` on the tiny checkpoint, with the packages installed and as remote code."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoProcessor, pipeline

# importing the package registers the "text-to-video" task
from transformers_vlavit import DetokenizerNotFoundError, VideoLaVITTextToVideoPipeline
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

FAST = {
    "num_inference_steps": 1,
    "keyframe_num_inference_steps": 2,
    "height": 32,
    "width": 32,
    "keyframe_height": 32,
    "keyframe_width": 32,
}

# Runs in a fresh interpreter where importing the project's packages fails: only the code that
# save_pretrained wrote next to the weights can build the pipeline.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import torch
    from transformers import pipeline

    folder = sys.argv[1]
    pipe = pipeline("text-to-video", model=folder, trust_remote_code=True)
    # the task can also be left out: the folder's config names its one custom pipeline
    inferred = pipeline(model=folder, trust_remote_code=True)
    pipe.detokenizer.set_progress_bar_config(disable=True)
    fast = dict(num_inference_steps=1, keyframe_num_inference_steps=2, height=32, width=32,
                keyframe_height=32, keyframe_width=32)
    result = pipe("a cat", generator=torch.Generator().manual_seed(0), **fast)
    frames = np.stack([np.asarray(frame) for frame in result["frames"]])
    np.save(sys.argv[2], frames)
    print(json.dumps({
        "pipeline": type(pipe).__module__ + "." + type(pipe).__name__,
        "inferred": [inferred.task, type(inferred).__name__],
        "detokenizer": type(pipe.detokenizer).__module__,
        "components": {name: type(c).__module__ for name, c in pipe.detokenizer.components.items()},
        "num_frames": len(result["frames"]),
        "fps": result["fps"],
        "loaded_project": sorted({n.split(".")[0] for n in sys.modules if n.split(".")[0] in BLOCKED}),
    }))
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("text_to_video") / "tiny")


@pytest.fixture(scope="module")
def pipe(checkpoint):
    # the folder names its own copy of the pipeline as custom code; pipeline_class runs the installed one
    text_to_video = pipeline("text-to-video", model=str(checkpoint), pipeline_class=VideoLaVITTextToVideoPipeline)
    text_to_video.detokenizer.set_progress_bar_config(disable=True)
    return text_to_video


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def as_array(frames: list[PIL.Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(frame) for frame in frames])


def test_task_builds_the_video_lavit_pipeline(pipe, checkpoint):
    assert isinstance(pipe, VideoLaVITTextToVideoPipeline)
    assert pipe.detokenizer.language_model is pipe.model
    assert pipe.detokenizer.processor is pipe.processor


def test_prompt_gives_24_frames_at_6_fps_and_a_list_gives_a_list(pipe):
    single = pipe("a red ball rolls", generator=seeded(), **FAST)
    assert set(single) == {"frames", "fps"}
    assert single["fps"] == 6
    assert len(single["frames"]) == 24
    assert all(isinstance(frame, PIL.Image.Image) and frame.size == (32, 32) for frame in single["frames"])

    several = pipe(["a red ball rolls", "a dog runs"], generator=seeded(), **FAST)
    assert isinstance(several, list) and len(several) == 2
    assert all(len(result["frames"]) == 24 for result in several)


def test_fixed_generator_reproduces_the_video(pipe):
    first = as_array(pipe("waves", generator=seeded(5), **FAST)["frames"])
    again = as_array(pipe("waves", generator=seeded(5), **FAST)["frames"])
    np.testing.assert_array_equal(first, again)


def test_long_video_and_image_to_video_options(pipe):
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    result = pipe(
        {"prompt": "it moves", "image": image},
        num_clips=2,
        motion_guidance_scale=2.0,
        decoder_guidance_scale=1.5,
        top_k=20,
        top_p=0.9,
        negative_prompt="blurry",
        generator=seeded(),
        **FAST,
    )
    assert len(result["frames"]) == 48
    by_keyword = pipe("it moves", image=image, generator=seeded(), output_type="np", **FAST)
    assert by_keyword["frames"].shape == (24, 32, 32, 3)


def test_unknown_option_is_rejected(pipe):
    with pytest.raises(TypeError, match="num_frames"):
        pipe("a cat", num_frames=12)


def test_checkpoint_without_detokenizer_says_what_to_do(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "no_detokenizer", with_detokenizers=False)
    with pytest.raises(DetokenizerNotFoundError, match="vlavit convert"):
        pipeline("text-to-video", model=str(folder), pipeline_class=VideoLaVITTextToVideoPipeline)


def test_saved_pipeline_runs_as_remote_code_without_the_packages(
    pipe, tmp_path, run_without_project, imports_project
):
    folder = tmp_path / "saved"
    pipe.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert (
        config["custom_pipelines"]["text-to-video"]["impl"]
        == "pipeline_text_to_video.VideoLaVITTextToVideoPipeline"
    )
    assert (folder / "pipeline_text_to_video.py").is_file()
    assert (folder / "detokenizer" / "pipeline_video_lavit.py").is_file()
    assert [path for path in folder.rglob("*.py") if imports_project(path.read_text())] == []
    expected = as_array(pipe("a cat", generator=seeded(), **FAST)["frames"])

    frames_path = tmp_path / "frames.npy"
    result = run_without_project(REMOTE_SCRIPT, folder, frames_path)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded_project"] == []
    assert report["pipeline"].endswith("pipeline_text_to_video.VideoLaVITTextToVideoPipeline")
    assert not report["pipeline"].startswith("transformers_vlavit")
    assert report["inferred"] == ["text-to-video", "VideoLaVITTextToVideoPipeline"]
    assert "pipeline_video_lavit" in report["detokenizer"]
    assert not any(
        module.startswith(("transformers_vlavit", "diffusers_vlavit"))
        for module in report["components"].values()
    )
    assert (report["num_frames"], report["fps"]) == (24, 6)
    np.testing.assert_array_equal(np.load(frames_path), expected)


@pytest.mark.parametrize("options", [{}, {"dtype": torch.bfloat16}, {"model_kwargs": {"device_map": "cpu"}}])
def test_saved_processor_holds_only_processor_settings(checkpoint, tmp_path, options):
    # pipeline() forwards the model's loading options (dtype, device_map) to AutoProcessor as well
    # pipeline_class runs the installed pipeline (the folder also names its own copy as custom code)
    text_to_video = pipeline(
        "text-to-video", model=str(checkpoint), pipeline_class=VideoLaVITTextToVideoPipeline, **options
    )
    text_to_video.save_pretrained(tmp_path / "saved")
    saved = [path for path in (tmp_path / "saved").glob("*.json") if path.name != "config.json"]
    assert {"tokenizer_config.json", "processor_config.json"} <= {path.name for path in saved}
    for path in saved:
        keys = set(json.loads(path.read_text()))
        assert not keys & {"dtype", "torch_dtype", "device_map"}, path.name
    reloaded = AutoProcessor.from_pretrained(tmp_path / "saved")
    prompt = ["a cat on a mat"]
    assert reloaded(text=prompt)["input_ids"] == text_to_video.processor(text=prompt)["input_ids"]
