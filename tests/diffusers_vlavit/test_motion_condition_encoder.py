"""MotionConditionEncoder at a tiny size: shapes, resizing, batching, dtypes, saving, checkpointing."""

import pytest
import torch
import torch.nn.functional as F

from diffusers_vlavit.models import MotionConditionEncoder, MotionShapeError

TINY = {
    "out_channels": 24,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "num_layers": 2,
    "grid_size": (4, 6),
}


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return MotionConditionEncoder(**TINY).eval()


def test_output_shape_is_per_frame_per_cell(encoder):
    motion = torch.randn(2, 2, 5, 4, 6)
    assert encoder(motion).shape == (2, 5, 4 * 6, 24)


def test_other_grid_sizes_are_resized_bicubically(encoder):
    motion = torch.randn(1, 2, 3, 20, 36)
    frames = motion.transpose(1, 2).reshape(3, 2, 20, 36)
    resized = F.interpolate(frames, size=(4, 6), mode="bicubic", align_corners=False)
    expected = encoder(resized.view(1, 3, 2, 4, 6).transpose(1, 2))
    torch.testing.assert_close(encoder(motion), expected)


def test_samples_of_a_batch_are_independent(encoder):
    motion = torch.randn(2, 2, 4, 4, 6)
    batched = encoder(motion)
    torch.testing.assert_close(batched[1:], encoder(motion[1:]), rtol=1e-5, atol=1e-5)


def test_temporal_attention_mixes_frames(encoder):
    motion = torch.randn(1, 2, 4, 4, 6)
    changed = motion.clone()
    changed[:, :, 3] += 1.0
    out, out_changed = encoder(motion), encoder(changed)
    assert not torch.allclose(out[:, 0], out_changed[:, 0])


def test_wrong_layout_raises(encoder):
    with pytest.raises(MotionShapeError, match="batch"):
        encoder(torch.randn(2, 5, 4, 6))


def test_save_and_load_round_trip(encoder, tmp_path):
    encoder.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = MotionConditionEncoder.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.grid_size) == (4, 6)
    motion = torch.randn(2, 2, 3, 4, 6)
    torch.testing.assert_close(loaded(motion), encoder(motion), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_follows_the_parameters(encoder, dtype):
    motion = torch.randn(2, 2, 3, 8, 8)
    reference = encoder(motion)
    out = encoder.to(dtype)(motion)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.1)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = MotionConditionEncoder(**TINY)
    checkpointed = MotionConditionEncoder(**TINY)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.enable_gradient_checkpointing()
    assert checkpointed.gradient_checkpointing
    motion = torch.randn(2, 2, 3, 4, 6)
    for model in (plain, checkpointed):
        model(motion).square().mean().backward()
    for (name, param), other in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert param.grad is not None, name
        torch.testing.assert_close(other.grad, param.grad, msg=name)
