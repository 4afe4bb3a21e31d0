"""Motion condition encoder: turns a motion-vector grid into per-frame features for the video U-Net.

The motion grid of a clip (``[batch, 2, frames, height, width]``) is brought to a fixed spatial grid
(16 x 16 in Video-LaVIT), every cell is embedded with a linear layer plus a learned spatial position
embedding, and a stack of factorised transformer blocks mixes the cells: attention among the cells of
one frame, then attention over time for each cell, then a feed-forward layer. The result,
``[batch, frames, cells, out_channels]``, is the cross-attention context of
:class:`~diffusers_vlavit.models.unet_spatio_temporal_motion.UNetSpatioTemporalMotionModel`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin, FeedForward
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


# `transformers_vlavit.motion_visualization.MotionShapeError` is the same kind of error for `motion_to_rgb`;
# this module cannot import it: it loads as self-contained custom code
class MotionShapeError(ValueError):
    """Raised when a motion tensor does not have the ``[batch, 2, frames, height, width]`` layout."""


class MotionSelfAttentionProcessor:
    """Default processor of :class:`MotionSelfAttention`: the projections, then diffusers' attention
    dispatcher (``set_attention_backend`` chooses its kernel; torch SDPA by default)."""

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn: MotionSelfAttention, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states [batch, sequence, dim]`` -> ``[batch, sequence, dim]``."""
        batch, length, dim = hidden_states.shape
        # the dispatcher's layout: [batch, sequence, heads, head_dim]
        shape = (batch, length, attn.num_attention_heads, dim // attn.num_attention_heads)
        query = attn.to_q(hidden_states).view(shape)
        key = attn.to_k(hidden_states).view(shape)
        value = attn.to_v(hidden_states).view(shape)
        attended = dispatch_attention_fn(
            query, key, value, backend=self._attention_backend, parallel_config=self._parallel_config
        )
        return attn.to_out(attended.reshape(batch, length, dim))


class MotionSelfAttention(nn.Module, AttentionModuleMixin):
    """Multi-head self-attention with biased query/value projections and an unbiased key projection.

    The key bias is left out on purpose: it would add the same term to every score of a query, which
    the softmax cancels. The attention itself runs in a diffusers attention processor
    (:class:`MotionSelfAttentionProcessor` by default), so ``set_attn_processor`` and
    ``set_attention_backend`` of the model reach it.

    Args:
        dim: width of the tokens.
        num_attention_heads: number of heads; ``dim`` must be divisible by it.
        processor: the attention processor (default: :class:`MotionSelfAttentionProcessor`).
    """

    _default_processor_cls = MotionSelfAttentionProcessor
    _available_processors = [MotionSelfAttentionProcessor]
    _supports_qkv_fusion = False

    def __init__(self, dim: int, num_attention_heads: int, processor=None):
        super().__init__()
        if dim % num_attention_heads != 0:
            raise ValueError(f"width {dim} must be divisible by num_attention_heads {num_attention_heads}")
        self.num_attention_heads = num_attention_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.set_processor(processor if processor is not None else self._default_processor_cls())

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Attend among the tokens of each sequence.

        Args:
            hidden_states: ``[batch, sequence, dim]``.

        Returns:
            ``[batch, sequence, dim]``.
        """
        return self.processor(self, hidden_states)


# Adapted from `transformers_vlavit.modeling_motion_tokenizer.VideoLaVITMotionBlock` (same computation, the
# key-bias-free attention included). Not shared: this module loads as self-contained diffusers custom code,
# and the weights are named differently (`norm_spatial` / `spatial_attn.to_q` / `ff` here, `spatial_norm` /
# `spatial_attention.q_proj` / `mlp` there), so one class would change a state dict's keys.
class FactorizedSpatioTemporalBlock(nn.Module):
    """Pre-norm transformer block with spatial attention, then temporal attention, then a feed-forward.

    Args:
        dim: width of the tokens.
        num_attention_heads: heads of both attentions.
        mlp_ratio: hidden width of the feed-forward layer relative to ``dim``.
        layer_norm_eps: epsilon of the three layer norms.
    """

    def __init__(self, dim: int, num_attention_heads: int, mlp_ratio: float, layer_norm_eps: float):
        super().__init__()
        self.norm_spatial = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.spatial_attn = MotionSelfAttention(dim, num_attention_heads)
        self.norm_temporal = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.temporal_attn = MotionSelfAttention(dim, num_attention_heads)
        self.norm_ff = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.ff = FeedForward(dim, mult=mlp_ratio, activation_fn="gelu")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Mix the cells of each frame, then each cell over time, then channels.

        Args:
            hidden_states: ``[batch, frames, cells, dim]``.

        Returns:
            ``[batch, frames, cells, dim]``.
        """
        batch, frames, cells, dim = hidden_states.shape
        spatial = hidden_states.reshape(batch * frames, cells, dim)
        spatial = spatial + self.spatial_attn(self.norm_spatial(spatial))

        temporal = spatial.view(batch, frames, cells, dim).transpose(1, 2).reshape(batch * cells, frames, dim)
        temporal = temporal + self.temporal_attn(self.norm_temporal(temporal))
        temporal = temporal + self.ff(self.norm_ff(temporal))
        return temporal.view(batch, cells, frames, dim).transpose(1, 2)


class MotionConditionEncoder(ModelMixin, ConfigMixin, AttentionMixin):
    """Encoder of Video-LaVIT's motion condition (the video detokenizer's cross-attention context).

    Args:
        in_channels: channels of the motion grid (x and y displacement).
        out_channels: width of the output features (the U-Net's ``cross_attention_dim``).
        num_attention_heads: attention heads of every block.
        attention_head_dim: width of one head; the encoder's width is
            ``num_attention_heads * attention_head_dim``.
        num_layers: number of factorised spatial/temporal blocks.
        mlp_ratio: hidden width of the feed-forward layers relative to the encoder's width.
        grid_size: ``(height, width)`` the motion is resized to; one output feature per cell.
        layer_norm_eps: epsilon of all layer norms.

    The defaults are the released Video-LaVIT encoder (width 512, 8 heads, 12 blocks, output 1024).

    Example:
        >>> encoder = MotionConditionEncoder()
        >>> features = encoder(motion)  # motion [batch, 2, 24, h, w] -> [batch, 24, 256, 1024]
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1024,
        num_attention_heads: int = 8,
        attention_head_dim: int = 64,
        num_layers: int = 12,
        mlp_ratio: float = 4.0,
        grid_size: tuple[int, int] = (16, 16),
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        grid_height, grid_width = grid_size
        self.proj_in = nn.Linear(in_channels, dim)
        self.position_embedding = nn.Parameter(torch.zeros(grid_height * grid_width, dim))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        self.blocks = nn.ModuleList(
            FactorizedSpatioTemporalBlock(dim, num_attention_heads, mlp_ratio, layer_norm_eps)
            for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.proj_out = nn.Linear(dim, out_channels)
        self.gradient_checkpointing = False

    def resize_motion(self, motion: torch.Tensor) -> torch.Tensor:
        """Resize a motion grid to ``config.grid_size`` with bicubic interpolation (no antialiasing).

        Args:
            motion: ``[batch, 2, frames, height, width]``.

        Returns:
            ``[batch, 2, frames, grid_height, grid_width]`` in the dtype of ``motion``; the input itself
            when it already has the grid size.
        """
        if motion.ndim != 5 or motion.shape[1] != self.config.in_channels:
            raise MotionShapeError(
                f"motion must be [batch, {self.config.in_channels}, frames, height, width], got "
                f"{tuple(motion.shape)}; a single clip needs a leading batch dimension"
            )
        grid_size = tuple(self.config.grid_size)
        batch, channels, frames, height, width = motion.shape
        if (height, width) == grid_size:
            return motion
        # the per-frame bicubic resize of `decompose_video` and the motion tokenizer's
        # `decode_for_detokenizer`, repeated: each of these modules travels alone as custom code
        per_frame = motion.transpose(1, 2).reshape(batch * frames, channels, height, width)
        # bicubic interpolation is not implemented for every reduced-precision dtype on every device
        resized = F.interpolate(per_frame.float(), size=grid_size, mode="bicubic", align_corners=False)
        return resized.to(motion.dtype).view(batch, frames, channels, *grid_size).transpose(1, 2)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        """Encode a motion grid into per-frame, per-cell condition features.

        Args:
            motion: ``[batch, 2, frames, height, width]`` motion vectors (any spatial size; resized
                bicubically to ``config.grid_size`` when it differs).

        Returns:
            ``[batch, frames, grid_height * grid_width, out_channels]`` in the encoder's dtype.
        """
        motion = self.resize_motion(motion).to(
            device=self.proj_in.weight.device, dtype=self.proj_in.weight.dtype
        )
        cells = motion.flatten(3).permute(0, 2, 3, 1)  # [batch, frames, cells, 2]
        hidden_states = self.proj_in(cells) + self.position_embedding

        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states)
            else:
                hidden_states = block(hidden_states)

        return self.proj_out(self.norm_out(hidden_states))
