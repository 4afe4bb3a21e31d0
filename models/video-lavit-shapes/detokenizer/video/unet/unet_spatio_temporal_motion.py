"""Motion-conditioned spatio-temporal U-Net: Video-LaVIT's video detokenizer.

It is Stable Video Diffusion's :class:`~diffusers.UNetSpatioTemporalConditionModel` (same blocks, same
parameter names and shapes) with 10 input channels and one difference in how the condition reaches
the cross-attentions. Stable Video Diffusion attends to a single image embedding; here the context is
a motion feature map per frame, ``[batch, frames, 16 * 16, channels]``
(:class:`~diffusers_vlavit.models.motion_condition_encoder.MotionConditionEncoder`), and

- the spatial transformer blocks of frame ``t`` attend to the 256 motion features of frame ``t``;
- the temporal transformer blocks of a latent position attend, over time, to the motion feature of
  that position (the 16 x 16 grid nearest-resized to the current feature map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModelOutput,
)
from diffusers.models.unets.unet_spatio_temporal_condition import (
    UNetSpatioTemporalConditionModel,
    UNetSpatioTemporalConditionOutput,
)
from torch import nn


class MotionContextShapeError(ValueError):
    """Raised when the U-Net's inputs do not have the shapes the motion conditioning needs."""


class MotionTransformerSpatioTemporalModel(TransformerSpatioTemporalModel):
    """Diffusers' spatio-temporal transformer with per-frame and per-position motion cross-attention.

    Parameters and construction are those of :class:`TransformerSpatioTemporalModel`; only the
    forward differs in the cross-attention contexts it builds from ``encoder_hidden_states``.

    Args:
        motion_grid_size: ``(height, width)`` of the motion feature grid in the context sequence.
        *args, **kwargs: forwarded to :class:`TransformerSpatioTemporalModel`.
    """

    def __init__(self, *args, motion_grid_size: tuple[int, int] = (16, 16), **kwargs):
        super().__init__(*args, **kwargs)
        self.motion_grid_size = tuple(motion_grid_size)

    @classmethod
    def from_transformer(
        cls, transformer: TransformerSpatioTemporalModel, motion_grid_size: tuple[int, int]
    ) -> MotionTransformerSpatioTemporalModel:
        """Build a motion transformer with the hyper-parameters of a diffusers one (fresh weights).

        Args:
            transformer: the diffusers transformer to mirror.
            motion_grid_size: ``(height, width)`` of the motion feature grid.

        Returns:
            A :class:`MotionTransformerSpatioTemporalModel` whose parameters have the same names and
            shapes as ``transformer``'s.
        """
        return cls(
            transformer.num_attention_heads,
            transformer.attention_head_dim,
            in_channels=transformer.in_channels,
            out_channels=transformer.out_channels,
            num_layers=len(transformer.transformer_blocks),
            cross_attention_dim=transformer.transformer_blocks[0].attn2.cross_attention_dim,
            motion_grid_size=motion_grid_size,
        )

    def temporal_context(
        self, motion_context: torch.Tensor, num_frames: int, height: int, width: int
    ) -> torch.Tensor:
        """Motion feature of every latent position over time, the temporal cross-attention context.

        Args:
            motion_context: ``[batch * frames, grid_height * grid_width, channels]``.
            num_frames: frames per sample.
            height: height of the current feature map.
            width: width of the current feature map.

        Returns:
            ``[batch * height * width, frames, channels]``, position-major within each sample (the
            order of the temporal blocks' sequences), contiguous.
        """
        grid_height, grid_width = self.motion_grid_size
        batch_frames, _, channels = motion_context.shape
        grid = motion_context.transpose(1, 2).reshape(batch_frames, channels, grid_height, grid_width)
        # a scale factor (not a target size) fixes the nearest source cells the way the reference does
        grid = F.interpolate(grid, scale_factor=(height / grid_height, width / grid_width), mode="nearest")
        grid = grid.view(batch_frames // num_frames, num_frames, channels, height * width)
        # contiguous also at batch size 1, where the reshape alone is a strided view: key and value
        # projections of a strided context run as a batched matmul, about twice as slow on CPU
        return grid.permute(0, 3, 1, 2).contiguous().view(-1, num_frames, channels)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        image_only_indicator: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> TransformerTemporalModelOutput | tuple[torch.Tensor]:
        """Spatial and temporal transformer blocks, cross-attending to the motion features.

        Args:
            hidden_states: ``[batch * frames, channels, height, width]``.
            encoder_hidden_states: per-frame motion features
                ``[batch * frames, grid_height * grid_width, cross_attention_dim]``.
            image_only_indicator: ``[batch, frames]``, 1 where a frame is a still image (blends the
                temporal branch out), 0 for video frames.
            return_dict: return a :class:`TransformerTemporalModelOutput` instead of a tuple.

        Returns:
            ``.sample`` ``[batch * frames, channels, height, width]``.
        """
        batch_frames, _, height, width = hidden_states.shape
        num_frames = image_only_indicator.shape[-1]
        batch_size = batch_frames // num_frames
        expected = (batch_frames, self.motion_grid_size[0] * self.motion_grid_size[1])
        if encoder_hidden_states is None or tuple(encoder_hidden_states.shape[:2]) != expected:
            got = None if encoder_hidden_states is None else tuple(encoder_hidden_states.shape)
            raise MotionContextShapeError(
                f"motion context must be [batch * frames, grid cells, channels] with leading dims "
                f"{expected}, got {got}"
            )
        time_context = self.temporal_context(encoder_hidden_states, num_frames, height, width)

        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        inner_dim = hidden_states.shape[1]
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, inner_dim)
        hidden_states = self.proj_in(hidden_states)

        frame_ids = torch.arange(num_frames, device=hidden_states.device).repeat(batch_size)
        # `Timesteps` returns float32; the embedding MLP may run in reduced precision
        frame_embedding = self.time_pos_embed(self.time_proj(frame_ids).to(hidden_states.dtype))[:, None, :]

        checkpointing = torch.is_grad_enabled() and self.gradient_checkpointing
        for block, temporal_block in zip(
            self.transformer_blocks, self.temporal_transformer_blocks, strict=True
        ):
            if checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, None, encoder_hidden_states
                )
                mixed = self._gradient_checkpointing_func(
                    temporal_block, hidden_states + frame_embedding, num_frames, time_context
                )
            else:
                hidden_states = block(hidden_states, encoder_hidden_states=encoder_hidden_states)
                mixed = temporal_block(
                    hidden_states + frame_embedding, num_frames=num_frames, encoder_hidden_states=time_context
                )
            hidden_states = self.time_mixer(
                x_spatial=hidden_states, x_temporal=mixed, image_only_indicator=image_only_indicator
            )

        hidden_states = self.proj_out(hidden_states)
        hidden_states = (
            hidden_states.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
        )
        output = hidden_states + residual

        if not return_dict:
            return (output,)
        return TransformerTemporalModelOutput(sample=output)


def _motion_kwargs(block: nn.Module, motion_context: torch.Tensor) -> dict[str, torch.Tensor]:
    """Keyword arguments that hand the motion context to a block, empty for blocks without attention."""
    return {"encoder_hidden_states": motion_context} if getattr(block, "has_cross_attention", False) else {}


class UNetSpatioTemporalMotionModel(UNetSpatioTemporalConditionModel):
    """Video-LaVIT's motion-conditioned spatio-temporal U-Net (the video detokenizer's denoiser).

    Config and parameter names are those of :class:`~diffusers.UNetSpatioTemporalConditionModel`
    plus ``motion_grid_size``; the defaults are the released Video-LaVIT size (Stable Video
    Diffusion's blocks 320/640/1280/1280 with 10 input channels: 4 noisy latent + 4 keyframe latent
    + 2 motion channels).

    Args:
        sample_size: height and width of the latent sample (used by pipelines for default sizes).
        in_channels: input channels per frame.
        out_channels: output channels per frame.
        down_block_types: diffusers spatio-temporal down block names.
        up_block_types: diffusers spatio-temporal up block names.
        block_out_channels: output channels of every resolution level.
        addition_time_embed_dim: sinusoidal width of each added time id.
        projection_class_embeddings_input_dim: ``len(added_time_ids) * addition_time_embed_dim``.
        layers_per_block: res blocks per down block (up blocks have one more).
        cross_attention_dim: width of the motion features.
        transformer_layers_per_block: transformer layers in each spatio-temporal transformer.
        num_attention_heads: attention heads per resolution level.
        num_frames: frames per clip the model was trained with.
        motion_grid_size: ``(height, width)`` of the motion feature grid; the context has
            ``height * width`` features per frame.

    Example:
        >>> unet = UNetSpatioTemporalMotionModel()
        >>> noise_pred = unet(sample, timestep, motion_features, added_time_ids).sample
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = 96,
        in_channels: int = 10,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "DownBlockSpatioTemporal",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        addition_time_embed_dim: int = 256,
        projection_class_embeddings_input_dim: int = 768,
        layers_per_block: int | tuple[int, ...] = 2,
        cross_attention_dim: int | tuple[int, ...] = 1024,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        num_attention_heads: int | tuple[int, ...] = (5, 10, 20, 20),
        num_frames: int = 24,
        motion_grid_size: tuple[int, int] = (16, 16),
    ):
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            num_attention_heads=num_attention_heads,
            num_frames=num_frames,
        )
        # diffusers' blocks construct their own transformers; swap in the motion-aware ones (same
        # names and shapes) so that everything else stays diffusers' code. The replaced ones are built
        # for nothing, which costs nothing under `from_pretrained` (it builds on the meta device).
        for block in (*self.down_blocks, self.mid_block, *self.up_blocks):
            if getattr(block, "has_cross_attention", False):
                block.attentions = nn.ModuleList(
                    MotionTransformerSpatioTemporalModel.from_transformer(attention, motion_grid_size)
                    for attention in block.attentions
                )

    def _time_embedding(
        self, timestep: torch.Tensor | float | int, added_time_ids: torch.Tensor, sample: torch.Tensor
    ) -> torch.Tensor:
        """Embedding of the diffusion timestep plus the added time ids (fps, motion bucket, noise aug).

        Args:
            timestep: scalar or ``[batch]``.
            added_time_ids: ``[batch, num_ids]``.
            sample: ``[batch, frames, channels, height, width]``, for batch size, dtype and device.

        Returns:
            ``[batch, time_embed_dim]``.
        """
        batch_size = sample.shape[0]
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch_size)
        # `Timesteps` returns float32; the embedding MLPs may run in reduced precision
        embedding = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        added = self.add_time_proj(added_time_ids.flatten()).reshape(batch_size, -1).to(embedding.dtype)
        return embedding + self.add_embedding(added)

    def _check_inputs(self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        """Raise :class:`MotionContextShapeError` unless sample and motion context fit together."""
        if sample.ndim != 5:
            raise MotionContextShapeError(
                f"sample must be [batch, frames, channels, height, width], got {tuple(sample.shape)}"
            )
        grid_height, grid_width = self.config.motion_grid_size
        expected = (*sample.shape[:2], grid_height * grid_width)
        if encoder_hidden_states.ndim != 4 or tuple(encoder_hidden_states.shape[:3]) != expected:
            raise MotionContextShapeError(
                f"encoder_hidden_states must be per-frame motion features [batch, frames, "
                f"{grid_height * grid_width}, channels] matching sample {tuple(sample.shape)}, got "
                f"{tuple(encoder_hidden_states.shape)}; encode the motion with MotionConditionEncoder"
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        return_dict: bool = True,
    ) -> UNetSpatioTemporalConditionOutput | tuple[torch.Tensor]:
        """Predict the denoising target of a clip of latents conditioned on its motion.

        Args:
            sample: ``[batch, frames, in_channels, height, width]`` (noisy latents, keyframe latents
                and the motion map, concatenated on channels).
            timestep: diffusion timestep, scalar or ``[batch]``.
            encoder_hidden_states: ``[batch, frames, grid_height * grid_width, cross_attention_dim]``
                motion features from :class:`MotionConditionEncoder`.
            added_time_ids: ``[batch, 3]`` (fps, motion bucket id, noise augmentation strength).
            return_dict: return a :class:`UNetSpatioTemporalConditionOutput` instead of a tuple.

        Returns:
            ``.sample`` ``[batch, frames, out_channels, height, width]``.
        """
        self._check_inputs(sample, encoder_hidden_states)
        batch_size, num_frames = sample.shape[:2]
        # sizes that are not a multiple of the total upsampling factor need explicit upsample sizes
        up_factor = 2**self.num_upsamplers
        forward_upsample_size = any(size % up_factor != 0 for size in sample.shape[-2:])

        embedding = self._time_embedding(timestep, added_time_ids, sample).repeat_interleave(
            num_frames, dim=0
        )
        motion_context = encoder_hidden_states.flatten(0, 1)  # [batch * frames, cells, channels]
        hidden_states = self.conv_in(sample.flatten(0, 1))
        image_only_indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)

        skip_connections = (hidden_states,)
        for down_block in self.down_blocks:
            context = _motion_kwargs(down_block, motion_context)
            hidden_states, block_skips = down_block(
                hidden_states=hidden_states,
                temb=embedding,
                image_only_indicator=image_only_indicator,
                **context,
            )
            skip_connections += block_skips

        hidden_states = self.mid_block(
            hidden_states=hidden_states,
            temb=embedding,
            encoder_hidden_states=motion_context,
            image_only_indicator=image_only_indicator,
        )

        for index, up_block in enumerate(self.up_blocks):
            block_skips = skip_connections[-len(up_block.resnets) :]
            skip_connections = skip_connections[: -len(up_block.resnets)]
            is_last = index == len(self.up_blocks) - 1
            upsample_size = skip_connections[-1].shape[2:] if forward_upsample_size and not is_last else None
            context = _motion_kwargs(up_block, motion_context)
            hidden_states = up_block(
                hidden_states=hidden_states,
                temb=embedding,
                res_hidden_states_tuple=block_skips,
                upsample_size=upsample_size,
                image_only_indicator=image_only_indicator,
                **context,
            )

        hidden_states = self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))
        output = hidden_states.reshape(batch_size, num_frames, *hidden_states.shape[1:])
        if not return_dict:
            return (output,)
        return UNetSpatioTemporalConditionOutput(sample=output)
