"""Global coverage of the released checkpoint's names at full size (built on the `meta` device).

Every name of ``manifest_full_size.json`` (and of the released Llama) goes through the converter's
mapping on its own: it must land on parameters of our full-size models with the same number of elements,
or be dropped with a reason in a ``DROPPED_KEYS``. Together the names must set every parameter of our
models exactly once.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from collections.abc import Callable

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from diffusers_vlavit import KeyframeTokenDecoder, MotionConditionEncoder, UNetSpatioTemporalMotionModel
from transformers_vlavit import VideoLaVITConfig, VideoLaVITForCausalLM
from transformers_vlavit.configuration_video_lavit import LLAMA_2_7B_DEFAULTS
from transformers_vlavit.conversion import (
    keyframe_decoder,
    language_model,
    motion_condition_encoder,
    motion_tokenizer,
    video_unet,
    visual_tokenizer,
)
from transformers_vlavit.conversion.convert import convert_released_video_unet_state_dict
from transformers_vlavit.conversion.keyframe_decoder import convert_keyframe_decoder_state_dict
from transformers_vlavit.conversion.language_model import convert_video_lavit_state_dict

ALL_DROPPED_KEYS = {
    **keyframe_decoder.DROPPED_KEYS,
    **language_model.DROPPED_KEYS,
    **motion_condition_encoder.DROPPED_KEYS,
    **motion_tokenizer.DROPPED_KEYS,
    **video_unet.DROPPED_KEYS,
    **visual_tokenizer.DROPPED_KEYS,
}


@pytest.fixture(scope="module")
def manifest(golden_dir) -> dict[str, dict[str, list[int]]]:
    return json.loads((golden_dir / "manifest_full_size.json").read_text())


def _meta(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}


def _released_llama_names(config: VideoLaVITConfig) -> dict[str, torch.Tensor]:
    """The released Llama-2 tensors (transformers 4.33 names, with the saved rotary buffers), on meta."""
    llama = LlamaConfig(**{**LLAMA_2_7B_DEFAULTS, "vocab_size": config.vocab_size})
    with torch.device("meta"):
        state_dict = dict(LlamaForCausalLM(llama).state_dict())
    head_dim = llama.hidden_size // llama.num_attention_heads
    for layer in range(llama.num_hidden_layers):
        state_dict[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = torch.empty(
            head_dim // 2, device="meta"
        )
    return state_dict


def _is_dropped_on_purpose(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ALL_DROPPED_KEYS)


def check_coverage(
    released: dict[str, torch.Tensor],
    convert_one: Callable[[str, torch.Tensor], dict[str, torch.Tensor]],
    ours: dict[str, torch.Tensor],
    original_name: Callable[[str], str] = lambda key: key,
) -> list[str]:
    """Map every released name alone; returns the names dropped (each must be listed with a reason).

    ``released`` may key tensors by a tagged name; ``original_name`` gives the released name back.
    """
    set_by = Counter()
    dropped = []
    for name, tensor in released.items():
        converted = convert_one(name, tensor)
        if not converted:
            assert _is_dropped_on_purpose(original_name(name)), (
                f"{name} is dropped but listed in no DROPPED_KEYS"
            )
            dropped.append(name)
            continue
        for target, value in converted.items():
            assert target in ours, f"{name} -> {target}, which our model does not have"
            assert value.shape == ours[target].shape, (
                f"{name} -> {target}: {value.shape} vs {ours[target].shape}"
            )
        assert sum(v.numel() for v in converted.values()) == tensor.numel(), name
        set_by.update(converted.keys())
    assert set(set_by) == set(ours), f"left unset: {sorted(set(ours) - set(set_by))[:10]}"
    assert max(set_by.values()) == 1, [name for name, count in set_by.items() if count > 1][:10]
    return dropped


@pytest.mark.parametrize("variant", ["generation", "understanding"])
def test_golden_causal_lm_names_cover_the_full_size_model(manifest, variant):
    config = VideoLaVITConfig()
    with torch.device("meta"):
        ours = VideoLaVITForCausalLM(config).state_dict()
    llama = _released_llama_names(config)
    visual, motion = _meta(manifest["visual_tokenizer"]), _meta(manifest["motion_tokenizer"])
    if variant == "generation":
        # the tokenizers come from their own files
        released = {
            **{f"llama:{n}": t for n, t in llama.items()},
            **{f"visual:{n}": t for n, t in visual.items()},
        }
        released.update({f"motion:{n}": t for n, t in motion.items()})
    else:
        # the SFT language model stores both tokenizers inside the backbone
        released = {f"llama:{n}": t for n, t in llama.items()}
        released.update({f"llama:model.visual_tokenizer.{n}": t for n, t in visual.items()})
        released.update({f"llama:model.motion_tokenizer.{n}": t for n, t in motion.items()})

    def convert_one(tagged: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        source, name = tagged.split(":", 1)
        inputs = {"llama": {}, "visual": {}, "motion": {}}
        inputs[source][name] = tensor
        return convert_video_lavit_state_dict(
            inputs["llama"], inputs["visual"], inputs["motion"], config
        )

    untagged = {tagged: tagged.split(":", 1)[1] for tagged in released}
    dropped = {untagged[tagged] for tagged in check_coverage(released, convert_one, ours, untagged.get)}
    prefix = "" if variant == "generation" else "model.visual_tokenizer."
    assert {
        f"{prefix}encoder.{part}" for part in ("norm.weight", "norm.bias", "head.weight", "head.bias")
    } <= dropped
    assert all(
        "rotary_emb.inv_freq" in name or "encoder.norm" in name or "encoder.head" in name for name in dropped
    )


def test_golden_video_unet_file_covers_the_unet_and_motion_encoder(manifest):
    with torch.device("meta"):
        ours = {f"unet:{n}": t for n, t in UNetSpatioTemporalMotionModel().state_dict().items()}
        ours.update({f"encoder:{n}": t for n, t in MotionConditionEncoder().state_dict().items()})
    released = _meta(manifest["video_unet"])
    released.update(
        {f"motion_encoder.{n}": t for n, t in _meta(manifest["motion_condition_encoder"]).items()}
    )

    def convert_one(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        unet, encoder = convert_released_video_unet_state_dict({name: tensor})
        return {
            **{f"unet:{n}": t for n, t in unet.items()},
            **{f"encoder:{n}": t for n, t in encoder.items()},
        }

    assert check_coverage(released, convert_one, ours) == []


def test_golden_keyframe_decoder_names_cover_the_full_size_decoder(manifest):
    with torch.device("meta"):
        ours = KeyframeTokenDecoder().state_dict()
    released = _meta(manifest["keyframe_token_decoder"])
    assert (
        check_coverage(released, lambda name, t: convert_keyframe_decoder_state_dict({name: t}), ours) == []
    )


def test_golden_manifest_has_the_five_released_components(manifest):
    assert set(manifest) == {
        "keyframe_token_decoder",
        "motion_condition_encoder",
        "motion_tokenizer",
        "video_unet",
        "visual_tokenizer",
    }


def test_an_unlisted_dropped_name_fails_the_coverage_check():
    with torch.device("meta"):
        ours = {"weight": torch.empty(2)}
    with pytest.raises(AssertionError, match="listed in no DROPPED_KEYS"):
        check_coverage({"mystery": torch.empty(2, device="meta")}, lambda name, t: {}, ours)
    with pytest.raises(AssertionError, match="left unset"):
        check_coverage({}, lambda name, t: {}, ours)
