"""Weight names of the released visual tokenizer -> :class:`VideoLaVITVisualTokenizer`.

The released tokenizer is spread over ``visual_tokenizer/eva_vitg_psz14.bin`` (the EVA-CLIP vision
transformer, names without the ``encoder.`` prefix), ``visual_tokenizer/tokenizer_encoder.bin`` (token
predictor, merger, quantizer, ``vit_proj``) and, for understanding, ``language_model_sft/visual_weight.bin``
(merger and ``vit_proj`` trained with the language model);
:func:`combine_released_visual_tokenizer_state_dicts` joins them the way the reference loads them. The SFT
language model stores the same tensors under ``model.visual_tokenizer.``.

All tensors keep their layout except the CLS token and position embedding, which lose their leading batch
axes. The vision transformer's final norm and projection head are dropped: the tokenizer reads the last
block's output.
"""

from __future__ import annotations

import re

import torch

# original name -> why it is left out
DROPPED_KEYS: dict[str, str] = {
    "encoder.norm.weight": "EVA-CLIP final norm: the tokenizer uses the last block's output before it",
    "encoder.norm.bias": "EVA-CLIP final norm: the tokenizer uses the last block's output before it",
    "encoder.head.weight": "EVA-CLIP contrastive projection head: unused by the tokenizer",
    "encoder.head.bias": "EVA-CLIP contrastive projection head: unused by the tokenizer",
}

# original name -> ours, outside the repeated blocks
_RENAMES = {
    "encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
    "token_predictor.in_conv.0.weight": "token_predictor.input_norm.weight",
    "token_predictor.in_conv.0.bias": "token_predictor.input_norm.bias",
    "token_predictor.in_conv.1.weight": "token_predictor.input_proj.weight",
    "token_predictor.in_conv.1.bias": "token_predictor.input_proj.bias",
    "token_predictor.out_conv.0.weight": "token_predictor.fc1.weight",
    "token_predictor.out_conv.0.bias": "token_predictor.fc1.bias",
    "token_predictor.out_conv.2.weight": "token_predictor.fc2.weight",
    "token_predictor.out_conv.2.bias": "token_predictor.fc2.bias",
    "token_predictor.out_conv.4.weight": "token_predictor.classifier.weight",
    "token_predictor.out_conv.4.bias": "token_predictor.classifier.bias",
    "causal_encoder.ln_vision.weight": "token_merger.vision_norm.weight",
    "causal_encoder.ln_vision.bias": "token_merger.vision_norm.bias",
    "causal_encoder.norm.weight": "token_merger.final_norm.weight",
    "causal_encoder.norm.bias": "token_merger.final_norm.bias",
    "encode_task_layer.0.weight": "code_projection.fc1.weight",
    "encode_task_layer.0.bias": "code_projection.fc1.bias",
    "encode_task_layer.2.weight": "code_projection.fc2.weight",
    "encode_task_layer.2.bias": "code_projection.fc2.bias",
    "quantize.embedding.weight": "codebook.weight",
    "vit_proj.weight": "vit_proj.weight",
    "vit_proj.bias": "vit_proj.bias",
}
# original parameters with leading batch axes -> (ours, number of trailing axes kept)
_EMBEDDINGS = {
    "encoder.cls_token": ("vision_model.embeddings.class_embedding", 1),
    "encoder.pos_embed": ("vision_model.embeddings.position_embedding", 2),
}
# module or parameter path inside ``encoder.blocks.<i>`` -> ours inside ``vision_model.layers.<i>``
_VISION_BLOCK_RENAMES = {
    "norm1.weight": "layer_norm1.weight",
    "norm1.bias": "layer_norm1.bias",
    "attn.qkv.weight": "self_attn.qkv.weight",
    "attn.q_bias": "self_attn.q_bias",
    "attn.v_bias": "self_attn.v_bias",
    "attn.proj.weight": "self_attn.out_proj.weight",
    "attn.proj.bias": "self_attn.out_proj.bias",
    "norm2.weight": "layer_norm2.weight",
    "norm2.bias": "layer_norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
# module path inside ``causal_encoder.blocks.<i>`` -> ours inside ``token_merger.layers.<i>``
_MERGER_BLOCK_RENAMES = {
    "norm0": "self_attn_norm",
    "token_causal_attn.qkv": "self_attn.qkv",
    "token_causal_attn.proj": "self_attn.out_proj",
    "norm1": "cross_attn_norm",
    "token_cross_attn.query": "cross_attn.q_proj",
    "token_cross_attn.key": "cross_attn.k_proj",
    "token_cross_attn.value": "cross_attn.v_proj",
    "token_cross_attn.proj": "cross_attn.out_proj",
    "norm2": "mlp_norm",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_VISION_BLOCK_KEY = re.compile(r"^encoder\.blocks\.(\d+)\.(.+)$")
_MERGER_BLOCK_KEY = re.compile(r"^causal_encoder\.blocks\.(\d+)\.(.+)\.(weight|bias)$")


class UnknownVisualTokenizerWeightError(KeyError):
    """Raised when a state dict holds a name the visual tokenizer converter does not know."""


def _unknown(name: str) -> UnknownVisualTokenizerWeightError:
    return UnknownVisualTokenizerWeightError(
        f"unexpected visual tokenizer weight {name!r}; strip any outer prefix "
        "(such as 'model.visual_tokenizer.') first, and give the EVA-CLIP weights their 'encoder.' prefix "
        "(combine_released_visual_tokenizer_state_dicts does both files at once)"
    )


def _convert_name(name: str) -> str:
    """Our name for one original tensor name (not in ``DROPPED_KEYS``)."""
    if name in _RENAMES:
        return _RENAMES[name]
    vision_block = _VISION_BLOCK_KEY.match(name)
    if vision_block and vision_block.group(2) in _VISION_BLOCK_RENAMES:
        index, inner = vision_block.groups()
        return f"vision_model.layers.{index}.{_VISION_BLOCK_RENAMES[inner]}"
    merger_block = _MERGER_BLOCK_KEY.match(name)
    if merger_block and merger_block.group(2) in _MERGER_BLOCK_RENAMES:
        index, module, kind = merger_block.groups()
        return f"token_merger.layers.{index}.{_MERGER_BLOCK_RENAMES[module]}.{kind}"
    raise _unknown(name)


def convert_visual_tokenizer_state_dict(
    original_state_dict: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Convert the original visual tokenizer state dict to ``VideoLaVITVisualTokenizer`` names.

    Args:
        original_state_dict: tensors of the reference ``DynamicVisualTokenizer`` under their original names
            (``encoder.*``, ``token_predictor.*``, ``causal_encoder.*``, ``encode_task_layer.*``,
            ``quantize.*``, ``vit_proj.*``; any outer prefix removed).

    Returns:
        A state dict that ``VideoLaVITVisualTokenizer.load_state_dict(..., strict=True)`` accepts: the CLS
        token ``[1, 1, hidden]`` becomes ``[hidden]``, the position embedding ``[1, positions, hidden]``
        becomes ``[positions, hidden]``, the names in ``DROPPED_KEYS`` are left out.

    Raises:
        UnknownVisualTokenizerWeightError: for a name that is neither converted nor listed in
        ``DROPPED_KEYS``.
    """
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in original_state_dict.items():
        if name in DROPPED_KEYS:
            continue
        if name in _EMBEDDINGS:
            ours, kept_axes = _EMBEDDINGS[name]
            converted[ours] = tensor.reshape(tensor.shape[-kept_axes:])
            continue
        converted[_convert_name(name)] = tensor
    return converted


def combine_released_visual_tokenizer_state_dicts(
    eva_vit_state_dict: dict[str, torch.Tensor],
    tokenizer_encoder_state_dict: dict[str, torch.Tensor],
    understanding_state_dict: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Join the released files of the visual tokenizer into one original-name state dict, in loading order.

    Args:
        eva_vit_state_dict: ``visual_tokenizer/eva_vitg_psz14.bin`` (EVA-CLIP names without a prefix).
        tokenizer_encoder_state_dict: ``visual_tokenizer/tokenizer_encoder.bin``.
        understanding_state_dict: ``language_model_sft/visual_weight.bin``, whose merger and ``vit_proj``
            replace the tokenizer's for understanding, as the reference does; leave it out for generation.

    Returns:
        One state dict under original names, ready for :func:`convert_visual_tokenizer_state_dict`.
    """
    combined = {f"encoder.{name}": tensor for name, tensor in eva_vit_state_dict.items()}
    combined.update(tokenizer_encoder_state_dict)
    combined.update(understanding_state_dict or {})
    return combined


__all__ = [
    "DROPPED_KEYS",
    "UnknownVisualTokenizerWeightError",
    "combine_released_visual_tokenizer_state_dicts",
    "convert_visual_tokenizer_state_dict",
]
