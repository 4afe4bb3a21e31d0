"""Configuration of the Video-LaVIT motion tokenizer (a VQ-VAE over motion-vector grids)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Every down-sampling convolution has a 3x3x3 kernel; the released checkpoint's weights fix it.
DOWNSAMPLE_KERNEL_SIZE = 3


def _downsampled_length(length: int, stride: int, pad_before: int, pad_after: int) -> int:
    """Output length of an unpadded 3-tap convolution after explicit ``(pad_before, pad_after)`` padding."""
    return (length + pad_before + pad_after - DOWNSAMPLE_KERNEL_SIZE) // stride + 1


@strict
class VideoLaVITMotionTokenizerConfig(PreTrainedConfig):
    r"""
    Configuration of [`VideoLaVITMotionTokenizer`], the VQ-VAE that turns one 24-frame clip of motion vectors
    `[2, num_frames, height, width]` into `num_tokens` discrete codes and back. The defaults are the released
    Video-LaVIT-v1 tokenizer (width 512, 135 tokens per clip).

    Args:
        in_channels (`int`, defaults to 2):
            Channels of a motion grid (x and y displacement).
        num_frames (`int`, defaults to 24):
            Frames per clip; the encoder has one learned temporal position embedding per frame.
        grid_size (`tuple[int, int]`, defaults to `(20, 36)`):
            `(height, width)` of the motion grid; the encoder has one learned spatial position per cell.
        hidden_size (`int`, defaults to 512):
            Width of the encoder and decoder transformers.
        num_attention_heads (`int`, defaults to 8):
            Heads of every spatial and temporal attention.
        mlp_ratio (`float`, defaults to 4.0):
            Hidden width of each MLP relative to `hidden_size`.
        stage_depths (`tuple[int, ...]`, defaults to `(3, 3, 3, 3)`):
            Spatio-temporal blocks per stage, for the encoder and (mirrored) the decoder.
        downsample_strides (`tuple[tuple[int, int, int], ...]`):
            `(time, height, width)` stride of the 3x3x3 convolution closing each encoder stage; defaults to
            `((1, 2, 2), (2, 1, 1), (2, 1, 1), (2, 2, 2))`.
        downsample_paddings (`tuple[tuple[int, ...], ...]`):
            Zero padding before each of those convolutions, in `torch.nn.functional.pad` order
            `(width_before, width_after, height_before, height_after, time_before, time_after)`; defaults to
            `((0, 1, 0, 1, 1, 1), (1, 1, 1, 1, 0, 1), (1, 1, 1, 1, 0, 1), (0, 1, 0, 1, 0, 1))`.
        upsample_scales (`tuple[tuple[int, int, int], ...]`):
            `(time, height, width)` nearest up-sampling factor opening each decoder stage; defaults to
            `((2, 2, 2), (2, 1, 1), (2, 1, 1), (1, 2, 2))`.
        codebook_size (`int`, defaults to 1024):
            Number of motion codes.
        code_dim (`int`, defaults to 32):
            Dimension of the (l2-normalised) code vectors.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of every LayerNorm.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention probabilities during training.
        motion_scale_factor (`float`, defaults to 10.0):
            The video detokenizer takes the reconstructed motion divided by this factor.
        commitment_cost (`float`, defaults to 0.25):
            Weight of the commitment loss that pulls encoder outputs towards their codes.
        codebook_ema (`bool`, defaults to `False`):
            Update the codebook with exponential moving averages of the assigned encoder outputs instead of a
            codebook loss.
        ema_decay (`float`, defaults to 0.99):
            Decay of those moving averages.
        ema_epsilon (`float`, defaults to 1e-5):
            Laplace smoothing of the moving code counts, so that unused codes do not divide by zero.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the truncated normal initialisation of linear, convolution and position
            weights.

    Example:

    ```python
    >>> from transformers_vlavit import VideoLaVITMotionTokenizer, VideoLaVITMotionTokenizerConfig
    >>> config = VideoLaVITMotionTokenizerConfig(
    ...     hidden_size=32, num_attention_heads=2, stage_depths=(1, 1, 1, 1)
    ... )
    >>> config.num_tokens
    135
    >>> model = VideoLaVITMotionTokenizer(config)
    ```
    """

    model_type = "video_lavit_motion_tokenizer"
    base_config_key = "motion_tokenizer_config"

    in_channels: int = 2
    num_frames: int = 24
    grid_size: list[int] | tuple[int, int] = (20, 36)
    hidden_size: int = 512
    num_attention_heads: int = 8
    mlp_ratio: float | int = 4.0
    stage_depths: list[int] | tuple[int, ...] = (3, 3, 3, 3)
    downsample_strides: list[list[int]] | tuple[tuple[int, int, int], ...] = (
        (1, 2, 2),
        (2, 1, 1),
        (2, 1, 1),
        (2, 2, 2),
    )
    downsample_paddings: list[list[int]] | tuple[tuple[int, int, int, int, int, int], ...] = (
        (0, 1, 0, 1, 1, 1),
        (1, 1, 1, 1, 0, 1),
        (1, 1, 1, 1, 0, 1),
        (0, 1, 0, 1, 0, 1),
    )
    upsample_scales: list[list[int]] | tuple[tuple[int, int, int], ...] = (
        (2, 2, 2),
        (2, 1, 1),
        (2, 1, 1),
        (1, 2, 2),
    )
    codebook_size: int = 1024
    code_dim: int = 32
    layer_norm_eps: float = 1e-5
    attention_dropout: float | int = 0.0
    motion_scale_factor: float | int = 10.0
    commitment_cost: float | int = 0.25
    codebook_ema: bool = False
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # JSON turns tuples into lists; keep one canonical (hashable, comparable) form.
        self.grid_size = tuple(self.grid_size)
        self.stage_depths = tuple(self.stage_depths)
        self.downsample_strides = tuple(tuple(stride) for stride in self.downsample_strides)
        self.downsample_paddings = tuple(tuple(padding) for padding in self.downsample_paddings)
        self.upsample_scales = tuple(tuple(scale) for scale in self.upsample_scales)
        super().__post_init__(**kwargs)

    @property
    def intermediate_size(self) -> int:
        """Hidden width of the MLP in every spatio-temporal block."""
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def num_spatial_positions(self) -> int:
        """Cells of one motion grid (720 at full size): the encoder's spatial position embeddings."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def latent_grid(self) -> tuple[int, int, int]:
        """`(time, height, width)` of the encoder output, derived from the strides and paddings (3, 5, 9)."""
        frames, height, width = self.num_frames, self.grid_size[0], self.grid_size[1]
        for (stride_t, stride_h, stride_w), padding in zip(
            self.downsample_strides, self.downsample_paddings, strict=True
        ):
            width_before, width_after, height_before, height_after, time_before, time_after = padding
            frames = _downsampled_length(frames, stride_t, time_before, time_after)
            height = _downsampled_length(height, stride_h, height_before, height_after)
            width = _downsampled_length(width, stride_w, width_before, width_after)
        return frames, height, width

    @property
    def num_tokens(self) -> int:
        """Motion tokens per clip (135 at full size)."""
        frames, height, width = self.latent_grid
        return frames * height * width

    def validate_architecture(self):
        """Checks that the stages agree with each other and that the decoder restores the input grid."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )
        num_stages = len(self.stage_depths)
        per_stage = {
            "downsample_strides": self.downsample_strides,
            "downsample_paddings": self.downsample_paddings,
            "upsample_scales": self.upsample_scales,
        }
        for name, values in per_stage.items():
            if len(values) != num_stages:
                raise ValueError(
                    f"{name} has {len(values)} entries but stage_depths has {num_stages} stages; "
                    "give one entry per stage."
                )
        if any(len(padding) != 6 for padding in self.downsample_paddings):
            raise ValueError(
                "Each downsample_paddings entry must have 6 values "
                "(width_before, width_after, height_before, height_after, time_before, time_after)."
            )
        restored = list(self.latent_grid)
        for scale in self.upsample_scales:
            restored = [length * factor for length, factor in zip(restored, scale, strict=True)]
        expected = [self.num_frames, *self.grid_size]
        if restored != expected:
            raise ValueError(
                f"The decoder's upsample_scales turn the latent grid {self.latent_grid} into "
                f"{tuple(restored)}, not the input grid {tuple(expected)}; adjust upsample_scales or the "
                "down-sampling settings."
            )


__all__ = ["VideoLaVITMotionTokenizerConfig"]
