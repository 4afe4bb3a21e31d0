"""UNetSpatioTemporalMotionModel at a tiny size: structure, motion conditioning, batching, dtypes, saving."""

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

from diffusers_vlavit.models import (
    MotionContextShapeError,
    MotionTransformerSpatioTemporalModel,
    UNetSpatioTemporalMotionModel,
)

TINY = {
    "sample_size": 8,
    "in_channels": 10,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    "block_out_channels": (32, 64),
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 24,
    "layers_per_block": 1,
    "cross_attention_dim": 16,
    "num_attention_heads": (2, 4),
    "num_frames": 3,
    "motion_grid_size": (4, 4),
}
FRAMES, CELLS, CONTEXT_DIM = 3, 16, 16


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return UNetSpatioTemporalMotionModel(**TINY).eval()


def _inputs(batch=2, height=8, width=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, FRAMES, 10, height, width, generator=generator),
        "timestep": 0.7,
        "encoder_hidden_states": torch.randn(batch, FRAMES, CELLS, CONTEXT_DIM, generator=generator),
        "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]]).repeat(batch, 1),
    }


def test_output_shape(unet):
    assert unet(**_inputs()).sample.shape == (2, FRAMES, 4, 8, 8)


def test_parameters_are_those_of_the_diffusers_unet(unet):
    config = {key: value for key, value in TINY.items() if key != "motion_grid_size"}
    reference = UNetSpatioTemporalConditionModel(**config)
    ours = {name: tensor.shape for name, tensor in unet.state_dict().items()}
    theirs = {name: tensor.shape for name, tensor in reference.state_dict().items()}
    assert ours == theirs


def test_every_cross_attention_block_uses_motion_transformers(unet):
    transformers = [m for m in unet.modules() if isinstance(m, TransformerSpatioTemporalModel)]
    assert len(transformers) == 4  # one down, one mid, two up (up blocks have one more layer)
    assert all(isinstance(m, MotionTransformerSpatioTemporalModel) for m in transformers)


def test_attention_runs_through_diffusers_processors(unet):
    processors = unet.attn_processors
    assert len(processors) == 4 * 4  # 4 transformers x (spatial, temporal) x (self, cross)
    assert all(isinstance(p, AttnProcessor2_0) for p in processors.values())
    inputs = _inputs()
    with torch.no_grad():
        sdpa = unet(**inputs).sample
        unet.set_default_attn_processor()
        classic = unet(**inputs).sample
    assert all(isinstance(p, AttnProcessor) for p in unet.attn_processors.values())
    torch.testing.assert_close(classic, sdpa, rtol=1e-4, atol=1e-5)


def test_temporal_context_is_the_nearest_grid_cell_over_time(unet):
    transformer = unet.mid_block.attentions[0]
    batch, channels = 2, 5
    context = torch.randn(batch * FRAMES, CELLS, channels)
    height, width = 8, 2  # from the 4 x 4 grid: rows are doubled, every other column is kept
    temporal = transformer.temporal_context(context, FRAMES, height, width)
    assert temporal.shape == (batch * height * width, FRAMES, channels)
    grid = context.view(batch, FRAMES, 4, 4, channels)
    for b, y, x in [(0, 0, 0), (1, 5, 1), (1, 7, 0)]:
        expected = grid[b, :, y // 2, x * 2]
        torch.testing.assert_close(temporal[b * height * width + y * width + x], expected)


def test_temporal_context_is_contiguous_at_batch_size_one(unet):
    """A strided context sends the temporal key/value projections through a slower batched matmul."""
    transformer = unet.mid_block.attentions[0]
    context = torch.randn(FRAMES, CELLS, 5)
    temporal = transformer.temporal_context(context, FRAMES, 8, 2)
    assert temporal.is_contiguous()
    grid = torch.nn.functional.interpolate(
        context.transpose(1, 2).reshape(FRAMES, 5, 4, 4), scale_factor=(2, 0.5), mode="nearest"
    )
    strided = grid.view(1, FRAMES, 5, 16).permute(0, 3, 1, 2).reshape(-1, FRAMES, 5)
    assert not strided.is_contiguous() and torch.equal(temporal, strided)


def test_reduces_to_stable_video_diffusion_for_uniform_motion(unet):
    """With one motion feature everywhere, per-frame and per-position contexts say nothing new."""
    ours = unet.mid_block.attentions[0]
    svd = TransformerSpatioTemporalModel(4, 16, in_channels=64, cross_attention_dim=CONTEXT_DIM).eval()
    svd.load_state_dict(ours.state_dict())
    hidden_states = torch.randn(2 * FRAMES, 64, 4, 4)
    indicator = torch.zeros(2, FRAMES)
    uniform = (
        torch.randn(2, 1, 1, CONTEXT_DIM).expand(2, FRAMES, CELLS, CONTEXT_DIM).reshape(2 * FRAMES, CELLS, -1)
    )
    torch.testing.assert_close(
        ours(hidden_states, uniform, indicator).sample, svd(hidden_states, uniform, indicator).sample
    )
    varying = torch.randn(2 * FRAMES, CELLS, CONTEXT_DIM)
    assert not torch.allclose(
        ours(hidden_states, varying, indicator).sample,
        svd(hidden_states, varying, indicator).sample,
        atol=1e-4,
    )


def test_motion_of_a_frame_changes_the_prediction(unet):
    inputs = _inputs()
    changed = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].clone()}
    changed["encoder_hidden_states"][:, 2] += 1.0
    assert not torch.allclose(unet(**inputs).sample, unet(**changed).sample, atol=1e-4)


def test_samples_of_a_batch_are_independent(unet):
    inputs = _inputs()
    single = {key: value[1:] if torch.is_tensor(value) else value for key, value in inputs.items()}
    torch.testing.assert_close(unet(**inputs).sample[1:], unet(**single).sample, rtol=1e-5, atol=1e-5)


def test_timestep_forms_agree(unet):
    inputs = _inputs()
    as_float = unet(**inputs).sample
    as_tensor = unet(**{**inputs, "timestep": torch.tensor([0.7, 0.7])}).sample
    torch.testing.assert_close(as_tensor, as_float)


def test_sizes_that_do_not_divide_by_the_upsampling_factor(unet):
    assert unet(**_inputs(height=5, width=7)).sample.shape == (2, FRAMES, 4, 5, 7)


def test_context_that_is_not_per_frame_raises(unet):
    inputs = _inputs()
    inputs["encoder_hidden_states"] = inputs["encoder_hidden_states"][:, :1]
    with pytest.raises(MotionContextShapeError, match="MotionConditionEncoder"):
        unet(**inputs)


def test_save_and_load_round_trip(unet, tmp_path):
    unet.save_pretrained(tmp_path)
    loaded = UNetSpatioTemporalMotionModel.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.motion_grid_size) == (4, 4)
    assert isinstance(loaded.up_blocks[1].attentions[0], MotionTransformerSpatioTemporalModel)
    inputs = _inputs()
    torch.testing.assert_close(loaded(**inputs).sample, unet(**inputs).sample, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision(unet, dtype):
    inputs = _inputs()
    reference = unet(**inputs).sample
    low = {key: value.to(dtype) if torch.is_tensor(value) else value for key, value in inputs.items()}
    out = unet.to(dtype)(**low).sample
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.1)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = UNetSpatioTemporalMotionModel(**TINY)
    checkpointed = UNetSpatioTemporalMotionModel(**TINY)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.enable_gradient_checkpointing()
    assert unet_uses_checkpointing(checkpointed)
    inputs = _inputs()
    for model in (plain, checkpointed):
        model(**inputs).sample.square().mean().backward()
    for (name, param), other in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert param.grad is not None, name
        torch.testing.assert_close(other.grad, param.grad, rtol=1e-4, atol=1e-6, msg=name)


def unet_uses_checkpointing(model):
    return all(
        m.gradient_checkpointing
        for m in model.modules()
        if isinstance(m, MotionTransformerSpatioTemporalModel)
    )
