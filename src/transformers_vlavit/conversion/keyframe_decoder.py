"""Weight names of the released keyframe token decoder -> :class:`diffusers_vlavit.KeyframeTokenDecoder`.

The released file is ``visual_tokenizer/highres_tokenizer_decoder.bin`` (no outer prefix). Every
original tensor is kept; the fused self-attention ``qkv`` projection is split into diffusers'
``to_q`` / ``to_k`` / ``to_v``.
"""

from __future__ import annotations

import re

import torch

# nothing of the released decoder is dropped
DROPPED_KEYS: dict[str, str] = {}

# original module path -> ours, outside the transformer blocks
_MODULE_RENAMES = {
    "in_proj": "in_proj",
    "pos_embed": "code_position_embedding",
    "query_embed": "query_embedding",
    "norm": "norm",
    "decode_task_layer": "decode_head",
    "unet_proj_1": "prompt_proj_1",
    "unet_proj_2": "prompt_proj_2",
    "unet_attnpool": "attention_pool",
}
# module path inside ``blocks.<i>`` -> the diffusers BasicTransformerBlock one
_BLOCK_RENAMES = {
    "norm0": "norm1",
    "norm1": "norm2",
    "norm2": "norm3",
    "self_attn.proj": "attn1.to_out.0",
    "cross_attn.query": "attn2.to_q",
    "cross_attn.key": "attn2.to_k",
    "cross_attn.value": "attn2.to_v",
    "cross_attn.proj": "attn2.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


class UnknownKeyframeDecoderWeightError(KeyError):
    """Raised when a state dict holds a name the keyframe decoder converter does not know."""


def _unknown(name: str) -> UnknownKeyframeDecoderWeightError:
    return UnknownKeyframeDecoderWeightError(
        f"unexpected keyframe decoder weight {name!r}; strip any outer prefix (such as 'model.') first"
    )


def convert_keyframe_decoder_state_dict(
    original_state_dict: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Convert the original keyframe decoder state dict to ``KeyframeTokenDecoder`` names.

    Args:
        original_state_dict: tensors of ``highres_tokenizer_decoder.bin`` under their original names
            (any outer prefix such as ``model.`` removed).

    Returns:
        A state dict that ``KeyframeTokenDecoder.load_state_dict(..., strict=True)`` accepts; the fused
        ``[3 * hidden, hidden]`` self-attention projection becomes three ``[hidden, hidden]`` tensors.
    """
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in original_state_dict.items():
        block = _BLOCK_KEY.match(name)
        if block:
            index, module, kind = block.groups()
            if module == "self_attn.qkv":
                for projection, chunk in zip(("to_q", "to_k", "to_v"), tensor.chunk(3, dim=0)):
                    converted[f"blocks.{index}.attn1.{projection}.{kind}"] = chunk
            elif module in _BLOCK_RENAMES:
                converted[f"blocks.{index}.{_BLOCK_RENAMES[module]}.{kind}"] = tensor
            else:
                raise _unknown(name)
            continue
        head, _, rest = name.partition(".")
        if head not in _MODULE_RENAMES:
            raise _unknown(name)
        converted[f"{_MODULE_RENAMES[head]}.{rest}" if rest else _MODULE_RENAMES[head]] = tensor
    return converted
