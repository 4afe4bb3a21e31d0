"""Weight names of the released language models -> :class:`VideoLaVITForCausalLM`.

The released ``language_model/`` (generation) and ``language_model_sft/`` (understanding) folders hold
a transformers-4.33 ``LlamaForCausalLM`` state dict: ``model.embed_tokens``, ``model.layers.<i>.*``,
``model.norm``, ``lm_head``. Our backbone is transformers' ``LlamaModel`` as the base model's
``language_model``, so ``model.<name>`` becomes ``model.language_model.<name>``; ``lm_head`` keeps its name.
The SFT model also stores both tokenizers inside the backbone, as ``model.visual_tokenizer.*`` and
``model.motion_tokenizer.*``; they go through the tokenizers' own converters to the base model's
``model.visual_tokenizer.*`` / ``model.motion_tokenizer.*`` (same prefixes, our names after them). The
generation model has no tokenizer weights: pass the visual tokenizer's files
(``combine_released_visual_tokenizer_state_dicts``) and ``motion_tokenizer.bin`` to
:func:`convert_video_lavit_state_dict`.
"""

from __future__ import annotations

import fnmatch

import torch

from ..configuration_video_lavit import VideoLaVITConfig
from .motion_tokenizer import DROPPED_KEYS as MOTION_TOKENIZER_DROPPED_KEYS
from .motion_tokenizer import convert_motion_tokenizer_state_dict
from .visual_tokenizer import DROPPED_KEYS as VISUAL_TOKENIZER_DROPPED_KEYS
from .visual_tokenizer import convert_visual_tokenizer_state_dict

# where the released checkpoint keeps things
VISUAL_TOKENIZER_PREFIX = "model.visual_tokenizer."
MOTION_TOKENIZER_PREFIX = "model.motion_tokenizer."
# where VideoLaVITForCausalLM keeps them: the backbone and both tokenizers in its base model (`model.`)
OUR_LANGUAGE_MODEL_PREFIX = "model.language_model."
OUR_VISUAL_TOKENIZER_PREFIX = "model.visual_tokenizer."
OUR_MOTION_TOKENIZER_PREFIX = "model.motion_tokenizer."

# original name or fnmatch pattern -> why it is left out
DROPPED_KEYS: dict[str, str] = {
    "model.layers.*.self_attn.rotary_emb.inv_freq": (
        "rotary frequencies: a buffer that old transformers versions saved; LlamaRotaryEmbedding "
        "recomputes it from the config"
    ),
    **{f"{VISUAL_TOKENIZER_PREFIX}{name}": reason for name, reason in VISUAL_TOKENIZER_DROPPED_KEYS.items()},
    **{f"{MOTION_TOKENIZER_PREFIX}{name}": reason for name, reason in MOTION_TOKENIZER_DROPPED_KEYS.items()},
}

# names of LlamaForCausalLM's backbone (under `model.`) and of its head, which keeps its name
_LLAMA_BACKBONE_PATTERNS = ("model.embed_tokens.weight", "model.layers.*", "model.norm.weight")
_LLAMA_HEAD = "lm_head.weight"


class UnknownLanguageModelWeightError(KeyError):
    """A tensor name of the original language model that the converter does not know."""


def _is_dropped(name: str) -> bool:
    """Whether `name` matches a `DROPPED_KEYS` name or pattern."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in DROPPED_KEYS)


def convert_language_model_state_dict(
    original_state_dict: dict[str, torch.Tensor], config: VideoLaVITConfig | None = None
) -> dict[str, torch.Tensor]:
    """Convert a released ``language_model`` / ``language_model_sft`` state dict to our names.

    Args:
        original_state_dict: the Llama tensors under their original names (all shards merged), possibly
            with ``model.visual_tokenizer.*`` / ``model.motion_tokenizer.*`` (SFT checkpoint).
        config: the target model's config; its motion tokenizer config tells how the flat block list
            regroups into stages. Defaults to the released size.

    Returns:
        A state dict for ``VideoLaVITForCausalLM``: the backbone under ``model.language_model.``, ``lm_head``
        as it is, tokenizer tensors under ``model.visual_tokenizer.`` / ``model.motion_tokenizer.``,
        ``DROPPED_KEYS`` left out.

    Raises:
        UnknownLanguageModelWeightError: for a name that is neither converted nor listed in ``DROPPED_KEYS``.
    """
    motion_config = config.motion_tokenizer_config if config is not None else None
    converted: dict[str, torch.Tensor] = {}
    visual, motion = {}, {}
    for name, tensor in original_state_dict.items():
        if name.startswith(VISUAL_TOKENIZER_PREFIX):
            visual[name.removeprefix(VISUAL_TOKENIZER_PREFIX)] = tensor
        elif name.startswith(MOTION_TOKENIZER_PREFIX):
            motion[name.removeprefix(MOTION_TOKENIZER_PREFIX)] = tensor
        elif _is_dropped(name):
            continue
        elif any(fnmatch.fnmatchcase(name, pattern) for pattern in _LLAMA_BACKBONE_PATTERNS):
            converted[OUR_LANGUAGE_MODEL_PREFIX + name.removeprefix("model.")] = tensor
        elif name == _LLAMA_HEAD:
            converted[name] = tensor
        else:
            raise UnknownLanguageModelWeightError(
                f"{name!r} is not a Llama weight of the released language model nor listed in DROPPED_KEYS; "
                "check that the state dict comes from language_model/ or language_model_sft/."
            )
    if visual:
        converted.update(_prefixed(OUR_VISUAL_TOKENIZER_PREFIX, convert_visual_tokenizer_state_dict(visual)))
    if motion:
        converted.update(
            _prefixed(OUR_MOTION_TOKENIZER_PREFIX, convert_motion_tokenizer_state_dict(motion, motion_config))
        )
    return converted


def convert_video_lavit_state_dict(
    language_model_state_dict: dict[str, torch.Tensor],
    visual_tokenizer_state_dict: dict[str, torch.Tensor] | None = None,
    motion_tokenizer_state_dict: dict[str, torch.Tensor] | None = None,
    config: VideoLaVITConfig | None = None,
) -> dict[str, torch.Tensor]:
    """The whole ``VideoLaVITForCausalLM`` state dict from the released files.

    Tokenizer tensors stored in the language model (``model.visual_tokenizer.*`` /
    ``model.motion_tokenizer.*``, the SFT checkpoint) take precedence over the separate tokenizer files,
    as in the reference, which loads them with the language model; the separate files fill in the rest
    (the generation checkpoint stores no tokenizer at all).

    Args:
        language_model_state_dict: ``language_model/`` or ``language_model_sft/`` tensors (original names,
            all shards merged).
        visual_tokenizer_state_dict: the visual tokenizer under original names, e.g. from
            ``combine_released_visual_tokenizer_state_dicts`` (with ``visual_weight.bin`` for understanding).
        motion_tokenizer_state_dict: ``motion_tokenizer.bin`` (original names).
        config: the target config (see :func:`convert_language_model_state_dict`).

    Returns:
        Every tensor of ``VideoLaVITForCausalLM(config)`` under our names that the inputs provide
        (``DROPPED_KEYS`` left out): ``load_state_dict(..., strict=True)`` accepts it when both
        tokenizers are present in one of the inputs.
    """
    visual = {
        **(visual_tokenizer_state_dict or {}),
        **_under(VISUAL_TOKENIZER_PREFIX, language_model_state_dict),
    }
    motion = {
        **(motion_tokenizer_state_dict or {}),
        **_under(MOTION_TOKENIZER_PREFIX, language_model_state_dict),
    }
    tokenizer_prefixes = (VISUAL_TOKENIZER_PREFIX, MOTION_TOKENIZER_PREFIX)
    llama = {n: t for n, t in language_model_state_dict.items() if not n.startswith(tokenizer_prefixes)}
    converted = convert_language_model_state_dict(llama, config)
    if visual:
        converted.update(_prefixed(OUR_VISUAL_TOKENIZER_PREFIX, convert_visual_tokenizer_state_dict(visual)))
    if motion:
        motion_config = config.motion_tokenizer_config if config is not None else None
        converted.update(
            _prefixed(OUR_MOTION_TOKENIZER_PREFIX, convert_motion_tokenizer_state_dict(motion, motion_config))
        )
    return converted


def _under(prefix: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of `state_dict` whose names start with `prefix`, with the prefix removed."""
    return {name.removeprefix(prefix): t for name, t in state_dict.items() if name.startswith(prefix)}


def _prefixed(prefix: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` with `prefix` put before every name."""
    return {f"{prefix}{name}": tensor for name, tensor in state_dict.items()}


__all__ = [
    "DROPPED_KEYS",
    "UnknownLanguageModelWeightError",
    "convert_language_model_state_dict",
    "convert_video_lavit_state_dict",
]
