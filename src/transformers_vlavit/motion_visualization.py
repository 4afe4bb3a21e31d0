"""Colour pictures of motion fields (Middlebury optical-flow colour wheel).

Direction is the hue and magnitude the saturation: white means no motion, full colour the largest
motion of the input (or ``max_magnitude``). This is the colour coding of Baker et al., "A Database
and Evaluation Methodology for Optical Flow" (IJCV 2011), used by most optical-flow tools.
"""

from __future__ import annotations

import numpy as np
import torch

# Hue segments of the wheel, as numbers of colours: red-yellow, yellow-green, green-cyan,
# cyan-blue, blue-magenta, magenta-red (more colours where the eye tells hues apart better).
_WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)


# `diffusers_vlavit.models.MotionShapeError` (the motion condition encoder's) is a separate class on purpose:
# that module loads as self-contained diffusers custom code and cannot import this one
class MotionShapeError(ValueError):
    """The motion array does not have the `[..., 2, H, W]` layout (x and y components)."""


def color_wheel() -> np.ndarray:
    """The 55 colours of the Middlebury wheel, ``[55, 3]`` float in [0, 1], starting at red."""
    ramps = []
    for segment, count in enumerate(_WHEEL_SEGMENTS):
        rising = np.arange(count) / count
        # Each segment moves one primary from 0 to 1 (even segments) or from 1 to 0 (odd ones).
        colors = np.zeros((count, 3))
        moving = segment % 2
        channel = (segment // 2) % 3
        next_channel = (channel + 1) % 3
        if moving == 0:
            colors[:, channel] = 1.0
            colors[:, next_channel] = rising
        else:
            colors[:, next_channel] = 1.0
            colors[:, channel] = 1.0 - rising
        ramps.append(colors)
    return np.concatenate(ramps)


def motion_to_rgb(motion: torch.Tensor | np.ndarray, *, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code motion fields.

    Args:
        motion: ``[2, H, W]`` or ``[..., 2, H, W]`` (x then y component), tensor or array.
        max_magnitude: magnitude drawn at full saturation; larger ones are darkened. Defaults to the
            largest magnitude in the whole input, so all frames of a clip share one scale.

    Returns:
        ``[..., H, W, 3]`` uint8 RGB array.
    """
    if isinstance(motion, torch.Tensor):
        motion = motion.detach().to(device="cpu", dtype=torch.float64).numpy()
    motion = np.asarray(motion, dtype=np.float64)
    if motion.ndim < 3 or motion.shape[-3] != 2:
        raise MotionShapeError(
            f"motion must have shape [..., 2, H, W] (x and y components), got {list(motion.shape)}; "
            "for decompose_video's [clips, 2, frames, H, W] pass motion[clip].transpose(0, 1)"
        )
    u, v = motion[..., 0, :, :], motion[..., 1, :, :]
    magnitude = np.hypot(u, v)
    scale = float(magnitude.max(initial=0.0)) if max_magnitude is None else float(max_magnitude)
    radius = magnitude / scale if scale > 0 else np.zeros_like(magnitude)

    wheel = color_wheel()
    count = len(wheel)
    # Angle mapped to a fractional position on the wheel: motion to the right is red, to the left cyan.
    position = (np.arctan2(-v, -u) / np.pi + 1.0) / 2.0 * (count - 1)
    lower = np.floor(position).astype(np.int64)
    upper = (lower + 1) % count
    weight = (position - lower)[..., None]
    color = (1.0 - weight) * wheel[lower] + weight * wheel[upper]
    inside = (radius <= 1.0)[..., None]
    # Inside the unit disc, fade from white (no motion) to the full colour; outside, darken.
    color = np.where(inside, 1.0 - radius[..., None] * (1.0 - color), color * 0.75)
    return np.round(color * 255.0).astype(np.uint8)
