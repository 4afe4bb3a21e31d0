"""The "shapes" world: synthetic videos of one coloured shape moving on a plain background, with ground truth.

Every video shows one object (a circle, square or triangle in one of six well-separated colours) that moves
left, right, up or down, or stays still, during each 4-second clip. One-clip videos last exactly one clip
(4 s: Video-LaVIT's decomposition takes the clip from frame 0). Two-clip videos last 10 s: the object rests
for 2 s, then moves in a first direction for 4 s and in a second one for 4 s, because the original clip
sampling of a 10 s video takes its clips at 2-6 s and 6-10 s (see :func:`~transformers_vlavit.select_clip_starts`).

The world exists so that a small Video-LaVIT can be trained end to end and *measured*: each video comes with
its attributes (colour, shape, direction per clip, the object's centre in every frame), captions from several
templates and question-answer pairs. Some colour x shape combinations are held out of the training split
entirely, to measure compositional generalisation.

Frames are drawn with NumPy (4x super-sampled edges) and written as H.264 with PyAV.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..video_encoding import REPRODUCIBLE_X264_OPTIONS

# Saturated colours far apart in RGB, so that a blurry generated frame still has an unambiguous nearest one.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 210),
    "cyan": (40, 210, 215),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOVING_DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
DIRECTIONS: tuple[str, ...] = (*MOVING_DIRECTIONS, "still")
# unit displacement of each direction in image coordinates (x to the right, y downwards)
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "still": (0, 0),
}
# colour x shape pairs never shown in the training split (they appear in validation and test only)
HELD_OUT_COMBINATIONS: frozenset[tuple[str, str]] = frozenset(
    {("green", "triangle"), ("yellow", "circle"), ("blue", "square")}
)
SPLITS: tuple[str, ...] = ("train", "validation", "test")

CLIP_SECONDS = 4.0
# a two-clip video rests this long before its first clip (the original's clip sampling skips it)
LEAD_IN_SECONDS = 2.0
# side of the object's bounding box relative to the frame side
OBJECT_SCALE = 0.25
# travel of a moving object during one clip, relative to the frame side
TRAVEL_RANGE = (0.3, 0.45)
TWO_CLIP_TRAVEL_RANGE = (0.22, 0.3)

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} {motion}",
    "a {colour} {shape} {motion} on a dark background",
    "there is a {colour} {shape} that {motion}",
    "video of a {colour} {shape} that {motion}",
)
MOTION_PHRASES: dict[str, str] = {
    "left": "moves to the left",
    "right": "moves to the right",
    "up": "moves up",
    "down": "moves down",
    "still": "stays still",
}


class ShapesWorldError(ValueError):
    """A shapes-world video cannot be made with these settings."""


@dataclass(frozen=True)
class ShapesVideoSpec:
    """Everything that determines one shapes-world video (its frames follow from it deterministically).

    Attributes:
        video_id: name of the video (file stem).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        colour, shape: the object's attributes (keys of :data:`PALETTE`, items of :data:`SHAPES`).
        directions: one direction per clip (items of :data:`DIRECTIONS`), one or two clips.
        start: the object's centre at time 0, ``(x, y)`` in pixels.
        travel: distance moved during each clip, in pixels (0 for ``"still"``).
        size: frame side in pixels (square frames).
        fps: frame rate of the file.
        background: grey level of the background.
        texture_seed: seed of a faint static background texture, or ``None`` for a flat background.
        caption_template: index into :data:`CAPTION_TEMPLATES`.
    """

    video_id: str
    split: str
    colour: str
    shape: str
    directions: tuple[str, ...]
    start: tuple[float, float]
    travel: tuple[float, ...]
    size: int = 64
    fps: int = 24
    background: int = 40
    texture_seed: int | None = None
    caption_template: int = 0

    @property
    def num_clips(self) -> int:
        """Clips of the video (1 or 2)."""
        return len(self.directions)

    @property
    def held_out(self) -> bool:
        """Whether the colour x shape combination is one of :data:`HELD_OUT_COMBINATIONS`."""
        return (self.colour, self.shape) in HELD_OUT_COMBINATIONS

    @property
    def duration(self) -> float:
        """Length in seconds: one clip, or the lead-in plus two clips."""
        return CLIP_SECONDS if self.num_clips == 1 else LEAD_IN_SECONDS + self.num_clips * CLIP_SECONDS

    @property
    def num_frames(self) -> int:
        """Frames in the file."""
        return int(round(self.duration * self.fps))

    @property
    def object_size(self) -> float:
        """Side of the object's bounding box in pixels."""
        return OBJECT_SCALE * self.size


def clip_start_time(num_clips: int, clip: int) -> float:
    """Time (s) at which ``clip`` (0-based) starts in a video of ``num_clips`` clips."""
    return clip * CLIP_SECONDS if num_clips == 1 else LEAD_IN_SECONDS + clip * CLIP_SECONDS


def object_centre(spec: ShapesVideoSpec, time_s: float) -> tuple[float, float]:
    """The object's centre ``(x, y)`` in pixels at ``time_s`` seconds (piecewise linear path)."""
    x, y = spec.start
    for clip, (direction, travel) in enumerate(zip(spec.directions, spec.travel)):
        begin = clip_start_time(spec.num_clips, clip)
        fraction = min(max((time_s - begin) / CLIP_SECONDS, 0.0), 1.0)
        dx, dy = DIRECTION_VECTORS[direction]
        x, y = x + dx * travel * fraction, y + dy * travel * fraction
    return x, y


def frame_positions(spec: ShapesVideoSpec) -> np.ndarray:
    """Centre of the object in every frame of the file: ``[num_frames, 2]`` float (x, y) pixels."""
    return np.array([object_centre(spec, index / spec.fps) for index in range(spec.num_frames)])


def _shape_mask(shape: str, centre: tuple[float, float], side: float, size: int, supersample: int = 4) -> np.ndarray:
    """Coverage of the object over the frame's pixels: ``[size, size]`` float in [0, 1] (anti-aliased).

    Only the pixels of the object's bounding box are super-sampled; the rest of the frame is 0.
    """
    cx, cy = centre
    half = side / 2
    x0, y0 = max(int(np.floor(cx - half)) - 1, 0), max(int(np.floor(cy - half)) - 1, 0)
    x1, y1 = min(int(np.ceil(cx + half)) + 1, size), min(int(np.ceil(cy + half)) + 1, size)
    coverage = np.zeros((size, size))
    if x1 <= x0 or y1 <= y0:
        return coverage
    ys = y0 + (np.arange((y1 - y0) * supersample) + 0.5)[:, None] / supersample
    xs = x0 + (np.arange((x1 - x0) * supersample) + 0.5)[None, :] / supersample
    if shape == "circle":
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    elif shape == "square":
        inside = (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    elif shape == "triangle":
        # isosceles, apex up, base at the bottom of the bounding box
        top, bottom = cy - half, cy + half
        progress = (ys - top) / side  # 0 at the apex, 1 at the base
        inside = (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= half * progress)
    else:
        raise ShapesWorldError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    window = inside.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
    coverage[y0:y1, x0:x1] = window
    return coverage


def _background(spec: ShapesVideoSpec) -> np.ndarray:
    """The static background: ``[size, size, 3]`` float32 (flat grey, or grey with a faint texture)."""
    base = np.full((spec.size, spec.size, 3), float(spec.background), dtype=np.float32)
    if spec.texture_seed is None:
        return base
    rng = np.random.default_rng(spec.texture_seed)
    cells = max(2, spec.size // 8)
    coarse = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    positions = np.linspace(0, cells, spec.size)
    index = np.minimum(positions.astype(int), cells - 1)
    fraction = positions - index
    rows = coarse[index] * (1 - fraction)[:, None] + coarse[index + 1] * fraction[:, None]
    texture = rows[:, index] * (1 - fraction)[None, :] + rows[:, index + 1] * fraction[None, :]
    return base + 12.0 * texture[..., None].astype(np.float32)


def render_frames(spec: ShapesVideoSpec) -> np.ndarray:
    """All frames of a video: ``[num_frames, size, size, 3]`` uint8 RGB."""
    background = _background(spec)
    colour = np.array(PALETTE[spec.colour], dtype=np.float32)
    frames = np.empty((spec.num_frames, spec.size, spec.size, 3), dtype=np.uint8)
    for index, centre in enumerate(frame_positions(spec)):
        coverage = _shape_mask(spec.shape, tuple(centre), spec.object_size, spec.size)[..., None]
        frames[index] = np.rint(background * (1 - coverage) + colour * coverage).clip(0, 255).astype(np.uint8)
    return frames


def write_video(spec: ShapesVideoSpec, path: str | os.PathLike, crf: int = 18) -> None:
    """Render ``spec`` and write it as an H.264 ``.mp4`` (yuv420p) at ``spec.fps``; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        with av.open(str(partial), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(spec.fps))
            stream.width = stream.height = spec.size
            stream.pix_fmt = "yuv420p"
            # the bitstream (hence the motion vectors found later) depends on the frames alone
            stream.options = {"crf": str(crf), "preset": "medium", **REPRODUCIBLE_X264_OPTIONS}
            for index, rgb in enumerate(render_frames(spec)):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = index
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def caption(spec: ShapesVideoSpec, template: int | None = None) -> str:
    """A caption such as ``"a red circle moves to the left, then moves up"``."""
    motion = ", then ".join(MOTION_PHRASES[direction] for direction in spec.directions)
    chosen = spec.caption_template if template is None else template
    return CAPTION_TEMPLATES[chosen % len(CAPTION_TEMPLATES)].format(
        colour=spec.colour, shape=spec.shape, motion=motion
    )


def generation_prompt(colour: str, shape: str, directions: tuple[str, ...] | list[str]) -> str:
    """The canonical text-to-video prompt of a ground truth: ``"a red circle moves to the left"``."""
    motion = ", then ".join(MOTION_PHRASES[direction] for direction in directions)
    return f"a {colour} {shape} {motion}"


def questions(spec: ShapesVideoSpec) -> list[dict[str, str]]:
    """Question-answer pairs about a video: ``[{"question", "answer", "type"}]``; answers are one word.

    Types: ``colour``, ``shape``, ``direction`` (of the first clip) and, for two-clip videos, ``after`` (the
    direction of the second clip, asked relative to the first).
    """
    pairs = [
        {"question": "What colour is the object?", "answer": spec.colour, "type": "colour"},
        {"question": "What shape is the object?", "answer": spec.shape, "type": "shape"},
        {
            "question": "Which way does the object move first?"
            if spec.num_clips > 1
            else "Which way does the object move?",
            "answer": spec.directions[0],
            "type": "direction",
        },
    ]
    if spec.num_clips > 1:
        pairs.append(
            {
                "question": f"Where does the {spec.shape} go after it {MOTION_PHRASES[spec.directions[0]]}?",
                "answer": spec.directions[1],
                "type": "after",
            }
        )
    return pairs


def _feasible_start(
    rng: np.random.Generator, size: int, half: float, directions: tuple[str, ...], travel: tuple[float, ...]
) -> tuple[float, float] | None:
    """A random start whose whole path keeps the object inside the frame, or ``None`` if none exists."""
    margin = half + 1.0
    offsets = [(0.0, 0.0)]
    x = y = 0.0
    for direction, distance in zip(directions, travel):
        dx, dy = DIRECTION_VECTORS[direction]
        x, y = x + dx * distance, y + dy * distance
        offsets.append((x, y))
    xs, ys = zip(*offsets)
    low_x, high_x = margin - min(xs), size - margin - max(xs)
    low_y, high_y = margin - min(ys), size - margin - max(ys)
    if low_x > high_x or low_y > high_y:
        return None
    return float(rng.uniform(low_x, high_x)), float(rng.uniform(low_y, high_y))


def sample_spec(
    rng: np.random.Generator,
    video_id: str,
    split: str,
    colour: str,
    shape: str,
    *,
    num_clips: int,
    size: int = 64,
    fps: int = 24,
    texture_probability: float = 0.5,
) -> ShapesVideoSpec:
    """Draw the random parts of a video (directions, speed, start, background) for given attributes."""
    if num_clips == 1:
        directions = (str(rng.choice(DIRECTIONS)),)
        travel_range = TRAVEL_RANGE
    elif num_clips == 2:
        first = str(rng.choice(MOVING_DIRECTIONS))
        second = str(rng.choice([d for d in MOVING_DIRECTIONS if d != first]))
        directions = (first, second)
        travel_range = TWO_CLIP_TRAVEL_RANGE
    else:
        raise ShapesWorldError(f"num_clips must be 1 or 2, got {num_clips}")
    half = OBJECT_SCALE * size / 2
    travel = tuple(
        0.0 if direction == "still" else float(rng.uniform(*travel_range) * size) for direction in directions
    )
    start = _feasible_start(rng, size, half, directions, travel)
    if start is None:  # a path that cannot fit (only at tiny sizes): shorten it until it does
        travel = tuple(distance * 0.5 for distance in travel)
        start = _feasible_start(rng, size, half, directions, travel)
    if start is None:
        raise ShapesWorldError(f"frames of {size} px are too small for a moving object")
    textured = rng.random() < texture_probability
    return ShapesVideoSpec(
        video_id=video_id,
        split=split,
        colour=colour,
        shape=shape,
        directions=directions,
        start=start,
        travel=travel,
        size=size,
        fps=fps,
        background=int(rng.integers(25, 60)),
        texture_seed=int(rng.integers(2**31)) if textured else None,
        caption_template=int(rng.integers(len(CAPTION_TEMPLATES))),
    )


@dataclass(frozen=True)
class WorldSettings:
    """How a whole world is drawn (see :func:`sample_world`)."""

    num_videos: int = 2000
    size: int = 64
    fps: int = 24
    seed: int = 0
    two_clip_fraction: float = 0.2
    validation_fraction: float = 0.05
    test_fraction: float = 0.1
    texture_probability: float = 0.5
    held_out: tuple[tuple[str, str], ...] = field(default_factory=lambda: tuple(sorted(HELD_OUT_COMBINATIONS)))


def sample_world(settings: WorldSettings) -> list[ShapesVideoSpec]:
    """Draw every video of a world, deterministically from ``settings.seed``.

    Split assignment is seeded; videos of held-out colour x shape combinations are drawn only for the
    validation and test splits, so the training split never contains them.
    """
    if settings.num_videos < 1:
        raise ShapesWorldError(f"num_videos must be positive, got {settings.num_videos}")
    if settings.size < 32 or settings.size % 16:
        raise ShapesWorldError(f"size must be a multiple of 16 and at least 32, got {settings.size}")
    rng = np.random.default_rng(settings.seed)
    held_out = set(settings.held_out)
    seen = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in held_out]
    all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
    split_draw = rng.random(settings.num_videos)
    specs = []
    for index in range(settings.num_videos):
        if split_draw[index] < settings.test_fraction:
            split = "test"
        elif split_draw[index] < settings.test_fraction + settings.validation_fraction:
            split = "validation"
        else:
            split = "train"
        pairs = seen if split == "train" else all_pairs
        colour, shape = pairs[int(rng.integers(len(pairs)))]
        num_clips = 2 if rng.random() < settings.two_clip_fraction else 1
        specs.append(
            sample_spec(
                rng,
                f"{split}_{index:06d}",
                split,
                colour,
                shape,
                num_clips=num_clips,
                size=settings.size,
                fps=settings.fps,
                texture_probability=settings.texture_probability,
            )
        )
    return specs


def metadata(spec: ShapesVideoSpec, video_path: str) -> dict:
    """The metadata row of a video (the ``metadata.jsonl`` format), ``video_path`` relative to the world."""
    row = asdict(spec)
    row.update(
        id=spec.video_id,
        video=video_path,
        caption=caption(spec),
        directions=list(spec.directions),
        num_clips=spec.num_clips,
        held_out=spec.held_out,
        positions=np.round(frame_positions(spec), 2).tolist(),
        qa=questions(spec),
    )
    row.pop("video_id")
    return row


__all__ = [
    "CAPTION_TEMPLATES",
    "COLOURS",
    "DIRECTIONS",
    "DIRECTION_VECTORS",
    "HELD_OUT_COMBINATIONS",
    "MOVING_DIRECTIONS",
    "PALETTE",
    "SHAPES",
    "SPLITS",
    "ShapesVideoSpec",
    "ShapesWorldError",
    "WorldSettings",
    "caption",
    "clip_start_time",
    "frame_positions",
    "generation_prompt",
    "metadata",
    "questions",
    "render_frames",
    "sample_spec",
    "sample_world",
    "write_video",
]
