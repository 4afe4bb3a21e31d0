"""Weight names of the released motion tokenizer -> :class:`VideoLaVITMotionTokenizer`.

The released file is ``motion_tokenizer.bin`` (no outer prefix; the SFT language model stores the same
tensors under ``model.motion_tokenizer.``). Every original tensor is kept. The flat ``blocks.<i>`` lists of
the encoder and decoder are regrouped into ``stages.<s>.blocks.<j>``, the fused attention ``qkv`` projection
(with separate ``q_bias`` / ``v_bias``) becomes ``q_proj`` / ``k_proj`` / ``v_proj``, and the position
embeddings lose their leading batch axis.
"""

from __future__ import annotations

import re

import torch

from ..configuration_motion_tokenizer import VideoLaVITMotionTokenizerConfig

# nothing of the released tokenizer is dropped
DROPPED_KEYS: dict[str, str] = {}

# original name -> ours, outside the transformer blocks and stage layers
_RENAMES = {
    "encoder.in_proj.weight": "encoder.input_proj.weight",
    "encoder.in_proj.bias": "encoder.input_proj.bias",
    "encoder.norm.weight": "encoder.norm.weight",
    "encoder.norm.bias": "encoder.norm.bias",
    "decoder.in_proj.weight": "decoder.input_proj.weight",
    "decoder.in_proj.bias": "decoder.input_proj.bias",
    "decoder.norm.weight": "decoder.norm.weight",
    "decoder.norm.bias": "decoder.norm.bias",
    "encode_task_layer.0.weight": "code_projection.fc1.weight",
    "encode_task_layer.0.bias": "code_projection.fc1.bias",
    "encode_task_layer.2.weight": "code_projection.fc2.weight",
    "encode_task_layer.2.bias": "code_projection.fc2.bias",
    "decode_task_layer.0.weight": "motion_projection.fc1.weight",
    "decode_task_layer.0.bias": "motion_projection.fc1.bias",
    "decode_task_layer.2.weight": "motion_projection.fc2.weight",
    "decode_task_layer.2.bias": "motion_projection.fc2.bias",
    "quantize.embedding.weight": "quantizer.codebook.weight",
}
# original [1, positions, hidden] parameters -> ours [positions, hidden]
_POSITION_EMBEDDINGS = {
    "encoder.pos_embed": "encoder.spatial_position_embeddings",
    "encoder.temp_pos": "encoder.temporal_position_embeddings",
}
# module path inside ``blocks.<i>`` -> ours
_BLOCK_RENAMES = {
    "norm0": "spatial_norm",
    "norm1": "temporal_norm",
    "norm2": "mlp_norm",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "spatial_attention.proj": "spatial_attention.o_proj",
    "temporal_attention.proj": "temporal_attention.o_proj",
}
_BLOCK_KEY = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)$")
_ATTENTION_KEY = re.compile(r"^(spatial_attention|temporal_attention)\.(qkv\.weight|q_bias|v_bias)$")
_MODULE_KEY = re.compile(r"^(.+)\.(weight|bias)$")
_STAGE_LAYER_KEY = re.compile(
    r"^(encoder\.down_sample_layers|decoder\.up_sample_layers)\.(\d+)\.conv\.(weight|bias)$"
)
_STAGE_LAYER_NAMES = {"encoder.down_sample_layers": "downsample", "decoder.up_sample_layers": "upsample"}


class UnknownMotionTokenizerWeightError(KeyError):
    """Raised when a state dict holds a name the motion tokenizer converter does not know."""


def _unknown(name: str) -> UnknownMotionTokenizerWeightError:
    return UnknownMotionTokenizerWeightError(
        f"unexpected motion tokenizer weight {name!r}; strip any outer prefix "
        "(such as 'model.motion_tokenizer.') first, and pass the config whose stage_depths match the "
        "checkpoint"
    )


def _stage_of_block(index: int, stage_depths: tuple[int, ...], name: str) -> tuple[int, int]:
    """Map a flat block index to `(stage, block within the stage)`."""
    first = 0
    for stage, depth in enumerate(stage_depths):
        if index < first + depth:
            return stage, index - first
        first += depth
    raise _unknown(name)


def _convert_block_tensor(
    prefix: str, inner: str, tensor: torch.Tensor, name: str
) -> dict[str, torch.Tensor]:
    """Convert one tensor of a spatio-temporal block whose new path starts with `prefix`."""
    attention = _ATTENTION_KEY.match(inner)
    if attention:
        module, kind = attention.groups()
        if kind == "qkv.weight":
            query, key, value = tensor.chunk(3, dim=0)
            return {
                f"{prefix}.{module}.q_proj.weight": query,
                f"{prefix}.{module}.k_proj.weight": key,
                f"{prefix}.{module}.v_proj.weight": value,
            }
        projection = "q_proj" if kind == "q_bias" else "v_proj"
        return {f"{prefix}.{module}.{projection}.bias": tensor}
    module = _MODULE_KEY.match(inner)
    if module is None or module.group(1) not in _BLOCK_RENAMES:
        raise _unknown(name)
    return {f"{prefix}.{_BLOCK_RENAMES[module.group(1)]}.{module.group(2)}": tensor}


def convert_motion_tokenizer_state_dict(
    original_state_dict: dict[str, torch.Tensor], config: VideoLaVITMotionTokenizerConfig | None = None
) -> dict[str, torch.Tensor]:
    """Convert the original motion tokenizer state dict to ``VideoLaVITMotionTokenizer`` names.

    Args:
        original_state_dict: tensors of ``motion_tokenizer.bin`` under their original names (any outer prefix
            such as ``model.motion_tokenizer.`` removed).
        config: the target model's config; only ``stage_depths`` is read, to regroup the flat block lists.
            Defaults to the released configuration (four stages of three blocks).

    Returns:
        A state dict that ``VideoLaVITMotionTokenizer.load_state_dict(..., strict=True)`` accepts: each fused
        ``[3 * hidden, hidden]`` attention projection becomes three ``[hidden, hidden]`` tensors and the
        ``[1, positions, hidden]`` position embeddings become ``[positions, hidden]``.

    Raises:
        UnknownMotionTokenizerWeightError: for a name neither converted nor listed in ``DROPPED_KEYS``.
    """
    stage_depths = (config or VideoLaVITMotionTokenizerConfig()).stage_depths
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in original_state_dict.items():
        if name in DROPPED_KEYS:
            continue
        if name in _RENAMES:
            converted[_RENAMES[name]] = tensor
            continue
        if name in _POSITION_EMBEDDINGS:
            converted[_POSITION_EMBEDDINGS[name]] = tensor.reshape(tensor.shape[-2:])
            continue
        block = _BLOCK_KEY.match(name)
        if block:
            part, index, inner = block.groups()
            stage, position = _stage_of_block(int(index), stage_depths, name)
            converted.update(
                _convert_block_tensor(f"{part}.stages.{stage}.blocks.{position}", inner, tensor, name)
            )
            continue
        stage_layer = _STAGE_LAYER_KEY.match(name)
        if stage_layer:
            layers, stage, kind = stage_layer.groups()
            converted[f"{layers.split('.')[0]}.stages.{stage}.{_STAGE_LAYER_NAMES[layers]}.conv.{kind}"] = (
                tensor
            )
            continue
        raise _unknown(name)
    return converted


__all__ = ["DROPPED_KEYS", "UnknownMotionTokenizerWeightError", "convert_motion_tokenizer_state_dict"]
