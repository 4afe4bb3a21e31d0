"""The stage-1 visual tokenizer objective (`transformers_vlavit.visual_tokenizer_training`), against closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transformers_vlavit import VideoLaVITVisualTokenizer, VideoLaVITVisualTokenizerConfig
from transformers_vlavit.visual_tokenizer_training import (
    FeatureDecoderConfig,
    VideoLaVITFeatureDecoder,
    VisualTokenizerWithFeatureDecoder,
    fit_projection_to_code_embeddings,
    normalize_codebook_,
    restart_dead_visual_codes,
    visual_tokenizer_training_step,
)

CONFIG = dict(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
              merger_num_hidden_layers=1, merger_num_attention_heads=2, codebook_size=64, code_dim=8,
              llm_hidden_size=16)


@pytest.fixture
def pair():
    torch.manual_seed(0)
    tokenizer = VideoLaVITVisualTokenizer(VideoLaVITVisualTokenizerConfig(**CONFIG))
    decoder = VideoLaVITFeatureDecoder(FeatureDecoderConfig.for_tokenizer(tokenizer, hidden_size=32, num_layers=1))
    return tokenizer, decoder


def test_losses_match_a_reference_computation(pair):
    tokenizer, decoder = pair
    pixels = torch.randn(3, 3, 56, 56)
    out = visual_tokenizer_training_step(tokenizer, decoder, pixels, sample=False, target_keep_ratio=0.3,
                                         commitment_cost=0.25, keep_ratio_weight=2.0)
    # the same quantities written out from the tokenizer's own inference path
    features = tokenizer.vision_model(pixels)
    keep = (tokenizer.token_predictor(features).argmax(-1) == 0).float()
    merged = tokenizer.token_merger(features, keep)
    latents = F.normalize(tokenizer.code_projection(merged), dim=-1)
    ids = tokenizer.tokenize(pixels)
    codes = tokenizer.codebook.weight[torch.cat(ids)]
    kept = keep.bool()
    distance = (latents[kept] - codes).pow(2).sum(-1).mean()
    decoded = decoder(latents + (tokenizer.codebook.weight[
        tokenizer.codebook.nearest(latents.flatten(0, 1)).view(3, -1)] - latents), keep)
    reconstruction = (1 - F.cosine_similarity(decoded, features, dim=-1)).mean()
    ratio = ((keep.mean(-1) - 0.3) ** 2).mean()
    torch.testing.assert_close(out.code_ids, torch.cat(ids))
    torch.testing.assert_close(out.commitment_loss, 0.25 * distance)
    torch.testing.assert_close(out.codebook_loss, distance)
    torch.testing.assert_close(out.reconstruction_loss, reconstruction)
    torch.testing.assert_close(out.keep_ratio_loss, ratio)
    torch.testing.assert_close(out.loss, reconstruction + 1.25 * distance + 2.0 * ratio)
    assert int(out.code_counts.sum()) == int(kept.sum())


def test_gradients_reach_predictor_merger_and_codebook_not_the_vit(pair):
    tokenizer, decoder = pair
    module = VisualTokenizerWithFeatureDecoder(tokenizer, decoder)
    out = module(torch.randn(2, 3, 56, 56), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    # through the straight-through Gumbel keep decision and the soft key weights of the decoder
    assert tokenizer.token_predictor.classifier.weight.grad.abs().sum() > 0
    assert tokenizer.token_merger.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert tokenizer.codebook.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tokenizer.vision_model.parameters())
    trained = {id(p) for p in module.trainable_parameters()}
    assert not trained & {id(p) for p in tokenizer.vision_model.parameters()}
    assert not trained & {id(p) for p in tokenizer.vit_proj.parameters()}


def test_keep_ratio_loss_moves_the_keep_ratio(pair):
    tokenizer, decoder = pair
    module = VisualTokenizerWithFeatureDecoder(tokenizer, decoder, target_keep_ratio=0.1, keep_ratio_weight=20.0)
    optimizer = torch.optim.Adam(module.trainable_parameters(), lr=3e-3)
    pixels = torch.randn(4, 3, 56, 56)
    ratios = []
    for step in range(40):
        out = module(pixels, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        ratios.append(float(out.keep_ratio))
    assert ratios[0] > 0.3 and sum(ratios[-5:]) / 5 < 0.2


def test_codebook_upkeep(pair):
    tokenizer, _ = pair
    with torch.no_grad():
        tokenizer.codebook.weight.mul_(3.0)
    normalize_codebook_(tokenizer)
    torch.testing.assert_close(tokenizer.codebook.weight.norm(dim=-1), torch.ones(64))
    before = tokenizer.codebook.weight.clone()
    counts = torch.ones(64, dtype=torch.long)
    counts[[3, 10]] = 0
    latents = F.normalize(torch.randn(5, 8), dim=-1)
    restarted = restart_dead_visual_codes(tokenizer, latents, counts, generator=torch.Generator().manual_seed(0))
    assert restarted.tolist() == [3, 10]
    after = tokenizer.codebook.weight
    unchanged = torch.ones(64, dtype=torch.bool)
    unchanged[[3, 10]] = False
    torch.testing.assert_close(after[unchanged], before[unchanged])
    for code in (3, 10):  # each restarted code is one of the latents
        assert torch.isclose(after[code] @ latents.T, torch.tensor(1.0), atol=1e-5).any()


def test_feature_decoder_round_trip(pair, tmp_path):
    _, decoder = pair
    decoder.save_pretrained(tmp_path)
    loaded = VideoLaVITFeatureDecoder.from_pretrained(tmp_path)
    codes, keep = torch.randn(2, 16, 8), (torch.rand(2, 16) > 0.5).float()
    torch.testing.assert_close(loaded(codes, keep), decoder(codes, keep))
    # dropped positions do not reach the decoder: changing their codes changes nothing
    changed = torch.where(keep.bool()[..., None], codes, torch.randn_like(codes))
    torch.testing.assert_close(decoder(changed, keep), decoder(codes, keep), atol=1e-5, rtol=1e-4)


def test_standardized_target_and_decision_entropy_match_closed_forms(pair):
    tokenizer, decoder = pair
    pixels = torch.randn(3, 3, 56, 56)
    base = visual_tokenizer_training_step(tokenizer, decoder, pixels, sample=False)
    out = visual_tokenizer_training_step(tokenizer, decoder, pixels, sample=False,
                                         reconstruction_target="standardized", decision_entropy_weight=0.5)
    features = tokenizer.vision_model(pixels)  # [3, 16, 32]
    keep = (tokenizer.token_predictor(features).argmax(-1) == 0).float()
    latents = F.normalize(tokenizer.code_projection(tokenizer.token_merger(features, keep)), dim=-1)
    codes = tokenizer.codebook.weight[tokenizer.codebook.nearest(latents.flatten(0, 1)).view(3, -1)]
    decoded = decoder(codes, keep)
    centred = features - features.mean(0)
    target = centred / centred.reshape(-1, 32).std(0)
    torch.testing.assert_close(out.reconstruction_loss, ((decoded - target) ** 2).mean())
    p = tokenizer.token_predictor(features)[..., 0].exp()
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean()
    others = out.commitment_loss + out.codebook_loss + 2.0 * out.keep_ratio_loss
    torch.testing.assert_close(out.loss, out.reconstruction_loss + others + 0.5 * entropy)
    torch.testing.assert_close(base.loss - base.reconstruction_loss, others)
    assert out.argmax_keep_ratio == keep.mean()
    with pytest.raises(ValueError, match="reconstruction_target"):
        visual_tokenizer_training_step(tokenizer, decoder, pixels, reconstruction_target="l1")


def test_decision_entropy_term_makes_the_keep_decisions_confident():
    # the keep-ratio loss alone is met by p(keep) = target everywhere, where the arg-max keeps nothing; the
    # entropy term has no gradient at p = 1/2 (the untrained predictor), so the keep-ratio loss moves it first
    pixels = torch.randn(4, 3, 56, 56)
    entropies = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        tokenizer = VideoLaVITVisualTokenizer(VideoLaVITVisualTokenizerConfig(**CONFIG))
        decoder = VideoLaVITFeatureDecoder(FeatureDecoderConfig.for_tokenizer(tokenizer, hidden_size=32, num_layers=1))
        module = VisualTokenizerWithFeatureDecoder(tokenizer, decoder, target_keep_ratio=0.25, keep_ratio_weight=5.0,
                                                   decision_entropy_weight=weight)
        optimizer = torch.optim.Adam(module.trainable_parameters(), lr=3e-3)
        for step in range(40):
            out = module(pixels, generator=torch.Generator().manual_seed(step))
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
        with torch.no_grad():
            p = tokenizer.token_predictor(tokenizer.vision_model(pixels))[..., 0].exp()
        entropies[weight] = float(-(p * p.log() + (1 - p) * (1 - p).log()).mean())
    assert entropies[1.0] < 0.8 * entropies[0.0], entropies


def test_projection_fit_is_the_ridge_solution_and_lands_on_the_codes(pair):
    tokenizer, _ = pair
    pixels = torch.randn(12, 3, 56, 56)
    embeddings = torch.randn(64, 16)
    ridge = 1e-3
    fit = fit_projection_to_code_embeddings(tokenizer, embeddings, pixels, ridge=ridge, batch_size=5)
    # independent: the ridge closed form (bias unpenalised, penalty relative to the mean squared feature), in
    # float64 over the kept merged tokens and their codes, through an SVD instead of the normal equations
    features = tokenizer.vision_model(pixels)
    keep = tokenizer.select_tokens(tokenizer.token_predictor(features))  # arg-max, at least one per image
    merged = tokenizer.token_merger(features, keep)[keep > 0.5]
    ids = torch.cat(tokenizer.tokenize(pixels))
    design = torch.cat([merged, torch.ones(len(merged), 1)], 1).double()
    targets = embeddings[ids].double()
    lam = ridge * design[:, :-1].pow(2).sum(0).mean()
    # the bias is unpenalised: centre it out, solve the penalised problem on the centred features, put it back
    mean_x, mean_y = design[:, :-1].mean(0), targets.mean(0)
    u, s, vh = torch.linalg.svd(design[:, :-1] - mean_x, full_matrices=False)
    weight = vh.T @ torch.diag(s / (s**2 + lam)) @ u.T @ (targets - mean_y)
    solution = torch.cat([weight, (mean_y - mean_x @ weight)[None]]).float()
    design = design.float()
    with torch.no_grad():
        torch.testing.assert_close(tokenizer.vit_proj(merged), design @ solution, atol=2e-4, rtol=1e-4)
        projected = torch.cat(tokenizer.encode_features(pixels))
    assert fit["tokens"] == len(ids) == len(projected)
    residual = ((design @ solution - embeddings[ids]) ** 2).sum() / ((embeddings[ids] - embeddings[ids].mean(0)) ** 2).sum()
    assert fit["relative_error"] == pytest.approx(float(residual.detach()), rel=1e-3)
    nearest = torch.unique(ids)[(F.normalize(projected, dim=-1) @ F.normalize(embeddings[torch.unique(ids)], dim=-1).T).argmax(-1)]
    assert fit["code_accuracy"] == pytest.approx(float((nearest == ids).float().mean()))
    assert fit["relative_error"] < 1.0 and fit["code_accuracy"] > 1.0 / len(torch.unique(ids))
    with pytest.raises(ValueError, match="ridge"):
        fit_projection_to_code_embeddings(tokenizer, embeddings, pixels, ridge=0.0)
    # a larger ridge shrinks the weight
    before = tokenizer.vit_proj.weight.norm()
    fit_projection_to_code_embeddings(tokenizer, embeddings, pixels, ridge=10.0)
    assert tokenizer.vit_proj.weight.norm() < 0.5 * before
