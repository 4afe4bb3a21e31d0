"""detokenizer_sampling: helpers the three detokenizer pipelines share (and that travel as remote code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, EulerAncestralDiscreteScheduler, PNDMScheduler

from diffusers_vlavit.pipelines import detokenizer_sampling
from diffusers_vlavit.pipelines.detokenizer_sampling import apply_guidance, scheduler_step_kwargs, upcast_vae


def tiny_vae(force_upcast: bool) -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(32,), norm_num_groups=32, latent_channels=4, force_upcast=force_upcast
    ).to(torch.float16)


def test_module_imports_no_project_package(imports_project):
    source = Path(detokenizer_sampling.__file__).read_text(encoding="utf-8")
    assert not imports_project(source)
    assert not re.search(r"^\s*from\s+\.", source, re.MULTILINE), "it is copied alone, without siblings"


@pytest.mark.parametrize("force_upcast", [True, False])
def test_upcast_vae_runs_in_float32_only_when_asked_and_restores(force_upcast):
    vae = tiny_vae(force_upcast)
    with upcast_vae(vae):
        assert vae.dtype == (torch.float32 if force_upcast else torch.float16)
    assert vae.dtype == torch.float16


def test_upcast_vae_restores_the_dtype_when_the_block_fails():
    vae = tiny_vae(force_upcast=True)
    with pytest.raises(RuntimeError, match="boom"), upcast_vae(vae):
        raise RuntimeError("boom")
    assert vae.dtype == torch.float16


def test_per_frame_guidance_weights_each_frame():
    uncond, cond = torch.zeros(2, 3, 1, 1, 1), torch.ones(2, 3, 1, 1, 1)
    scale = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1, 1)
    guided = apply_guidance(torch.cat([uncond, cond]), scale)
    assert guided.shape == (2, 3, 1, 1, 1)
    torch.testing.assert_close(guided[:, :, 0, 0, 0], torch.tensor([[1.0, 2.0, 4.0]] * 2))


def test_scheduler_step_kwargs_keep_only_what_step_accepts():
    generator = torch.Generator()
    assert scheduler_step_kwargs(EulerAncestralDiscreteScheduler(), generator, eta=0.5) == {
        "generator": generator
    }
    assert scheduler_step_kwargs(DDIMScheduler(), generator, eta=0.5) == {"generator": generator, "eta": 0.5}
    assert scheduler_step_kwargs(PNDMScheduler(), generator, eta=0.5) == {}


def test_unconditional_rows_are_zero_and_come_first():
    conditions = (torch.rand(2, 5), torch.rand(2, 3, 4))
    doubled = detokenizer_sampling.with_zero_unconditional(*conditions)
    for condition, both in zip(conditions, doubled):
        assert both.shape == (4, *condition.shape[1:])
        assert not both[:2].any()
        torch.testing.assert_close(both[2:], condition)


def test_added_time_ids_repeat_per_row_and_check_the_unet():
    from types import SimpleNamespace

    from diffusers_vlavit.pipelines.detokenizer_sampling import added_time_ids

    unet = SimpleNamespace(
        config=SimpleNamespace(addition_time_embed_dim=8),
        add_embedding=SimpleNamespace(linear_1=torch.nn.Linear(3 * 8 + 32, 4)),
    )
    ids = added_time_ids(unet, [6, 127, 0.02], 2, torch.float32, pooled_dim=32)
    assert ids.shape == (2, 3) and torch.equal(ids[1], torch.tensor([6, 127, 0.02]))
    with pytest.raises(ValueError, match="added embedding takes 56 inputs"):
        added_time_ids(unet, [6, 127, 0.02], 2, torch.float32)


def test_frame_guidance_scales_rise_over_the_frames_and_are_constant_when_min_is_max():
    from diffusers_vlavit.pipelines.detokenizer_sampling import frame_guidance_scales

    rising = frame_guidance_scales(1.0, 4.0, 4, torch.float32)
    assert rising.shape == (1, 4, 1, 1, 1)
    assert torch.equal(rising.flatten(), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.equal(frame_guidance_scales(4.0, 4.0, 24, torch.float32), torch.full((1, 24, 1, 1, 1), 4.0))


def test_clip_conditions_stack_keyframe_latents_and_motion_with_a_zero_half():
    from diffusers_vlavit.pipelines.detokenizer_sampling import clip_conditions

    class Encoder(torch.nn.Module):
        dtype = torch.float32

        def forward(self, motion):
            return motion.flatten(3).transpose(1, 2)  # [batch, frames, 2, cells] stands in for the features

    motion, latents = torch.randn(1, 2, 3, 4, 5), torch.randn(1, 4, 4, 5)
    conditions, features = clip_conditions(Encoder(), motion, latents, torch.float32, do_guidance=True)
    assert conditions.shape == (2, 3, 6, 4, 5) and features.shape == (2, 3, 2, 20)
    assert not conditions[0].any() and not features[0].any()
    assert torch.equal(conditions[1, 2, :4], latents[0])
    assert torch.equal(conditions[1, 2, 4:], motion[0, :, 2])
