"""decompose_video on media the tests make with PyAV: clip sampling, motion post-processing, input
kinds, codecs, variable frame rate, rotation, odd sizes, audio, still images, short and long videos."""

from __future__ import annotations

import gc
import io
import math

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.video_decomposition import (
    MOTION_STD,
    DecompositionSettingsError,
    VideoDecomposition,
    decompose_video,
    motion_from_blocks,
    motion_std,
    motion_vectors_to_blocks,
    select_clip_starts,
)
from transformers_vlavit import video_decomposition

SMALL = {"width": 64, "height": 48}


@pytest.fixture(scope="module")
def video_13s(tmp_path_factory) -> str:
    """13 s of H.264 at 12 fps: 78 frames at 6 fps, two clips."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    write_synthetic_video(path, duration=13.0, fps=12.0, **SMALL)
    return str(path)


@pytest.fixture(scope="module")
def decomposed_13s(video_13s) -> VideoDecomposition:
    return decompose_video(video_13s)


def _regular_types(num_frames: int) -> str:
    return "".join("I" if index % 12 == 0 else "P" for index in range(num_frames))


@pytest.mark.parametrize(
    ("frame_types", "max_clips", "expected"),
    [
        (_regular_types(18), 8, [0]),  # one GOP and a bit: the only clip is padded
        (_regular_types(84), 8, [12, 36, 60]),
        (_regular_types(360), 8, [12, 36, 84, 132, 180, 228, 276, 324]),  # 30 candidates -> 8 spread
        (_regular_types(84), 2, [12, 60]),
        (
            "I" + "P" * 5 + "I" + "P" * 11 + "I" + "P" * 30,
            8,
            [6],
        ),  # irregular GOPs: fall back to all I-frames
        ("P" * 30, 8, []),
    ],
)
def test_select_clip_starts_follows_the_original_rules(frame_types, max_clips, expected):
    assert select_clip_starts(frame_types, max_clips=max_clips) == expected


def _vectors(rng: np.random.Generator, count: int, width: int, height: int) -> np.ndarray:
    """Random AVMotionVector records, some outside the frame and some sharing a destination pixel."""
    dtype = np.dtype(
        [
            ("source", "<i4"),
            ("w", "u1"),
            ("h", "u1"),
            ("src_x", "<i2"),
            ("src_y", "<i2"),
            ("dst_x", "<i2"),
            ("dst_y", "<i2"),
            ("flags", "<u8"),
            ("motion_x", "<i4"),
            ("motion_y", "<i4"),
            ("motion_scale", "<u2"),
        ]
    )
    vectors = np.zeros(count, dtype=dtype)
    vectors["source"] = rng.choice([-1, 1], count)
    vectors["dst_x"] = rng.integers(-20, width + 20, count)
    vectors["dst_y"] = rng.integers(-20, height + 20, count)
    vectors["dst_x"][: count // 4] = vectors["dst_x"][count // 4 : 2 * (count // 4)]  # repeated pixels
    vectors["dst_y"][: count // 4] = vectors["dst_y"][count // 4 : 2 * (count // 4)]
    vectors["motion_x"] = rng.integers(-300, 300, count)
    vectors["motion_y"] = rng.integers(-300, 300, count)
    vectors["motion_scale"] = rng.choice([2, 4], count)
    return vectors


def _full_resolution_reference(vectors: np.ndarray, width: int, height: int) -> np.ndarray:
    """The original's steps: write into a -10000 map at full resolution, pad, max-pool 16x16, zero."""
    std = np.array([MOTION_STD], dtype=np.float64) / 10.0
    table = np.stack(
        [
            vectors[name].astype(np.int64)
            for name in ("source", "dst_x", "dst_y", "motion_x", "motion_y", "motion_scale")
        ],
        axis=1,
    )
    motion_map = np.ones((height, width, 2)) * -10000
    position = table[:, 1:3].clip((0, 0), (width - 1, height - 1))
    motion = table[:, 0:1] * table[:, 3:5] / table[:, 5:]
    motion[:, 0] = motion[:, 0] / width
    motion[:, 1] = motion[:, 1] / height
    motion_map[position[:, 1], position[:, 0]] = motion / std
    grid = torch.from_numpy(motion_map.transpose(2, 0, 1)).float()[None]
    grid = F.pad(
        grid, (0, math.ceil(width / 16) * 16 - width, 0, math.ceil(height / 16) * 16 - height), value=-10000
    )
    grid = F.max_pool2d(grid, kernel_size=16, stride=16)[0]
    grid[grid < -1000] = 0.0
    return grid.numpy()


@pytest.mark.parametrize(("width", "height"), [(33, 17), (64, 48), (100, 75)])
def test_scatter_max_equals_full_resolution_map_and_pooling(width, height):
    rng = np.random.default_rng(width)
    vectors = _vectors(rng, 400, width, height)
    grid = motion_vectors_to_blocks(vectors, width, height, motion_std())
    expected = _full_resolution_reference(vectors, width, height)
    assert grid.dtype == np.float32 and grid.shape == expected.shape == (2, -(-height // 16), -(-width // 16))
    np.testing.assert_array_equal(grid, expected)
    assert motion_vectors_to_blocks(vectors[:0], width, height, motion_std()) is None


def test_motion_from_blocks_matches_the_original_per_clip_steps():
    rng = np.random.default_rng(0)
    blocks = torch.from_numpy(rng.normal(size=(3, 24, 2, 9, 11)).astype(np.float32))
    blocks[:, 12] = 0.0  # the in-clip I-frame
    motion = motion_from_blocks(blocks)
    assert motion.shape == (3, 2, 24, 20, 36)
    for clip in range(3):
        frames = blocks[clip].clone()
        pair = torch.cat([frames[11:12], frames[13:14]]).permute(1, 0, 2, 3)[None]
        frames[12] = F.interpolate(pair, scale_factor=(1.5, 1.0, 1.0), mode="trilinear")[0].permute(
            1, 0, 2, 3
        )[1]
        expected = F.interpolate(frames, size=(20, 36), mode="bicubic", align_corners=False).permute(
            1, 0, 2, 3
        )
        torch.testing.assert_close(motion[clip], expected, rtol=0, atol=0)
    # the interpolated I-frame is the mean of its neighbours (before the resize, which is linear)
    middle = F.interpolate(
        (blocks[:, 11] + blocks[:, 13]) / 2, size=(20, 36), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(motion[:, :, 12], middle, rtol=1e-5, atol=1e-5)


def test_decomposition_of_a_synthetic_video(decomposed_13s):
    d = decomposed_13s
    assert d.frame_types == _regular_types(78)
    assert d.keyframe_indices == select_clip_starts(d.frame_types) == [12, 36]
    assert d.fps == 6.0 and d.frame_size == (48, 64) and d.num_frames == 78 and d.num_clips == 2
    assert [image.size for image in d.keyframes] == [(64, 48)] * 2
    assert all(image.mode == "RGB" for image in d.keyframes)
    assert d.motion_vectors.shape == (2, 2, 24, 20, 36) and d.motion_vectors.dtype == torch.float32
    assert d.block_motion.shape == (2, 2, 24, 3, 4)
    # the moving shapes give motion in every P-frame; the clip's second I-frame (12) has none
    assert (d.block_motion[:, :, 1:12].abs().flatten(2).amax(-1) > 0).all()
    assert (d.block_motion[:, :, 12] == 0).all()
    assert (d.motion_vectors[:, :, 12].abs().amax() > 0).all()
    torch.testing.assert_close(d.motion_vectors_unscaled * 10, d.motion_vectors)
    torch.testing.assert_close(
        motion_from_blocks(d.block_motion.transpose(1, 2) * 10), d.motion_vectors, rtol=1e-5, atol=1e-4
    )


def test_reencoded_stream_round_trips_through_transcode_false(video_13s, decomposed_13s, tmp_path):
    """The saved MPEG-4 stream, read back as is, gives the same types, motion and keyframes; this checks
    the in-memory encoder->decoder path and the keyframe decoding from kept I-frame packets."""
    saved = tmp_path / "clip.m4v"
    first = decompose_video(video_13s, mpeg4_file=saved)
    again = decompose_video(saved, transcode=False)
    assert again.frame_types == first.frame_types == decomposed_13s.frame_types
    assert again.keyframe_indices == first.keyframe_indices
    assert torch.equal(again.motion_vectors, first.motion_vectors)
    assert torch.equal(first.motion_vectors, decomposed_13s.motion_vectors)
    # keyframes: the I-frames of a plain sequential decode of the saved stream
    with av.open(str(saved)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    for index, keyframe, keyframe_again in zip(first.keyframe_indices, first.keyframes, again.keyframes):
        np.testing.assert_array_equal(np.asarray(keyframe), frames[index])
        np.testing.assert_array_equal(np.asarray(keyframe_again), frames[index])


class _Pipe(io.RawIOBase):
    """A readable, non-seekable binary stream (like stdin or a socket)."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._data.readinto(buffer)


def test_path_bytes_and_file_object_inputs_agree(video_13s, decomposed_13s):
    data = open(video_13s, "rb").read()
    prefixed = io.BytesIO(b"junk" + data)
    prefixed.seek(4)  # a file object is read from its current position
    for video in (data, io.BytesIO(data), prefixed, _Pipe(data), open(video_13s, "rb")):
        result = decompose_video(video)
        assert result.keyframe_indices == decomposed_13s.keyframe_indices
        assert torch.equal(result.motion_vectors, decomposed_13s.motion_vectors)


def test_threading_options_do_not_change_results(video_13s, decomposed_13s):
    result = decompose_video(video_13s, overlap=False, decoder_threads=1)
    assert torch.equal(result.motion_vectors, decomposed_13s.motion_vectors)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(result.keyframes, decomposed_13s.keyframes)
    )


def test_clip_and_rate_settings(video_13s):
    result = decompose_video(video_13s, fps=3, clip_frames=12, max_clips=1)
    assert result.fps == 3.0 and result.num_frames == 39
    assert result.motion_vectors.shape == (1, 2, 12, 20, 36)
    with pytest.raises(DecompositionSettingsError, match="positive"):
        decompose_video(video_13s, max_clips=0)


def test_variable_frame_rate_is_resampled_on_timestamps():
    data = write_synthetic_video(None, duration=9.0, fps=20.0, variable_frame_rate=True, **SMALL)
    with av.open(io.BytesIO(data)) as container:
        gaps = np.diff([frame.time for frame in container.decode(video=0)])
    assert gaps.max() > 2 * gaps.min()  # really variable
    result = decompose_video(data)
    assert result.num_frames == 54 and result.frame_types == _regular_types(54)
    assert result.keyframe_indices == [12]


def _mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_rotation_metadata_is_applied():
    plain = decompose_video(write_synthetic_video(None, duration=5.0, fps=6.0, width=64, height=32))
    turned = decompose_video(
        write_synthetic_video(None, duration=5.0, fps=6.0, width=64, height=32, rotation=90)
    )
    assert plain.frame_size == (32, 64) and turned.frame_size == (64, 32)
    upright, rotated = np.asarray(plain.keyframes[0]), np.asarray(turned.keyframes[0])
    # a counter-clockwise display rotation: the stored picture turned by +90 degrees
    right = _mean_abs_difference(rotated, np.rot90(upright, k=1))
    wrong = _mean_abs_difference(rotated, np.rot90(upright, k=-1))
    assert right < 6 and wrong > 3 * right


def test_odd_frame_size_33x17():
    result = decompose_video(
        write_synthetic_video(None, width=33, height=17, duration=5.0, fps=6.0, codec="mpeg4")
    )
    assert result.frame_size == (17, 33) and result.keyframes[0].size == (33, 17)
    assert result.block_motion.shape == (1, 2, 24, 2, 3)
    assert result.frame_types == _regular_types(30)


def test_audio_stream_does_not_change_the_result():
    silent = decompose_video(write_synthetic_video(None, duration=5.0, fps=6.0, **SMALL))
    with_audio = write_synthetic_video(None, duration=5.0, fps=6.0, audio=True, **SMALL)
    with av.open(io.BytesIO(with_audio)) as container:
        assert sorted(stream.type for stream in container.streams) == ["audio", "video"]
    result = decompose_video(with_audio)
    assert torch.equal(result.motion_vectors, silent.motion_vectors)


@pytest.mark.parametrize(
    "settings",
    [
        {
            "codec": "mjpeg",
            "container_format": "avi",
        },  # intra-only source: the encoder must still make P-frames
        {"codec": "libvpx-vp9", "container_format": "webm"},
        {"codec": "gif", "container_format": "gif", "fps": 10.0},
        {"codec": "mpeg2video", "container_format": "mpeg"},
    ],
    ids=lambda settings: settings["codec"],
)
def test_other_codecs(settings):
    settings = {"fps": 12.0, **settings}
    result = decompose_video(write_synthetic_video(None, duration=5.0, **SMALL, **settings))
    assert result.frame_types == _regular_types(30)
    assert result.block_motion.abs().amax() > 0


def test_short_video_is_padded_like_the_original():
    result = decompose_video(write_synthetic_video(None, duration=2.5, fps=6.0, **SMALL))
    assert result.num_frames == 15 and result.keyframe_indices == [0]
    assert (result.block_motion[0, :, 15:] == 0).all()
    assert (result.motion_vectors[0, :, 15:] == 0).all()
    # frame 12 is the I-frame of the second GOP; frame 13 exists: interpolation uses both neighbours
    assert result.motion_vectors[0, :, 12].abs().amax() > 0


def test_still_image_is_a_one_frame_video(tmp_path):
    path = tmp_path / "still.png"
    picture = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(picture).save(path)
    result = decompose_video(path)
    assert result.frame_types == "I" and result.keyframe_indices == [0]
    assert (result.motion_vectors == 0).all() and result.motion_vectors.shape == (1, 2, 24, 20, 36)
    assert result.keyframes[0].size == (60, 40)


def test_frame_too_large_for_mpeg4_is_downscaled():
    result = decompose_video(write_synthetic_video(None, width=8200, height=16, duration=1.0, fps=6.0))
    assert result.frame_size == (14, 8190)


def test_ten_minute_video(tmp_path):
    """A long input: every frame's motion is reduced at once, and the clips are spread over the video."""
    path = tmp_path / "long.mp4"
    write_synthetic_video(path, width=32, height=32, duration=600.0, fps=6.0, codec="mpeg4")
    result = decompose_video(path)
    assert result.num_frames == 3600 and result.num_clips == 8
    assert result.keyframe_indices[0] == 12 and result.keyframe_indices[-1] > 3400
    assert result.motion_vectors.shape == (8, 2, 24, 20, 36)


def test_spooled_records_round_trip_through_the_temporary_file():
    rng = np.random.default_rng(0)
    records = [None if index % 4 == 3 else rng.bytes(int(rng.integers(0, 300))) for index in range(40)]
    for memory_bytes, on_disk in ((256, True), (1 << 20, False)):
        spool = video_decomposition._SpooledRecords(memory_bytes)
        for record in records:
            spool.append(record)
        assert spool.on_disk is on_disk
        assert len(spool) == len(records)
        # read back out of order, as clip selection does
        for index in rng.permutation(len(records)):
            assert spool[int(index)] == records[index]
        spool.close()


def _clip_blocks_reference(grids, starts, clip_frames, frame_size):
    """The clips built straight from an in-memory list of grids (the code before spooling)."""
    blocks_h, blocks_w = -(-frame_size[0] // 16), -(-frame_size[1] // 16)
    blocks = torch.zeros(len(starts), clip_frames, 2, blocks_h, blocks_w)
    for clip, start in enumerate(starts):
        for offset, grid in enumerate(grids[start : start + clip_frames]):
            if grid is not None:
                blocks[clip, offset] = torch.from_numpy(grid)
    return blocks


def test_spilled_block_grids_give_the_in_memory_clips():
    rng = np.random.default_rng(1)
    frame_size = (40, 70)  # 3 x 5 blocks
    grids = [
        None if index % 12 == 0 else rng.normal(size=(2, 3, 5)).astype(np.float32) for index in range(100)
    ]
    spilled = video_decomposition._BlockGrids(memory_bytes=64)
    for grid in grids:
        spilled.append(grid)
    starts = [12, 36, 90]  # the last clip runs past the end: padded with zeros
    expected = _clip_blocks_reference(grids, starts, 24, frame_size)
    assert torch.equal(video_decomposition._clip_blocks(spilled, starts, 24, frame_size), expected)
    assert expected[2, 10:].abs().sum() == 0 and expected[1, 1:].abs().sum() > 0
    spilled.close()


def test_spilling_to_disk_does_not_change_the_decomposition(video_13s, decomposed_13s, tmp_path, monkeypatch):
    """Grids and I-frame packets forced through the temporary file give the in-memory results."""
    spools = []
    original_close = video_decomposition._SpooledRecords.close

    def close(self):
        spools.append(self.on_disk)
        original_close(self)

    monkeypatch.setattr(video_decomposition._SpooledRecords, "close", close)
    monkeypatch.setattr(video_decomposition, "_SPOOL_MEMORY_BYTES", 1)
    mpeg4 = tmp_path / "clip.m4v"
    result = decompose_video(video_13s, mpeg4_file=mpeg4)
    assert spools == [True, True]  # block grids and I-frame packets both went to disk
    again = decompose_video(mpeg4, transcode=False)
    for other in (result, again):
        assert other.keyframe_indices == decomposed_13s.keyframe_indices
        assert other.frame_types == decomposed_13s.frame_types
        assert torch.equal(other.motion_vectors, decomposed_13s.motion_vectors)
        assert torch.equal(other.block_motion, decomposed_13s.block_motion)
        assert all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(other.keyframes, decomposed_13s.keyframes)
        )


def test_decoded_pictures_are_freed_without_garbage_collection(video_13s):
    """No reference cycle keeps decoded frames (and their picture buffers) alive after use: with the
    cycle collector off, no VideoFrame may be left over (memory stays flat on long videos)."""
    gc.collect()
    gc.disable()
    try:
        decompose_video(video_13s)
        decompose_video(video_13s, transcode=False)
        left_over = sum(isinstance(item, av.VideoFrame) for item in gc.get_objects())
    finally:
        gc.enable()
    assert left_over == 0
