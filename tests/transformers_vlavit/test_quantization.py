"""The code-space helpers the motion and visual tokenizers share."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transformers_vlavit.quantization import TanhProjection, init_unit_codebook_, nearest_code_ids


def test_nearest_code_ids_finds_the_closest_unit_code_for_any_leading_shape():
    generator = torch.Generator().manual_seed(0)
    codebook = F.normalize(torch.randn(50, 8, generator=generator), dim=-1)
    targets = torch.randint(50, (3, 4), generator=generator)
    latents = F.normalize(codebook[targets] + 0.01 * torch.randn(3, 4, 8, generator=generator), dim=-1)
    ids = nearest_code_ids(latents, codebook)
    assert ids.shape == (3, 4)
    assert torch.equal(ids, targets)
    assert torch.equal(ids, torch.cdist(latents.flatten(0, 1), codebook).argmin(dim=-1).view(3, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nearest_code_ids_in_half_precision_matches_float32(dtype):
    generator = torch.Generator().manual_seed(1)
    codebook = F.normalize(torch.randn(64, 16, generator=generator), dim=-1)
    latents = F.normalize(torch.randn(32, 16, generator=generator), dim=-1)
    expected = nearest_code_ids(latents, codebook)
    assert torch.equal(nearest_code_ids(latents.to(dtype), codebook.to(dtype)), expected)


def test_init_unit_codebook_gives_unit_rows_and_keeps_loaded_weights():
    weight = torch.empty(20, 6)
    init_unit_codebook_(weight)
    torch.testing.assert_close(weight.norm(dim=-1), torch.ones(20))
    assert weight.std() > 0.1

    loaded = torch.full((4, 6), 3.0)
    loaded._is_hf_initialized = True
    init_unit_codebook_(loaded)
    assert torch.equal(loaded, torch.full((4, 6), 3.0))


def test_tanh_projection_maps_the_last_axis_through_a_bounded_hidden_layer():
    torch.manual_seed(0)
    projection = TanhProjection(12, 5)
    hidden = torch.randn(2, 3, 12)
    output = projection(hidden)
    assert output.shape == (2, 3, 5)
    expected = projection.fc2(torch.tanh(projection.fc1(hidden)))
    torch.testing.assert_close(output, expected)
    assert set(dict(projection.named_parameters())) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
