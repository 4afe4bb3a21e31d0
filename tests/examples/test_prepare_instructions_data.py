"""``datasets/prepare_instructions.py``: LLaVA / Video-ChatGPT conversations with media -> chat-message rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.video_decomposition import decompose_video


@pytest.fixture
def prepare_instructions(scripts, monkeypatch):
    """The script imported as a module (its folder on ``sys.path``, as when it runs)."""
    monkeypatch.syspath_prepend(str(scripts.data_scripts))
    return scripts.load(scripts.data_scripts / "prepare_instructions.py")


@pytest.fixture
def media(tmp_path):
    """One synthetic video, one image, and a file that is no video."""
    write_synthetic_video(tmp_path / "walk.mp4", width=96, height=64, duration=3.0, fps=12)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(tmp_path / "images" / "red.png")
    (tmp_path / "broken.mp4").write_bytes(b"garbage")
    return tmp_path


def test_prepare_data_llava_conversations(prepare_instructions, media, capsys):
    rows = [
        {"id": "img", "image": "images/red.png", "conversations": [
            {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": "Red."}]},
        {"id": "vid", "video": "walk.mp4", "conversations": [
            {"from": "human", "value": "<video>\nDescribe it."}, {"from": "gpt", "value": "Shapes move."},
            {"from": "human", "value": "Anything else?"}, {"from": "gpt", "value": "No."}]},
        {"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "mismatch", "image": "images/red.png", "conversations": [
            {"from": "human", "value": "<image> and <image>"}, {"from": "gpt", "value": "?"}]},
        {"id": "two", "image": ["images/red.png", "images/red.png"], "conversations": [
            {"from": "human", "value": "<image> vs <image>"}, {"from": "gpt", "value": "Same."}]},
    ]
    (media / "llava.json").write_text(json.dumps(rows))
    out = media / "out"

    code = prepare_instructions.main(["--input", str(media / "llava.json"), "--out", str(out), "--num-shards", "2"])

    assert code == 0
    assert "conversations/s" in capsys.readouterr().out
    dataset = load_from_disk(str(out))
    by_id = {row["id"]: row for row in dataset}
    assert by_id["img"]["messages"] == [
        {"role": "user", "content": "<image>\nWhat colour is it?"}, {"role": "assistant", "content": "Red."}]
    assert by_id["img"]["images"][0].getpixel((0, 0)) == (200, 10, 10)
    video = by_id["vid"]
    assert [message["role"] for message in video["messages"]] == ["user", "assistant", "user", "assistant"]
    assert video["videos"] == [str(media / "walk.mp4")]
    expected = decompose_video(media / "walk.mp4")
    assert video["clips_per_video"] == [expected.num_clips] and len(video["keyframes"]) == expected.num_clips
    np.testing.assert_array_equal(
        dataset.with_format("numpy")[1]["motion_vectors"], expected.motion_vectors.numpy().astype(np.float16))
    assert by_id["text"]["error"] is None and by_id["text"]["images"] == []
    assert "2 <image> placeholders for 1 media files" in by_id["mismatch"]["error"]
    assert len(by_id["two"]["images"]) == 2 and by_id["two"]["error"] is None


def test_prepare_data_video_chatgpt_rows(prepare_instructions, media):
    lines = [
        {"video_id": "walk", "q": "What happens?", "a": "Shapes move."},
        {"video_id": "broken", "q": "?", "a": "!"},
        {"video_id": "absent", "q": "?", "a": "!"},
    ]
    (media / "qa.jsonl").write_text("\n".join(json.dumps(line) for line in lines))

    assert prepare_instructions.main(["--input", str(media / "qa.jsonl"), "--out", str(media / "out")]) == 0

    dataset = load_from_disk(str(media / "out"))
    first, broken, absent = dataset
    assert first["messages"] == [
        {"role": "user", "content": "<video>\nWhat happens?"}, {"role": "assistant", "content": "Shapes move."}]
    assert first["error"] is None and first["clips_per_video"] == [1]
    assert "VideoDecodeError" in broken["error"] and broken["keyframes"] == []
    assert "no video file for 'absent'" in absent["error"]
