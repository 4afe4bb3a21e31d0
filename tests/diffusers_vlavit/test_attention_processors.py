"""The custom attention modules (motion encoder self-attention, keyframe attention pool) run in diffusers
attention processors: an independent softmax re-implementation, `set_attn_processor`, `set_attention_backend`."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_dispatch import _AttentionBackendRegistry

from diffusers_vlavit.models import MotionConditionEncoder
from diffusers_vlavit.models.keyframe_decoder import (
    KeyframeAttentionPool,
    KeyframeAttentionPoolProcessor,
    KeyframeTokenDecoder,
)
from diffusers_vlavit.models.motion_condition_encoder import MotionSelfAttention, MotionSelfAttentionProcessor


def softmax_attention(query, key, value):
    """``[batch, heads, sequence, head_dim]`` attention written out (no SDPA)."""
    scores = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5
    return scores.softmax(dim=-1) @ value


def heads(tensor, count):
    batch, length, dim = tensor.shape
    return tensor.view(batch, length, count, dim // count).transpose(1, 2)


def test_motion_self_attention_matches_written_out_softmax_attention():
    torch.manual_seed(0)
    attention = MotionSelfAttention(12, 3)
    tokens = torch.randn(2, 5, 12)
    q, k, v = (heads(layer(tokens), 3) for layer in (attention.to_q, attention.to_k, attention.to_v))
    expected = attention.to_out(softmax_attention(q, k, v).transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(attention(tokens), expected, atol=1e-6, rtol=1e-5)


def test_keyframe_attention_pool_matches_written_out_softmax_attention():
    torch.manual_seed(0)
    pool = KeyframeAttentionPool(num_positions=4, hidden_size=8, num_attention_heads=2, output_dim=6)
    tokens = torch.randn(3, 4, 8)
    sequence = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + pool.positional_embedding
    q = heads(pool.q_proj(sequence[:, :1]), 2)
    k, v = heads(pool.k_proj(sequence), 2), heads(pool.v_proj(sequence), 2)
    expected = pool.c_proj(softmax_attention(q, k, v).transpose(1, 2).reshape(3, 8))
    torch.testing.assert_close(pool(tokens), expected, atol=1e-6, rtol=1e-5)


class Recording:
    """Wraps a processor and counts its calls (what a user's own processor would be)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, attn, hidden_states):
        self.calls += 1
        return self.inner(attn, hidden_states)


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return MotionConditionEncoder(
        out_channels=16, num_attention_heads=2, attention_head_dim=8, num_layers=2, grid_size=(4, 6)
    ).eval()


def test_motion_encoder_processors_are_listed_and_replaceable(encoder):
    processors = encoder.attn_processors
    # spatial and temporal attention of each of the 2 blocks
    assert len(processors) == 4
    assert all(isinstance(p, MotionSelfAttentionProcessor) for p in processors.values())
    motion = torch.randn(1, 2, 3, 8, 12)
    expected = encoder(motion)
    recording = Recording(MotionSelfAttentionProcessor())
    encoder.set_attn_processor(recording)
    torch.testing.assert_close(encoder(motion), expected)
    assert recording.calls == 4


def test_keyframe_decoder_pool_is_reached_by_set_attn_processor():
    torch.manual_seed(0)
    decoder = KeyframeTokenDecoder(
        code_dim=8, hidden_size=16, num_layers=1, num_attention_heads=2, decoder_out_dim=12,
        prompt_embed_dims=(6, 10), pooled_projection_dim=10, num_queries=4, max_code_tokens=6,
    ).eval()  # fmt: skip
    names = [name for name in decoder.attn_processors if name.startswith("attention_pool")]
    assert names == ["attention_pool.processor"]
    codes, counts = torch.randn(5, 8), torch.tensor([2, 3])
    expected = decoder(codes, counts)
    recording = Recording(KeyframeAttentionPoolProcessor())
    processors = dict(decoder.attn_processors)
    processors["attention_pool.processor"] = recording
    decoder.set_attn_processor(processors)
    for got, want in zip(decoder(codes, counts), expected, strict=True):
        torch.testing.assert_close(got, want)
    assert recording.calls == 1


def test_set_attention_backend_reaches_the_custom_modules(encoder):
    motion = torch.randn(1, 2, 3, 8, 12)
    expected = encoder(motion)
    # diffusers' set_attention_backend also sets its process-wide active backend, which
    # reset_attention_backend leaves alone: restore it, or later tests would run another kernel
    previous = _AttentionBackendRegistry._active_backend
    try:
        encoder.set_attention_backend("_native_math")
        assert {type(p).__name__ for p in encoder.attn_processors.values()} == {"MotionSelfAttentionProcessor"}
        assert all(p._attention_backend.value == "_native_math" for p in encoder.attn_processors.values())
        torch.testing.assert_close(encoder(motion), expected, atol=1e-5, rtol=1e-5)
        encoder.reset_attention_backend()
        assert all(p._attention_backend is None for p in encoder.attn_processors.values())
    finally:
        _AttentionBackendRegistry.set_active_backend(previous)
