"""The shapes world: deterministic drawing, held-out combinations, paths inside the frame, and its detectors."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

from transformers_vlavit import decompose_video
from transformers_vlavit.shapes import (
    COLOURS,
    HELD_OUT_COMBINATIONS,
    PALETTE,
    SHAPES,
    WorldSettings,
    caption,
    detect_frame,
    detect_video,
    direction_from_track,
    frame_positions,
    questions,
    render_frames,
    sample_world,
    write_video,
)
from transformers_vlavit.shapes.detectors import _label_components
from transformers_vlavit.shapes.world import OBJECT_SCALE, ShapesVideoSpec


def test_world_is_deterministic_under_its_seed():
    first = sample_world(WorldSettings(num_videos=60, seed=3))
    again = sample_world(WorldSettings(num_videos=60, seed=3))
    other = sample_world(WorldSettings(num_videos=60, seed=4))
    assert first == again
    assert first != other
    np.testing.assert_array_equal(render_frames(first[0]), render_frames(again[0]))


def test_held_out_combinations_never_reach_train():
    specs = sample_world(WorldSettings(num_videos=1500, seed=0))
    train = {(s.colour, s.shape) for s in specs if s.split == "train"}
    evaluation = {(s.colour, s.shape) for s in specs if s.split != "train"}
    assert not train & HELD_OUT_COMBINATIONS
    # every other combination is trained, and the held-out ones are evaluated
    assert train == {(c, s) for c in COLOURS for s in SHAPES} - HELD_OUT_COMBINATIONS
    assert HELD_OUT_COMBINATIONS <= evaluation
    assert {s.split for s in specs} == {"train", "validation", "test"}
    assert any(s.num_clips == 2 for s in specs) and any(s.directions == ("still",) for s in specs)


def test_paths_follow_their_directions_and_stay_in_the_frame():
    for spec in sample_world(WorldSettings(num_videos=200, seed=1)):
        positions = frame_positions(spec)
        half = OBJECT_SCALE * spec.size / 2
        assert positions.min() >= half and positions.max() <= spec.size - half
        fps = spec.fps
        starts = [0] if spec.num_clips == 1 else [2 * fps, 6 * fps]
        for start, direction in zip(starts, spec.directions):
            dx, dy = positions[start + 4 * fps - 1] - positions[start]
            expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}[direction]
            assert np.sign(round(dx, 6)) == expected[0] and np.sign(round(dy, 6)) == expected[1]


def test_captions_and_questions_state_the_ground_truth():
    spec = ShapesVideoSpec("v", "test", "magenta", "triangle", ("left", "up"), (40.0, 40.0), (15.0, 15.0))
    assert caption(spec, template=0) == "a magenta triangle moves to the left, then moves up"
    answers = {pair["type"]: pair["answer"] for pair in questions(spec)}
    assert answers == {"colour": "magenta", "shape": "triangle", "direction": "left", "after": "up"}
    assert spec.duration == 10.0 and spec.held_out is False


def test_video_duration_gives_the_intended_clips(tmp_path):
    """One-clip videos yield their single clip at frame 0; two-clip ones the 2-6 s and 6-10 s clips."""
    one = ShapesVideoSpec("a", "test", "red", "circle", ("right",), (20.0, 32.0), (24.0,))
    two = ShapesVideoSpec("b", "test", "blue", "circle", ("right", "down"), (16.0, 16.0), (16.0, 16.0))
    for spec, starts in ((one, [0]), (two, [12, 36])):
        write_video(spec, tmp_path / f"{spec.video_id}.mp4")
        decomposition = decompose_video(tmp_path / f"{spec.video_id}.mp4")
        assert decomposition.keyframe_indices == starts
        # the encoder's motion vectors point the way the object goes (x for right, y for down)
        motion = decomposition.motion_vectors.mean(dim=(2, 3, 4))
        assert motion[0, 0] > 0.05
    assert motion[1, 1] > 0.05 and abs(motion[1, 0]) < motion[1, 1]


def _frames(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_detectors_are_accurate_on_encoded_world_videos(tmp_path):
    """The same decoding path as generated videos: H.264 file -> RGB frames -> detectors."""
    specs = sample_world(WorldSettings(num_videos=45, seed=7, two_clip_fraction=0.3))
    hits = {"colour": 0, "shape": 0, "direction": 0}
    for spec in specs:
        write_video(spec, tmp_path / f"{spec.video_id}.mp4")
        frames = _frames(tmp_path / f"{spec.video_id}.mp4")
        if spec.num_clips == 2:
            frames = frames[2 * spec.fps :]
        found = detect_video(frames, num_clips=spec.num_clips)
        hits["colour"] += found.colour == spec.colour
        hits["shape"] += found.shape == spec.shape
        hits["direction"] += found.directions == list(spec.directions)
    assert hits == {"colour": len(specs), "shape": len(specs), "direction": len(specs)}


def test_detect_frame_against_closed_forms():
    size = 96
    side = OBJECT_SCALE * size
    for shape, fill in (("square", 1.0), ("circle", math.pi / 4), ("triangle", 0.5)):
        spec = ShapesVideoSpec("x", "test", "yellow", shape, ("still",), (40.0, 50.0), (0.0,), size=size)
        found = detect_frame(render_frames(spec)[0])
        assert found.shape == shape and found.colour == "yellow"
        assert found.fill_ratio == pytest.approx(fill, abs=0.08)
        # the centroid of an isosceles triangle lies a third of the way up from its base
        expected_y = 50.0 + (side / 6 if shape == "triangle" else 0.0) - 0.5
        assert found.centroid == pytest.approx((40.0 - 0.5, expected_y), abs=1.0)


def test_detect_frame_nearest_colour_and_empty_frame():
    frame = np.full((48, 48, 3), 30, np.uint8)
    assert detect_frame(frame).colour is None
    for name, rgb in PALETTE.items():
        shifted = np.clip(np.array(rgb) + np.array([12, -12, 8]), 0, 255)
        frame[10:30, 10:30] = shifted
        assert detect_frame(frame).colour == name


def test_largest_region_wins_and_components_are_separate():
    mask = np.zeros((12, 12), bool)
    mask[1:3, 1:3] = True
    mask[5:11, 4:10] = True
    labels = _label_components(mask)
    assert len(np.unique(labels[mask])) == 2 and (labels[~mask] == 0).all()
    # a U shape is one component even though min-propagation must go round the bend
    u = np.zeros((8, 8), bool)
    u[1:7, 1] = u[6, 1:7] = u[1:7, 6] = True
    assert len(np.unique(_label_components(u)[u])) == 1


def test_direction_from_track():
    side = 64
    line = [(10.0 + t, 30.0) for t in range(24)]
    assert direction_from_track(line, side) == "right"
    assert direction_from_track(line[::-1], side) == "left"
    assert direction_from_track([(30.0, 50.0 - t) for t in range(24)], side) == "up"
    assert direction_from_track([(30.0, 20.0 + t) for t in range(24)], side) == "down"
    assert direction_from_track([(30.0 + 0.1 * t, 30.0) for t in range(24)], side) == "still"
    assert direction_from_track([None, None], side) is None
