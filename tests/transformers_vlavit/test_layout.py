"""One module names the checkpoint layout; the former homes of those names still export the same values."""

from __future__ import annotations

from transformers_vlavit import layout, pipeline_text_to_video
from transformers_vlavit.conversion import convert
from transformers_vlavit.evaluation import video_qa


def test_former_homes_export_the_layout_names():
    for name in (
        "DETOKENIZER_FOLDER",
        "KEYFRAME_FOLDER",
        "VIDEO_FOLDER",
        "DETOKENIZER_PIPELINE_MODULE",
        "DETOKENIZER_PIPELINE_CLASS",
    ):
        assert getattr(pipeline_text_to_video, name) == getattr(layout, name)
    released = ("LANGUAGE_MODEL_FOLDER", "MOTION_TOKENIZER_FILE", "SENTENCEPIECE_FILE")
    for name in ("UNDERSTANDING_FOLDER", *released):
        assert getattr(convert, name) == getattr(layout, name)
    assert convert.KEYFRAME_PIPELINE_FOLDER == layout.KEYFRAME_FOLDER
    assert convert.VIDEO_PIPELINE_FOLDER == layout.VIDEO_FOLDER
    assert video_qa.UNDERSTANDING_FOLDER == layout.UNDERSTANDING_FOLDER


def test_detokenizer_pipeline_module_names_the_diffusers_pipeline():
    from diffusers_vlavit.pipelines import pipeline_video_lavit

    assert pipeline_video_lavit.__name__.rpartition(".")[2] == layout.DETOKENIZER_PIPELINE_MODULE
    assert hasattr(pipeline_video_lavit, layout.DETOKENIZER_PIPELINE_CLASS)


def test_layout_imports_nothing():
    """It travels into checkpoint folders as custom code next to `pipeline_text_to_video.py`."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(layout.__file__).read_text(encoding="utf-8"))
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
