"""motion_to_rgb: Middlebury colour wheel, white at rest, hue by direction, saturation by magnitude."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transformers_vlavit.motion_visualization import MotionShapeError, color_wheel, motion_to_rgb


def _single(u: float, v: float, **kwargs) -> np.ndarray:
    return motion_to_rgb(np.array([[[u]], [[v]]]), **kwargs)[0, 0]


def test_wheel_has_the_55_middlebury_colours():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    np.testing.assert_allclose(
        wheel[[0, 15, 21, 25, 36, 49]], [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1]]
    )


def test_no_motion_is_white_and_full_motion_is_saturated():
    motion = np.zeros((2, 3, 4))
    assert (motion_to_rgb(motion) == 255).all()
    motion[0, 1, 2] = -2.0
    rgb = motion_to_rgb(motion)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert (np.delete(rgb.reshape(-1, 3), 6, axis=0) == 255).all()
    assert rgb[1, 2].min() == 0  # the largest motion gets a fully saturated colour


def test_directions_get_distinct_hues():
    colours = {
        direction: tuple(_single(u, v))
        for direction, (u, v) in {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}.items()
    }
    assert colours["right"] == (255, 0, 0)
    assert colours["left"][0] == 0 and colours["left"][2] == 255  # cyan-blue, opposite of red
    assert len(set(colours.values())) == 4


def test_magnitude_scale_and_clipping():
    half = _single(0.5, 0, max_magnitude=1.0)
    full = _single(1.0, 0, max_magnitude=1.0)
    beyond = _single(2.0, 0, max_magnitude=1.0)
    assert half.min() > full.min()  # paler
    np.testing.assert_array_equal(beyond, np.round(full * 0.75).astype(np.uint8))  # beyond the scale: darker


def test_batched_tensor_input_shares_one_scale():
    motion = torch.zeros(2, 5, 2, 4, 6)
    motion[0, 0, 0] = 1.0
    motion[1, 3, 1] = 4.0
    rgb = motion_to_rgb(motion)
    assert rgb.shape == (2, 5, 4, 6, 3)
    assert rgb[0, 0].min() > rgb[1, 3].min()  # the smaller motion is paler: one scale for the batch


def test_bad_shape():
    with pytest.raises(MotionShapeError, match=r"\[..., 2, H, W\]"):
        motion_to_rgb(np.zeros((3, 4, 5)))
