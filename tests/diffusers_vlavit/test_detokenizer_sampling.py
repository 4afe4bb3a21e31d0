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
