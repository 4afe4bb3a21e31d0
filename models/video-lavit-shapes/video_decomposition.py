"""Decompose a video into keyframes and MPEG-4 motion vectors, as Video-LaVIT does, in process.

Video-LaVIT sees a video as 4-second clips, each one keyframe (the clip's first frame, an I-frame)
plus the motion vectors of its 24 frames. The original re-encodes the video with an ffmpeg binary
to MPEG-4 Part 2 at 6 fps and reads the vectors with mvextractor; here PyAV does both in memory:

1. (``transcode=True``) decode the source, apply its display rotation, resample it to 6 fps on
   timestamps with FFmpeg's own ``fps`` filter and encode MPEG-4 Part 2 (8000 kb/s, GOP 12, no
   B-frames). Encoding runs in a second thread, overlapping decoding. The 6 fps output takes one
   source frame in 4-10: a first pass over the packets (no decoding) runs the same ``fps`` filter on
   their timestamps, and the decoder skips the non-reference frames it will not take
   (``skip_unused_frames``, checked and bit-identical to decoding them all).
2. decode that MPEG-4 stream with ``flags2=+export_mvs``; every frame's vectors are reduced at
   once to its 16 x 16 block grid (a scatter-max, equal to the original's full-resolution map
   followed by 16 x 16 max-pooling). The grids and the I-frame packets go to spooled temporary
   files (in memory up to a few MB, then on disk), so memory stays bounded however long the video is.
3. pick the clips (every second GOP, at most ``max_clips``), read back only their grids,
   interpolate each clip's middle I-frame, resize to 20 x 36 and decode only the chosen keyframes.

The module holds no model code; :class:`VideoLaVITImageProcessor` turns the keyframes into pixel values.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import io
import math
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.sidedata.sidedata import SideDataContainer
from av.video.frame import PictureType
from PIL import Image
from transformers.utils import logging

logger = logging.get_logger(__name__)

# Settings of the original pipeline (REFERENCE.md section 1).
DEFAULT_FPS = 6
DEFAULT_CLIP_FRAMES = 24
DEFAULT_MAX_CLIPS = 8
GOP_SIZE = 12
MPEG4_BIT_RATE = 8_000_000
MOTION_BLOCK_SIZE = 16
MOTION_GRID_SIZE = (20, 36)
# Motion is divided by the frame size, then by this std (mean 0); the LLM path divides by a further 10, the
# default `VideoLaVITMotionTokenizerConfig.motion_scale_factor` (a test keeps them equal). Not imported from
# there: this module travels with the processor as diffusers custom code, which copies only direct siblings.
MOTION_STD = (0.0993703, 0.1130276)
LLM_MOTION_SCALE = 10.0
# "No vector here" marker of the original's full-resolution map; cells still below the threshold
# after max-pooling had no vector and become 0.
_NO_MOTION = -10000.0
_NO_MOTION_THRESHOLD = -1000.0
# The largest frame side the MPEG-4 Part 2 encoder accepts (13-bit size fields).
_MPEG4_MAX_SIDE = 8191
# Frames handed from the decoding thread to the encoding thread, at most (bounds memory).
_QUEUE_DEPTH = 8
# Bytes of block grids / of I-frame packets kept in memory before they move to a temporary file:
# short videos never touch the disk, long ones keep only offsets (8 bytes a frame) in memory.
_SPOOL_MEMORY_BYTES = 16 * 1024 * 1024
# Container formats FFmpeg opens although they hold no video (``tty`` renders text files).
_NON_VIDEO_FORMATS = {"tty"}
# Marks the end of the frames handed to the encoding thread.
_END = object()
# Decoders whose skip_frame="NONREF" drops only pictures that no other picture refers to: H.264
# (nal_ref_idc 0), MPEG-1/2 and MPEG-4 Part 2 / H.263 (B-pictures). HEVC drops "sub-layer non-reference"
# pictures, which a higher temporal sub-layer may still refer to: only single-layer streams qualify.
_NONREF_SAFE_CODECS = frozenset({"h264", "mpeg1video", "mpeg2video", "mpeg4", "h263"})
# Those whose only non-reference pictures are B-pictures: without reordered packets there is nothing to skip.
_B_PICTURES_ONLY_CODECS = frozenset({"mpeg1video", "mpeg2video", "mpeg4", "h263"})
_HEVC_SPS_NAL_TYPE = 33
# Bytes of a frame's position carried through the planning fps filter (pixels of an 8 x 1 grey frame).
_PLAN_FRAME_BYTES = 8
_PICTURE_TYPE_CHAR = {
    PictureType.I: "I",
    PictureType.P: "P",
    PictureType.B: "B",
    PictureType.S: "S",
    PictureType.SI: "i",
    PictureType.SP: "p",
    PictureType.BI: "b",
}


class VideoDecodeError(ValueError):
    """The input cannot be decomposed: it is missing, empty, not a video, or cannot be decoded."""


class DecompositionSettingsError(ValueError):
    """The decomposition settings (frame rate, clip length, number of clips) are out of range."""


VideoInput = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


@dataclass
class VideoDecomposition:
    """Keyframes and motion of the clips Video-LaVIT takes from one video.

    Attributes:
        keyframes: one RGB keyframe per clip (the clip's first frame) at the decoded frame size.
        motion_vectors: ``[clips, 2, clip_frames, 20, 36]`` float32 motion in the language-model
            scaling (x then y; divided by the frame size and by ``MOTION_STD / 10``).
        block_motion: ``[clips, 2, clip_frames, ceil(height / 16), ceil(width / 16)]`` float32, the
            raw max-pooled 16 x 16 block grid of every frame of each clip, in the unscaled units
            (``MOTION_STD``, no extra /10): no interpolated middle I-frame, no resize; cells
            without a vector and padding frames are 0.
        keyframe_indices: index (in decoded MPEG-4 frames) of each clip's first frame.
        frame_types: picture type of every decoded MPEG-4 frame (``"IPPP..."``).
        fps: frame rate of the decoded MPEG-4 stream.
        frame_size: ``(height, width)`` of the decoded MPEG-4 frames.
        decoded_source_frames: source frames the decoder produced for this result; below the number of
            source frames when ``skip_unused_frames`` left unused non-reference frames undecoded.
    """

    keyframes: list[Image.Image]
    motion_vectors: torch.Tensor
    block_motion: torch.Tensor
    keyframe_indices: list[int]
    frame_types: str
    fps: float
    frame_size: tuple[int, int]
    decoded_source_frames: int

    @property
    def num_clips(self) -> int:
        """Number of clips (``len(keyframes)``)."""
        return len(self.keyframes)

    @property
    def num_frames(self) -> int:
        """Number of decoded MPEG-4 frames."""
        return len(self.frame_types)

    @property
    def motion_vectors_unscaled(self) -> torch.Tensor:
        """``[clips, 2, clip_frames, 20, 36]`` motion without the LLM path's extra /10.

        These are the units of the video detokenizer's motion input.
        """
        return self.motion_vectors / LLM_MOTION_SCALE


@dataclass(frozen=True)
class _Source:
    """A named video input that can be opened (again) as a PyAV container: a path, bytes, or a
    seekable binary file object."""

    name: str
    path: str | None = None
    data: bytes | None = None
    file: BinaryIO | None = None

    def open(self) -> av.container.InputContainer:
        """Open a fresh demuxer on the input."""
        if self.path is not None:
            target = self.path
        elif self.file is not None:
            self.file.seek(0)
            target = self.file
        else:
            target = io.BytesIO(self.data)
        try:
            return av.open(target, mode="r")
        except av.FFmpegError as error:
            raise VideoDecodeError(f"{self.name}: not a readable video file ({_describe(error)})") from error


def _describe(error: Exception) -> str:
    """Short cause of a PyAV/FFmpeg error, without the Python class noise."""
    return getattr(error, "strerror", None) or str(error)


def _as_source(video: VideoInput) -> _Source:
    """Validate the input and wrap it; raises :class:`VideoDecodeError` for missing or empty inputs."""
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        name = str(path)
        if not path.exists():
            raise VideoDecodeError(f"{name}: file not found; pass the path of an existing video file")
        if path.is_dir():
            raise VideoDecodeError(f"{name}: is a directory, not a video file")
        if path.stat().st_size == 0:
            raise VideoDecodeError(f"{name}: file is empty")
        return _Source(name=name, path=str(path))
    if isinstance(video, (bytes, bytearray, memoryview)):
        data = bytes(video)
        name = f"<{len(data)} bytes>"
    elif hasattr(video, "read"):
        name = str(getattr(video, "name", None) or f"<{type(video).__name__}>")
        if isinstance(video, io.TextIOBase):
            raise VideoDecodeError(f"{name}: file object must be opened in binary mode ('rb')")
        # FFmpeg seeks to absolute offsets: a seekable file object is used in place when it is at
        # its start. Otherwise (pipes, or a file read from the middle) keep a copy of the rest,
        # since the input may be read twice (keyframes).
        if getattr(video, "seekable", lambda: False)() and video.tell() == 0:
            if not video.read(1):
                raise VideoDecodeError(f"{name}: input is empty")
            return _Source(name=name, file=video)
        data = video.read()
    else:
        raise VideoDecodeError(
            f"unsupported video input of type {type(video).__name__}; "
            "pass a path, bytes or a binary file object"
        )
    if not data:
        raise VideoDecodeError(f"{name}: input is empty")
    return _Source(name=name, data=data)


def _video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    """The video stream to decompose (cover art of audio files does not count)."""
    if container.format.name in _NON_VIDEO_FORMATS:
        raise VideoDecodeError(f"{name}: not a video (FFmpeg reads it as {container.format.long_name!r})")
    streams = [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        kinds = sorted({stream.type for stream in container.streams}) or ["none"]
        raise VideoDecodeError(f"{name}: no video stream (streams found: {', '.join(kinds)})")
    best = container.streams.best("video")
    return best if best in streams else streams[0]


def _picture_type(frame: av.VideoFrame) -> str:
    """One-letter picture type as FFmpeg prints it (``?`` when unknown)."""
    return _PICTURE_TYPE_CHAR.get(frame.pict_type, "?")


def motion_vectors_to_blocks(
    vectors: np.ndarray, width: int, height: int, std: np.ndarray
) -> np.ndarray | None:
    """Reduce one frame's exported motion vectors to its 16 x 16 block grid.

    The original writes every vector at its (clipped) destination pixel of a ``[H, W, 2]`` map
    filled with -10000, max-pools it 16 x 16 and zeroes cells below -1000. Writing to a pixel twice
    keeps the last vector, and pooling is a max, so keeping the last vector per pixel and taking
    the maximum per block gives the same grid without the full-resolution map.

    Args:
        vectors: structured array with FFmpeg's ``AVMotionVector`` fields (``source``, ``dst_x``,
            ``dst_y``, ``motion_x``, ``motion_y``, ``motion_scale``...), as PyAV exports them.
        width, height: frame size in pixels.
        std: ``[1, 2]`` float64 divisor of the x / y motion after dividing by the frame size.

    Returns:
        ``[2, ceil(height / 16), ceil(width / 16)]`` float32 grid (x then y), or ``None`` without vectors.
    """
    if len(vectors) == 0:
        return None
    x = np.clip(vectors["dst_x"].astype(np.int64), 0, width - 1)
    y = np.clip(vectors["dst_y"].astype(np.int64), 0, height - 1)
    # Later vectors overwrite earlier ones at the same pixel in the original's map.
    _, last_reversed = np.unique((y * width + x)[::-1], return_index=True)
    keep = len(x) - 1 - last_reversed
    x, y, vectors = x[keep], y[keep], vectors[keep]
    # float64 and the original's order of operations, so the float32 grid is bit-identical.
    source = vectors["source"].astype(np.int64)[:, None]
    motion = (
        source
        * np.stack([vectors["motion_x"], vectors["motion_y"]], axis=1)
        / vectors["motion_scale"][:, None]
    )
    motion[:, 0] = motion[:, 0] / width
    motion[:, 1] = motion[:, 1] / height
    motion = (motion / std).astype(np.float32)

    blocks_h, blocks_w = -(-height // MOTION_BLOCK_SIZE), -(-width // MOTION_BLOCK_SIZE)
    cells = (y // MOTION_BLOCK_SIZE) * blocks_w + x // MOTION_BLOCK_SIZE
    grid = np.full((2, blocks_h * blocks_w), _NO_MOTION, dtype=np.float32)
    np.maximum.at(grid[0], cells, motion[:, 0])
    np.maximum.at(grid[1], cells, motion[:, 1])
    grid[grid < _NO_MOTION_THRESHOLD] = 0.0
    return grid.reshape(2, blocks_h, blocks_w)


def motion_std(scale: float = LLM_MOTION_SCALE) -> np.ndarray:
    """``[1, 2]`` float64 divisor of normalised motion, ``MOTION_STD / scale``.

    ``scale`` 10 gives the language-model path's units, 1 the unscaled ones.
    """
    return np.array([MOTION_STD], dtype=np.float64) / scale


class _SpooledRecords:
    """Append-only sequence of byte records (or ``None``) kept in a spooled temporary file.

    Records stay in memory up to ``memory_bytes`` in all (default ``_SPOOL_MEMORY_BYTES``), then
    everything moves to an unnamed temporary file (deleted on :meth:`close`); only each record's
    offset and length stay in memory. This is
    what bounds the memory of :func:`decompose_video` on long videos: the clips are only known once
    the whole stream is decoded, so every frame's grid must be kept somewhere until then.
    """

    def __init__(self, memory_bytes: int | None = None):
        # max_size 0 would mean "never roll over": at least one byte.
        limit = _SPOOL_MEMORY_BYTES if memory_bytes is None else memory_bytes
        self._file = tempfile.SpooledTemporaryFile(max_size=max(1, limit))
        # Record i is bytes offsets[i] .. offsets[i] + lengths[i]; a negative length marks ``None``.
        self._offsets = array.array("q")
        self._lengths = array.array("q")
        self._size = 0

    def __len__(self) -> int:
        return len(self._offsets)

    def append(self, record: bytes | None) -> None:
        """Add one record at the end (``None`` is kept as such)."""
        self._offsets.append(self._size)
        if record is None:
            self._lengths.append(-1)
            return
        self._lengths.append(len(record))
        self._file.seek(self._size)
        self._file.write(record)
        self._size += len(record)

    def __getitem__(self, index: int) -> bytes | None:
        """Record ``index`` as written (``None`` where ``None`` was appended)."""
        length = self._lengths[index]
        if length < 0:
            return None
        self._file.seek(self._offsets[index])
        record = self._file.read(length)
        if len(record) != length:
            raise OSError(f"temporary file of the decomposition lost data at record {index}")
        return record

    @property
    def on_disk(self) -> bool:
        """Whether the records have moved from memory to the temporary file."""
        return bool(self._file._rolled)

    def close(self) -> None:
        """Drop the records and delete the temporary file."""
        self._file.close()


class _BlockGrids:
    """Every frame's ``[2, Hb, Wb]`` float32 block grid (or ``None``), spooled by :class:`_SpooledRecords`."""

    def __init__(self, memory_bytes: int | None = None):
        self._records = _SpooledRecords(memory_bytes)
        # Shapes change only with the frame size (rare): the frame index of each change and its shape.
        self._shape_changes = array.array("q")
        self._shapes: list[tuple[int, ...]] = []

    def __len__(self) -> int:
        return len(self._records)

    def append(self, grid: np.ndarray | None) -> None:
        """Add the next frame's grid ``[2, Hb, Wb]`` (``None``: the frame has no vectors)."""
        if grid is not None:
            shape = tuple(grid.shape)
            if not self._shapes or self._shapes[-1] != shape:
                self._shape_changes.append(len(self._records))
                self._shapes.append(shape)
            grid = np.ascontiguousarray(grid, dtype=np.float32).tobytes()
        self._records.append(grid)

    def __getitem__(self, index: int) -> np.ndarray | None:
        """Grid ``[2, Hb, Wb]`` of frame ``index``, or ``None``."""
        record = self._records[index]
        if record is None:
            return None
        shape = self._shapes[bisect.bisect_right(self._shape_changes, index) - 1]
        return np.frombuffer(record, dtype=np.float32).reshape(shape)

    def close(self) -> None:
        """Drop the grids and delete their temporary file."""
        self._records.close()


class _MotionAccumulator:
    """Collects the picture type and block grid (:func:`motion_vectors_to_blocks`) of every decoded frame."""

    def __init__(self, std: np.ndarray | None = None, memory_bytes: int | None = None):
        self.std = motion_std() if std is None else std
        self.grids = _BlockGrids(memory_bytes)
        self.types: list[str] = []
        self.frame_size: tuple[int, int] | None = None
        self.first_time: float | None = None
        self.last_time: float | None = None

    def add(self, frame: av.VideoFrame) -> None:
        """Record the picture type and block grid ``[2, ceil(H/16), ceil(W/16)]`` of one frame."""
        if self.frame_size is None:
            self.frame_size = (frame.height, frame.width)
        if frame.time is not None:
            self.first_time = frame.time if self.first_time is None else self.first_time
            self.last_time = frame.time
        self.types.append(_picture_type(frame))
        # Not `frame.side_data`: the frame caches that container, a reference cycle that keeps every
        # decoded picture alive until a full garbage collection (about 1.4 MB per 720p frame).
        vectors = SideDataContainer(frame).get("MOTION_VECTORS")
        self.grids.append(
            None
            if vectors is None
            else motion_vectors_to_blocks(vectors.to_ndarray(), frame.width, frame.height, self.std)
        )

    def fps(self, fallback: float) -> float:
        """Frame rate measured on the decoded timestamps (``fallback`` when they are missing)."""
        count = len(self.types)
        if (
            count < 2
            or self.first_time is None
            or self.last_time is None
            or self.last_time <= self.first_time
        ):
            return float(fallback)
        return (count - 1) / (self.last_time - self.first_time)


def select_clip_starts(
    frame_types: str,
    *,
    clip_frames: int = DEFAULT_CLIP_FRAMES,
    max_clips: int = DEFAULT_MAX_CLIPS,
    gop_size: int = GOP_SIZE,
) -> list[int]:
    """Choose the first frame of every clip exactly as Video-LaVIT does.

    Candidates are the I-frames. Those followed by the next I-frame exactly ``gop_size`` frames later
    and whose clip fits in the video replace them when there are at least two. Then every second
    candidate is kept (starting at the second one when there are more than two) and, when more than
    ``max_clips`` remain, ``max_clips`` of them are taken evenly.

    Args:
        frame_types: one picture-type letter per decoded frame (``"IPPP...I..."``).
        clip_frames: frames per clip; a regular start must leave room for a whole clip.
        max_clips: most clips kept.
        gop_size: the encoder's I-frame interval, which marks the regular starts.

    Returns:
        Frame indices of the clip starts, ascending; at most ``max_clips`` of them.
    """
    types = np.frombuffer(frame_types.encode("ascii"), dtype=np.uint8)
    starts = np.flatnonzero(types == ord("I"))
    if len(starts) == 0:
        return []
    regular = starts[:-1][starts[:-1] + gop_size == starts[1:]] if len(starts) > 1 else starts
    regular = regular[regular + clip_frames <= len(types)]
    if len(regular) >= 2:
        starts = regular
    if len(starts) / 2 <= max_clips:
        chosen = starts[1::2] if len(starts) > 2 else starts[0::2]
    else:
        chosen = starts[1::2]
        if len(chosen) > max_clips:
            chosen = chosen[np.linspace(0, len(chosen) - 1, max_clips, dtype=int)]
    return [int(index) for index in chosen]


def _clip_blocks(
    grids: _BlockGrids | list[np.ndarray | None],
    starts: list[int],
    clip_frames: int,
    frame_size: tuple[int, int],
) -> torch.Tensor:
    """Stack each clip's block grids into ``[clips, clip_frames, 2, Hb, Wb]``; missing frames are 0.

    Only the chosen clips' grids are read (from the temporary file when they were spilled).
    """
    blocks_h, blocks_w = -(-frame_size[0] // MOTION_BLOCK_SIZE), -(-frame_size[1] // MOTION_BLOCK_SIZE)
    blocks = torch.zeros(len(starts), clip_frames, 2, blocks_h, blocks_w)
    for clip, start in enumerate(starts):
        for offset, index in enumerate(range(start, min(start + clip_frames, len(grids)))):
            grid = grids[index]
            if grid is not None:
                blocks[clip, offset] = torch.from_numpy(grid.copy())
    return blocks


def motion_from_blocks(
    blocks: torch.Tensor, *, gop_size: int = GOP_SIZE, size: tuple[int, int] = MOTION_GRID_SIZE
) -> torch.Tensor:
    """Turn clips of block grids into the motion tokenizer's input, as the original does.

    The frame at ``gop_size`` is the clip's second I-frame and has no vectors: it becomes the
    trilinear mid-point of its neighbours. Every frame is then resized bicubically (no antialias).

    Args:
        blocks: ``[clips, frames, 2, Hb, Wb]`` max-pooled block grids (0 where no vector).
        gop_size: index of the in-clip I-frame to interpolate.
        size: output ``(height, width)``.

    Returns:
        ``[clips, 2, frames, size[0], size[1]]`` float tensor.
    """
    clips, frames = blocks.shape[:2]
    blocks = blocks.clone()
    if 0 < gop_size < frames - 1:
        neighbours = blocks[:, [gop_size - 1, gop_size + 1]].transpose(1, 2)  # [clips, 2, 2, Hb, Wb]
        between = F.interpolate(neighbours, scale_factor=(1.5, 1.0, 1.0), mode="trilinear")
        blocks[:, gop_size] = between[:, :, 1]
    # the per-frame bicubic resize, repeated in the motion tokenizer and the two video-detokenizer modules:
    # each travels alone as custom code
    resized = F.interpolate(blocks.flatten(0, 1), size=size, mode="bicubic", align_corners=False)
    return resized.view(clips, frames, 2, *size).transpose(1, 2).contiguous()


def _fps_graph(
    first: av.VideoFrame, time_base: Fraction, fps: int, size: tuple[int, int] | None
) -> av.filter.Graph:
    """FFmpeg filter graph: display rotation, optional downscale, ``fps`` resampling, YUV 4:2:0."""
    graph = av.filter.Graph()
    chain = [
        graph.add_buffer(width=first.width, height=first.height, format=first.format, time_base=time_base)
    ]
    rotation = round(first.rotation or 0) % 360
    # FFmpeg's command line rotates by the display matrix by default; do the same.
    if rotation == 90:
        chain.append(graph.add("transpose", "cclock"))
    elif rotation == 270:
        chain.append(graph.add("transpose", "clock"))
    elif rotation == 180:
        chain += [graph.add("hflip"), graph.add("vflip")]
    if size is not None:
        chain.append(graph.add("scale", f"{size[1]}:{size[0]}"))
    chain += [
        _add_fps_filter(graph, fps),
        graph.add("format", "pix_fmts=yuv420p"),
        graph.add("buffersink"),
    ]
    graph.link_nodes(*chain).configure()
    return graph


def _add_fps_filter(graph: av.filter.Graph, fps: int) -> av.filter.FilterContext:
    """FFmpeg's ``fps`` filter at ``fps`` frames per second (default rounding and end handling)."""
    return graph.add("fps", f"fps={fps}")


def _encodable_size(width: int, height: int, rotation: float | None) -> tuple[int, int] | None:
    """``(height, width)`` to downscale to when the MPEG-4 encoder would reject the size, else ``None``."""
    if round(rotation or 0) % 180 == 90:
        width, height = height, width
    longest = max(width, height)
    if longest <= _MPEG4_MAX_SIDE:
        return None
    factor = _MPEG4_MAX_SIDE / longest
    # Even sizes keep the 4:2:0 chroma planes exact.
    return max(2, int(height * factor) // 2 * 2), max(2, int(width * factor) // 2 * 2)


class _MotionEncoder:
    """MPEG-4 Part 2 encoder feeding a motion-vector-exporting decoder, optionally in its own thread.

    Frames come in at 6 fps (YUV 4:2:0); the encoder's packets go straight to a decoder with
    ``flags2=+export_mvs`` (no container, no file), whose frames go to a :class:`_MotionAccumulator`.
    I-frame packets are kept (spooled to a temporary file, as the grids are) so the chosen keyframes
    can be decoded at the end without keeping any decoded picture.
    """

    def __init__(
        self,
        fps: int,
        bit_rate: int,
        gop_size: int,
        threads: int,
        accumulator: _MotionAccumulator,
        stream_copy: BinaryIO | None = None,
    ):
        self.fps, self.bit_rate, self.gop_size, self.threads = fps, bit_rate, gop_size, threads
        self.accumulator = accumulator
        self.stream_copy = stream_copy
        self.encoder: av.CodecContext | None = None
        self.decoder = av.CodecContext.create("mpeg4", "r")
        self.decoder.options = {"flags2": "+export_mvs"}
        self.decoder.thread_count = 1
        self.intra_packets = _SpooledRecords()

    def _open_encoder(self, frame: av.VideoFrame) -> av.CodecContext:
        encoder = av.CodecContext.create("mpeg4", "w")
        encoder.width, encoder.height = frame.width, frame.height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = Fraction(1, self.fps)
        encoder.framerate = Fraction(self.fps)
        encoder.bit_rate = self.bit_rate
        encoder.gop_size = self.gop_size
        encoder.max_b_frames = 0
        # The bitstream depends on the encoder's thread count (slices): 1 keeps results reproducible.
        encoder.thread_count = self.threads
        encoder.open()
        return encoder

    def push(self, frame: av.VideoFrame | None) -> None:
        """Encode one frame (``None`` flushes) and decode the resulting packets for their motion."""
        if self.encoder is None:
            if frame is None:
                return
            self.encoder = self._open_encoder(frame)
        if frame is not None:
            # A decoded I-frame would force an I-frame here too; the encoder must choose (GOP 12).
            frame.pict_type = PictureType.NONE
        for packet in self.encoder.encode(frame):
            if self.stream_copy is not None:
                self.stream_copy.write(bytes(packet))
            if packet.is_keyframe:
                self.intra_packets.append(bytes(packet))
            for decoded in self.decoder.decode(packet):
                self.accumulator.add(decoded)
        if frame is None:
            for decoded in self.decoder.decode(None):
                self.accumulator.add(decoded)

    def run_threaded(self, frames: Iterator[av.VideoFrame]) -> None:
        """Encode ``frames`` in a second thread while the caller's iterator keeps decoding."""
        pending: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
        failure: list[BaseException] = []

        def work() -> None:
            while (frame := pending.get()) is not _END:
                if not failure:
                    try:
                        self.push(frame)
                    except Exception as error:  # re-raised in the caller's thread
                        failure.append(error)
            if not failure:
                try:
                    self.push(None)
                except Exception as error:
                    failure.append(error)

        worker = threading.Thread(target=work, name="vlavit-mpeg4-encoder", daemon=True)
        worker.start()
        try:
            for frame in frames:
                if failure:
                    break
                pending.put(frame)
        finally:
            pending.put(_END)
            worker.join()
        if failure:
            raise failure[0]


def _source_frames(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    name: str,
    decoder_threads: int,
) -> Iterator[av.VideoFrame]:
    """Decoded frames of ``stream``; stops with a warning at a decoding error after some frames."""
    stream.thread_type = "AUTO"
    stream.thread_count = decoder_threads
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.FFmpegError as error:
        if count == 0:
            raise VideoDecodeError(
                f"{name}: the video stream cannot be decoded ({_describe(error)})"
            ) from error
        logger.warning(
            "%s: decoding stopped after %d frames (%s); using the frames read so far",
            name,
            count,
            _describe(error),
        )


def _skipping_source_frames(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    decoder_threads: int,
    plan: _SkipPlan,
) -> Iterator[av.VideoFrame]:
    """Decoded frames of ``stream``, the decoder dropping the unreferenced frames ``plan`` does not need.

    Every packet whose frame is not needed goes in with ``skip_frame="NONREF"``: the decoder drops it
    when no other frame refers to it and decodes it otherwise. The setting is read when the packet is
    submitted (frame threads copy it then), so frames that come out later, as B-frames and frame
    threads make them do, do not matter. Frames come out in presentation order; each is checked against
    the plan before it is yielded.

    Raises:
        _PlanMismatch: a needed frame did not come out, a frame the plan does not know did, frames
            came out of order or decoding failed; the frames yielded so far must then be discarded.
    """
    stream.thread_type = "AUTO"
    stream.thread_count = decoder_threads
    context = stream.codec_context
    needed = set(plan.needed)
    waiting, previous = 0, None  # plan.needed[waiting] is the next needed timestamp
    try:
        for packet in container.demux(stream):
            context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in needed else "NONREF"
            for frame in packet.decode():
                pts = frame.pts
                if pts not in plan.presented or (previous is not None and pts <= previous):
                    raise _PlanMismatch(f"the decoder gave an unplanned frame at timestamp {pts}")
                if waiting < len(plan.needed) and plan.needed[waiting] < pts:
                    raise _PlanMismatch(f"the frame at timestamp {plan.needed[waiting]} was not decoded")
                if waiting < len(plan.needed) and plan.needed[waiting] == pts:
                    waiting += 1
                previous = pts
                yield frame
    except av.FFmpegError as error:
        raise _PlanMismatch(f"decoding failed ({_describe(error)})") from error
    if waiting < len(plan.needed):
        raise _PlanMismatch(f"the frame at timestamp {plan.needed[waiting]} was not decoded")


class _Counted:
    """Iterates over ``items`` and counts them in ``count``."""

    def __init__(self, items: Iterator):
        self._items = items
        self.count = 0

    def __iter__(self) -> Iterator:
        for item in self._items:
            self.count += 1
            yield item


def _timed_frames(
    frames: Iterator[av.VideoFrame], stream: av.video.stream.VideoStream, fps: int
) -> Iterator[tuple[int, av.VideoFrame]]:
    """``(1-based number, frame)`` with the timestamps the ``fps`` filter gets, one frame behind its input.

    Timestamps start at 0 (as on FFmpeg's command line); frames without one get a constant rate. The
    last frame's duration sets where the video ends, hence how many frames are output: the one frame of
    look-ahead knows which frame is last before it is yielded, and inputs shorter than half a tick (a
    still image) are stretched to one tick.
    """
    time_base = stream.time_base or Fraction(1, 1000)
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    origin, previous, index = None, None, 0
    for frame in frames:
        pts = frame.pts if frame.pts is not None else int(index / rate / time_base)
        origin = pts if origin is None else origin
        frame.pts, frame.time_base = pts - origin, time_base
        frame.duration = frame.duration or int(1 / rate / time_base)
        index += 1
        if previous is not None:
            yield index - 1, previous
        previous = frame
    if previous is None:
        return
    tick = Fraction(1, fps) / time_base
    if (previous.pts + previous.duration) < tick / 2:
        previous.duration = math.ceil(tick) - previous.pts
    yield index, previous


def _resampled_frames(
    frames: Iterator[av.VideoFrame], stream: av.video.stream.VideoStream, fps: int, name: str
) -> Iterator[av.VideoFrame]:
    """Frames at ``fps`` on their timestamps (FFmpeg ``fps`` filter), upright and in YUV 4:2:0.

    Variable frame rates are resampled like constant ones: each output tick takes the frame shown at
    that time. Inputs shorter than half a tick (a still image) still give one frame.
    """
    time_base = stream.time_base or Fraction(1, 1000)
    graph = None
    for index, frame in _timed_frames(frames, stream, fps):
        if graph is None:
            graph = _fps_graph(
                frame, time_base, fps, _encodable_size(frame.width, frame.height, frame.rotation)
            )
        yield from _filter(graph, frame, name, index)
    if graph is None:
        return
    graph.push(None)
    yield from _drain(graph)


def _filter(graph: av.filter.Graph, frame: av.VideoFrame, name: str, index: int) -> Iterator[av.VideoFrame]:
    """Push one frame into the graph and yield what comes out."""
    try:
        graph.push(frame)
    except av.FFmpegError as error:
        raise VideoDecodeError(
            f"{name}: frame {index} cannot be converted ({_describe(error)}); "
            "videos whose frame size changes midway are not supported"
        ) from error
    yield from _drain(graph)


def _drain(graph: av.filter.Graph) -> Iterator[av.VideoFrame]:
    """Every frame the graph can output now."""
    while True:
        try:
            yield graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return


class _PlanMismatch(Exception):
    """A decode that skipped frames did not give the frames its :class:`_SkipPlan` expects."""


@dataclass(frozen=True)
class _SkipPlan:
    """The source frames a decode must produce for the resampled output; the others may be skipped.

    Attributes:
        needed: ascending presentation timestamps (stream time base) of the frames the ``fps`` filter
            takes, plus the first and the last frame (they set the timestamps' origin and the video's end).
        presented: the presentation timestamps of every frame of the stream.
    """

    needed: tuple[int, ...]
    presented: frozenset[int]


def _single_hevc_sub_layer(extradata: bytes | None) -> bool:
    """Whether HEVC stream headers declare a single temporal sub-layer.

    Reads ``numTemporalLayers`` of an ``hvcC`` record (MP4, Matroska) or ``sps_max_sub_layers_minus1``
    of every SPS in Annex B headers (MPEG-TS); unknown counts as no.
    """
    if not extradata or len(extradata) < 23:
        return False
    if extradata[0] == 1:
        return (extradata[21] >> 3) & 7 == 1
    sps_sub_layers = []
    start = extradata.find(b"\x00\x00\x01")
    while 0 <= start < len(extradata) - 5:
        # 2-byte NAL header (type in bits 1-6 of the first), then the SPS's first byte: vps id (4 bits),
        # max_sub_layers_minus1 (3 bits), temporal_id_nesting (1 bit).
        if (extradata[start + 3] >> 1) & 0x3F == _HEVC_SPS_NAL_TYPE:
            sps_sub_layers.append((extradata[start + 5] >> 1) & 7)
        start = extradata.find(b"\x00\x00\x01", start + 3)
    return bool(sps_sub_layers) and not any(sps_sub_layers)


def _skipping_is_safe(codec_context: av.CodecContext) -> bool:
    """Whether the decoder's ``skip_frame="NONREF"`` drops only pictures no other picture refers to."""
    if codec_context.name in _NONREF_SAFE_CODECS:
        return True
    return codec_context.name == "hevc" and _single_hevc_sub_layer(codec_context.extradata)


def _frames_taken_by_fps(
    timestamps: list[int], durations: list[int], stream: av.video.stream.VideoStream, fps: int
) -> set[int]:
    """Positions (in presentation order) of the frames FFmpeg's ``fps`` filter outputs at least once.

    The real filter runs on stand-ins: 8 x 1 grey frames whose pixels hold their position, timed by
    :func:`_timed_frames` exactly as the decoded frames will be.

    Args:
        timestamps: ascending presentation timestamps of every frame, in the stream's time base.
        durations: each frame's duration in the same units (0 when unknown).
        stream: the video stream (time base and nominal rate).
        fps: output frame rate.

    Returns:
        Positions into ``timestamps``.
    """
    time_base = stream.time_base or Fraction(1, 1000)
    graph = av.filter.Graph()
    graph.link_nodes(
        graph.add_buffer(width=_PLAN_FRAME_BYTES, height=1, format="gray", time_base=time_base),
        _add_fps_filter(graph, fps),
        graph.add("buffersink"),
    ).configure()

    def stand_ins() -> Iterator[av.VideoFrame]:
        for position, (pts, duration) in enumerate(zip(timestamps, durations)):
            pixels = np.frombuffer(position.to_bytes(_PLAN_FRAME_BYTES, "little"), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels.reshape(1, -1), format="gray")
            frame.pts, frame.duration = pts, duration
            yield frame

    taken: set[int] = set()
    for _, frame in _timed_frames(stand_ins(), stream, fps):
        graph.push(frame)
        taken.update(_stand_in_positions(graph))
    graph.push(None)
    taken.update(_stand_in_positions(graph))
    return taken


def _stand_in_positions(graph: av.filter.Graph) -> Iterator[int]:
    """Positions carried by the stand-in frames the planning graph outputs now."""
    for frame in _drain(graph):
        yield int.from_bytes(frame.to_ndarray()[0, :_PLAN_FRAME_BYTES].tobytes(), "little")


def _plan_frame_skipping(source: _Source, fps: int) -> _SkipPlan | None:
    """Demux the video stream (no decoding) and find the frames the resampling to ``fps`` will take.

    Packets carry each frame's presentation timestamp and duration, so the ``fps`` filter's choice is
    known before decoding. Returns ``None`` (decode every frame) when skipping cannot be planned or
    gains nothing: a decoder not known to skip only unreferenced pictures, packets without timestamps
    or with repeated ones, a demuxing error, no B-pictures where only those can be skipped, or a filter
    that takes every frame.
    """
    with source.open() as container:
        stream = _video_stream(container, source.name)
        if not _skipping_is_safe(stream.codec_context):
            return None
        packets, reordered = [], False
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is None:
                    return None
                packets.append((packet.pts, packet.duration or 0))
                reordered = reordered or packet.dts != packet.pts
        except av.FFmpegError:
            return None
        if not reordered and stream.codec_context.name in _B_PICTURES_ONLY_CODECS:
            return None
        packets.sort()
        timestamps = [pts for pts, _ in packets]
        if not timestamps or len(set(timestamps)) != len(timestamps):
            return None
        taken = _frames_taken_by_fps(timestamps, [duration for _, duration in packets], stream, fps)
    needed = sorted({timestamps[position] for position in taken} | {timestamps[0], timestamps[-1]})
    if len(needed) == len(timestamps):
        return None
    return _SkipPlan(needed=tuple(needed), presented=frozenset(timestamps))


def _decode_intra_packets(packets: _SpooledRecords | list[bytes], ordinals: list[int]) -> list[Image.Image]:
    """Decode the chosen I-frames (by I-frame ordinal) from the kept MPEG-4 I-frame packets.

    Every I-frame decodes on its own; the first packet also carries the stream headers, so it goes
    through the decoder first.
    """
    decoder = av.CodecContext.create("mpeg4", "r")
    # One thread: without B-frames every packet then yields its picture at once.
    decoder.thread_count = 1
    wanted = set(ordinals)
    images: dict[int, Image.Image] = {}
    for ordinal in sorted(wanted | {0}):
        frames = decoder.decode(av.Packet(packets[ordinal]))
        if ordinal in wanted:
            if not frames:
                raise VideoDecodeError(f"I-frame {ordinal} of the re-encoded stream could not be decoded")
            images[ordinal] = frames[0].to_image()
    return [images[ordinal] for ordinal in ordinals]


def _decode_keyframes_again(source: _Source, ordinals: list[int]) -> list[Image.Image]:
    """Decode the input a second time, only its intra frames, and return the chosen I-frames as RGB."""
    wanted = set(ordinals)
    images: dict[int, Image.Image] = {}
    with source.open() as container:
        stream = _video_stream(container, source.name)
        stream.codec_context.skip_frame = "NONINTRA"
        ordinal = -1
        for frame in container.decode(stream):
            if _picture_type(frame) != "I":
                continue
            ordinal += 1
            if ordinal in wanted:
                images[ordinal] = frame.to_image()
                if len(images) == len(wanted):
                    break
    missing = wanted - images.keys()
    if missing:
        raise VideoDecodeError(
            f"{source.name}: I-frames {sorted(missing)} could not be decoded a second time"
        )
    return [images[ordinal] for ordinal in ordinals]


@contextlib.contextmanager
def _binary_writer(target: str | os.PathLike | BinaryIO | None) -> Iterator[BinaryIO | None]:
    """Open ``target`` for binary writing when it is a path; pass file objects and ``None`` through."""
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as handle:
            yield handle
    else:
        yield target


def _transcode_frames(encoder: _MotionEncoder, frames: Iterator[av.VideoFrame], overlap: bool) -> None:
    """Feed the 6 fps frames to the MPEG-4 encoder (in its own thread with ``overlap``) until they end."""
    if overlap:
        encoder.run_threaded(frames)
        return
    for frame in frames:
        encoder.push(frame)
    encoder.push(None)


@dataclass
class _Transcoding:
    """What re-encoding the source leaves: the 6 fps frames' motion, their I-frame packets, the source's
    nominal frame rate and the number of source frames decoded."""

    accumulator: _MotionAccumulator
    intra_packets: _SpooledRecords
    nominal_rate: float
    decoded_source_frames: int

    def close(self) -> None:
        """Delete the temporary files of the grids and packets."""
        self.accumulator.grids.close()
        self.intra_packets.close()


def _transcode_source(
    source: _Source,
    plan: _SkipPlan | None,
    mpeg4_file: str | os.PathLike | BinaryIO | None,
    *,
    fps: int,
    bit_rate: int,
    decoder_threads: int,
    encoder_threads: int,
    overlap: bool,
) -> _Transcoding:
    """Decode the source (skipping the frames ``plan`` allows), resample it to ``fps`` and encode it to
    MPEG-4 Part 2, collecting the motion of every encoded frame and writing the stream to ``mpeg4_file``
    (opened once the source is known to hold a video). Temporary files are deleted on errors."""
    accumulator = _MotionAccumulator()
    intra_packets = None
    try:
        with source.open() as container:
            stream = _video_stream(container, source.name)
            with _binary_writer(mpeg4_file) as stream_copy:
                encoder = _MotionEncoder(fps, bit_rate, GOP_SIZE, encoder_threads, accumulator, stream_copy)
                intra_packets = encoder.intra_packets
                if plan is None:
                    decoded = _Counted(_source_frames(container, stream, source.name, decoder_threads))
                else:
                    decoded = _Counted(_skipping_source_frames(container, stream, decoder_threads, plan))
                resampled = _resampled_frames(iter(decoded), stream, fps, source.name)
                _transcode_frames(encoder, resampled, overlap)
            nominal_rate = float(stream.average_rate or stream.guessed_rate or fps)
    except BaseException:
        accumulator.grids.close()
        if intra_packets is not None:
            intra_packets.close()
        raise
    return _Transcoding(accumulator, intra_packets, nominal_rate, decoded.count)


def _rewindable(mpeg4_file: str | os.PathLike | BinaryIO | None) -> bool:
    """Whether what was written to ``mpeg4_file`` can be taken back, as a second decode must (a path is
    simply opened for writing again)."""
    if mpeg4_file is None or isinstance(mpeg4_file, (str, os.PathLike)):
        return True
    try:
        return bool(mpeg4_file.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _transcode(
    source: _Source, mpeg4_file: str | os.PathLike | BinaryIO | None, skip_unused_frames: bool, **settings
) -> _Transcoding:
    """:func:`_transcode_source`, skipping unused source frames when asked and planned; when that decode
    does not give the planned frames, again decoding every frame (the same result as never skipping)."""
    plan = None
    if skip_unused_frames and _rewindable(mpeg4_file):
        plan = _plan_frame_skipping(source, settings["fps"])
    if plan is not None:
        is_file_object = mpeg4_file is not None and not isinstance(mpeg4_file, (str, os.PathLike))
        start = mpeg4_file.tell() if is_file_object else None
        try:
            return _transcode_source(source, plan, mpeg4_file, **settings)
        except _PlanMismatch as mismatch:
            logger.info(
                "%s: skipping unused frames did not work out (%s); decoding every frame instead",
                source.name,
                mismatch,
            )
        if start is not None:
            mpeg4_file.seek(start)
            mpeg4_file.truncate()
    return _transcode_source(source, None, mpeg4_file, **settings)


def _read_stream_motion(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    accumulator: _MotionAccumulator,
    name: str,
    fps: int,
    decoder_threads: int,
) -> None:
    """``transcode=False``: accumulate the motion vectors of the source stream's own frames as they are."""
    if stream.codec_context.name != "mpeg4":
        logger.warning(
            "%s: transcode=False reads the motion vectors of its %s stream as they are; "
            "Video-LaVIT was trained on MPEG-4 Part 2 at %d fps (use transcode=True)",
            name,
            stream.codec_context.name,
            fps,
        )
    stream.codec_context.options = {"flags2": "+export_mvs"}
    for frame in _source_frames(container, stream, name, decoder_threads):
        accumulator.add(frame)


def _clip_keyframes(
    source: _Source, intra_packets: _SpooledRecords | None, frame_types: str, ordinals: list[int]
) -> list[Image.Image]:
    """The clips' keyframes: decoded from the re-encoding's I-frame packets when there are some (transcode),
    else decoded again from the source."""
    if intra_packets is None:
        return _decode_keyframes_again(source, ordinals)
    if len(intra_packets) != frame_types.count("I"):
        raise VideoDecodeError(f"{source.name}: the MPEG-4 encoder's key packets do not match its I-frames")
    return _decode_intra_packets(intra_packets, ordinals)


def decompose_video(
    video: VideoInput,
    *,
    transcode: bool = True,
    fps: int = DEFAULT_FPS,
    clip_frames: int = DEFAULT_CLIP_FRAMES,
    max_clips: int = DEFAULT_MAX_CLIPS,
    bit_rate: int = MPEG4_BIT_RATE,
    decoder_threads: int = 0,
    encoder_threads: int = 1,
    overlap: bool = True,
    mpeg4_file: str | os.PathLike | BinaryIO | None = None,
    skip_unused_frames: bool = True,
) -> VideoDecomposition:
    """Split a video into Video-LaVIT clips: one keyframe and ``clip_frames`` frames of motion each.

    Args:
        video: path, bytes or binary file object, in any container/codec PyAV's FFmpeg decodes.
            Still images (PNG, JPEG...) work as one-frame videos: one clip, zero motion.
        transcode: re-encode to MPEG-4 Part 2 at ``fps`` first (as the original always does for
            raw files). ``False`` reads the given stream's own motion vectors as they are; use it
            only for streams that already are 6 fps MPEG-4 Part 2 with a GOP of 12.
        fps: frame rate of the re-encoded stream.
        clip_frames: frames per clip (24 = 4 s at 6 fps).
        max_clips: most clips taken from one video (evenly spread when there are more).
        bit_rate: MPEG-4 bit rate in bit/s.
        decoder_threads: threads of the source decoder (0: FFmpeg's choice); results do not depend on it.
        encoder_threads: threads of the MPEG-4 encoder. Values above 1 are faster but change the
            bitstream (slices), hence the motion vectors; 1 is reproducible.
        overlap: encode in a second thread while the source is being decoded (same results).
        mpeg4_file: path or binary file object that also receives the re-encoded stream (a raw
            MPEG-4 Part 2 elementary stream, ``.m4v``: what the original writes to its temporary
            file). Decomposing it again with ``transcode=False`` gives identical results, which
            makes it a reproducible cache. Ignored when ``transcode=False``.
        skip_unused_frames: leave undecoded the source frames that the resampling to ``fps`` drops and
            that no other frame refers to (non-reference B/P-frames of H.264, single-layer HEVC,
            MPEG-1/2 and MPEG-4 Part 2 streams): a demuxing pass finds the frames the ``fps`` filter
            takes, the decoder skips the others where it can, and every needed frame is checked to
            come out. The result is bit-identical to decoding every frame; when the check fails the
            source is decoded again in full (logged at info level). ``decoded_source_frames`` tells
            how many were decoded. Ignored when ``transcode=False`` (every frame's vectors are read)
            and when ``mpeg4_file`` is a file object that cannot seek (a second decode could not
            rewrite it).

    Returns:
        :class:`VideoDecomposition` with ``motion_vectors`` of shape ``[clips, 2, clip_frames, 20, 36]``.

    Notes:
        Frame sizes: the MPEG-4 Part 2 encoder takes odd sizes such as 33 x 17 as they are; frames
        with a side above 8191 pixels (its limit) are scaled down to fit, keeping the aspect ratio.
        Display rotation metadata is applied (as FFmpeg's command line does), audio is ignored.
        Videos shorter than one clip give one clip padded with zero motion, as in the original.

    Raises:
        VideoDecodeError: the input is missing, empty, not a video or cannot be decoded.
        DecompositionSettingsError: ``fps``, ``clip_frames`` or ``max_clips`` is not positive.
    """
    if fps <= 0 or clip_frames <= 0 or max_clips <= 0:
        raise DecompositionSettingsError(
            f"fps, clip_frames and max_clips must be positive, got {fps}, {clip_frames}, {max_clips}; "
            f"the original's settings are fps={DEFAULT_FPS}, clip_frames={DEFAULT_CLIP_FRAMES}, "
            f"max_clips={DEFAULT_MAX_CLIPS}"
        )
    source = _as_source(video)
    # The grids and I-frame packets live in temporary files until the clips are chosen.
    with contextlib.ExitStack() as spools:
        if transcode:
            transcoding = _transcode(
                source,
                mpeg4_file,
                skip_unused_frames,
                fps=fps,
                bit_rate=bit_rate,
                decoder_threads=decoder_threads,
                encoder_threads=encoder_threads,
                overlap=overlap,
            )
            spools.callback(transcoding.close)
            accumulator, intra_packets = transcoding.accumulator, transcoding.intra_packets
            nominal_rate, decoded_source_frames = transcoding.nominal_rate, transcoding.decoded_source_frames
        else:
            accumulator = _MotionAccumulator()
            spools.callback(accumulator.grids.close)
            with source.open() as container:
                stream = _video_stream(container, source.name)
                _read_stream_motion(container, stream, accumulator, source.name, fps, decoder_threads)
                nominal_rate = float(stream.average_rate or stream.guessed_rate or fps)
            intra_packets, decoded_source_frames = None, len(accumulator.types)

        frame_types = "".join(accumulator.types)
        if not frame_types:
            raise VideoDecodeError(f"{source.name}: no video frame could be decoded")
        starts = select_clip_starts(frame_types, clip_frames=clip_frames, max_clips=max_clips)
        if not starts:
            raise VideoDecodeError(f"{source.name}: the stream has no I-frame to start a clip at")
        intra_ordinal = np.cumsum(np.frombuffer(frame_types.encode("ascii"), dtype=np.uint8) == ord("I")) - 1
        ordinals = [int(intra_ordinal[start]) for start in starts]
        keyframes = _clip_keyframes(source, intra_packets, frame_types, ordinals)

        blocks = _clip_blocks(accumulator.grids, starts, clip_frames, accumulator.frame_size)
        motion = motion_from_blocks(blocks)
        return VideoDecomposition(
            keyframes=keyframes,
            motion_vectors=motion,
            block_motion=blocks.transpose(1, 2) / LLM_MOTION_SCALE,
            keyframe_indices=starts,
            frame_types=frame_types,
            fps=float(fps) if transcode else accumulator.fps(nominal_rate),
            frame_size=accumulator.frame_size,
            decoded_source_frames=decoded_source_frames,
        )
