"""Motion tokenizer: config, shapes, losses, training, EMA codebook, dead-code restarts, saving and dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError

from transformers_vlavit import (
    MotionTokenizerInputError,
    VideoLaVITMotionTokenizer,
    VideoLaVITMotionTokenizerConfig,
)

# 8 frames of 8 x 16 cells with the released strides -> a 1 x 2 x 4 latent grid (8 tokens); it keeps the tests
# fast on shared CPUs. The released 24 x 20 x 36 geometry is exercised by one test and by the golden tests.
SMALL_GEOMETRY = {"num_frames": 8, "grid_size": (8, 16)}
SMALL_MOTION_SHAPE = (2, 8, 8, 16)
SMALL_NUM_TOKENS = 8
CODEBOOK_SIZE = 64


def tiny_config(**overrides) -> VideoLaVITMotionTokenizerConfig:
    """Width 32, one block per stage, 64 codes, the small geometry unless overridden."""
    settings = {
        "hidden_size": 32,
        "num_attention_heads": 2,
        "stage_depths": (1, 1, 1, 1),
        "codebook_size": CODEBOOK_SIZE,
        **SMALL_GEOMETRY,
    }
    return VideoLaVITMotionTokenizerConfig(**{**settings, **overrides})


def smooth_motion(
    batch_size: int, seed: int = 0, shape: tuple[int, ...] = SMALL_MOTION_SHAPE
) -> torch.Tensor:
    """Spatially and temporally smooth random motion `[batch, *shape]`, like real pooled motion vectors."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch_size, shape[0], 4, 4, 4, generator=generator)
    return F.interpolate(coarse, size=shape[1:], mode="trilinear", align_corners=False)


@pytest.fixture(scope="module")
def tiny_model() -> VideoLaVITMotionTokenizer:
    torch.manual_seed(0)
    return VideoLaVITMotionTokenizer(tiny_config()).eval()


def test_config_defaults_are_the_released_tokenizer():
    config = VideoLaVITMotionTokenizerConfig()
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (512, 8, 2048)
    assert (config.codebook_size, config.code_dim, config.num_frames, config.grid_size) == (
        1024,
        32,
        24,
        (20, 36),
    )
    assert config.latent_grid == (3, 5, 9)
    assert config.num_tokens == 135
    assert config.motion_scale_factor == 10.0


def test_num_tokens_follows_the_strides():
    # the last stage keeps its resolution (stride 1, symmetric padding) and the first decoder stage too
    config = tiny_config(
        num_frames=24,
        grid_size=(20, 36),
        downsample_strides=((1, 2, 2), (2, 1, 1), (2, 1, 1), (1, 1, 1)),
        downsample_paddings=((0, 1, 0, 1, 1, 1), (1, 1, 1, 1, 0, 1), (1, 1, 1, 1, 0, 1), (1, 1, 1, 1, 1, 1)),
        upsample_scales=((1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 2, 2)),
    )
    assert config.latent_grid == (6, 10, 18)
    assert config.num_tokens == 1080


@pytest.mark.parametrize(
    "overrides",
    [
        {"hidden_size": 33},
        {"upsample_scales": ((2, 2, 2), (2, 1, 1), (2, 1, 1), (1, 1, 2))},
        {"stage_depths": (1, 1, 1)},
    ],
)
def test_config_rejects_inconsistent_architectures(overrides):
    with pytest.raises(StrictDataclassClassValidationError):
        tiny_config(**overrides)


def test_config_round_trip(tmp_path):
    config = tiny_config(codebook_ema=True, ema_decay=0.9)
    config.save_pretrained(tmp_path)
    loaded = VideoLaVITMotionTokenizerConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.downsample_paddings == config.downsample_paddings
    assert loaded.num_tokens == SMALL_NUM_TOKENS


def test_released_geometry_gives_135_tokens_per_clip():
    torch.manual_seed(0)
    config = tiny_config(num_frames=24, grid_size=(20, 36))
    model = VideoLaVITMotionTokenizer(config).eval()
    with torch.no_grad():
        ids = model.encode(smooth_motion(2, shape=(2, 24, 20, 36)))
        motion = model.decode(ids)
        resized = model.decode_for_detokenizer(ids, 40, 72)
    assert ids.shape == (2, 135)
    assert motion.shape == (2, 2, 24, 20, 36)
    assert resized.shape == (2, 2, 24, 40, 72)


def test_encode_decode_shapes_and_batch_independence(tiny_model):
    motion = smooth_motion(3)
    with torch.no_grad():
        ids = tiny_model.encode(motion)
        decoded = tiny_model.decode(ids)
        single_ids = torch.cat([tiny_model.encode(motion[i : i + 1]) for i in range(3)])
        single_decoded = torch.cat([tiny_model.decode(ids[i : i + 1]) for i in range(3)])
    assert ids.shape == (3, SMALL_NUM_TOKENS) and ids.dtype == torch.long
    assert 0 <= int(ids.min()) and int(ids.max()) < CODEBOOK_SIZE
    assert decoded.shape == (3, *SMALL_MOTION_SHAPE)
    assert torch.equal(ids, single_ids)
    torch.testing.assert_close(decoded, single_decoded, atol=1e-5, rtol=1e-5)


def test_codebook_is_unit_norm_and_code_embeddings_match_it(tiny_model):
    norms = tiny_model.quantizer.codebook.weight.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    ids = torch.tensor([[0, 5], [63, 5]])
    embeddings = tiny_model.get_code_embeddings(ids)
    assert embeddings.shape == (2, 2, 32)
    torch.testing.assert_close(
        embeddings[1, 0], F.normalize(tiny_model.quantizer.codebook.weight[63], dim=-1)
    )


def test_encode_picks_the_nearest_code(tiny_model):
    motion = smooth_motion(1, seed=3)
    with torch.no_grad():
        latents = tiny_model.encode_latents(motion).flatten(1, 3)
        ids = tiny_model.encode(motion)
    distances = torch.cdist(latents[0], tiny_model.quantizer.normalized_codebook())
    assert torch.equal(ids[0], distances.argmin(dim=-1))


def test_decode_for_detokenizer_is_resized_and_scaled_decode(tiny_model):
    ids = torch.randint(0, CODEBOOK_SIZE, (2, SMALL_NUM_TOKENS), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        decoded = tiny_model.decode(ids)
        resized = tiny_model.decode_for_detokenizer(ids, 12, 20)
    assert resized.shape == (2, 2, 8, 12, 20)
    first_frame = F.interpolate(decoded[:, :, 0], size=(12, 20), mode="bicubic", align_corners=False) / 10
    torch.testing.assert_close(resized[:, :, 0], first_frame, atol=1e-6, rtol=1e-5)


def test_inputs_with_wrong_shape_or_range_are_rejected(tiny_model):
    with pytest.raises(MotionTokenizerInputError, match="motion_vectors must have shape"):
        tiny_model.encode(torch.zeros(1, 2, 12, 8, 16))
    with pytest.raises(MotionTokenizerInputError, match=r"ids must have shape \[batch, 8\]"):
        tiny_model.decode(torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(MotionTokenizerInputError, match="0-based motion codes"):
        tiny_model.decode(torch.full((1, SMALL_NUM_TOKENS), CODEBOOK_SIZE))


def test_forward_losses_and_statistics(tiny_model):
    motion = smooth_motion(2)
    with torch.no_grad():
        output = tiny_model(motion)
    codes = tiny_model.get_code_embeddings(output.ids).flatten(0, 1)
    latents = output.encoder_latents.flatten(0, 1)
    expected_codebook_loss = F.mse_loss(latents, codes)
    torch.testing.assert_close(output.codebook_loss, expected_codebook_loss)
    torch.testing.assert_close(output.commitment_loss, 0.25 * expected_codebook_loss)
    torch.testing.assert_close(output.reconstruction_loss, F.mse_loss(output.reconstruction, motion))
    torch.testing.assert_close(
        output.loss, output.reconstruction_loss + output.commitment_loss + output.codebook_loss
    )
    assert int(output.code_counts.sum()) == 2 * SMALL_NUM_TOKENS
    used = int((output.code_counts > 0).sum())
    torch.testing.assert_close(output.codebook_usage, torch.tensor(used / CODEBOOK_SIZE))
    assert 1.0 <= float(output.perplexity) <= used + 1e-4
    assert torch.equal(output.ids, tiny_model.encode(motion))


def test_straight_through_gradients_reach_encoder_and_codebook():
    torch.manual_seed(0)
    model = VideoLaVITMotionTokenizer(tiny_config())
    model(smooth_motion(1)).loss.backward()
    assert model.encoder.input_proj.weight.grad.abs().sum() > 0
    assert model.decoder.input_proj.weight.grad.abs().sum() > 0
    assert model.quantizer.codebook.weight.grad.abs().sum() > 0


def test_training_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = VideoLaVITMotionTokenizer(tiny_config()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    motion = smooth_motion(2)
    losses = []
    for _ in range(12):
        output = model(motion)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(output.loss.item())
    assert sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses
    # a collapsed codebook recovers usage through restarts seeded from the batch's latents
    usage_before = float(output.codebook_usage)
    restarted = model.restart_dead_codes(output.encoder_latents, output.code_counts)
    assert restarted.numel() == int((output.code_counts == 0).sum())
    with torch.no_grad():
        assert float(model(motion).codebook_usage) > usage_before


def test_ema_codebook_moves_towards_assigned_latents_without_gradients():
    torch.manual_seed(0)
    model = VideoLaVITMotionTokenizer(tiny_config(codebook_ema=True, ema_decay=0.5)).train()
    quantizer = model.quantizer
    torch.testing.assert_close(quantizer.ema_embedding_sum, quantizer.normalized_codebook().detach())
    before = quantizer.codebook.weight.detach().clone()
    output = model(smooth_motion(2))
    output.loss.backward()
    assert quantizer.codebook.weight.grad is None
    assert float(output.codebook_loss) == 0.0
    used = output.code_counts > 0
    after = quantizer.codebook.weight.detach()
    # decay 0.5: a used code becomes the renormalised average of its old vector and its latents' sum
    latents, ids = output.encoder_latents.flatten(0, 1), output.ids.flatten()
    code = int(torch.nonzero(used)[0])
    mean = latents[ids == code].mean(dim=0)
    cluster_size = 0.5 * float(output.code_counts[code])
    expected = F.normalize(0.5 * before[code] + cluster_size * mean, dim=-1)
    torch.testing.assert_close(after[code], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after[~used], before[~used], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(after.norm(dim=-1), torch.ones(CODEBOOK_SIZE))
    model.eval()
    with torch.no_grad():
        model(smooth_motion(2))
    assert torch.equal(quantizer.codebook.weight, after)


def test_restart_dead_codes_reseeds_only_unused_codes():
    torch.manual_seed(0)
    model = VideoLaVITMotionTokenizer(tiny_config(codebook_ema=True))
    latents = F.normalize(torch.randn(40, 32), dim=-1)
    counts = torch.zeros(CODEBOOK_SIZE, dtype=torch.long)
    counts[:60] = 5
    before = model.quantizer.codebook.weight.detach().clone()
    restarted = model.restart_dead_codes(
        latents, counts, min_count=1, generator=torch.Generator().manual_seed(0)
    )
    assert restarted.tolist() == [60, 61, 62, 63]
    after = model.quantizer.codebook.weight
    assert torch.equal(after[:60], before[:60])
    for code in restarted.tolist():
        assert torch.isclose((latents @ after[code]).max(), torch.tensor(1.0), atol=1e-5)
    assert torch.equal(model.quantizer.ema_cluster_size[60:], torch.ones(4))
    assert model.restart_dead_codes(latents, torch.ones(CODEBOOK_SIZE, dtype=torch.long)).numel() == 0


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = VideoLaVITMotionTokenizer(tiny_config()).train()
    motion = smooth_motion(1)
    model(motion).loss.backward()
    reference = model.encoder.input_proj.weight.grad.clone()
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.encoder.stages[0].blocks[0].gradient_checkpointing
    model(motion).loss.backward()
    torch.testing.assert_close(model.encoder.input_proj.weight.grad, reference, atol=1e-6, rtol=1e-5)


def test_save_and_load_round_trip(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = VideoLaVITMotionTokenizer.from_pretrained(tmp_path).eval()
    for (name, tensor), (loaded_name, loaded_tensor) in zip(
        tiny_model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert name == loaded_name and torch.equal(tensor, loaded_tensor), name
    motion = smooth_motion(2)
    with torch.no_grad():
        assert torch.equal(loaded.encode(motion), tiny_model.encode(motion))


def test_ema_statistics_start_from_a_loaded_codebook(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    loaded = VideoLaVITMotionTokenizer.from_pretrained(tmp_path, codebook_ema=True)
    assert torch.equal(loaded.quantizer.codebook.weight, tiny_model.quantizer.codebook.weight)
    torch.testing.assert_close(loaded.quantizer.ema_embedding_sum, tiny_model.quantizer.normalized_codebook())
    assert float(loaded.quantizer.ema_cluster_size.sum()) == 0.0


def test_bfloat16_forward(tiny_model):
    model = VideoLaVITMotionTokenizer(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    model = model.to(torch.bfloat16).eval()
    motion = smooth_motion(2)
    with torch.no_grad():
        output = model(motion)
        resized = model.decode_for_detokenizer(output.ids, 12, 20)
        reference_ids = tiny_model.encode(motion)
    assert output.reconstruction.dtype == torch.bfloat16 and resized.dtype == torch.bfloat16
    assert output.ids.shape == (2, SMALL_NUM_TOKENS) and torch.isfinite(output.loss)
    # bf16 rounding may flip a few near-ties, not the bulk of the codes
    assert (output.ids == reference_ids).float().mean() > 0.5


def test_encode_builds_no_autograd_graph(tiny_model):
    # code ids have no gradient; keeping the graph of a released-size encode for one clip costs gigabytes
    saved = []
    assert any(parameter.requires_grad for parameter in tiny_model.parameters())
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor, lambda tensor: tensor):
        ids = tiny_model.encode(smooth_motion(2))
    assert saved == [] and ids.shape == (2, SMALL_NUM_TOKENS)
    assert torch.is_grad_enabled()  # only inside encode
    with torch.no_grad():
        torch.testing.assert_close(ids, tiny_model.quantizer.nearest_codes(tiny_model.encode_latents(smooth_motion(2))).flatten(1))
