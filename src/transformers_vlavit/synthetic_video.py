"""Synthetic sample videos made with PyAV: the demo input and the media the tests generate.

The picture is a textured background that pans slowly (global motion), a disc moving on a sine path
and a square crossing the frame (local motion), so an MPEG-4 encoder finds real motion vectors in
every P-frame. Frames are drawn directly as YUV 4:2:0 planes with NumPy, which keeps long or large
videos cheap to generate.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from .video_encoding import REPRODUCIBLE_X264_OPTIONS

# Container chosen from the file suffix when `container_format` is not given.
_FORMAT_BY_SUFFIX = {
    ".mp4": "mp4",
    ".m4v": "m4v",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".gif": "gif",
    ".mpg": "mpeg",
    ".ts": "mpegts",
    ".nut": "nut",
}
# Pixel format each encoder accepts for the YUV planes we draw (converted when needed).
_PIX_FMT_BY_CODEC = {"mjpeg": "yuvj420p", "gif": "rgb8", "png": "rgb24"}
_AUDIO_CODEC_BY_FORMAT = {
    "webm": "libopus",
    "matroska": "libopus",
    "avi": "libmp3lame",
    "mpegts": "aac",
    "nut": "aac",
}
# Codecs whose muxed timestamps must follow a fixed frame rate (they cannot carry variable rate).
_CONSTANT_RATE_FORMATS = {"m4v", "gif", "mpeg"}


class SyntheticVideoError(ValueError):
    """The requested synthetic video cannot be written with these settings."""


@dataclass(frozen=True)
class _Scene:
    """Pre-computed pieces of the synthetic picture for one video size."""

    width: int
    height: int
    luma_texture: np.ndarray  # [height + pan, width + pan] uint8
    chroma_texture: np.ndarray  # [2, (height + pan) // 2, (width + pan) // 2] uint8


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Value noise: a coarse random grid upsampled bilinearly, shape ``[height, width]`` in [0, 1]."""
    coarse = rng.random((height // cell + 2, width // cell + 2))
    ys = np.arange(height) / cell
    xs = np.arange(width) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _build_scene(width: int, height: int, seed: int) -> _Scene:
    """Draw the background textures once; frames are panned windows into them."""
    rng = np.random.default_rng(seed)
    pan = _pan_extent(width, height)
    full_h, full_w = height + pan, width + pan
    # Texture at two scales so motion search has both coarse and fine structure to lock onto.
    cell = max(4, min(width, height) // 8)
    luma = 40 + 120 * _smooth_noise(rng, full_h, full_w, cell) + 60 * _smooth_noise(rng, full_h, full_w, 2)
    chroma_h, chroma_w = (full_h + 1) // 2, (full_w + 1) // 2
    chroma = np.stack([96 + 64 * _smooth_noise(rng, chroma_h, chroma_w, max(2, cell // 2)) for _ in range(2)])
    return _Scene(width, height, luma.clip(16, 235).astype(np.uint8), chroma.clip(16, 240).astype(np.uint8))


def _pan_extent(width: int, height: int) -> int:
    """How far (pixels) the camera pans over the whole video."""
    return max(8, min(width, height) // 4)


def _draw_frame(scene: _Scene, progress: float, time_s: float) -> np.ndarray:
    """Render one frame as a planar YUV 4:2:0 array ``[height * 3 // 2, width]`` (sizes divisible by 4).

    Args:
        scene: pre-computed textures for this video size.
        progress: position in the video in [0, 1] (drives the camera pan and the square).
        time_s: time of the frame in seconds (drives the disc).
    """
    width, height = scene.width, scene.height
    pan = _pan_extent(width, height)
    offset = int(round(progress * pan))
    luma = scene.luma_texture[offset : offset + height, offset : offset + width].copy()
    half = offset // 2
    chroma = scene.chroma_texture[:, half : half + height // 2, half : half + width // 2].copy()

    radius = max(2, min(width, height) // 8)
    cx = width / 2 + (width / 3) * np.sin(2 * np.pi * time_s / 3.0)
    cy = height / 2 + (height / 4) * np.cos(2 * np.pi * time_s / 5.0)
    yy, xx = np.ogrid[:height, :width]
    luma[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 210
    cyy, cxx = np.ogrid[: height // 2, : width // 2]
    disc_c = (cyy - cy / 2) ** 2 + (cxx - cx / 2) ** 2 <= (radius / 2) ** 2
    chroma[0][disc_c], chroma[1][disc_c] = 60, 190

    side = max(2, min(width, height) // 6)
    sx = int((width + side) * ((progress * 3) % 1.0)) - side
    sy = height // 2 - side // 2
    x0, x1 = max(sx, 0), min(sx + side, width)
    if x1 > x0:
        luma[sy : sy + side, x0:x1] = 70
        chroma[0][sy // 2 : (sy + side) // 2, x0 // 2 : x1 // 2] = 200
        chroma[1][sy // 2 : (sy + side) // 2, x0 // 2 : x1 // 2] = 90
    return np.concatenate([luma, chroma[0].reshape(-1, width), chroma[1].reshape(-1, width)])


def _frame_times(duration: float, fps: float, variable_frame_rate: bool) -> np.ndarray:
    """Presentation times (seconds) of every frame; variable rate alternates short and long gaps."""
    count = max(1, int(round(duration * fps)))
    if not variable_frame_rate:
        return np.arange(count) / fps
    # Gaps of 0.5, 1.5, 1 and 2 frame periods (mean 1.25): a clearly non-constant rate.
    gaps = np.resize(np.array([0.5, 1.5, 1.0, 2.0]) / fps, count)
    times = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    return times[times < duration] if duration > 0 else times[:1]


def write_synthetic_video(
    destination: str | os.PathLike | BinaryIO | None = None,
    *,
    width: int = 320,
    height: int = 240,
    duration: float = 4.0,
    fps: float = 30.0,
    codec: str = "libx264",
    container_format: str | None = None,
    pix_fmt: str | None = None,
    bit_rate: int | None = None,
    audio: bool = False,
    rotation: int = 0,
    variable_frame_rate: bool = False,
    codec_options: dict[str, str] | None = None,
    seed: int = 0,
) -> bytes | None:
    """Write a synthetic video of moving shapes over a panning texture.

    Args:
        destination: file path or writable binary file object; ``None`` returns the encoded bytes.
        width, height: frame size in pixels (odd sizes are allowed when the codec accepts them).
        duration: length in seconds.
        fps: frame rate (the mean rate when ``variable_frame_rate`` is set).
        codec: any encoder of PyAV's FFmpeg (``libx264``, ``mpeg4``, ``libvpx-vp9``, ``mjpeg``, ``gif``...).
        container_format: FFmpeg muxer name; inferred from the path suffix, else ``"mp4"``.
        pix_fmt: encoder pixel format; defaults to one the codec accepts (``yuv420p`` mostly).
        bit_rate: target bit rate in bit/s (codec default when ``None``).
        audio: add a 440 Hz tone as a second stream.
        rotation: display rotation in degrees counter-clockwise written as stream metadata
            (the pixels stay unrotated, as a phone camera stores them).
        variable_frame_rate: use irregular frame intervals (timestamps in milliseconds).
        codec_options: extra encoder options (e.g. ``{"preset": "ultrafast"}``), over libx264's reproducible defaults.
        seed: seed of the background texture.

    Returns:
        The file's bytes when ``destination`` is ``None``, else ``None``.
    """
    if width < 2 or height < 2 or duration <= 0 or fps <= 0:
        raise SyntheticVideoError(
            f"need width, height >= 2 and positive duration and fps, got {width}x{height}, "
            f"{duration} s, {fps} fps"
        )
    buffer = io.BytesIO() if destination is None else None
    target = buffer if buffer is not None else destination
    if container_format is None:
        suffix = Path(destination).suffix.lower() if isinstance(destination, (str, os.PathLike)) else ""
        container_format = _FORMAT_BY_SUFFIX.get(suffix, "mp4")
    if variable_frame_rate and container_format in _CONSTANT_RATE_FORMATS:
        raise SyntheticVideoError(
            f"container {container_format!r} cannot store a variable frame rate; use mp4 or mkv"
        )

    # PyAV's planar YUV 4:2:0 arrays need sizes divisible by 4: draw at the size just above and
    # resample other sizes (odd ones included) when the frame is handed to the encoder.
    scene = _build_scene(-(-width // 4) * 4, -(-height // 4) * 4, seed)
    times = _frame_times(duration, fps, variable_frame_rate)
    rate = Fraction(fps).limit_denominator(1001)
    time_base = Fraction(1, 1000) if variable_frame_rate else 1 / rate

    with av.open(target, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt or _PIX_FMT_BY_CODEC.get(codec, "yuv420p")
        stream.codec_context.time_base = time_base
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        options = dict(REPRODUCIBLE_X264_OPTIONS) if codec == "libx264" else {}
        options.update(codec_options or {})
        if options:
            stream.options = options
        if rotation:
            stream.set_display_rotation(rotation)
        audio_writer = None
        if audio:
            audio_codec = _AUDIO_CODEC_BY_FORMAT.get(container_format, "aac")
            audio_writer = _ToneWriter(container.add_stream(audio_codec, rate=48000))

        for time_s in times:
            planes = _draw_frame(scene, float(time_s) / duration, float(time_s))
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            if (width, height) != (scene.width, scene.height):
                frame = frame.reformat(width=width, height=height, interpolation="AREA")
            frame.pts = int(round(time_s / time_base))
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
            if audio_writer is not None:
                audio_writer.write_until(container, float(time_s) + 1.0 / fps)
        for packet in stream.encode():
            container.mux(packet)
        if audio_writer is not None:
            audio_writer.finish(container)
    return buffer.getvalue() if buffer is not None else None


def write_training_sample_video(
    destination: str | os.PathLike | BinaryIO | None = None, *, fps: float, seed: int = 0
) -> bytes | None:
    """The small synthetic video the training examples make when they run without real data.

    160 x 128 pixels keeps tiny CPU runs fast; 4.5 seconds holds a full 24-frame clip at 6 fps after
    decomposition. Arguments and return value as in :func:`write_synthetic_video`. A path destination is
    written to a temporary file first and renamed into place, so the processes of a multi-process launch
    that all write the same sample never read a half-written file.
    """
    settings = {"width": 160, "height": 128, "duration": 4.5, "fps": fps, "seed": seed}
    if destination is None or not isinstance(destination, (str, os.PathLike)):
        return write_synthetic_video(destination, **settings)
    destination = Path(destination)
    partial = destination.with_name(f".{destination.stem}.{os.getpid()}.partial{destination.suffix}")
    try:
        write_synthetic_video(partial, **settings)
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return None


class _ToneWriter:
    """Encodes a sine tone into an audio stream, in step with the video being written."""

    def __init__(self, stream: av.audio.stream.AudioStream, frequency: float = 440.0):
        self.stream = stream
        self.frequency = frequency
        self.samples_written = 0
        # Encoders with a fixed frame size (AAC: 1024) report it; the others take any size.
        self.frame_size = stream.codec_context.frame_size or 1024

    def write_until(self, container: av.container.OutputContainer, time_s: float) -> None:
        """Encode tone frames until the audio reaches ``time_s`` seconds."""
        rate = self.stream.codec_context.sample_rate
        while self.samples_written < time_s * rate:
            t = (self.samples_written + np.arange(self.frame_size)) / rate
            samples = (0.2 * np.sin(2 * np.pi * self.frequency * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = self.samples_written
            self.samples_written += self.frame_size
            for packet in self.stream.encode(frame):
                container.mux(packet)

    def finish(self, container: av.container.OutputContainer) -> None:
        """Flush the audio encoder into the container."""
        for packet in self.stream.encode():
            container.mux(packet)
