"""Tests of the visual tokenizer: behaviour at a tiny size, saving/loading, sampling, dtypes, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError

from transformers_vlavit.configuration_visual_tokenizer import VideoLaVITVisualTokenizerConfig
from transformers_vlavit.modeling_visual_tokenizer import (
    VideoLaVITVisualTokenizer,
    VideoLaVITVisualTokenizerOutput,
    VisualTokenizerInputError,
    policy_weighted_attention,
)

IMAGE_SIZE = 56  # 4 x 4 patches of 14 pixels keeps every test fast


def tiny_config(**overrides) -> VideoLaVITVisualTokenizerConfig:
    settings = dict(
        image_size=IMAGE_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        merger_num_hidden_layers=2,
        merger_num_attention_heads=4,
        codebook_size=64,
        llm_hidden_size=48,
    )
    settings.update(overrides)
    return VideoLaVITVisualTokenizerConfig(**settings)


def tiny_model(seed: int = 0, **overrides) -> VideoLaVITVisualTokenizer:
    torch.manual_seed(seed)
    model = VideoLaVITVisualTokenizer(tiny_config(**overrides)).eval()
    # wider than the 0.02 initialisation, so that tokens differ and keep decisions are not coin tosses
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("weight") and parameter.ndim > 1 and name != "codebook.weight":
                parameter.normal_(0.0, 0.3)
    return model


def images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def force_keep_bias(model: VideoLaVITVisualTokenizer, keep: bool) -> None:
    """Make the token predictor keep (or drop) every token regardless of the image."""
    with torch.no_grad():
        model.token_predictor.classifier.weight.zero_()
        model.token_predictor.classifier.bias.copy_(torch.tensor([10.0, -10.0] if keep else [-10.0, 10.0]))


def test_default_config_is_the_released_size():
    config = VideoLaVITVisualTokenizerConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1408, 40, 16)
    assert config.intermediate_size == 6144 and config.merger_intermediate_size == 6144
    assert config.num_patches == 256
    assert (config.merger_num_hidden_layers, config.codebook_size, config.code_dim) == (12, 16384, 32)
    assert (config.layer_norm_eps, config.merger_layer_norm_eps, config.llm_hidden_size) == (1e-6, 1e-5, 4096)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_attention_heads=5),
        dict(merger_num_attention_heads=3),
        dict(image_size=50),
        dict(hidden_size=30, num_attention_heads=2, merger_num_attention_heads=2),
    ],
)
def test_config_rejects_inconsistent_sizes(overrides):
    with pytest.raises(StrictDataclassClassValidationError, match="multiple of"):
        tiny_config(**overrides)


def test_forward_shapes_and_consistency_between_entry_points():
    model = tiny_model()
    pixel_values = images(3)
    with torch.no_grad():
        output = model(pixel_values)
        ids = model.tokenize(pixel_values)
        features = model.encode_features(pixel_values)
    assert isinstance(output, VideoLaVITVisualTokenizerOutput)
    assert output.vit_features.shape == (3, 16, 32)
    assert output.keep_logprobs.shape == (3, 16, 2)
    assert torch.allclose(output.keep_logprobs.exp().sum(-1), torch.ones(3, 16))
    assert output.merged.shape == (3, 16, 32) and output.llm_features.shape == (3, 16, 48)
    kept = output.keep.bool()
    assert torch.equal(output.token_counts, kept.sum(-1))
    assert torch.equal(output.keep, (output.keep_logprobs.argmax(-1) == 0).float())
    assert output.token_ids.dtype == torch.long and output.token_ids.shape == (int(kept.sum()),)
    assert ((output.token_ids >= 0) & (output.token_ids < 64)).all()
    assert [len(image_ids) for image_ids in ids] == output.token_counts.tolist()
    assert torch.equal(torch.cat(ids), output.token_ids)
    assert torch.allclose(torch.cat(features), output.llm_features[kept], atol=1e-6)
    assert len(set(output.token_counts.tolist())) > 1, (
        "the test images should keep different numbers of tokens"
    )


def test_batch_gives_the_same_tokens_as_single_images():
    model = tiny_model()
    pixel_values = images(3)
    with torch.no_grad():
        batched_ids = model.tokenize(pixel_values)
        batched_features = model.encode_features(pixel_values)
        for index in range(3):
            single = pixel_values[index : index + 1]
            assert torch.equal(model.tokenize(single)[0], batched_ids[index])
            assert torch.allclose(model.encode_features(single)[0], batched_features[index], atol=1e-5)


def test_quantizer_picks_the_nearest_code():
    model = tiny_model()
    codebook = model.codebook.weight.detach()
    assert torch.allclose(codebook.norm(dim=-1), torch.ones(64), atol=1e-5)
    noisy = F.normalize(
        codebook + 0.01 * torch.randn(codebook.shape, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    assert torch.equal(model.codebook.nearest(noisy), torch.arange(64))
    ids = torch.tensor([[3, 5], [63, 0]])
    assert torch.equal(model.get_code_embeddings(ids), codebook[ids])
    with torch.no_grad():
        merged = torch.randn(7, 32)
        codes = F.normalize(model.code_projection(merged), dim=-1)
        expected = (codes @ codebook.t()).argmax(-1)  # unit vectors: nearest = largest cosine
    assert torch.equal(model.quantize(merged), expected)


def test_all_tokens_kept_and_all_dropped():
    model = tiny_model()
    pixel_values = images(2)
    force_keep_bias(model, keep=True)
    with torch.no_grad():
        output = model(pixel_values)
    assert output.token_counts.tolist() == [16, 16]
    # no dropped token to attend to: the cross-attention averages all values instead of failing
    assert torch.isfinite(output.merged).all() and torch.isfinite(output.llm_features).all()
    force_keep_bias(model, keep=False)
    with torch.no_grad():
        ids = model.tokenize(pixel_values)
        features = model.encode_features(pixel_values)
    # every image keeps at least one patch (all scores are equal here: the first patch)
    assert [len(image_ids) for image_ids in ids] == [1, 1]
    assert [tuple(image_features.shape) for image_features in features] == [(1, 48), (1, 48)]


def drop_everything_but_scores_vary(model: VideoLaVITVisualTokenizer) -> None:
    """Shift the token predictor towards dropping so far that no patch is kept, keeping per-patch scores apart."""
    with torch.no_grad():
        model.token_predictor.classifier.bias.add_(torch.tensor([-50.0, 50.0]))


@pytest.mark.parametrize("sample", [False, True])
def test_an_image_whose_patches_are_all_dropped_keeps_its_most_likely_patch(sample):
    model = tiny_model()
    drop_everything_but_scores_vary(model)
    flat = torch.full((1, 3, IMAGE_SIZE, IMAGE_SIZE), -1.5)  # a black image after CLIP normalisation
    pixel_values = torch.cat([flat, images(1)])
    generator = torch.Generator().manual_seed(0) if sample else None
    with torch.no_grad():
        output = model(pixel_values, sample=sample, generator=generator)
    assert (output.keep_logprobs.argmax(dim=-1) == 1).all()  # the predictor itself drops every patch
    keep_scores = output.keep_logprobs[..., 0]
    assert keep_scores[0].unique().numel() > 1  # position embeddings tell a flat image's patches apart
    assert output.token_counts.tolist() == [1, 1]
    if not sample:
        best = keep_scores.argmax(dim=-1)
        expected_keep = torch.zeros_like(output.keep)
        expected_keep[torch.arange(2), best] = 1.0
        assert torch.equal(output.keep, expected_keep)
        expected_ids = [model.quantize(output.merged[index, best[index]][None]) for index in range(2)]
        assert [ids.tolist() for ids in model.tokenize(pixel_values)] == [ids.tolist() for ids in expected_ids]
        features = model.encode_features(pixel_values)
        torch.testing.assert_close(features[0], model.vit_proj(output.merged[0, best[0]])[None])


def test_keep_decision_is_unchanged_when_a_patch_is_kept():
    model = tiny_model()
    keep_logprobs = model.token_predictor(model.vision_model(images(3)))
    decision = (keep_logprobs.argmax(dim=-1) == 0).float()
    assert (decision.sum(dim=-1) > 0).all()
    assert torch.equal(model.select_tokens(keep_logprobs), decision)


def test_forced_patch_of_a_sampled_decision_passes_gradients():
    model = tiny_model().train()
    drop_everything_but_scores_vary(model)
    keep_logprobs = model.token_predictor(model.vision_model(images(2)))
    keep = model.select_tokens(keep_logprobs, sample=True, generator=torch.Generator().manual_seed(0))
    assert keep.detach().sum(dim=-1).tolist() == [1.0, 1.0]
    keep.sum().backward()
    assert model.token_predictor.classifier.weight.grad.abs().sum() > 0


def test_policy_attention_reduces_to_masked_softmax_and_averages_fully_masked_rows():
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5, 4, generator=generator) for _ in range(3))
    mask = torch.rand(2, 1, 5, 5, generator=generator) > 0.4
    mask |= torch.eye(5, dtype=torch.bool)
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    assert torch.allclose(
        policy_weighted_attention(query, key, value, mask.float(), eps=0.0), expected, atol=1e-5
    )
    nothing_allowed = torch.zeros(2, 1, 1, 5)
    averaged = policy_weighted_attention(query, key, value, nothing_allowed, eps=1e-6)
    assert torch.allclose(averaged, value.mean(dim=-2, keepdim=True).expand_as(averaged), atol=1e-6)


def test_merger_attention_weights_follow_the_keep_decision():
    from transformers_vlavit.modeling_visual_tokenizer import VideoLaVITTokenMerger

    keep = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    self_weights, cross_weights = VideoLaVITTokenMerger.attention_weights(keep)
    expected_self = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]]
    )
    assert torch.equal(self_weights[0, 0], expected_self)
    assert torch.equal(cross_weights[0, 0, 0], torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_gumbel_sampling_is_reproducible_with_a_generator():
    model = tiny_model()
    pixel_values = images(2)
    with torch.no_grad():
        first = model.tokenize(pixel_values, sample=True, generator=torch.Generator().manual_seed(7))
        again = model.tokenize(pixel_values, sample=True, generator=torch.Generator().manual_seed(7))
        keeps = {
            tuple(
                model(pixel_values, sample=True, generator=torch.Generator().manual_seed(seed))
                .keep.flatten()
                .tolist()
            )
            for seed in range(4)
        }
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert len(keeps) > 1, "different seeds should sample different keep decisions"


def test_sampled_keep_decision_passes_gradients_to_the_token_predictor():
    model = tiny_model().train()
    output = model(images(2), sample=True, generator=torch.Generator().manual_seed(0))
    assert set(output.keep.unique().tolist()) <= {0.0, 1.0}
    output.merged.square().mean().backward()
    assert model.token_predictor.classifier.weight.grad.abs().sum() > 0
    assert model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_saves_memory_and_gives_the_same_gradients():
    pixel_values = images(2)
    gradients, saved_sizes = [], []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        saved = [0]

        def count_saved(tensor, saved=saved):
            saved[0] += tensor.numel()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(count_saved, lambda tensor: tensor):
            output = model(pixel_values)
        (output.merged.square().mean() + output.llm_features.mean()).backward()
        saved_sizes.append(saved[0])
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert saved_sizes[1] < saved_sizes[0] / 2, "checkpointed layers should not keep their activations"
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 0
    for name, gradient in gradients[0].items():
        assert torch.allclose(gradient, gradients[1][name], atol=1e-5), name


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = VideoLaVITVisualTokenizer.from_pretrained(tmp_path).eval()
    assert loaded.config.to_diff_dict() | {"_name_or_path": ""} == model.config.to_diff_dict() | {
        "_name_or_path": ""
    }
    pixel_values = images(2)
    with torch.no_grad():
        expected, actual = model(pixel_values), loaded(pixel_values)
    assert torch.equal(expected.token_ids, actual.token_ids)
    assert torch.equal(expected.llm_features, actual.llm_features)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_follows_the_parameters(dtype):
    model = tiny_model()
    pixel_values = images(2)
    with torch.no_grad():
        reference = model(pixel_values)
        output = model.to(dtype)(pixel_values)
    assert output.vit_features.dtype == dtype and output.llm_features.dtype == dtype
    assert torch.isfinite(output.llm_features.float()).all()
    relative_error = (
        output.vit_features.float() - reference.vit_features
    ).norm() / reference.vit_features.norm()
    assert relative_error < 0.02
    assert output.token_ids.dtype == torch.long and output.token_counts.dtype == torch.long


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = tiny_model()
    pixel_values = images(2)
    with torch.no_grad():
        expected = model(pixel_values)
        actual = model.to("cuda")(pixel_values.to("cuda"))
    assert torch.allclose(actual.llm_features.cpu(), expected.llm_features, atol=1e-4)
    assert torch.equal(actual.token_counts.cpu(), expected.token_counts)
    sampled = model.tokenize(pixel_values.to("cuda"), sample=True, generator=torch.Generator().manual_seed(3))
    assert all(ids.device.type == "cuda" for ids in sampled)


def test_wrong_image_size_is_reported():
    model = tiny_model()
    with pytest.raises(VisualTokenizerInputError, match="VideoLaVITImageProcessor"):
        model.tokenize(torch.randn(1, 3, 64, 64))
    with pytest.raises(VisualTokenizerInputError, match=r"\[batch, 3, 56, 56\]"):
        model.encode_features(torch.randn(3, IMAGE_SIZE, IMAGE_SIZE))


def test_tokenize_builds_no_autograd_graph():
    model = tiny_model()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor, lambda tensor: tensor):
        ids = model.tokenize(images(2))
    assert saved == [] and len(ids) == 2
    assert torch.is_grad_enabled()
    with torch.no_grad():
        output = model(images(2))
    assert torch.equal(torch.cat(ids), output.token_ids)
