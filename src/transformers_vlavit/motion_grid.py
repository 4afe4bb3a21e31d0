"""Per-frame resizing of motion grids, the one the original applies wherever motion changes size.

`decompose_video` resizes each frame's 16x16-block grid to the motion tokenizer's 20 x 36 grid with it, and
the motion tokenizer resizes its decoded motion to the video detokenizer's latent size with it. (The two
diffusers detokenizer modules keep their own copy: each must load as self-contained custom code.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_motion_frames(motion: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize every frame of a motion grid bicubically (no antialiasing, `align_corners=False`), in float32.

    Args:
        motion: `[batch, channels, frames, height, width]` (channels: x and y displacement).
        size: output `(height, width)`.

    Returns:
        `[batch, channels, frames, size[0], size[1]]` float32 tensor.
    """
    batch, channels, frames = motion.shape[:3]
    per_frame = motion.transpose(1, 2).flatten(0, 1).float()
    resized = F.interpolate(per_frame, size=tuple(size), mode="bicubic", align_corners=False)
    return resized.view(batch, frames, channels, *size).transpose(1, 2)
