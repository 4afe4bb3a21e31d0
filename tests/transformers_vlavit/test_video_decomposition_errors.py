"""Bad inputs give one clear VideoDecodeError (a ValueError) naming the file and the cause, quickly."""

from __future__ import annotations

import io
import time

import av
import numpy as np
import pytest

from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.video_decomposition import VideoDecodeError, decompose_video


def _audio_only(path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=48000)
        for index in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _make(kind: str, folder):
    """Create the bad input of one kind; returns (input, expected words of the message)."""
    if kind == "missing":
        return folder / "missing.mp4", "not found"
    if kind == "directory":
        return folder, "directory"
    if kind == "empty":
        (folder / "empty.mp4").write_bytes(b"")
        return folder / "empty.mp4", "empty"
    if kind == "random bytes":
        (folder / "random.mp4").write_bytes(np.random.default_rng(0).bytes(200_000))
        return folder / "random.mp4", "not a readable video"
    if kind == "truncated mp4":
        data = write_synthetic_video(None, width=64, height=48, duration=3.0)
        (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
        return folder / "truncated.mp4", "not a readable video"
    if kind == "audio only":
        _audio_only(folder / "audio.m4a")
        return folder / "audio.m4a", "no video stream (streams found: audio)"
    if kind == "text file":
        (folder / "notes.txt").write_text("hello\n" * 200)
        return folder / "notes.txt", "not a video"
    if kind == "text named mp4":
        (folder / "notes.mp4").write_text("hello\n" * 200)
        return folder / "notes.mp4", "not a readable video"
    if kind == "empty bytes":
        return b"", "empty"
    if kind == "random file object":
        return io.BytesIO(np.random.default_rng(1).bytes(50_000)), "not a readable video"
    raise AssertionError(kind)


KINDS = [
    "missing",
    "directory",
    "empty",
    "random bytes",
    "truncated mp4",
    "audio only",
    "text file",
    "text named mp4",
    "empty bytes",
    "random file object",
]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_raises_video_decode_error(kind, tmp_path):
    video, words = _make(kind, tmp_path)
    started = time.perf_counter()
    with pytest.raises(VideoDecodeError) as caught:
        decompose_video(video)
    assert time.perf_counter() - started < 5.0
    message = str(caught.value)
    assert words in message
    if not isinstance(video, (bytes, io.BytesIO)):
        assert str(video) in message
    assert isinstance(caught.value, ValueError)


def test_unsupported_input_type():
    with pytest.raises(VideoDecodeError, match="unsupported video input of type int"):
        decompose_video(42)


def test_text_mode_file_object(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with open(tmp_path / "a.txt") as handle, pytest.raises(VideoDecodeError, match="binary mode"):
        decompose_video(handle)
