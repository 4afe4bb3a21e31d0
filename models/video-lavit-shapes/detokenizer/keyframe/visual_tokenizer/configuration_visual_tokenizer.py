"""Configuration of the Video-LaVIT visual tokenizer (LaVIT's dynamic keyframe/image tokenizer)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class VideoLaVITVisualTokenizerConfig(PreTrainedConfig):
    r"""
    Configuration of [`VideoLaVITVisualTokenizer`]: an EVA-CLIP vision transformer whose patch features a
    token predictor thins out, a token merger folds the dropped patches into the kept ones, and a quantizer
    maps each kept token to one of `codebook_size` codes. The defaults are the released Video-LaVIT-v1
    tokenizer (EVA-CLIP ViT-g/14 at 224 pixels, a 12-block merger, 16384 codes of dimension 32, projection to
    a 4096-wide LLM).

    Args:
        image_size (`int`, defaults to 224):
            Side of the square input image in pixels.
        patch_size (`int`, defaults to 14):
            Side of one square patch; `(image_size // patch_size) ** 2` patches (256) per image.
        num_channels (`int`, defaults to 3):
            Channels of the input image.
        hidden_size (`int`, defaults to 1408):
            Width of the vision transformer, which the token predictor and merger share.
        num_hidden_layers (`int`, defaults to 40):
            Blocks of the vision transformer; the features are the last block's output before any final norm.
        num_attention_heads (`int`, defaults to 16):
            Heads of the vision transformer's self-attention.
        mlp_ratio (`float`, defaults to 4.3637):
            Hidden width of the vision transformer's MLPs relative to `hidden_size` (truncated to an integer).
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of every MLP, the token predictor included.
        qkv_bias (`bool`, defaults to `True`):
            Whether the vision transformer's queries and values have a bias (its keys never do).
        layer_norm_eps (`float`, defaults to 1e-6):
            Epsilon of the vision transformer's LayerNorms.
        merger_num_hidden_layers (`int`, defaults to 12):
            Blocks of the token merger.
        merger_num_attention_heads (`int`, defaults to 16):
            Heads of the token merger's causal self-attention and cross-attention.
        merger_mlp_ratio (`float`, defaults to 4.3637):
            Hidden width of the token merger's MLPs relative to `hidden_size` (truncated to an integer).
        merger_layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of the token merger's and the token predictor's LayerNorms.
        merger_attention_eps (`float`, defaults to 1e-6):
            Smoothing term of the merger's masked softmax `(w + eps / N) / (sum(w) + eps)`; a query with no
            allowed key therefore averages all values.
        codebook_size (`int`, defaults to 16384):
            Number of visual codes.
        code_dim (`int`, defaults to 32):
            Dimension of the (l2-normalised) code vectors.
        llm_hidden_size (`int`, defaults to 4096):
            Output width of `vit_proj`, the projection of merged features into the language model's input
            space.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the truncated normal initialisation of linear weights and embeddings.

    Example:

    ```python
    >>> from transformers_vlavit import VideoLaVITVisualTokenizer, VideoLaVITVisualTokenizerConfig
    >>> config = VideoLaVITVisualTokenizerConfig(
    ...     hidden_size=64, num_hidden_layers=2, num_attention_heads=4, merger_num_hidden_layers=2,
    ...     merger_num_attention_heads=4, codebook_size=512, llm_hidden_size=128,
    ... )
    >>> config.num_patches
    256
    >>> model = VideoLaVITVisualTokenizer(config)
    ```
    """

    model_type = "video_lavit_visual_tokenizer"
    base_config_key = "visual_tokenizer_config"

    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    hidden_size: int = 1408
    num_hidden_layers: int = 40
    num_attention_heads: int = 16
    mlp_ratio: float | int = 4.3637
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    merger_num_hidden_layers: int = 12
    merger_num_attention_heads: int = 16
    merger_mlp_ratio: float | int = 4.3637
    merger_layer_norm_eps: float = 1e-5
    merger_attention_eps: float = 1e-6
    codebook_size: int = 16384
    code_dim: int = 32
    llm_hidden_size: int = 4096
    initializer_range: float = 0.02

    @property
    def num_patches(self) -> int:
        """
        Patch tokens per image (256 at full size); the CLS token comes on top inside the vision transformer.
        """
        return (self.image_size // self.patch_size) ** 2

    @property
    def intermediate_size(self) -> int:
        """Hidden width of the vision transformer's MLPs (6144 at full size)."""
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def merger_intermediate_size(self) -> int:
        """Hidden width of the token merger's MLPs (6144 at full size)."""
        return int(self.hidden_size * self.merger_mlp_ratio)

    def validate_architecture(self):
        """Checks that the widths divide into heads and halves, and the image into patches."""
        for name in ("num_attention_heads", "merger_num_attention_heads"):
            heads = getattr(self, name)
            if self.hidden_size % heads != 0:
                raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of {name} ({heads}).")
        if self.hidden_size % 4 != 0:
            # The token predictor splits the width into local/global halves and its MLP narrows it to a
            # quarter.
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of 4 for the token predictor."
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size}); "
                "resize the images or pick a patch size that divides them."
            )


__all__ = ["VideoLaVITVisualTokenizerConfig"]
