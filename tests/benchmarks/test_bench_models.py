"""benchmarks/bench_models.py: its components have the released sizes; a tiny measurement runs in process."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """The script as a module (its folder on ``sys.path`` for its sibling import, as when it runs)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_models", BENCHMARKS / "bench_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _parameters_on_meta(bench, component: str) -> int:
    with torch.device("meta"):
        model = bench.COMPONENTS[component](bench.Sizes()).model
    return sum(parameter.numel() for parameter in model.parameters())


# manifest component -> the benchmark components built from it
MANIFEST_COMPONENTS = {
    "motion_tokenizer": ("motion_tokenizer_encode", "motion_tokenizer_decode"),
    "motion_condition_encoder": ("motion_condition_encoder",),
    "video_unet": ("unet", "unet_plain"),
    "visual_tokenizer": ("visual_tokenizer",),
    "keyframe_token_decoder": ("keyframe_token_decoder",),
}


def test_golden_components_have_the_released_parameter_counts(bench, golden_dir):
    from transformers_vlavit.conversion import (
        keyframe_decoder,
        motion_condition_encoder,
        motion_tokenizer,
        video_unet,
        visual_tokenizer,
    )

    dropped = {
        "motion_tokenizer": motion_tokenizer.DROPPED_KEYS,
        "motion_condition_encoder": motion_condition_encoder.DROPPED_KEYS,
        "video_unet": video_unet.DROPPED_KEYS,
        "visual_tokenizer": visual_tokenizer.DROPPED_KEYS,
        "keyframe_token_decoder": keyframe_decoder.DROPPED_KEYS,
    }
    manifest = json.loads((golden_dir / "manifest_full_size.json").read_text())
    for released, components in MANIFEST_COMPONENTS.items():
        expected = sum(
            math.prod(shape)
            for name, shape in manifest[released].items()
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in dropped[released])
        )
        for component in components:
            assert _parameters_on_meta(bench, component) == expected, component


def test_sdxl_and_svd_components_have_the_published_parameter_counts(bench):
    # SDXL-base U-Net and VAE, SVD temporal VAE (the released checkpoint's 2.57 B, 0.08 B and 0.10 B)
    assert _parameters_on_meta(bench, "keyframe_unet") == 2_567_463_684
    assert _parameters_on_meta(bench, "keyframe_vae_decode") == 83_653_863
    assert _parameters_on_meta(bench, "video_vae_encode") == 97_742_847
    # one of the 32 layers of Llama-2-7B (attention, MLP, two norms), the final norm and a one-row embedding
    assert _parameters_on_meta(bench, "llm_layer") == 202_383_360 + 2 * 4096


def test_released_inputs_have_the_detokenizer_shapes(bench):
    with torch.device("meta"):
        unet = bench.COMPONENTS["unet"](bench.Sizes())
        smaller = bench.COMPONENTS["unet"](bench.Sizes(unet_frames=4, unet_height=16, unet_width=16))
    sample, _, context, time_ids = unet.inputs
    assert sample.shape == (1, 24, 10, 40, 72) and context.shape == (1, 24, 256, 1024)
    assert time_ids.shape == (1, 3)
    assert smaller.inputs[0].shape == (1, 4, 10, 16, 16) and smaller.inputs[2].shape == (1, 4, 256, 1024)


def _options(bench, **overrides) -> dict:
    options = {
        "device": "cpu",
        "dtype": "float32",
        "threads": 1,
        "repeat": 2,
        "warmup": 1,
        "compile": False,
        "channels_last": False,
        "breakdown": False,
        "check": True,
        **{field: getattr(bench.Sizes(tiny=True), field) for field in bench.Sizes.__dataclass_fields__},
    }
    return {**options, **overrides}


def test_tiny_unet_measurement_times_the_routing_and_checks_the_variant(bench):
    result = bench.measure("unet", _options(bench, channels_last=True, breakdown=True))
    assert len(result["runs_s"]) == 2 and result["first_s"] > 0 and result["peak_gb"] > 0
    assert result["channels_last_parameters"] > 0 and result["max_abs_diff"] < 1e-4
    groups = set(result["breakdown_s"])
    assert {"motion routing", "spatial cross-attention", "temporal cross-attention"} <= groups
    total = result["breakdown_s"]["forward (timed, with hooks)"]
    assert all(seconds <= total for seconds in result["breakdown_s"].values())


def test_routing_timer_leaves_the_model_as_it_was(bench):
    workload = bench.COMPONENTS["unet"](bench.Sizes(tiny=True))
    model = workload.model.eval()
    with torch.no_grad():
        before = workload.call(model, *workload.inputs)
        timer = bench.RoutingTimer(model, torch.device("cpu"))
        workload.call(model, *workload.inputs)
        timer.remove()
        after = workload.call(model, *workload.inputs)
    assert timer.seconds["motion routing"] > 0
    assert torch.equal(before, after)
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())
    assert all("temporal_context" not in vars(module) for module in model.modules())


def test_channels_last_covers_2d_and_3d_convolutions(bench):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(4, 4, 3), torch.nn.Linear(4, 4))
    assert bench.to_channels_last(model) == 2
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model[1].weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_flop_count_includes_cpu_attention(bench):
    heads, tokens, head_dim = 2, 64, 16
    query = torch.randn(1, heads, tokens, head_dim)
    attention = torch.nn.functional.scaled_dot_product_attention
    flops, _ = bench.count_flops(lambda: attention(query, query, query))
    # scores and weighted sum: 2 matmuls of tokens x tokens x head_dim multiply-adds per head, 2 FLOPs each
    assert flops == heads * 2 * tokens * tokens * head_dim * 2
