"""KeyframeTokenDecoder: golden parity, the full-size weight mapping, padding/masking, save and load."""

from __future__ import annotations

import json

import pytest
import torch

from diffusers_vlavit.models.keyframe_decoder import KeyframeTokenDecoder, TokenCountError
from transformers_vlavit.conversion.keyframe_decoder import (
    DROPPED_KEYS,
    UnknownKeyframeDecoderWeightError,
    convert_keyframe_decoder_state_dict,
)


def tiny_decoder(**overrides) -> KeyframeTokenDecoder:
    """The golden file's configuration: width 64, 2 blocks, 4 heads, head 96, projections 48/80."""
    config = dict(
        code_dim=32,
        hidden_size=64,
        num_layers=2,
        num_attention_heads=4,
        decoder_out_dim=96,
        prompt_embed_dims=(48, 80),
        pooled_projection_dim=80,
    )
    config.update(overrides)
    torch.manual_seed(0)
    model = KeyframeTokenDecoder(**config).eval()
    # the learned embeddings start small (std 0.02); give them unit values so that the tests see them clearly
    with torch.no_grad():
        model.code_position_embedding.normal_()
        model.query_embedding.normal_()
    return model


def test_keyframe_token_decoder_golden(golden_file):
    tensors, description = golden_file("keyframe_token_decoder")
    config = description["config"]
    model = KeyframeTokenDecoder(
        code_dim=config["code_dim"],
        hidden_size=config["width"],
        num_layers=config["depth"],
        num_attention_heads=config["heads"],
        num_queries=config["num_patches"],
        max_code_tokens=config["num_patches"],
        decoder_out_dim=config["decoder_out_dim"],
        prompt_embed_dims=tuple(config["unet_dims"]),
        pooled_projection_dim=config["unet_dims"][1],
    ).eval()
    original = {name[len("model.") :]: value for name, value in tensors.items() if name.startswith("model.")}
    model.load_state_dict(convert_keyframe_decoder_state_dict(original), strict=True)

    with torch.no_grad():
        prompt_embeds, pooled = model(tensors["input.code_embeddings"], tensors["input.token_counts"])

    assert prompt_embeds.shape == tensors["output.prompt_embeds"].shape == (2, 256, 128)
    assert pooled.shape == tensors["output.pooled_prompt_embeds"].shape == (2, 80)
    torch.testing.assert_close(prompt_embeds, tensors["output.prompt_embeds"], atol=1e-4, rtol=0)
    torch.testing.assert_close(pooled, tensors["output.pooled_prompt_embeds"], atol=1e-4, rtol=0)


def test_full_size_golden_manifest_maps_one_to_one(golden_dir):
    manifest = json.loads((golden_dir / "manifest_full_size.json").read_text())["keyframe_token_decoder"]
    with torch.device("meta"):
        model = KeyframeTokenDecoder()
        converted = convert_keyframe_decoder_state_dict(
            {name: torch.empty(shape) for name, shape in manifest.items()}
        )
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}

    assert DROPPED_KEYS == {}
    assert sorted(converted) == sorted(expected)
    assert {name: tuple(tensor.shape) for name, tensor in converted.items()} == expected
    assert sum(t.numel() for t in converted.values()) == sum(torch.Size(s).numel() for s in manifest.values())


def test_converter_rejects_unknown_and_prefixed_names():
    with pytest.raises(UnknownKeyframeDecoderWeightError, match="prefix"):
        convert_keyframe_decoder_state_dict({"model.in_proj.weight": torch.zeros(2, 2)})
    with pytest.raises(UnknownKeyframeDecoderWeightError):
        convert_keyframe_decoder_state_dict({"blocks.0.extra.weight": torch.zeros(2)})


def test_output_of_a_keyframe_does_not_depend_on_padding_or_batch():
    model = tiny_decoder()
    codes = torch.randn(3 + 7, 32)
    with torch.no_grad():
        batch_prompt, batch_pooled = model(codes, torch.tensor([3, 7]))
        alone_prompt, alone_pooled = model(codes[:3], [3])

    torch.testing.assert_close(batch_prompt[0], alone_prompt[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch_pooled[0], alone_pooled[0], atol=1e-5, rtol=1e-5)
    # the codes do reach the output: another keyframe gives other embeddings
    assert not torch.allclose(batch_prompt[0], batch_prompt[1], atol=1e-3)


def test_a_new_decoder_can_learn_a_different_token_per_query():
    """Zero-initialised learned queries are identical and get identical updates, so the decoder's tokens stay
    one token repeated: the best such output is the mean target over the queries, whose squared error is the
    targets' variance over the queries (the bound below). A decoder that can train its queries apart goes
    well under it."""
    torch.manual_seed(0)
    model = KeyframeTokenDecoder(
        code_dim=8, hidden_size=32, num_layers=1, num_attention_heads=2, num_queries=4, max_code_tokens=4,
        decoder_out_dim=16, prompt_embed_dims=(8, 8), pooled_projection_dim=8,
    )
    codes = torch.randn(3, 8)
    target = torch.randn(1, 4, 16)
    collapsed_bound = ((target - target.mean(dim=1, keepdim=True)) ** 2).mean().item()
    with torch.no_grad():
        start, _ = model(codes, [3])
    assert (start - start.mean(dim=1, keepdim=True)).abs().max() > 1e-4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        prompt_embeds, _ = model(codes, [3])
        loss = torch.nn.functional.mse_loss(prompt_embeds, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.25 * collapsed_bound


def test_code_order_matters_through_position_embeddings():
    model = tiny_decoder()
    codes = torch.randn(5, 32)
    with torch.no_grad():
        forward, _ = model(codes, [5])
        reversed_, _ = model(codes.flip(0), [5])
    assert not torch.allclose(forward, reversed_, atol=1e-4)


@pytest.mark.parametrize(
    "num_codes, counts, message",
    [
        (5, [2, 2], "sum to 4"),
        (5, [5, 0], "at least one"),
        (1, [], "non-empty"),
        (300, [300], "max_code_tokens"),
    ],
)
def test_bad_token_counts_are_rejected(num_codes, counts, message):
    model = tiny_decoder()
    codes = torch.randn(num_codes, 32)
    with pytest.raises(TokenCountError, match=message):
        model(codes, counts)


def test_bfloat16_and_gradient_checkpointing():
    model = tiny_decoder(num_queries=16)
    codes = torch.randn(6, 32)
    reference, _ = model(codes, [2, 4])

    model.enable_gradient_checkpointing()
    model.train()
    checkpointed, pooled = model(codes, [2, 4])
    (checkpointed.sum() + pooled.sum()).backward()
    torch.testing.assert_close(checkpointed, reference, atol=1e-5, rtol=1e-5)
    assert model.query_embedding.grad is not None and model.query_embedding.grad.abs().sum() > 0

    low = tiny_decoder(num_queries=16).to(torch.bfloat16)
    with torch.no_grad():
        prompt_embeds, pooled = low(codes, [2, 4])
    assert prompt_embeds.dtype == pooled.dtype == torch.bfloat16
    assert prompt_embeds.shape == (2, 16, 128)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_decoder(num_queries=16)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = KeyframeTokenDecoder.from_pretrained(tmp_path).eval()

    assert list(loaded.config.prompt_embed_dims) == [48, 80]
    codes = torch.randn(4, 32)
    with torch.no_grad():
        for expected, actual in zip(model(codes, [4]), loaded(codes, [4])):
            torch.testing.assert_close(actual, expected)
