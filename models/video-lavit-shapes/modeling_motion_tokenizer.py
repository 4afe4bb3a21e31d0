"""Video-LaVIT motion tokenizer: a VQ-VAE that turns a clip of motion vectors into 135 discrete codes.

The encoder is a stack of factorised spatio-temporal transformer blocks (attention within each frame, then
across frames at each grid cell) with strided 3D convolutions between stages; its output is projected to
l2-normalised vectors and snapped to the nearest entry of an l2-normalised codebook. The decoder mirrors the
encoder with nearest up-sampling and regresses the motion grid back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from .configuration_motion_tokenizer import DOWNSAMPLE_KERNEL_SIZE, VideoLaVITMotionTokenizerConfig
from .quantization import TanhProjection, init_unit_codebook_, nearest_code_ids

logger = logging.get_logger(__name__)


class MotionTokenizerInputError(ValueError):
    """Raised when motion vectors or code ids lack the shape or range that the tokenizer's config expects."""


@dataclass
class VideoLaVITMotionTokenizerOutput(ModelOutput):
    """
    Output of [`VideoLaVITMotionTokenizer.forward`] (one training or validation step).

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `reconstruction_loss + commitment_loss + codebook_loss` (the codebook loss is 0 with EMA updates).
        reconstruction_loss (`torch.FloatTensor` of shape `()`):
            Mean squared error between the reconstruction and the input motion.
        commitment_loss (`torch.FloatTensor` of shape `()`):
            `commitment_cost` times the mean squared distance of the encoder latents to their (frozen) codes.
        codebook_loss (`torch.FloatTensor` of shape `()`):
            Mean squared distance of the codes to the (frozen) encoder latents; 0 when `config.codebook_ema`.
        ids (`torch.LongTensor` of shape `(batch_size, num_tokens)`):
            0-based code ids, in `(time, height, width)` raster order.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, 2, num_frames, height, width)`):
            Decoded motion.
        encoder_latents (`torch.FloatTensor` of shape `(batch_size, num_tokens, code_dim)`):
            l2-normalised encoder outputs before quantisation (detached); feed them to `restart_dead_codes`.
        code_counts (`torch.LongTensor` of shape `(codebook_size,)`):
            How often each code was chosen in this batch.
        perplexity (`torch.FloatTensor` of shape `()`):
            `exp(entropy)` of the batch's code distribution (`codebook_size` when all codes are equally used).
        codebook_usage (`torch.FloatTensor` of shape `()`):
            Fraction of the codebook chosen at least once in this batch.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    ids: torch.LongTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    encoder_latents: torch.FloatTensor | None = None
    code_counts: torch.LongTensor | None = None
    perplexity: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None


class VideoLaVITMotionAttention(nn.Module):
    """Multi-head self-attention (SDPA) with query and value biases but no key bias, as released."""

    def __init__(self, config: VideoLaVITMotionTokenizerConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        # A key bias adds one score to all keys of a query, so softmax cancels it; the original has none.
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Attend over the sequence axis: `[sequences, length, hidden_size] -> same shape`."""
        batch_size, length, _ = hidden_states.shape
        heads_shape = (batch_size, length, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(heads_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(heads_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(heads_shape).transpose(1, 2)
        attended = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.dropout if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(batch_size, length, -1)
        return self.o_proj(attended)


class VideoLaVITMotionMLP(nn.Module):
    """Two-layer GELU feed-forward network: `[..., hidden_size] -> [..., hidden_size]`."""

    def __init__(self, config: VideoLaVITMotionTokenizerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = nn.GELU()
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Apply the MLP position-wise."""
        return self.fc2(self.activation(self.fc1(hidden_states)))


# `diffusers_vlavit.models.motion_condition_encoder.FactorizedSpatioTemporalBlock` is adapted from this block
# (self-contained custom code there, and different released weight names)
class VideoLaVITMotionBlock(GradientCheckpointingLayer):
    """
    Factorised spatio-temporal transformer block (pre-LayerNorm): attention among the cells of each frame,
    then attention over time at each cell, then an MLP.
    """

    def __init__(self, config: VideoLaVITMotionTokenizerConfig):
        super().__init__()
        self.spatial_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.spatial_attention = VideoLaVITMotionAttention(config)
        self.temporal_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.temporal_attention = VideoLaVITMotionAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VideoLaVITMotionMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[batch, frames, cells, hidden_size] -> [batch, frames, cells, hidden_size]`."""
        batch_size, frames, cells, channels = hidden_states.shape
        per_frame = hidden_states.reshape(batch_size * frames, cells, channels)
        per_frame = per_frame + self.spatial_attention(self.spatial_norm(per_frame))
        per_cell = per_frame.view(batch_size, frames, cells, channels).transpose(1, 2)
        per_cell = per_cell.reshape(batch_size * cells, frames, channels)
        per_cell = per_cell + self.temporal_attention(self.temporal_norm(per_cell))
        per_cell = per_cell + self.mlp(self.mlp_norm(per_cell))
        return per_cell.view(batch_size, cells, frames, channels).transpose(1, 2)


class VideoLaVITMotionDownsample(nn.Module):
    """Strided 3x3x3 convolution after explicit, possibly asymmetric zero padding."""

    def __init__(self, config: VideoLaVITMotionTokenizerConfig, stage: int):
        super().__init__()
        self.padding = config.downsample_paddings[stage]
        self.conv = nn.Conv3d(
            config.hidden_size,
            config.hidden_size,
            kernel_size=DOWNSAMPLE_KERNEL_SIZE,
            stride=config.downsample_strides[stage],
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[batch, frames, height, width, hidden_size] -> [batch, frames', height', width', hidden_size]`."""
        channels_first = hidden_states.permute(0, 4, 1, 2, 3)
        channels_first = self.conv(F.pad(channels_first, self.padding))
        return channels_first.permute(0, 2, 3, 4, 1)


class VideoLaVITMotionUpsample(nn.Module):
    """Nearest-neighbour up-sampling followed by a 3x3x3 convolution (stride 1, padding 1)."""

    def __init__(self, config: VideoLaVITMotionTokenizerConfig, stage: int):
        super().__init__()
        self.scale = tuple(float(factor) for factor in config.upsample_scales[stage])
        self.conv = nn.Conv3d(config.hidden_size, config.hidden_size, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[batch, frames, height, width, hidden] -> [batch, frames*st, height*sh, width*sw, hidden]`."""
        channels_first = hidden_states.permute(0, 4, 1, 2, 3)
        channels_first = F.interpolate(channels_first, scale_factor=self.scale, mode="nearest")
        return self.conv(channels_first).permute(0, 2, 3, 4, 1)


def _run_blocks(blocks: nn.ModuleList, grid: torch.Tensor) -> torch.Tensor:
    """Run spatio-temporal blocks on a `[batch, frames, height, width, hidden_size]` grid (same shape out)."""
    batch_size, frames, height, width, channels = grid.shape
    hidden_states = grid.reshape(batch_size, frames, height * width, channels)
    for block in blocks:
        hidden_states = block(hidden_states)
    return hidden_states.reshape(batch_size, frames, height, width, channels)


class VideoLaVITMotionEncoderStage(nn.Module):
    """Spatio-temporal blocks followed by a strided down-sampling convolution."""

    def __init__(self, config: VideoLaVITMotionTokenizerConfig, stage: int):
        super().__init__()
        self.blocks = nn.ModuleList(VideoLaVITMotionBlock(config) for _ in range(config.stage_depths[stage]))
        self.downsample = VideoLaVITMotionDownsample(config, stage)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """`[batch, frames, height, width, hidden_size] -> [batch, frames', height', width', hidden_size]`."""
        return self.downsample(_run_blocks(self.blocks, grid))


class VideoLaVITMotionDecoderStage(nn.Module):
    """Up-sampling convolution followed by spatio-temporal blocks."""

    def __init__(self, config: VideoLaVITMotionTokenizerConfig, stage: int):
        super().__init__()
        self.upsample = VideoLaVITMotionUpsample(config, stage)
        self.blocks = nn.ModuleList(VideoLaVITMotionBlock(config) for _ in range(config.stage_depths[stage]))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """`[batch, frames, height, width, hidden_size] -> [batch, frames', height', width', hidden_size]`."""
        return _run_blocks(self.blocks, self.upsample(grid))


class VideoLaVITMotionEncoder(nn.Module):
    """Motion `[batch, 2, num_frames, height, width]` -> features `[batch, t, h, w, hidden_size]` (3x5x9)."""

    def __init__(self, config: VideoLaVITMotionTokenizerConfig):
        super().__init__()
        self.input_proj = nn.Linear(config.in_channels, config.hidden_size)
        self.spatial_position_embeddings = nn.Parameter(
            torch.zeros(config.num_spatial_positions, config.hidden_size)
        )
        self.temporal_position_embeddings = nn.Parameter(torch.zeros(config.num_frames, config.hidden_size))
        self.stages = nn.ModuleList(
            VideoLaVITMotionEncoderStage(config, stage) for stage in range(len(config.stage_depths))
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, motion_vectors: torch.Tensor) -> torch.Tensor:
        """`[batch, in_channels, frames, height, width] -> [batch, t, h, w, hidden_size]`."""
        batch_size, _, frames, height, width = motion_vectors.shape
        hidden_states = self.input_proj(motion_vectors.permute(0, 2, 3, 4, 1))
        hidden_states = hidden_states.reshape(batch_size, frames, height * width, -1)
        hidden_states = (
            hidden_states
            + self.spatial_position_embeddings[None, None]
            + self.temporal_position_embeddings[None, :, None]
        )
        grid = hidden_states.reshape(batch_size, frames, height, width, -1)
        for stage in self.stages:
            grid = stage(grid)
        return self.norm(grid)


class VideoLaVITMotionDecoder(nn.Module):
    """Codes `[batch, t, h, w, code_dim]` -> features `[batch, num_frames, height, width, hidden_size]`."""

    def __init__(self, config: VideoLaVITMotionTokenizerConfig):
        super().__init__()
        self.input_proj = nn.Linear(config.code_dim, config.hidden_size)
        self.stages = nn.ModuleList(
            VideoLaVITMotionDecoderStage(config, stage) for stage in range(len(config.stage_depths))
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """`[batch, t, h, w, code_dim] -> [batch, num_frames, height, width, hidden_size]`."""
        grid = self.input_proj(codes)
        for stage in self.stages:
            grid = stage(grid)
        return self.norm(grid)


class VideoLaVITMotionVectorQuantizer(nn.Module):
    """
    Nearest-neighbour quantiser on the unit sphere: inputs and codebook rows are l2-normalised, so the nearest
    code is the one with the largest cosine similarity. With `config.codebook_ema` it also keeps exponential
    moving averages of code counts (`ema_cluster_size [codebook_size]`) and of the sum of assigned latents
    (`ema_embedding_sum [codebook_size, code_dim]`), from which `update_ema` recomputes the codebook.
    """

    def __init__(self, config: VideoLaVITMotionTokenizerConfig):
        super().__init__()
        self.codebook_size = config.codebook_size
        self.use_ema = config.codebook_ema
        self.ema_decay = config.ema_decay
        self.ema_epsilon = config.ema_epsilon
        self.codebook = nn.Embedding(config.codebook_size, config.code_dim)
        if self.use_ema:
            self.codebook.weight.requires_grad_(False)
            self.register_buffer("ema_cluster_size", torch.zeros(config.codebook_size))
            self.register_buffer("ema_embedding_sum", torch.zeros(config.codebook_size, config.code_dim))

    def normalized_codebook(self) -> torch.Tensor:
        """The codebook as unit vectors: `[codebook_size, code_dim]`."""
        return F.normalize(self.codebook.weight, dim=-1)

    def nearest_codes(self, latents: torch.Tensor) -> torch.LongTensor:
        """Ids of the nearest unit codes (computed in float32): `[..., code_dim] -> [...]`."""
        return nearest_code_ids(latents, self.normalized_codebook())

    def lookup(self, ids: torch.LongTensor) -> torch.Tensor:
        """Unit code vectors: `[...] -> [..., code_dim]`."""
        return F.embedding(ids, self.normalized_codebook())

    @torch.no_grad()
    def update_ema(self, latents: torch.Tensor, ids: torch.LongTensor) -> None:
        """
        Move each code towards the mean of the latents assigned to it (`latents [N, code_dim]`, `ids [N]`),
        summed over all processes when `torch.distributed` is initialised.
        """
        counts = torch.bincount(ids, minlength=self.codebook_size).to(self.ema_cluster_size.dtype)
        sums = torch.zeros_like(self.ema_embedding_sum).index_add_(
            0, ids, latents.to(self.ema_embedding_sum.dtype)
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.ema_cluster_size.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
        self.ema_embedding_sum.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
        # Laplace smoothing keeps never-chosen codes finite; normalising afterwards keeps their direction.
        total = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.ema_epsilon) / (
            total + self.codebook_size * self.ema_epsilon
        )
        means = self.ema_embedding_sum / (smoothed * total).unsqueeze(-1)
        self.codebook.weight.copy_(F.normalize(means, dim=-1).to(self.codebook.weight.dtype))

    @torch.no_grad()
    def replace_codes(self, code_ids: torch.LongTensor, vectors: torch.Tensor) -> None:
        """Overwrite codes `code_ids [K]` with unit `vectors [K, code_dim]`; resets their EMA state."""
        vectors = F.normalize(vectors.float(), dim=-1)
        self.codebook.weight[code_ids] = vectors.to(self.codebook.weight.dtype)
        if self.use_ema:
            self.ema_cluster_size[code_ids] = 1.0
            self.ema_embedding_sum[code_ids] = vectors.to(self.ema_embedding_sum.dtype)


class VideoLaVITMotionTokenizerPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading/saving glue for the motion tokenizer."""

    config: VideoLaVITMotionTokenizerConfig
    config_class = VideoLaVITMotionTokenizerConfig
    base_model_prefix = "motion_tokenizer"
    main_input_name = "motion_vectors"
    input_modalities = ("video",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["VideoLaVITMotionBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Truncated-normal linear/conv weights and position embeddings, zero biases, unit norms and codes."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, VideoLaVITMotionEncoder):
            init.trunc_normal_(module.spatial_position_embeddings, std=std)
            init.trunc_normal_(module.temporal_position_embeddings, std=std)
        elif isinstance(module, nn.Embedding):
            # The only embedding is the codebook.
            init_unit_codebook_(module.weight)
        elif isinstance(module, VideoLaVITMotionVectorQuantizer) and module.use_ema:
            # Children are initialised (or loaded) first, so the statistics start from the actual codebook.
            init.zeros_(module.ema_cluster_size)
            init.copy_(module.ema_embedding_sum, module.normalized_codebook())


class VideoLaVITMotionTokenizer(VideoLaVITMotionTokenizerPreTrainedModel):
    """
    The Video-LaVIT motion tokenizer (VQ-VAE).

    - `encode(motion_vectors [B, 2, 24, 20, 36]) -> ids [B, 135]` (0-based code ids)
    - `decode(ids [B, 135]) -> motion [B, 2, 24, 20, 36]`
    - `decode_for_detokenizer(ids, height, width) -> [B, 2, 24, height, width]` (the video U-Net's input)
    - `forward(motion_vectors)` -> reconstruction and VQ losses for training.

    Example:

    ```python
    >>> import torch
    >>> from transformers_vlavit import VideoLaVITMotionTokenizer, VideoLaVITMotionTokenizerConfig
    >>> config = VideoLaVITMotionTokenizerConfig(
    ...     hidden_size=32, num_attention_heads=2, stage_depths=(1, 1, 1, 1)
    ... )
    >>> model = VideoLaVITMotionTokenizer(config).eval()
    >>> ids = model.encode(torch.randn(2, 2, 24, 20, 36))
    >>> ids.shape
    torch.Size([2, 135])
    >>> model.decode(ids).shape
    torch.Size([2, 2, 24, 20, 36])
    ```
    """

    def __init__(self, config: VideoLaVITMotionTokenizerConfig):
        super().__init__(config)
        self.encoder = VideoLaVITMotionEncoder(config)
        self.code_projection = TanhProjection(config.hidden_size, config.code_dim)
        self.quantizer = VideoLaVITMotionVectorQuantizer(config)
        self.decoder = VideoLaVITMotionDecoder(config)
        self.motion_projection = TanhProjection(config.hidden_size, config.in_channels)
        self.post_init()

    def _check_motion(self, motion_vectors: torch.Tensor) -> torch.Tensor:
        """Validate `[batch, in_channels, num_frames, height, width]` and cast it to the model's dtype."""
        config = self.config
        expected = (config.in_channels, config.num_frames, *config.grid_size)
        if motion_vectors.ndim != 5 or tuple(motion_vectors.shape[1:]) != expected:
            raise MotionTokenizerInputError(
                f"motion_vectors must have shape [batch, {', '.join(map(str, expected))}], got "
                f"{list(motion_vectors.shape)}; use decompose_video(...).motion_vectors or the processor's "
                "motion_vectors output."
            )
        return motion_vectors.to(self.encoder.input_proj.weight.dtype)

    def _check_ids(self, ids: torch.LongTensor) -> None:
        """Validate code ids `[batch, num_tokens]` (0-based)."""
        if ids.ndim != 2 or ids.shape[1] != self.config.num_tokens:
            raise MotionTokenizerInputError(
                f"ids must have shape [batch, {self.config.num_tokens}], got {list(ids.shape)}."
            )
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.config.codebook_size):
            raise MotionTokenizerInputError(
                f"ids must be 0-based motion codes in [0, {self.config.codebook_size}); subtract the motion "
                "code offset of the language-model vocabulary first."
            )

    def encoder_features(self, motion_vectors: torch.Tensor) -> torch.Tensor:
        """Encoder output before the code projection: `[B, 2, T, H, W] -> [B, t, h, w, hidden]` (3x5x9)."""
        return self.encoder(self._check_motion(motion_vectors))

    def encode_latents(self, motion_vectors: torch.Tensor) -> torch.Tensor:
        """l2-normalised pre-quantisation latents: `[B, 2, T, H, W] -> [B, t, h, w, code_dim]`."""
        return F.normalize(self.code_projection(self.encoder_features(motion_vectors)), dim=-1)

    @torch.no_grad()
    def encode(self, motion_vectors: torch.Tensor) -> torch.LongTensor:
        """Motion to code ids: `[B, 2, 24, 20, 36] -> [B, num_tokens]` (0-based, `(t, h, w)` raster order).

        Runs without autograd: ids carry no gradient, and the graph of a released-size encode would hold every
        activation (gigabytes per clip). Train through `forward` or `encode_latents`.
        """
        latents = self.encode_latents(motion_vectors)
        return self.quantizer.nearest_codes(latents).flatten(1)

    def get_code_embeddings(self, ids: torch.LongTensor) -> torch.Tensor:
        """Unit codebook vectors of `ids`: `[...] -> [..., code_dim]`."""
        return self.quantizer.lookup(ids)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors to motion: `[B, t, h, w, code_dim] -> [B, 2, num_frames, height, width]`."""
        codes = codes.to(self.decoder.input_proj.weight.dtype)
        return self.motion_projection(self.decoder(codes)).permute(0, 4, 1, 2, 3)

    def decode(self, ids: torch.LongTensor) -> torch.Tensor:
        """Code ids to motion: `[B, num_tokens] -> [B, 2, num_frames, height, width]`."""
        self._check_ids(ids)
        codes = self.get_code_embeddings(ids).unflatten(1, self.config.latent_grid)
        return self.decode_codes(codes)

    def decode_for_detokenizer(self, ids: torch.LongTensor, height: int, width: int) -> torch.Tensor:
        """
        Motion as the video detokenizer consumes it: decoded, resized (bicubic, per frame) to the latent size
        and divided by `config.motion_scale_factor`. `[B, num_tokens] -> [B, 2, num_frames, height, width]`.
        """
        motion = self.decode(ids)
        # `decompose_video`'s per-frame bicubic resize, repeated (this module travels alone as custom code)
        batch_size, channels, frames = motion.shape[:3]
        per_frame = motion.transpose(1, 2).flatten(0, 1).float()
        resized = F.interpolate(per_frame, size=(height, width), mode="bicubic", align_corners=False)
        resized = resized.view(batch_size, frames, channels, height, width).transpose(1, 2)
        return (resized / self.config.motion_scale_factor).to(motion.dtype)

    def forward(
        self, motion_vectors: torch.Tensor, return_dict: bool | None = None
    ) -> VideoLaVITMotionTokenizerOutput | tuple:
        """
        One VQ-VAE step on `motion_vectors [B, 2, num_frames, height, width]`: quantise with a
        straight-through estimator, decode, and return the losses (see [`VideoLaVITMotionTokenizerOutput`]).
        In training mode with `config.codebook_ema` the codebook is updated in place from this batch.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        motion_vectors = self._check_motion(motion_vectors)
        latents = self.encode_latents(motion_vectors)
        ids = self.quantizer.nearest_codes(latents)
        codes = self.quantizer.lookup(ids).to(latents.dtype)

        commitment_loss = self.config.commitment_cost * F.mse_loss(latents.float(), codes.detach().float())
        if self.quantizer.use_ema:
            codebook_loss = commitment_loss.new_zeros(())
            if self.training:
                self.quantizer.update_ema(latents.detach().flatten(0, -2), ids.flatten())
        else:
            codebook_loss = F.mse_loss(latents.detach().float(), codes.float())

        # Straight-through: the decoder sees the codes, the encoder receives the decoder's gradient unchanged.
        quantized = latents + (codes - latents).detach()
        reconstruction = self.decode_codes(quantized)
        reconstruction_loss = F.mse_loss(reconstruction.float(), motion_vectors.float())
        loss = reconstruction_loss + commitment_loss + codebook_loss

        code_counts = torch.bincount(ids.flatten(), minlength=self.config.codebook_size)
        probabilities = code_counts.float() / code_counts.sum()
        perplexity = torch.exp(-(probabilities * torch.log(probabilities.clamp_min(1e-10))).sum())
        codebook_usage = (code_counts > 0).float().mean()

        output = VideoLaVITMotionTokenizerOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            commitment_loss=commitment_loss,
            codebook_loss=codebook_loss,
            ids=ids.flatten(1),
            reconstruction=reconstruction,
            encoder_latents=latents.detach().flatten(1, 3),
            code_counts=code_counts,
            perplexity=perplexity,
            codebook_usage=codebook_usage,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def restart_dead_codes(
        self,
        encoder_latents: torch.Tensor,
        code_counts: torch.LongTensor | None = None,
        min_count: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.LongTensor:
        """
        Re-seed rarely used codes with randomly chosen encoder latents (a remedy for codebook collapse).

        Args:
            encoder_latents (`torch.Tensor` of shape `[..., code_dim]`):
                l2-normalised latents, e.g. `output.encoder_latents` of recent steps.
            code_counts (`torch.LongTensor` of shape `[codebook_size]`, *optional*):
                This process's usage counts accumulated by the caller (e.g. the sum of `output.code_counts`
                since the last restart); summed over processes under `torch.distributed`. Defaults to the
                assignments of `encoder_latents` themselves.
            min_count (`int`, defaults to 1):
                Codes used fewer times than this are restarted.
            generator (`torch.Generator`, *optional*):
                Random generator (on the latents' device) choosing the latents.

        Returns:
            `torch.LongTensor` of shape `[num_restarted]`: the ids of the restarted codes. Under
            `torch.distributed`, process 0's latents are broadcast so all replicas keep the same codebook.
        """
        latents = encoder_latents.reshape(-1, self.config.code_dim)
        if latents.shape[0] == 0:
            raise MotionTokenizerInputError("restart_dead_codes needs at least one encoder latent.")
        if code_counts is None:
            code_counts = torch.bincount(
                self.quantizer.nearest_codes(latents), minlength=self.config.codebook_size
            )
        code_counts = code_counts.to(latents.device).clone()
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            # Every replica must restart the same codes with the same vectors.
            torch.distributed.all_reduce(code_counts)
        dead = torch.nonzero(code_counts < min_count).flatten()
        if dead.numel() == 0:
            return dead
        choice = torch.randint(latents.shape[0], (dead.numel(),), generator=generator, device=latents.device)
        replacements = latents[choice].float()
        if distributed:
            torch.distributed.broadcast(replacements, src=0)
        self.quantizer.replace_codes(dead.to(self.quantizer.codebook.weight.device), replacements)
        logger.info("Restarted %d of %d motion codes.", dead.numel(), self.config.codebook_size)
        return dead


__all__ = [
    "MotionTokenizerInputError",
    "VideoLaVITMotionTokenizer",
    "VideoLaVITMotionTokenizerOutput",
    "VideoLaVITMotionTokenizerPreTrainedModel",
]
