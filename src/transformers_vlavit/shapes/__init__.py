"""The synthetic "shapes" world (videos with ground truth) and its NumPy detectors.

`world` draws and writes the videos, captions and questions; `detectors` reads RGB frames (real or generated)
back into colour, shape and direction. `datasets/make_shapes_world.py` writes a whole world to disk.
"""

from .detectors import (
    FrameDetection,
    VideoDetection,
    detect_frame,
    detect_video,
    direction_from_track,
    nearest_palette_colour,
    shape_from_fill_ratio,
)
from .world import (
    COLOURS,
    DIRECTIONS,
    HELD_OUT_COMBINATIONS,
    MOVING_DIRECTIONS,
    PALETTE,
    SHAPES,
    SPLITS,
    ShapesVideoSpec,
    ShapesWorldError,
    WorldSettings,
    caption,
    frame_positions,
    generation_prompt,
    metadata,
    questions,
    render_frames,
    sample_spec,
    sample_world,
    write_video,
)

__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "FrameDetection",
    "HELD_OUT_COMBINATIONS",
    "MOVING_DIRECTIONS",
    "PALETTE",
    "SHAPES",
    "SPLITS",
    "ShapesVideoSpec",
    "ShapesWorldError",
    "VideoDetection",
    "WorldSettings",
    "caption",
    "detect_frame",
    "detect_video",
    "direction_from_track",
    "frame_positions",
    "generation_prompt",
    "metadata",
    "nearest_palette_colour",
    "questions",
    "render_frames",
    "sample_spec",
    "sample_world",
    "shape_from_fill_ratio",
    "write_video",
]
