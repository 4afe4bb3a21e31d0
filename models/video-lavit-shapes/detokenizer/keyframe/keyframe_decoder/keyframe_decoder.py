"""Keyframe token decoder: turns Video-LaVIT visual codes into SDXL U-Net conditioning.

A fixed set of learned queries reads the (variable-length) sequence of a keyframe's code embeddings
through cross-attention; the decoded query features are projected to the two text-encoder widths
SDXL expects (``prompt_embeds``) and pooled by attention into ``pooled_prompt_embeds``.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin, BasicTransformerBlock
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# additive bias on masked (padding) code positions, the value the reference decoder was trained with
_PADDING_BIAS = -10000.0


class TokenCountError(ValueError):
    """Raised when ``token_counts`` does not describe the given code embeddings."""


class KeyframeAttentionPoolProcessor:
    """Default processor of :class:`KeyframeAttentionPool`: mean token and positions, the projections, then
    diffusers' attention dispatcher (``set_attention_backend`` chooses its kernel; torch SDPA by default)."""

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn: KeyframeAttentionPool, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states [batch, num_positions, hidden_size]`` -> ``[batch, output_dim]``."""
        batch_size, num_tokens, hidden_size = hidden_states.shape
        tokens = torch.cat([hidden_states.mean(dim=1, keepdim=True), hidden_states], dim=1)
        tokens = tokens + attn.positional_embedding[: num_tokens + 1].to(tokens.dtype)

        # the dispatcher's layout: [batch, sequence, heads, head_dim]
        head_dim = hidden_size // attn.num_attention_heads
        # only the mean token's output is kept, so it is the only query computed
        query = attn.q_proj(tokens[:, :1]).view(batch_size, 1, attn.num_attention_heads, head_dim)
        key = attn.k_proj(tokens).view(batch_size, -1, attn.num_attention_heads, head_dim)
        value = attn.v_proj(tokens).view(batch_size, -1, attn.num_attention_heads, head_dim)
        pooled = dispatch_attention_fn(
            query, key, value, backend=self._attention_backend, parallel_config=self._parallel_config
        )
        return attn.c_proj(pooled.reshape(batch_size, hidden_size))


class KeyframeAttentionPool(nn.Module, AttentionModuleMixin):
    """Attention pooling of a token sequence into one vector (CLIP-style).

    The mean token is prepended, learned positions are added to every token, and the mean token's
    multi-head attention over all of them, followed by an output projection, is the pooled vector. The
    attention runs in a diffusers attention processor (:class:`KeyframeAttentionPoolProcessor` by
    default), so ``set_attn_processor`` and ``set_attention_backend`` of the model reach it.

    Args:
        num_positions: number of tokens pooled (the mean token takes one more position).
        hidden_size: width of the pooled tokens.
        num_attention_heads: attention heads.
        output_dim: width of the pooled vector.
        processor: the attention processor (default: :class:`KeyframeAttentionPoolProcessor`).
    """

    _default_processor_cls = KeyframeAttentionPoolProcessor
    _available_processors = [KeyframeAttentionPoolProcessor]
    _supports_qkv_fusion = False

    def __init__(
        self, num_positions: int, hidden_size: int, num_attention_heads: int, output_dim: int, processor=None
    ):
        super().__init__()
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {hidden_size} must be divisible by num_attention_heads {num_attention_heads}"
            )
        self.num_attention_heads = num_attention_heads
        self.positional_embedding = nn.Parameter(
            torch.randn(num_positions + 1, hidden_size) / hidden_size**0.5
        )
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.c_proj = nn.Linear(hidden_size, output_dim)
        self.set_processor(processor if processor is not None else self._default_processor_cls())

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Pool ``hidden_states [batch, num_positions, hidden_size]`` into ``[batch, output_dim]``."""
        return self.processor(self, hidden_states)


class KeyframeTokenDecoder(ModelMixin, ConfigMixin, AttentionMixin):
    """Decode a keyframe's visual code embeddings into SDXL ``prompt_embeds`` and ``pooled_prompt_embeds``.

    Learned queries (``num_queries``, 256) go through ``num_layers`` transformer blocks (self-attention,
    cross-attention to the padded and masked code embeddings plus their learned positions, MLP), a final
    LayerNorm and a Linear-Tanh-Linear head; two linear projections of the head output are concatenated
    into ``prompt_embeds`` and an attention pool gives ``pooled_prompt_embeds``.

    Args:
        code_dim: width of one code embedding (the visual tokenizer's l2-normalised codebook rows).
        hidden_size: transformer width.
        num_layers: transformer blocks.
        num_attention_heads: heads of every attention, the pooling one included.
        mlp_ratio: MLP hidden width is ``int(hidden_size * mlp_ratio)``.
        num_queries: learned queries = tokens of ``prompt_embeds``.
        max_code_tokens: most code embeddings one keyframe may have (learned code positions).
        decoder_out_dim: width of the decoding head's output.
        prompt_embed_dims: widths of the two projections concatenated into ``prompt_embeds``
            (SDXL: its two text encoders, 768 and 1280).
        pooled_projection_dim: width of ``pooled_prompt_embeds`` (SDXL: 1280).
        layer_norm_eps: epsilon of every LayerNorm.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        code_dim: int = 32,
        hidden_size: int = 1408,
        num_layers: int = 12,
        num_attention_heads: int = 16,
        mlp_ratio: float = 4.3637,
        num_queries: int = 256,
        max_code_tokens: int = 256,
        decoder_out_dim: int = 1408,
        prompt_embed_dims: tuple[int, int] = (768, 1280),
        pooled_projection_dim: int = 1280,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {hidden_size} must be divisible by num_attention_heads {num_attention_heads}"
            )
        self.in_proj = nn.Linear(code_dim, hidden_size)
        self.code_position_embedding = nn.Parameter(torch.zeros(1, max_code_tokens, hidden_size))
        self.query_embedding = nn.Parameter(torch.zeros(1, num_queries, hidden_size))
        # Random, not zero: identical queries get identical updates, so zero-initialised ones would stay one
        # token repeated `num_queries` times for the whole training (the released weights replace both).
        nn.init.trunc_normal_(self.code_position_embedding, std=0.02)
        nn.init.trunc_normal_(self.query_embedding, std=0.02)
        self.blocks = nn.ModuleList(
            [
                BasicTransformerBlock(
                    hidden_size,
                    num_attention_heads,
                    hidden_size // num_attention_heads,
                    cross_attention_dim=hidden_size,
                    activation_fn="gelu",
                    attention_bias=True,
                    norm_eps=layer_norm_eps,
                    ff_inner_dim=int(hidden_size * mlp_ratio),
                )
                for _ in range(num_layers)
            ]
        )
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.decode_head = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, decoder_out_dim)
        )
        self.prompt_proj_1 = nn.Linear(decoder_out_dim, prompt_embed_dims[0])
        self.prompt_proj_2 = nn.Linear(decoder_out_dim, prompt_embed_dims[1])
        self.attention_pool = KeyframeAttentionPool(
            num_queries, decoder_out_dim, num_attention_heads, pooled_projection_dim
        )
        self.gradient_checkpointing = False

    def pad_code_embeddings(
        self, code_embeddings: torch.Tensor, token_counts: torch.Tensor | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Split concatenated code embeddings per keyframe and right-pad them.

        Args:
            code_embeddings: ``[N_total, code_dim]``, the codes of all keyframes back to back.
            token_counts: ``[batch]`` codes per keyframe, summing to ``N_total``.

        Returns:
            ``(padded [batch, max_count, code_dim], valid [batch, max_count] bool)``.
        """
        counts = torch.as_tensor(token_counts, dtype=torch.long, device=code_embeddings.device)
        if counts.ndim != 1 or counts.numel() == 0:
            raise TokenCountError(
                f"token_counts must be a non-empty 1-D list of counts, got shape {tuple(counts.shape)}"
            )
        if int(counts.min()) < 1:
            raise TokenCountError(
                "every keyframe needs at least one code; remove keyframes with token count 0"
            )
        if int(counts.sum()) != code_embeddings.shape[0]:
            raise TokenCountError(
                f"token_counts sum to {int(counts.sum())} but {code_embeddings.shape[0]} code embeddings "
                "were given"
            )
        max_count = int(counts.max())
        if max_count > self.config.max_code_tokens:
            raise TokenCountError(
                f"a keyframe has {max_count} codes, more than max_code_tokens={self.config.max_code_tokens}"
            )
        positions = torch.arange(max_count, device=code_embeddings.device)
        valid = positions[None, :] < counts[:, None]
        padded = code_embeddings.new_zeros(counts.numel(), max_count, code_embeddings.shape[-1])
        padded[valid] = code_embeddings
        return padded, valid

    def forward(
        self, code_embeddings: torch.Tensor, token_counts: torch.Tensor | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode code embeddings into SDXL conditioning.

        Args:
            code_embeddings: ``[N_total, code_dim]`` code embeddings of all keyframes, concatenated in order
                (``VideoLaVITVisualTokenizer.get_code_embeddings`` of the visual code ids).
            token_counts: ``[batch]`` number of codes of each keyframe.

        Returns:
            ``prompt_embeds [batch, num_queries, sum(prompt_embed_dims)]`` and
            ``pooled_prompt_embeds [batch, pooled_projection_dim]``.
        """
        code_embeddings = code_embeddings.to(self.dtype)
        padded, valid = self.pad_code_embeddings(code_embeddings, token_counts)
        codes = self.in_proj(padded) + self.code_position_embedding[:, : padded.shape[1]]
        # [batch, 1, codes] additive bias, the layout diffusers' attention processors broadcast over queries
        padding_bias = (~valid).to(codes.dtype)[:, None, :] * _PADDING_BIAS

        hidden_states = self.query_embedding.expand(padded.shape[0], -1, -1)
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, None, codes, padding_bias
                )
            else:
                hidden_states = block(
                    hidden_states, encoder_hidden_states=codes, encoder_attention_mask=padding_bias
                )

        decoded = self.decode_head(self.norm(hidden_states))
        prompt_embeds = torch.cat([self.prompt_proj_1(decoded), self.prompt_proj_2(decoded)], dim=-1)
        pooled_prompt_embeds = self.attention_pool(decoded)
        return prompt_embeds, pooled_prompt_embeds
