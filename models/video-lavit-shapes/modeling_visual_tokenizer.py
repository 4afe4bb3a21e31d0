"""Video-LaVIT visual tokenizer: LaVIT's dynamic tokenizer for keyframes and images.

An image goes through an EVA-CLIP vision transformer; a token predictor decides which of its patch tokens to
keep; a token merger lets the kept tokens absorb the information of the dropped ones; each merged kept token
is then either quantized to a code of a 16384-entry codebook (generation) or projected into the language
model's input space by `vit_proj` (understanding). The number of tokens per image therefore varies with its
content.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from .configuration_visual_tokenizer import VideoLaVITVisualTokenizerConfig
from .quantization import TanhProjection, init_unit_codebook_, nearest_code_ids

logger = logging.get_logger(__name__)

# Index of the "keep" entry in the token predictor's two log-probabilities (the other one is "drop").
KEEP_INDEX = 0


class VisualTokenizerInputError(ValueError):
    """Raised when pixel values do not have the shape the visual tokenizer's config expects."""


@dataclass
class VideoLaVITVisualTokenizerOutput(ModelOutput):
    """
    Every intermediate of the visual tokenizer for a batch of images.

    Args:
        vit_features (`torch.FloatTensor` of shape `[batch, num_patches, hidden_size]`):
            Patch tokens of the vision transformer's last block (before any final norm, CLS token dropped).
        keep_logprobs (`torch.FloatTensor` of shape `[batch, num_patches, 2]`):
            Token predictor log-probabilities, `[..., 0]` = keep, `[..., 1]` = drop.
        keep (`torch.FloatTensor` of shape `[batch, num_patches]`):
            The keep decision, 1.0 for kept and 0.0 for dropped tokens (straight-through Gumbel values when
            sampled, so that gradients reach the token predictor).
        merged (`torch.FloatTensor` of shape `[batch, num_patches, hidden_size]`):
            Token merger output for every position; only the kept positions are used downstream.
        token_ids (`torch.LongTensor` of shape `[total_kept]`):
            0-based codebook ids of the kept tokens of all images, concatenated in batch order.
        token_counts (`torch.LongTensor` of shape `[batch]`):
            Kept tokens per image; `token_ids.split(token_counts.tolist())` gives the ids per image.
        llm_features (`torch.FloatTensor` of shape `[batch, num_patches, llm_hidden_size]`):
            `vit_proj` of `merged` for every position; the kept positions are the understanding features.
    """

    vit_features: torch.FloatTensor | None = None
    keep_logprobs: torch.FloatTensor | None = None
    keep: torch.FloatTensor | None = None
    merged: torch.FloatTensor | None = None
    token_ids: torch.LongTensor | None = None
    token_counts: torch.LongTensor | None = None
    llm_features: torch.FloatTensor | None = None


class VideoLaVITVisionEmbeddings(nn.Module):
    """
    Patch embedding, a learned CLS token and absolute position embeddings of the EVA-CLIP vision transformer.
    """

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.position_embedding = nn.Parameter(torch.zeros(config.num_patches + 1, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels `[batch, channels, size, size]` -> `[batch, 1 + num_patches, hidden_size]`, CLS first."""
        size = self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (self.config.num_channels, size, size):
            raise VisualTokenizerInputError(
                f"Expected pixel_values of shape [batch, {self.config.num_channels}, {size}, {size}], got "
                f"{tuple(pixel_values.shape)}; preprocess the images with VideoLaVITImageProcessor."
            )
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        class_token = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([class_token, patches], dim=1) + self.position_embedding


class VideoLaVITMLP(nn.Module):
    """Two-layer MLP `hidden -> intermediate -> hidden` of the vision transformer and the token merger."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[..., hidden_size]` -> `[..., hidden_size]`."""
        return self.fc2(self.act(self.fc1(hidden_states)))


class VideoLaVITVisionAttention(nn.Module):
    """
    EVA-CLIP self-attention: one fused query/key/value projection with query and value biases but no key bias.
    """

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        if config.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(config.hidden_size))
            self.v_bias = nn.Parameter(torch.zeros(config.hidden_size))
        else:
            self.q_bias = None
            self.v_bias = None
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[batch, length, hidden_size]` -> `[batch, length, hidden_size]` (full bidirectional attention)."""
        batch, length, width = hidden_states.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(hidden_states, self.qkv.weight, bias)
        query, key, value = qkv.view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, width))


class VideoLaVITVisionLayer(GradientCheckpointingLayer):
    """
    Pre-LayerNorm transformer block of the EVA-CLIP vision transformer (no layer scale, no rotary embedding).
    """

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = VideoLaVITVisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VideoLaVITMLP(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[batch, length, hidden_size]` -> `[batch, length, hidden_size]`."""
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states))
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class VideoLaVITVisionTransformer(nn.Module):
    """The EVA-CLIP vision transformer up to its last block (its final norm and head are not used)."""

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        self.embeddings = VideoLaVITVisionEmbeddings(config)
        self.layers = nn.ModuleList([VideoLaVITVisionLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """
        `[batch, 3, image_size, image_size]` -> patch features `[batch, num_patches, hidden_size]` (no CLS).
        """
        hidden_states = self.embeddings(pixel_values)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states[:, 1:]


class VideoLaVITTokenPredictor(nn.Module):
    """
    Scores every patch token for keeping: a projected half of its channels stays local, the other half is
    averaged over the image as global context, and an MLP turns both into keep/drop log-probabilities.
    """

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        width = config.hidden_size
        self.input_norm = nn.LayerNorm(width, eps=config.merger_layer_norm_eps)
        self.input_proj = nn.Linear(width, width)
        self.fc1 = nn.Linear(width, width // 2)
        self.fc2 = nn.Linear(width // 2, width // 4)
        self.classifier = nn.Linear(width // 4, 2)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, vit_features: torch.Tensor) -> torch.Tensor:
        """`[batch, num_patches, hidden_size]` -> log-probabilities `[batch, num_patches, 2]` (keep, drop)."""
        hidden_states = self.act(self.input_proj(self.input_norm(vit_features)))
        local_features, global_features = hidden_states.chunk(2, dim=-1)
        global_features = global_features.mean(dim=1, keepdim=True).expand_as(local_features)
        hidden_states = torch.cat([local_features, global_features], dim=-1)
        hidden_states = self.act(self.fc2(self.act(self.fc1(hidden_states))))
        return self.classifier(hidden_states).log_softmax(dim=-1)


def policy_weighted_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_weights: torch.Tensor, eps: float
) -> torch.Tensor:
    """
    Attention whose keys are weighted by a soft 0/1 policy, normalised as the LaVIT token merger was trained.

    SDPA cannot express it: the weights multiply the exponentiated scores (so straight-through keep decisions
    pass gradients to the token predictor), and the normalisation `(w + eps / N) / (sum(w) + eps)` is taken
    against the row maximum over *all* keys, so a query whose allowed keys are all masked (or score far below
    the row maximum) averages every value instead of producing NaN.

    Args:
        query (`torch.Tensor` of shape `[batch, heads, query_length, head_dim]`)
        key (`torch.Tensor` of shape `[batch, heads, key_length, head_dim]`)
        value (`torch.Tensor` of shape `[batch, heads, key_length, head_dim]`)
        key_weights (`torch.Tensor` broadcastable to `[batch, heads, query_length, key_length]`):
            1.0 where a query may attend to a key, 0.0 where not.
        eps (`float`): smoothing of the normalisation.

    Returns:
        `torch.Tensor` of shape `[batch, heads, query_length, head_dim]`.
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * query.shape[-1] ** -0.5
    scores = scores - scores.amax(dim=-1, keepdim=True)
    # float32 for the exponent and the normalisation, whatever the model's dtype
    weights = scores.float().exp() * key_weights.float()
    weights = (weights + eps / key.shape[-2]) / (weights.sum(dim=-1, keepdim=True) + eps)
    return torch.matmul(weights.to(value.dtype), value)


class VideoLaVITMergerSelfAttention(nn.Module):
    """
    Causal self-attention of the token merger, restricted to the kept tokens (every token also sees itself).
    """

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        self.num_heads = config.merger_num_attention_heads
        self.eps = config.merger_attention_eps
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, key_weights: torch.Tensor) -> torch.Tensor:
        """
        `[batch, num_patches, hidden_size]`, key weights `[batch, 1, num_patches, num_patches]` -> same shape.
        """
        batch, length, width = hidden_states.shape
        query, key, value = (
            self.qkv(hidden_states).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        )
        attended = policy_weighted_attention(query, key, value, key_weights, self.eps)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, width))


class VideoLaVITMergerCrossAttention(nn.Module):
    """Cross-attention of the token merger from every token to the dropped tokens' normalised ViT features."""

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        self.num_heads = config.merger_num_attention_heads
        self.eps = config.merger_attention_eps
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(
        self, hidden_states: torch.Tensor, vision_features: torch.Tensor, key_weights: torch.Tensor
    ) -> torch.Tensor:
        """
        Queries `[batch, num_patches, hidden_size]`, keys/values from `vision_features` of the same shape, key
        weights `[batch, 1, 1, num_patches]` (1.0 for dropped tokens) -> `[batch, num_patches, hidden_size]`.
        """
        query = self._split_heads(self.q_proj(hidden_states))
        key = self._split_heads(self.k_proj(vision_features))
        value = self._split_heads(self.v_proj(vision_features))
        attended = policy_weighted_attention(query, key, value, key_weights, self.eps)
        return self.out_proj(attended.transpose(1, 2).flatten(2))


class VideoLaVITTokenMergerLayer(GradientCheckpointingLayer):
    """Token merger block: causal self-attention over kept tokens, cross-attention to dropped tokens, MLP."""

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        eps = config.merger_layer_norm_eps
        self.self_attn_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.self_attn = VideoLaVITMergerSelfAttention(config)
        self.cross_attn_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.cross_attn = VideoLaVITMergerCrossAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = VideoLaVITMLP(config.hidden_size, config.merger_intermediate_size, config.hidden_act)

    def forward(
        self,
        hidden_states: torch.Tensor,
        vision_features: torch.Tensor,
        self_attention_weights: torch.Tensor,
        cross_attention_weights: torch.Tensor,
    ) -> torch.Tensor:
        """
        `hidden_states`, `vision_features`: `[batch, num_patches, hidden_size]`; weights as built by
        [`VideoLaVITTokenMerger`] -> `[batch, num_patches, hidden_size]`.
        """
        hidden_states = hidden_states + self.self_attn(
            self.self_attn_norm(hidden_states), self_attention_weights
        )
        hidden_states = hidden_states + self.cross_attn(
            self.cross_attn_norm(hidden_states), vision_features, cross_attention_weights
        )
        return hidden_states + self.mlp(self.mlp_norm(hidden_states))


class VideoLaVITTokenMerger(nn.Module):
    """Folds the dropped patch tokens into the kept ones so that the kept tokens carry the whole image."""

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        eps = config.merger_layer_norm_eps
        self.vision_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.layers = nn.ModuleList(
            [VideoLaVITTokenMergerLayer(config) for _ in range(config.merger_num_hidden_layers)]
        )
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=eps)

    @staticmethod
    def attention_weights(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Key weights of the merger's two attentions from the keep decision `[batch, num_patches]`.

        Returns `(self_attention_weights [batch, 1, num_patches, num_patches], cross_attention_weights
        [batch, 1, 1, num_patches])`: a token attends causally to the kept tokens and to itself, and across to
        the dropped tokens.
        """
        length = keep.shape[-1]
        eye = torch.eye(length, dtype=keep.dtype, device=keep.device)
        kept_keys = keep[:, None, None, :]
        causal = torch.ones(length, length, dtype=torch.bool, device=keep.device).tril()
        self_attention_weights = (kept_keys + (1.0 - kept_keys) * eye) * causal
        cross_attention_weights = 1.0 - kept_keys
        return self_attention_weights, cross_attention_weights

    def forward(self, vit_features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """
        Patch features `[batch, num_patches, hidden_size]`, keep `[batch, num_patches]` -> merged, same shape.
        """
        vision_features = self.vision_norm(vit_features)
        self_attention_weights, cross_attention_weights = self.attention_weights(keep)
        hidden_states = vit_features
        for layer in self.layers:
            hidden_states = layer(
                hidden_states, vision_features, self_attention_weights, cross_attention_weights
            )
        return self.final_norm(hidden_states)


class VideoLaVITCodebook(nn.Module):
    """
    The visual codebook `[codebook_size, code_dim]`; its rows are l2-normalised (from initialisation on).
    """

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.codebook_size, config.code_dim))

    def forward(self, ids: torch.LongTensor) -> torch.Tensor:
        """Code ids `[...]` -> code vectors `[..., code_dim]`."""
        return F.embedding(ids, self.weight)

    def nearest(self, codes: torch.Tensor) -> torch.LongTensor:
        """
        Unit vectors `[num_codes, code_dim]` -> ids `[num_codes]` of the nearest codebook rows (euclidean).
        """
        return nearest_code_ids(codes, self.weight)


def keep_at_least_one(keep: torch.BoolTensor, keep_scores: torch.Tensor) -> torch.BoolTensor:
    """
    Keep decision `[batch, num_patches]` with at least one kept patch per image: an image whose decision
    drops every patch keeps its highest-scoring one (`keep_scores [batch, num_patches]`).
    """
    dropped_all = ~keep.any(dim=-1, keepdim=True)
    best = F.one_hot(keep_scores.argmax(dim=-1), num_classes=keep.shape[-1]).bool()
    return keep | (best & dropped_all)


class VideoLaVITVisualTokenizer(PreTrainedModel):
    """
    LaVIT's dynamic visual tokenizer as used by Video-LaVIT for keyframes and images.

    `pixel_values [batch, 3, 224, 224]` (CLIP-normalised, see `VideoLaVITImageProcessor`) become a variable
    number of tokens per image: discrete codes (`tokenize`) for generation and pre-training, continuous
    LLM-space features (`encode_features`) for understanding. Kept tokens are chosen by the arg-max of the
    token predictor by default, or by Gumbel sampling as in the reference implementation (`sample=True`,
    optional `generator`).

    Example:

    ```python
    >>> import torch
    >>> from transformers_vlavit import VideoLaVITVisualTokenizer, VideoLaVITVisualTokenizerConfig
    >>> config = VideoLaVITVisualTokenizerConfig(
    ...     hidden_size=64, num_hidden_layers=2, num_attention_heads=4, merger_num_hidden_layers=2,
    ...     merger_num_attention_heads=4, codebook_size=512, llm_hidden_size=128,
    ... )
    >>> model = VideoLaVITVisualTokenizer(config).eval()
    >>> ids = model.tokenize(torch.randn(2, 3, 224, 224))  # list of 2 LongTensors, one per image
    >>> codes = model.get_code_embeddings(ids[0])  # [len(ids[0]), 32]
    ```
    """

    config: VideoLaVITVisualTokenizerConfig
    config_class = VideoLaVITVisualTokenizerConfig
    base_model_prefix = "visual_tokenizer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["VideoLaVITVisionLayer", "VideoLaVITTokenMergerLayer"]

    def __init__(self, config: VideoLaVITVisualTokenizerConfig):
        super().__init__(config)
        self.vision_model = VideoLaVITVisionTransformer(config)
        self.token_predictor = VideoLaVITTokenPredictor(config)
        self.token_merger = VideoLaVITTokenMerger(config)
        self.code_projection = TanhProjection(config.hidden_size, config.code_dim)
        self.codebook = VideoLaVITCodebook(config)
        self.vit_proj = nn.Linear(config.hidden_size, config.llm_hidden_size)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """
        Truncated-normal linear/conv weights and embeddings, zero biases, unit LayerNorms, unit-length codes.
        """
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, VideoLaVITVisionEmbeddings):
            init.trunc_normal_(module.class_embedding, std=std)
            init.trunc_normal_(module.position_embedding, std=std)
        elif isinstance(module, VideoLaVITVisionAttention) and module.q_bias is not None:
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif isinstance(module, VideoLaVITCodebook):
            init_unit_codebook_(module.weight)

    def select_tokens(
        self, keep_logprobs: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """
        Keep decision `[batch, num_patches]` (1.0 keep, 0.0 drop) from the token predictor's
        log-probabilities `[batch, num_patches, 2]`.

        Arg-max by default. With `sample=True`, Gumbel-max sampling as the reference does (hard one-hot
        forward, softmax gradient backward); the noise is drawn on `generator`'s device (CPU by default) for
        reproducibility.

        Every image keeps at least one patch: when the decision drops all of them (flat or simple images, and
        untrained predictors, can do this), the patch with the highest keep score (log-probability, or the
        Gumbel-perturbed probability when sampling) is kept, so that every image has a visual token for the
        language model and the keyframe decoder.
        """
        if not sample:
            keep_scores = keep_logprobs[..., KEEP_INDEX]
            keep = keep_logprobs.argmax(dim=-1) == KEEP_INDEX
            return keep_at_least_one(keep, keep_scores).to(keep_logprobs.dtype)
        noise_device = generator.device if generator is not None else torch.device("cpu")
        exponential_noise = torch.empty(keep_logprobs.shape, device=noise_device).exponential_(
            generator=generator
        )
        gumbels = -exponential_noise.log().to(device=keep_logprobs.device, dtype=keep_logprobs.dtype)
        soft = (keep_logprobs + gumbels).softmax(dim=-1)
        keep_soft = soft[..., KEEP_INDEX]
        hard = keep_at_least_one(soft.argmax(dim=-1) == KEEP_INDEX, keep_soft.detach()).to(soft.dtype)
        return hard - keep_soft.detach() + keep_soft

    def _merge(
        self, pixel_values: torch.Tensor, sample: bool, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`pixel_values` -> `(vit_features, keep_logprobs, keep, merged)`, shapes as in the output class."""
        vit_features = self.vision_model(pixel_values)
        keep_logprobs = self.token_predictor(vit_features)
        keep = self.select_tokens(keep_logprobs, sample=sample, generator=generator)
        merged = self.token_merger(vit_features, keep)
        return vit_features, keep_logprobs, keep, merged

    def quantize(self, features: torch.Tensor) -> torch.LongTensor:
        """Merged tokens `[num_tokens, hidden_size]` -> 0-based code ids `[num_tokens]`."""
        codes = F.normalize(self.code_projection(features), dim=-1)
        return self.codebook.nearest(codes)

    def get_code_embeddings(self, ids: torch.LongTensor) -> torch.Tensor:
        """
        Codebook rows for 0-based code ids `[...]` -> `[..., code_dim]`: the keyframe token decoder's input.

        The rows are returned as stored: l2-normalised in the released checkpoint and at initialisation.
        """
        return self.codebook(ids)

    @torch.no_grad()
    def tokenize(
        self, pixel_values: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> list[torch.LongTensor]:
        """
        Discrete tokens of each image: `pixel_values [batch, 3, 224, 224]` -> `batch` LongTensors `[n_i]` of
        0-based code ids (add the config's visual-code offset to get language-model vocabulary ids).

        Runs without autograd (ids carry no gradient; the ViT-g graph would hold every activation). Train
        through `forward` or `encode_features`.
        """
        _, _, keep, merged = self._merge(pixel_values, sample, generator)
        kept = keep > 0.5
        ids = self.quantize(merged[kept])
        return list(ids.split(kept.sum(dim=-1).tolist()))

    def encode_features(
        self, pixel_values: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """
        Continuous understanding features of each image: `pixel_values [batch, 3, 224, 224]` -> `batch`
        tensors `[n_i, llm_hidden_size]` (`vit_proj` of the merged kept tokens, in patch order).
        """
        _, _, keep, merged = self._merge(pixel_values, sample, generator)
        kept = keep > 0.5
        features = self.vit_proj(merged[kept])
        return list(features.split(kept.sum(dim=-1).tolist()))

    def forward(
        self,
        pixel_values: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        return_dict: bool | None = None,
    ) -> VideoLaVITVisualTokenizerOutput | tuple:
        """
        Run the whole tokenizer and return every intermediate.

        Args:
            pixel_values (`torch.FloatTensor` of shape `[batch, 3, image_size, image_size]`):
                CLIP-normalised images.
            sample (`bool`, defaults to `False`):
                Gumbel-sample the keep decision instead of taking the arg-max.
            generator (`torch.Generator`, *optional*):
                Random generator of the Gumbel noise.
            return_dict (`bool`, *optional*):
                Return a [`VideoLaVITVisualTokenizerOutput`] (default from the config) instead of a tuple.

        Returns:
            [`VideoLaVITVisualTokenizerOutput`] with `vit_features`, `keep_logprobs`, `keep`, `merged`,
            `token_ids [total_kept]`, `token_counts [batch]` and `llm_features`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        vit_features, keep_logprobs, keep, merged = self._merge(pixel_values, sample, generator)
        kept = keep > 0.5
        output = VideoLaVITVisualTokenizerOutput(
            vit_features=vit_features,
            keep_logprobs=keep_logprobs,
            keep=keep,
            merged=merged,
            token_ids=self.quantize(merged[kept]),
            token_counts=kept.sum(dim=-1),
            llm_features=self.vit_proj(merged),
        )
        return output if return_dict else output.to_tuple()


__all__ = ["VideoLaVITVisualTokenizer", "VideoLaVITVisualTokenizerOutput", "VisualTokenizerInputError"]
