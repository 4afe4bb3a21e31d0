"""Every `vlavit` command checks its paths and media before loading a model: one line on stderr, exit code 2."""

from __future__ import annotations

import diffusers
import pytest
import transformers

from transformers_vlavit.cli import main


def refuse_to_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the inputs were checked")


@pytest.fixture
def paths(tmp_path, monkeypatch):
    """Fake folders that pass the path checks, a real tiny video, broken media; model loading is forbidden."""
    from transformers_vlavit.synthetic_video import write_synthetic_video

    for target, name in (
        (transformers.AutoModelForCausalLM, "from_pretrained"),
        (transformers.AutoProcessor, "from_pretrained"),
        (diffusers.DiffusionPipeline, "from_pretrained"),
    ):
        monkeypatch.setattr(target, name, refuse_to_load)
    monkeypatch.setattr(transformers, "pipeline", refuse_to_load)
    model = tmp_path / "model"
    for folder in ("detokenizer/keyframe", "detokenizer/video"):
        (model / folder).mkdir(parents=True)
        (model / folder / "model_index.json").write_text("{}")
    (model / "config.json").write_text("{}")
    (tmp_path / "no_config").mkdir()
    video = tmp_path / "clip.mp4"
    write_synthetic_video(video, width=32, height=32, duration=1.0, fps=6)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    (tmp_path / "a_file").write_text("")
    return tmp_path


CASES = {
    "ask: missing model folder": (["ask", "--model", "{t}/missing_model", "{t}/clip.mp4", "q"], "missing_model: no such folder"),
    "ask: folder without config": (["ask", "--model", "{t}/no_config", "{t}/clip.mp4", "q"], "no config.json"),
    "ask: missing video": (["ask", "--model", "{t}/model", "{t}/missing.mp4", "q"], "missing.mp4: no such video file"),
    "ask: broken video": (["ask", "--model", "{t}/model", "{t}/broken.mp4", "q"], "broken.mp4: not a readable video"),
    "ask: broken image": (["ask", "--model", "{t}/model", "{t}/broken.png", "q"], "broken.png: not a readable image"),
    "generate: missing model": (["generate", "--model", "{t}/missing_model", "x", "--out", "{t}/o.mp4"], "no such folder"),
    "generate: missing image": (
        ["generate", "--model", "{t}/model", "x", "--image", "{t}/missing.png", "--out", "{t}/o.mp4"],
        "missing.png: no such image file",
    ),
    "generate: output is a folder": (["generate", "--model", "{t}/model", "x", "--out", "{t}/full"], "is a directory"),
    "generate: no prompt": (["generate", "--model", "{t}/model", "--out", "{t}/o.mp4"], "give a prompt"),
    "reconstruct: missing video": (
        ["reconstruct", "--model", "{t}/model", "{t}/missing.mp4", "--out", "{t}/r.mp4"], "missing.mp4: file not found"
    ),
    "reconstruct: no detokenizers": (
        ["reconstruct", "--model", "{t}/no_config", "{t}/clip.mp4", "--out", "{t}/r.mp4"], "no detokenizer pipelines"
    ),
    "decompose: missing video": (["decompose", "{t}/missing.mp4", "--out", "{t}/d"], "missing.mp4: file not found"),
    "demo: output is a file": (["demo", "--out", "{t}/a_file"], "a_file: is a file"),
    "tiny-checkpoint: output is a file": (["tiny-checkpoint", "{t}/a_file"], "a_file: is a file"),
    "tiny-checkpoint: non-empty folder": (["tiny-checkpoint", "{t}/full"], "not empty; pass --overwrite"),
    "convert: missing release": (["convert", "--original", "{t}/missing", "--out", "{t}/converted"], "is not a folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_code_2_before_any_model_loads(case, paths, capsys):
    arguments, message = CASES[case]
    code = main([argument.format(t=paths) for argument in arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2
    command = arguments[0]
    assert error.startswith(f"vlavit {command}: ") and "\n" not in error, error
    assert message in error
    assert "Traceback" not in error


def test_tiny_checkpoint_refusal_leaves_the_folder_alone(paths, capsys):
    assert main(["tiny-checkpoint", str(paths / "full")]) == 2
    assert [item.name for item in (paths / "full").iterdir()] == ["keep.txt"]
