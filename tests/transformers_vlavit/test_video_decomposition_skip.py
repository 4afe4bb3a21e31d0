"""decompose_video's `skip_unused_frames`: the source frames the 6 fps resampling drops and nothing refers to
are left undecoded, and the result stays bit-identical to decoding every frame, on B-frame inputs of several
codecs, variable rate, rotation, very short videos, frame threads and when the safety net has to step in."""

from __future__ import annotations

import dataclasses
import io
import logging
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from transformers_vlavit import video_decomposition
from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.video_decomposition import VideoDecomposition, decompose_video

TINY = {"width": 64, "height": 48}
X264_B_FRAMES = {"bf": "3"}
# one x265 thread pool and no log lines: small and quiet
X265_B_FRAMES = {"x265-params": "bframes=3:pools=1:frame-threads=1:log-level=error"}

# name: (write_synthetic_video settings, whether frames must be skipped: True, False, None for either)
INPUTS = {
    "h264_30fps": ({"fps": 30.0, "codec_options": X264_B_FRAMES}, True),
    "h264_60fps": ({"fps": 60.0, "codec_options": X264_B_FRAMES}, True),
    "h264_variable_rate": ({"fps": 30.0, "variable_frame_rate": True, "codec_options": X264_B_FRAMES}, True),
    "h264_rotated": ({"fps": 30.0, "rotation": 90, "codec_options": X264_B_FRAMES}, True),
    "h264_very_short": ({"fps": 30.0, "duration": 0.3, "codec_options": X264_B_FRAMES}, True),
    "hevc_mp4": ({"fps": 30.0, "codec": "libx265", "codec_options": X265_B_FRAMES}, True),
    "hevc_mpegts": (
        {"fps": 30.0, "codec": "libx265", "container_format": "mpegts", "codec_options": X265_B_FRAMES},
        True,
    ),
    "mpeg2_transport_stream": (
        {"fps": 30.0, "codec": "mpeg2video", "container_format": "mpegts", "codec_options": {"bf": "2"}},
        True,
    ),
    # FFmpeg's MPEG-PS demuxer gives two frames of this file the same timestamp: no plan, a full decode
    "mpeg2_program_stream": (
        {"fps": 30.0, "codec": "mpeg2video", "container_format": "mpeg", "codec_options": {"bf": "2"}},
        None,
    ),
    "mpeg4_b_frames": ({"fps": 30.0, "codec": "mpeg4", "codec_options": {"bf": "2"}}, True),
    # libvpx makes every frame a reference (and VP9 is not on the list of safe decoders): nothing to skip
    "vp9": ({"fps": 30.0, "codec": "libvpx-vp9", "container_format": "webm"}, False),
}


def _video(settings: dict) -> bytes:
    return write_synthetic_video(None, **{**TINY, "duration": 3.0, **settings})


def _source_frame_count(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def assert_identical(result: VideoDecomposition, reference: VideoDecomposition) -> None:
    """Every field but `decoded_source_frames` equal, tensors and keyframe pixels bit for bit."""
    for field in dataclasses.fields(VideoDecomposition):
        value, expected = getattr(result, field.name), getattr(reference, field.name)
        if field.name == "decoded_source_frames":
            continue
        if isinstance(expected, torch.Tensor):
            assert torch.equal(value, expected), field.name
        elif field.name == "keyframes":
            assert len(value) == len(expected)
            for image, expected_image in zip(value, expected):
                assert image.size == expected_image.size and image.mode == expected_image.mode
                assert np.array_equal(np.asarray(image), np.asarray(expected_image))
        else:
            assert value == expected, field.name


@pytest.mark.parametrize("name", list(INPUTS))
def test_skipping_gives_the_full_decode_bit_for_bit(name):
    settings, skippable = INPUTS[name]
    data = _video(settings)
    frames = _source_frame_count(data)
    full = decompose_video(data, skip_unused_frames=False)
    skipped = decompose_video(data)  # skipping is the default
    assert_identical(skipped, full)
    assert full.decoded_source_frames == frames
    if skippable:
        assert skipped.decoded_source_frames < frames
    elif skippable is False:
        assert skipped.decoded_source_frames == frames


def test_the_plan_takes_the_frames_of_the_fps_filter():
    """30 fps to 6 fps: every fifth frame, the last one rounding to each tick (FFmpeg's `fps`, round=near)."""
    time_base = Fraction(1, 15360)
    timestamps = [index * 512 for index in range(90)]
    stream = type("Stream", (), {"time_base": time_base, "average_rate": Fraction(30), "guessed_rate": None})
    taken = video_decomposition._frames_taken_by_fps(timestamps, [512] * 90, stream, 6)
    assert taken == set(range(2, 90, 5))


@pytest.mark.parametrize("name", ["h264_30fps", "hevc_mp4"])
def test_frame_threads_do_not_change_what_is_decoded(name):
    data = _video(INPUTS[name][0])
    one_thread = decompose_video(data, decoder_threads=1)
    frame_threads = decompose_video(data, decoder_threads=4)
    assert_identical(frame_threads, one_thread)
    assert frame_threads.decoded_source_frames == one_thread.decoded_source_frames
    assert_identical(decompose_video(data, decoder_threads=4, skip_unused_frames=False), one_thread)


def _plan_with_a_frame_that_never_comes(original):
    def plan(source, fps):
        found = original(source, fps)
        return dataclasses.replace(found, needed=(*found.needed, max(found.presented) + 1))

    return plan


def test_a_failed_plan_falls_back_to_decoding_every_frame(monkeypatch, caplog):
    data = _video(INPUTS["h264_30fps"][0])
    full = decompose_video(data, skip_unused_frames=False)
    monkeypatch.setattr(
        video_decomposition,
        "_plan_frame_skipping",
        _plan_with_a_frame_that_never_comes(video_decomposition._plan_frame_skipping),
    )
    with caplog.at_level(logging.INFO, logger=video_decomposition.__name__):
        result = decompose_video(data)
    assert "decoding every frame instead" in caplog.text
    assert_identical(result, full)
    assert result.decoded_source_frames == _source_frame_count(data)


def test_the_fallback_replaces_what_the_failed_attempt_wrote(monkeypatch, tmp_path):
    data = _video(INPUTS["h264_30fps"][0])
    full_stream, stream = io.BytesIO(), io.BytesIO(b"kept")
    stream.seek(4)  # the re-encoding is written from the file's position on
    decompose_video(data, skip_unused_frames=False, mpeg4_file=full_stream)
    transcode_source = video_decomposition._transcode_source

    def failing_when_skipping(source, plan, mpeg4_file, **settings):
        if plan is not None:
            with video_decomposition._binary_writer(mpeg4_file) as stream_copy:
                stream_copy.write(b"output of the failed attempt" * 100_000)
            raise video_decomposition._PlanMismatch("a test")
        return transcode_source(source, plan, mpeg4_file, **settings)

    monkeypatch.setattr(video_decomposition, "_transcode_source", failing_when_skipping)
    decompose_video(data, mpeg4_file=stream)
    assert stream.getvalue() == b"kept" + full_stream.getvalue()
    decompose_video(data, mpeg4_file=tmp_path / "clip.m4v")
    assert (tmp_path / "clip.m4v").read_bytes() == full_stream.getvalue()


@pytest.mark.parametrize("skip_unused_frames", [True, False])
def test_no_stream_copy_is_created_for_an_input_without_video(tmp_path, skip_unused_frames):
    with pytest.raises(video_decomposition.VideoDecodeError):
        decompose_video(b"not a video", mpeg4_file=tmp_path / "x.m4v", skip_unused_frames=skip_unused_frames)
    assert not (tmp_path / "x.m4v").exists()


def test_the_plan_keeps_the_first_and_last_frame():
    """The first frame sets the timestamps' origin, the last the end; at 30 fps the filter takes neither."""
    data = _video(INPUTS["h264_30fps"][0])
    plan = video_decomposition._plan_frame_skipping(video_decomposition._as_source(data), 6)
    with av.open(io.BytesIO(data)) as container:
        timestamps = sorted(packet.pts for packet in container.demux(video=0) if packet.size)
    assert plan.presented == set(timestamps)
    assert plan.needed[0] == timestamps[0] and plan.needed[-1] == timestamps[-1]
    assert timestamps[1] not in plan.needed  # frames 0-2 round to the first tick, which takes frame 2


def test_the_reencoded_stream_is_the_same_with_skipping(tmp_path):
    data = _video(INPUTS["h264_30fps"][0])
    decompose_video(data, skip_unused_frames=False, mpeg4_file=tmp_path / "full.m4v")
    decompose_video(data, mpeg4_file=tmp_path / "skipped.m4v")
    assert (tmp_path / "full.m4v").read_bytes() == (tmp_path / "skipped.m4v").read_bytes()


def _hvcc(temporal_layers: int) -> bytes:
    record = bytearray(23)
    record[0] = 1  # configurationVersion
    record[21] = (temporal_layers << 3) | 3
    return bytes(record)


def _annexb_sps(max_sub_layers_minus1: int) -> bytes:
    vps = b"\x00\x00\x00\x01\x40\x01" + bytes(20)
    sps = b"\x00\x00\x00\x01\x42\x01" + bytes([max_sub_layers_minus1 << 1 | 1]) + bytes(20)
    return vps + sps


def test_hevc_with_temporal_sub_layers_is_decoded_in_full():
    """A sub-layer non-reference picture may still be referenced by a higher sub-layer."""
    assert video_decomposition._single_hevc_sub_layer(_hvcc(1))
    assert not video_decomposition._single_hevc_sub_layer(_hvcc(2))
    assert not video_decomposition._single_hevc_sub_layer(_hvcc(0))  # unknown
    assert video_decomposition._single_hevc_sub_layer(_annexb_sps(0))
    assert not video_decomposition._single_hevc_sub_layer(_annexb_sps(2))
    assert not video_decomposition._single_hevc_sub_layer(b"")
    layered = {"x265-params": X265_B_FRAMES["x265-params"] + ":temporal-layers=2"}
    data = _video({"fps": 30.0, "codec": "libx265", "codec_options": layered})
    result = decompose_video(data)
    assert result.decoded_source_frames == _source_frame_count(data)
    assert_identical(result, decompose_video(data, skip_unused_frames=False))


def test_transcode_false_decodes_every_frame():
    data = write_synthetic_video(None, **TINY, duration=5.0, fps=6.0, codec="mpeg4", container_format="m4v")
    result = decompose_video(data, transcode=False)
    assert result.decoded_source_frames == result.num_frames == 30


class _Pipe(io.RawIOBase):
    """A write-only file object that cannot seek, like a pipe."""

    def __init__(self):
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


def test_a_stream_copy_that_cannot_seek_turns_skipping_off():
    data = _video(INPUTS["h264_30fps"][0])
    full_stream, pipe = io.BytesIO(), _Pipe()
    full = decompose_video(data, skip_unused_frames=False, mpeg4_file=full_stream)
    result = decompose_video(data, mpeg4_file=pipe)
    assert result.decoded_source_frames == _source_frame_count(data)
    assert_identical(result, full)
    assert bytes(pipe.data) == full_stream.getvalue()
