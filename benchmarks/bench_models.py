"""Benchmark of every model component at its released size: forward time and peak memory, with the machine.

Each component is built from its configuration with random weights (nothing is downloaded) and runs one
forward pass on inputs of the shapes it gets in Video-LaVIT, in its own subprocess (so the peak RSS is that
component's alone; it includes the ~0.4 GB of the Python/torch/diffusers/transformers imports). Batch size 1
everywhere: one clip, one image, one guidance branch (the pipelines run two branches under guidance).

Components (`--components`), released size, input of the timed call:

- `motion_tokenizer_encode`: motion tokenizer (158 M with its decoder), motion `[1, 2, 24, 20, 36]` -> 135 ids
- `motion_tokenizer_decode`: the same model, ids `[1, 135]` -> motion `[1, 2, 24, 20, 36]`
- `motion_condition_encoder`: 51 M, motion at latent size `[1, 2, 24, 40, 72]` -> `[1, 24, 256, 1024]`
- `unet`: the 3D U-Net (1.52 B), latents `[1, 24, 10, 40, 72]` + motion context `[1, 24, 256, 1024]`
- `unet_plain`: diffusers' `UNetSpatioTemporalConditionModel` with the same config and weights, the same
  latents + an SVD image embedding `[1, 1, 1024]` (what the motion context costs on top of plain SVD)
- `visual_tokenizer`: EVA-CLIP-g + token merger (1.42 B), image `[1, 3, 224, 224]` -> ids (arg-max keep)
- `keyframe_token_decoder`: 414 M, 128 code embeddings `[128, 32]` -> `[1, 256, 2048]` and `[1, 1280]`
- `keyframe_unet`: SDXL U-Net (2.57 B), latents `[1, 4, 128, 128]` (1024 x 1024) + the decoder's outputs
- `keyframe_vae_decode`: SDXL VAE (84 M), latents `[1, 4, 128, 128]` -> image `[1, 3, 1024, 1024]`
- `video_vae_encode`: SVD temporal VAE (98 M), keyframe `[1, 3, 320, 576]` -> latents `[1, 4, 40, 72]`
- `video_vae_decode`: the same model, latents `[24, 4, 40, 72]`, 8 frames at a time -> `[24, 3, 320, 576]`
- `llm_layer`: **one** Llama-2-7B decoder layer of 32 (202 M) + the final norm, embeddings `[1, 256, 4096]`

The tokenizers, the keyframe token decoder, the motion condition encoder and the 3D U-Net are the classes'
defaults, which are the released sizes (their parameter counts are those of the released checkpoint's
parameter manifest). The SDXL U-Net, SDXL VAE and SVD temporal VAE have no configuration in this project (the
converter reads the released `config.json` files): they are built from the public SDXL-base and SVD
configurations, whose parameter counts (2.57 B, 84 M, 98 M) are those of the released checkpoint. The 7B
language model does not fit float32 in 24 GB, so one of its 32 decoder layers runs at full width (the whole
model is about 32 times that, plus its 49412 x 4096 embedding and head); the video detokenizer's 320 x 576
frames give 40 x 72 latents, and the keyframe is rendered at SDXL's 1024 x 1024 (a 576 x 320 video's
760 x 1376 keyframe has the same number of pixels within 0.3%).

For every component it prints the first call (warm-up; with `--compile`, compilation included), the median
and minimum of `--repeat` further calls, the floating-point work of one call (counted by
`torch.utils.flop_counter` in the warm-up, eager runs only), the weights and the peak memory (CPU: `VmHWM`
of the subprocess; CUDA: `torch.cuda.max_memory_allocated`), and, where the original implementation was
measured on the development machine (CPU, float32, 2 threads), its time and the ratio. Default runs: CPU
float32, plus CUDA float32 and bfloat16 when a GPU is present.

`--compile` (`torch.compile` of the call) and `--channels-last` (4-D weights channels-last, 5-D ones
channels-last-3d) first run the plain eager model once and report the variant's largest deviation from it.
`--breakdown` times, in one extra eager call of `unet` / `unet_plain`, the motion routing
(`temporal_context`: reshapes and the nearest resize of the motion context) and the spatial and temporal
cross-attentions with their key/value projections. `--tiny` runs the project's tiny test configurations
instead (to check the script; its figures mean nothing).

Usage:

    python benchmarks/bench_models.py                                   # everything, released sizes
    python benchmarks/bench_models.py --components unet unet_plain --breakdown --unet-frames 4
    python benchmarks/bench_models.py --components motion_tokenizer_encode --threads 2 --repeat 5
    python benchmarks/bench_models.py --components unet --unet-frames 8 --unet-height 16 --unet-width 16 \\
        --compile --channels-last
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from bench_decompose import machine_description as cpu_machine_description
from bench_decompose import peak_rss_mb
from torch import nn

# The original implementation (jy0205/LaVIT, its own model code) on the 2-core development machine, CPU,
# float32, 2 threads, one clip, seconds per call; one process held all three (5.4 GB peak RSS). Its 3D U-Net
# runs the same diffusers blocks as ours (about equal at 24 x 16 x 16 latents); at the released latent size
# only one pair was measured, under load, so no figure is recorded for it.
ORIGINAL_SECONDS = {
    "motion_tokenizer_encode": 10.0,
    "motion_tokenizer_decode": 10.0,
    "motion_condition_encoder": 4.0,
}
ORIGINAL_PEAK_RSS_GB = 5.4
ORIGINAL_THREADS = 2

# Video-LaVIT generates 576 x 320 video (4 s clips of 24 frames at 6 fps)
RELEASED_VIDEO_FRAMES, RELEASED_VIDEO_HEIGHT, RELEASED_VIDEO_WIDTH = 24, 320, 576
# SVD's micro-conditioning of the video detokenizer: fps, motion bucket id, noise augmentation
VIDEO_TIME_IDS = (6.0, 127.0, 0.02)
VIDEO_DECODE_CHUNK_SIZE = 8
LLM_TOKENS = 256

# The public SDXL-base U-Net and VAE and SVD temporal VAE configurations (diffusers' names); their parameter
# counts are those of the released image_detokenizer/{unet,vae} and video_detokenizer/vae.
SDXL_UNET_CONFIG = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_TIME_IDS = (1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0)  # original size, crop top-left, target size
_VAE_BLOCKS = (128, 256, 512, 512)
SDXL_VAE_CONFIG = {
    "block_out_channels": _VAE_BLOCKS,
    "down_block_types": ("DownEncoderBlock2D",) * len(_VAE_BLOCKS),
    "up_block_types": ("UpDecoderBlock2D",) * len(_VAE_BLOCKS),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
}
SVD_VAE_CONFIG = {
    "block_out_channels": _VAE_BLOCKS,
    "down_block_types": ("DownEncoderBlock2D",) * len(_VAE_BLOCKS),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
}
VIDEO_VAE_SCALE_FACTOR = 2 ** (len(SVD_VAE_CONFIG["block_out_channels"]) - 1)


@dataclass(frozen=True)
class Sizes:
    """Input sizes of a run; ``None`` means the released one (or the tiny configuration's with ``tiny``)."""

    tiny: bool = False
    unet_frames: int | None = None
    unet_height: int | None = None
    unet_width: int | None = None
    llm_tokens: int = LLM_TOKENS


@dataclass
class Workload:
    """A model, the call to time (``call(model, *inputs)``), its inputs and a description of them."""

    model: nn.Module
    call: Callable[..., Any]
    inputs: tuple
    input_description: str


def _randn(*shape: int) -> torch.Tensor:
    """Standard normal tensor of ``shape`` (the caller seeds the global generator)."""
    return torch.randn(*shape)


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(map(str, tensor.shape)) + "]"


def _video_size(
    sizes: Sizes, default_frames: int, default_height: int, default_width: int
) -> tuple[int, int, int]:
    """(frames, latent height, latent width) of the video detokenizer's inputs."""
    return (
        sizes.unet_frames or default_frames,
        sizes.unet_height or default_height,
        sizes.unet_width or default_width,
    )


def _released_video_latent_size() -> tuple[int, int, int]:
    return (
        RELEASED_VIDEO_FRAMES,
        RELEASED_VIDEO_HEIGHT // VIDEO_VAE_SCALE_FACTOR,
        RELEASED_VIDEO_WIDTH // VIDEO_VAE_SCALE_FACTOR,
    )


def _tiny_video_pipeline():
    from diffusers_vlavit.tiny import build_tiny_video_pipeline

    return build_tiny_video_pipeline()


def _tiny_keyframe_pipeline():
    from diffusers_vlavit.tiny import build_tiny_keyframe_pipeline

    return build_tiny_keyframe_pipeline()


def _tiny_default_video_size() -> tuple[int, int, int]:
    from diffusers_vlavit.tiny import TINY_LATENT_SIZE

    return RELEASED_VIDEO_FRAMES, TINY_LATENT_SIZE, TINY_LATENT_SIZE


def motion_tokenizer(sizes: Sizes) -> nn.Module:
    """The released motion tokenizer (or the tiny one), random weights."""
    from transformers_vlavit import (
        VideoLaVITConfig,
        VideoLaVITMotionTokenizer,
        VideoLaVITMotionTokenizerConfig,
    )

    config = (
        VideoLaVITConfig.tiny().motion_tokenizer_config if sizes.tiny else VideoLaVITMotionTokenizerConfig()
    )
    return VideoLaVITMotionTokenizer(config)


def build_motion_tokenizer_encode(sizes: Sizes) -> Workload:
    """Motion tokenizer encode: motion ``[1, 2, 24, 20, 36]`` -> ids ``[1, 135]``."""
    model = motion_tokenizer(sizes)
    config = model.config
    motion = _randn(1, config.in_channels, config.num_frames, *config.grid_size)
    return Workload(model, lambda m, x: m.encode(x), (motion,), f"motion {_shape(motion)}")


def build_motion_tokenizer_decode(sizes: Sizes) -> Workload:
    """Motion tokenizer decode: ids ``[1, 135]`` -> motion ``[1, 2, 24, 20, 36]``."""
    model = motion_tokenizer(sizes)
    ids = torch.randint(model.config.codebook_size, (1, model.config.num_tokens))
    return Workload(model, lambda m, x: m.decode(x), (ids,), f"ids {_shape(ids)}")


def build_motion_condition_encoder(sizes: Sizes) -> Workload:
    """Motion condition encoder: motion at latent size ``[1, 2, frames, h, w]`` -> ``[1, frames, 256, 1024]``.

    The motion is given at the latent size, as the video pipeline does; the encoder resizes it to 16 x 16.
    """
    if sizes.tiny:
        model, default = _tiny_video_pipeline().motion_encoder, _tiny_default_video_size()
    else:
        from diffusers_vlavit import MotionConditionEncoder

        model, default = MotionConditionEncoder(), _released_video_latent_size()
    frames, height, width = _video_size(sizes, *default)
    motion = _randn(1, model.config.in_channels, frames, height, width)
    return Workload(model, lambda m, x: m(x), (motion,), f"motion {_shape(motion)}")


def video_unet(sizes: Sizes, plain: bool) -> nn.Module:
    """The released 3D U-Net (or the tiny one); ``plain``: diffusers' SVD U-Net with its config and weights.

    Both are built from the same seed: the plain one is ours' diffusers base class, given our weights
    (the parameter names and shapes are the same).
    """
    from diffusers import UNetSpatioTemporalConditionModel

    from diffusers_vlavit import UNetSpatioTemporalMotionModel

    ours = _tiny_video_pipeline().unet if sizes.tiny else UNetSpatioTemporalMotionModel()
    if not plain:
        return ours
    config = {key: value for key, value in ours.config.items() if not key.startswith("_")}
    config.pop("motion_grid_size")
    with torch.device("meta"):
        svd = UNetSpatioTemporalConditionModel(**config)
    svd.load_state_dict(ours.state_dict(), strict=True, assign=True)
    return svd


def _build_video_unet(sizes: Sizes, plain: bool) -> Workload:
    """3D U-Net forward: latents ``[1, frames, 10, h, w]`` and the motion context ``[1, frames, 256, 1024]``.

    ``plain``: diffusers' SVD U-Net, with one image embedding ``[1, 1, 1024]`` as context instead.
    """
    model = video_unet(sizes, plain)
    config = model.config
    frames, height, width = _video_size(
        sizes, *(_tiny_default_video_size() if sizes.tiny else _released_video_latent_size())
    )
    sample = _randn(1, frames, config.in_channels, height, width)
    if plain:
        context = _randn(1, 1, config.cross_attention_dim)
    else:
        cells = config.motion_grid_size[0] * config.motion_grid_size[1]
        context = _randn(1, frames, cells, config.cross_attention_dim)
    time_ids = torch.tensor([VIDEO_TIME_IDS])
    timestep = torch.tensor([1.0])

    def call(m, sample, timestep, context, time_ids):
        return m(sample, timestep, context, time_ids).sample

    return Workload(
        model,
        call,
        (sample, timestep, context, time_ids),
        f"latents {_shape(sample)}, context {_shape(context)}",
    )


def build_unet(sizes: Sizes) -> Workload:
    """Our motion-conditioned 3D U-Net (see :func:`_build_video_unet`)."""
    return _build_video_unet(sizes, plain=False)


def build_unet_plain(sizes: Sizes) -> Workload:
    """Diffusers' SVD U-Net with our config and weights (see :func:`_build_video_unet`)."""
    return _build_video_unet(sizes, plain=True)


def build_visual_tokenizer(sizes: Sizes) -> Workload:
    """Visual tokenizer: image ``[1, 3, 224, 224]`` -> ids of the kept tokens (arg-max keep decision)."""
    from transformers_vlavit import (
        VideoLaVITConfig,
        VideoLaVITVisualTokenizer,
        VideoLaVITVisualTokenizerConfig,
    )

    config = (
        VideoLaVITConfig.tiny().visual_tokenizer_config if sizes.tiny else VideoLaVITVisualTokenizerConfig()
    )
    model = VideoLaVITVisualTokenizer(config)
    pixel_values = _randn(1, 3, config.image_size, config.image_size)
    return Workload(model, lambda m, x: m.tokenize(x), (pixel_values,), f"image {_shape(pixel_values)}")


def keyframe_token_decoder(sizes: Sizes) -> nn.Module:
    """The released keyframe token decoder (or the tiny one), random weights."""
    if sizes.tiny:
        return _tiny_keyframe_pipeline().keyframe_decoder
    from diffusers_vlavit import KeyframeTokenDecoder

    return KeyframeTokenDecoder()


def build_keyframe_token_decoder(sizes: Sizes) -> Workload:
    """Keyframe token decoder: half of ``max_code_tokens`` code embeddings -> SDXL prompt embeddings."""
    model = keyframe_token_decoder(sizes)
    count = model.config.max_code_tokens // 2
    codes = torch.nn.functional.normalize(_randn(count, model.config.code_dim), dim=-1)
    counts = torch.tensor([count])
    return Workload(model, lambda m, c, n: m(c, n), (codes, counts), f"codes {_shape(codes)}")


def keyframe_unet_and_vae(sizes: Sizes) -> tuple[nn.Module, nn.Module]:
    """The keyframe detokenizer's SDXL U-Net and VAE at their released size (or the tiny ones)."""
    if sizes.tiny:
        pipeline = _tiny_keyframe_pipeline()
        return pipeline.unet, pipeline.vae
    from diffusers import AutoencoderKL, UNet2DConditionModel

    return UNet2DConditionModel(**SDXL_UNET_CONFIG), AutoencoderKL(**SDXL_VAE_CONFIG)


def keyframe_prompt_length(sizes: Sizes) -> int:
    """Tokens of the keyframe token decoder's ``prompt_embeds`` (its learned queries)."""
    if sizes.tiny:
        return _tiny_keyframe_pipeline().keyframe_decoder.config.num_queries
    with torch.device("meta"):
        return keyframe_token_decoder(sizes).config.num_queries


def vae_scale_factor(vae: nn.Module) -> int:
    """Pixels per latent cell along each side: 8 for the released VAEs and the tiny ones."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def build_keyframe_unet(sizes: Sizes) -> Workload:
    """SDXL U-Net forward: latents ``[1, 4, 128, 128]``, prompt ``[1, 256, 2048]``, pooled ``[1, 1280]``."""
    model, _ = keyframe_unet_and_vae(sizes)
    config = model.config
    pooled_dim = (
        config.projection_class_embeddings_input_dim - len(SDXL_TIME_IDS) * config.addition_time_embed_dim
    )
    sample = _randn(1, config.in_channels, config.sample_size, config.sample_size)
    prompt = _randn(1, keyframe_prompt_length(sizes), config.cross_attention_dim)
    pooled = _randn(1, pooled_dim)
    ids = torch.tensor([SDXL_TIME_IDS])
    timestep = torch.tensor([500.0])

    def call(m, sample, timestep, prompt, pooled, ids):
        return m(sample, timestep, prompt, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample

    return Workload(
        model,
        call,
        (sample, timestep, prompt, pooled, ids),
        f"latents {_shape(sample)}, prompt {_shape(prompt)}",
    )


def build_keyframe_vae_decode(sizes: Sizes) -> Workload:
    """SDXL VAE decode: latents ``[1, 4, 128, 128]`` -> image ``[1, 3, 1024, 1024]``."""
    _, model = keyframe_unet_and_vae(sizes)
    side = model.config.sample_size // vae_scale_factor(model)
    latents = _randn(1, model.config.latent_channels, side, side)
    return Workload(model, lambda m, z: m.decode(z).sample, (latents,), f"latents {_shape(latents)}")


def video_vae(sizes: Sizes) -> nn.Module:
    """The video detokenizer's temporal VAE at its released size (or the tiny one)."""
    if sizes.tiny:
        return _tiny_video_pipeline().vae
    from diffusers import AutoencoderKLTemporalDecoder

    return AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG)


def _video_vae_size(sizes: Sizes) -> tuple[int, int, int]:
    return _video_size(sizes, *(_tiny_default_video_size() if sizes.tiny else _released_video_latent_size()))


def build_video_vae_encode(sizes: Sizes) -> Workload:
    """Temporal VAE encode of the keyframe: ``[1, 3, 8 h, 8 w]`` -> latents ``[1, 4, h, w]`` (mode)."""
    model = video_vae(sizes)
    _, height, width = _video_vae_size(sizes)
    scale = vae_scale_factor(model)
    image = _randn(1, 3, height * scale, width * scale)
    return Workload(model, lambda m, x: m.encode(x).latent_dist.mode(), (image,), f"image {_shape(image)}")


def build_video_vae_decode(sizes: Sizes) -> Workload:
    """Temporal VAE decode, 8 frames at a time: latents ``[frames, 4, h, w]`` -> ``[frames, 3, 8 h, 8 w]``."""
    model = video_vae(sizes)
    frames, height, width = _video_vae_size(sizes)
    latents = _randn(frames, model.config.latent_channels, height, width)

    def call(m, latents):
        chunks = latents.split(VIDEO_DECODE_CHUNK_SIZE)
        return torch.cat([m.decode(chunk, num_frames=chunk.shape[0]).sample for chunk in chunks])

    return Workload(model, call, (latents,), f"latents {_shape(latents)}")


def build_llm_layer(sizes: Sizes) -> Workload:
    """One decoder layer (of 32) of the Llama-2-7B backbone + final norm: ``[1, tokens, 4096]`` embeddings."""
    from transformers import LlamaConfig, LlamaModel

    from transformers_vlavit import VideoLaVITConfig
    from transformers_vlavit.configuration_video_lavit import LLAMA_2_7B_DEFAULTS

    tiny = VideoLaVITConfig.tiny().text_config
    text = {key: getattr(tiny, key) if sizes.tiny else value for key, value in LLAMA_2_7B_DEFAULTS.items()}
    # one layer; a one-row embedding, since the inputs are embeddings (the real one is 49412 x 4096)
    text.update(num_hidden_layers=1, vocab_size=1)
    model = LlamaModel(LlamaConfig(**text, attn_implementation="sdpa"))
    embeddings = _randn(1, sizes.llm_tokens, model.config.hidden_size)

    def call(m, embeddings):
        return m(inputs_embeds=embeddings, use_cache=False).last_hidden_state

    layers = (tiny if sizes.tiny else LlamaConfig(**LLAMA_2_7B_DEFAULTS)).num_hidden_layers
    return Workload(model, call, (embeddings,), f"embeddings {_shape(embeddings)} (1 layer of {layers})")


COMPONENTS: dict[str, Callable[[Sizes], Workload]] = {
    "motion_tokenizer_encode": build_motion_tokenizer_encode,
    "motion_tokenizer_decode": build_motion_tokenizer_decode,
    "motion_condition_encoder": build_motion_condition_encoder,
    "unet": build_unet,
    "unet_plain": build_unet_plain,
    "visual_tokenizer": build_visual_tokenizer,
    "keyframe_token_decoder": build_keyframe_token_decoder,
    "keyframe_unet": build_keyframe_unet,
    "keyframe_vae_decode": build_keyframe_vae_decode,
    "video_vae_encode": build_video_vae_encode,
    "video_vae_decode": build_video_vae_decode,
    "llm_layer": build_llm_layer,
}


def to_channels_last(model: nn.Module) -> int:
    """Store 4-D parameters channels-last and 5-D ones channels-last-3d, in place.

    Returns:
        How many parameters were converted (0: the model has no convolutions).
    """
    changed = 0
    for parameter in model.parameters():
        layout = {4: torch.channels_last, 5: torch.channels_last_3d}.get(parameter.ndim)
        if layout is not None:
            parameter.data = parameter.data.contiguous(memory_format=layout)
            changed += 1
    return changed


def _move(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Tensors of ``value`` (nested tuples) on ``device``; floating ones in ``dtype``."""
    if isinstance(value, tuple):
        return tuple(_move(item, device, dtype) for item in value)
    if value.is_floating_point():
        return value.to(device=device, dtype=dtype)
    return value.to(device)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of an output: a tensor, or nested tuples/lists of them."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [tensor for item in value for tensor in _tensors(item)]


def max_abs_difference(a: Any, b: Any) -> float:
    """Largest absolute difference between two outputs of the same structure (inf if shapes differ)."""
    pairs = list(zip(_tensors(a), _tensors(b), strict=True))
    if any(x.shape != y.shape for x, y in pairs):
        return float("inf")
    return max((x.double() - y.double()).abs().max().item() for x, y in pairs)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(call: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds of one ``call()`` (synchronised on CUDA) and its output."""
    _synchronize(device)
    start = time.perf_counter()
    output = call()
    _synchronize(device)
    return time.perf_counter() - start, output


BREAKDOWN_ORDER = (
    "forward (timed, with hooks)",
    "motion routing",
    "spatial cross-attention",
    "spatial cross-attention key/value projections",
    "temporal cross-attention",
    "temporal cross-attention key/value projections",
)


class RoutingTimer:
    """Seconds spent in the motion routing and the cross-attentions of a spatio-temporal U-Net, by group.

    Groups: ``motion routing`` (``temporal_context``: reshapes and nearest resize of the motion context),
    ``spatial cross-attention`` and ``temporal cross-attention`` (the ``attn2`` modules of the spatial and
    temporal transformer blocks), and the key/value projections inside each of those.
    """

    def __init__(self, model: nn.Module, device: torch.device):
        from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

        self.device = device
        self.seconds: dict[str, float] = {}
        self.handles = []
        self.patched = []
        for transformer in (m for m in model.modules() if isinstance(m, TransformerSpatioTemporalModel)):
            for kind, blocks in (
                ("spatial", transformer.transformer_blocks),
                ("temporal", transformer.temporal_transformer_blocks),
            ):
                for block in blocks:
                    self._time_module(block.attn2, f"{kind} cross-attention")
                    self._time_module(block.attn2.to_k, f"  {kind} cross-attention key/value projections")
                    self._time_module(block.attn2.to_v, f"  {kind} cross-attention key/value projections")
            if hasattr(transformer, "temporal_context"):
                transformer.temporal_context = self._timed_function(
                    transformer.temporal_context, "motion routing"
                )
                self.patched.append(transformer)

    def _timed_function(self, function: Callable, group: str) -> Callable:
        def timed(*args, **kwargs):
            seconds, output = timed_call(lambda: function(*args, **kwargs), self.device)
            self.seconds[group] = self.seconds.get(group, 0.0) + seconds
            return output

        return timed

    def _time_module(self, module: nn.Module, group: str) -> None:
        starts = []

        def before(*_):
            _synchronize(self.device)
            starts.append(time.perf_counter())

        def after(*_):
            _synchronize(self.device)
            self.seconds[group] = self.seconds.get(group, 0.0) + time.perf_counter() - starts.pop()

        self.handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def remove(self) -> None:
        """Detach every hook and restore ``temporal_context``."""
        for handle in self.handles:
            handle.remove()
        for transformer in self.patched:
            del transformer.temporal_context


def count_flops(call: Callable[[], Any]) -> tuple[float, Any]:
    """Floating-point operations of one ``call()`` (``torch.utils.flop_counter``) and its output."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    # torch counts the CUDA attention kernels but not the CPU flash attention that SDPA runs here
    def cpu_flash_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention}
    counter = FlopCounterMode(display=False, custom_mapping=attention)
    with counter:
        output = call()
    return float(counter.get_total_flops()), output


def measure(name: str, options: dict) -> dict:
    """Run inside the subprocess: build one component, then time it; returns the figures as a dict.

    ``options``: ``device``, ``dtype``, ``threads``, ``repeat``, ``warmup``, ``compile``, ``channels_last``,
    ``breakdown``, ``check`` and the :class:`Sizes` fields.
    """
    if options["threads"]:
        torch.set_num_threads(options["threads"])
    device, dtype = torch.device(options["device"]), getattr(torch, options["dtype"])
    sizes = Sizes(**{field: options[field] for field in Sizes.__dataclass_fields__})
    torch.manual_seed(0)
    started = time.perf_counter()
    workload = COMPONENTS[name](sizes)
    # inference only; parameters without gradients also keep the FLOP counter's module hooks out of autograd
    model = workload.model.eval().requires_grad_(False).to(device=device, dtype=dtype)
    inputs = _move(workload.inputs, device, dtype)
    build_s = time.perf_counter() - started
    result = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_gb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1024**3,
        "inputs": workload.input_description,
        "threads": torch.get_num_threads(),
        "build_s": build_s,
        "rss_after_build_gb": peak_rss_mb() / 1024,
    }
    variant = options["compile"] or options["channels_last"]
    with torch.no_grad():
        reference = None
        if variant and options["check"]:
            _, reference = timed_call(lambda: workload.call(model, *inputs), device)
        if options["channels_last"]:
            result["channels_last_parameters"] = to_channels_last(model)
        call = torch.compile(workload.call) if options["compile"] else workload.call
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if options["compile"]:
            first_s, output = timed_call(lambda: call(model, *inputs), device)
        else:
            first_s, (flops, output) = timed_call(lambda: count_flops(lambda: call(model, *inputs)), device)
            result["tflop"] = flops / 1e12
        for _ in range(options["warmup"] - 1):
            timed_call(lambda: call(model, *inputs), device)
        runs = []
        for _ in range(options["repeat"]):
            seconds, output = timed_call(lambda: call(model, *inputs), device)
            runs.append(seconds)
        result.update(first_s=first_s, runs_s=runs)
        if reference is not None:
            result["max_abs_diff"] = max_abs_difference(output, reference)
            result["identical"] = all(
                torch.equal(a, b) for a, b in zip(_tensors(output), _tensors(reference))
            )
        if device.type == "cuda":
            result["peak_gb"] = torch.cuda.max_memory_allocated(device) / 1024**3
        if options["breakdown"] and name in ("unet", "unet_plain"):
            timer = RoutingTimer(model, device)
            total_s, _ = timed_call(lambda: workload.call(model, *inputs), device)
            timer.remove()
            result["breakdown_s"] = {"forward (timed, with hooks)": total_s, **timer.seconds}
    if device.type == "cpu":
        result["peak_gb"] = peak_rss_mb() / 1024
    return result


def run_measurement(name: str, options: dict) -> dict:
    """Measure one component in a fresh Python process; raises with its stderr if it fails."""
    command = [sys.executable, __file__, "--measure", name, "--options", json.dumps(options)]
    environment = dict(os.environ)
    if options["threads"]:
        environment["OMP_NUM_THREADS"] = str(options["threads"])
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def machine_description() -> str:
    """The machine (CPU, load, GPUs) and the versions of torch, diffusers and transformers."""
    import diffusers
    import transformers

    return (
        f"{cpu_machine_description()}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads by default), "
        f"diffusers {diffusers.__version__}, transformers {transformers.__version__}"
    )


def default_runs(devices: list[str] | None, dtypes: list[str] | None) -> list[tuple[str, str]]:
    """(device, dtype) pairs to run: the given ones crossed, else CPU float32 (+ CUDA float32 and bf16)."""
    if devices is None:
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    runs = []
    for device in devices:
        for dtype in dtypes or (["float32"] if device == "cpu" else ["float32", "bfloat16"]):
            runs.append((device, dtype))
    return runs


def compared_with_original(name: str, result: dict, options: dict) -> tuple[str, str]:
    """The original's seconds and how many times faster this run is.

    Only for full-size CPU float32 runs of a measured component; the ratio only at the original's 2 threads.
    """
    original = ORIGINAL_SECONDS.get(name)
    full_size = not options["tiny"] and not (name == "motion_condition_encoder" and _reduced(options))
    if original is None or not full_size or (options["device"], options["dtype"]) != ("cpu", "float32"):
        return "", ""
    if result["threads"] != ORIGINAL_THREADS:
        return f"{original:g}", f"({ORIGINAL_THREADS} thr)"
    return f"{original:g}", f"{original / statistics.median(result['runs_s']):.2f}x"


def _reduced(options: dict) -> bool:
    """Whether the video detokenizer's inputs are smaller than the released ones."""
    return any(options[field] is not None for field in ("unet_frames", "unet_height", "unet_width"))


def print_breakdown(name: str, breakdown: dict[str, float], median_s: float) -> None:
    """One line per group of :class:`RoutingTimer`, in seconds and as a share of the hooked forward."""
    total = breakdown["forward (timed, with hooks)"]
    print(f"  {name} breakdown (one extra call; eager median {median_s:.3f} s):")
    for group in sorted(breakdown, key=lambda group: BREAKDOWN_ORDER.index(group.strip())):
        seconds = breakdown[group]
        print(f"    {group:58} {seconds:9.3f} s {100 * seconds / total:6.1f}%")


def main() -> None:
    """Parse the command line, then run one measurement (``--measure``, in a child process) or all of them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--components", nargs="+", choices=list(COMPONENTS), default=list(COMPONENTS), metavar="NAME"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed calls after the warm-up (median, min)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed calls first (the first one is reported)"
    )
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when present")
    parser.add_argument(
        "--dtype", nargs="+", default=None, help="default: float32 on cpu, float32 and bfloat16 on cuda"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--unet-frames", type=int, default=None, help="video frames (released: 24)")
    parser.add_argument("--unet-height", type=int, default=None, help="latent height (released: 40)")
    parser.add_argument("--unet-width", type=int, default=None, help="latent width (released: 72)")
    parser.add_argument("--llm-tokens", type=int, default=LLM_TOKENS, help="sequence length of llm_layer")
    parser.add_argument("--compile", action="store_true", help="also run torch.compile'd calls")
    parser.add_argument("--channels-last", action="store_true", help="also run with channels-last weights")
    parser.add_argument(
        "--no-eager", action="store_true", help="with --compile/--channels-last: only the variants"
    )
    parser.add_argument("--no-check", action="store_true", help="variants: skip the eager reference call")
    parser.add_argument(
        "--breakdown", action="store_true", help="unet/unet_plain: time routing + cross-attention"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny test configurations (checks the script)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(measure(args.measure, json.loads(args.options))))
        return

    variants = [] if args.no_eager else [(False, False)]
    variants += [(True, False)] * args.compile + [(False, True)] * args.channels_last
    base = {
        "threads": args.threads,
        "repeat": args.repeat,
        "warmup": max(1, args.warmup),
        "check": not args.no_check,
        "breakdown": args.breakdown,
        **asdict(Sizes(args.tiny, args.unet_frames, args.unet_height, args.unet_width, args.llm_tokens)),
    }
    print(f"machine: {machine_description()}")
    header = (
        f"{'component':25} {'device':6} {'dtype':9} {'variant':13} {'thr':>3} {'params M':>8} {'first s':>8} "
        f"{'median s':>9} {'min s':>8} {'TFLOP':>6} {'weights GB':>10} {'peak GB':>8} {'vs eager':>9} "
        f"{'original s':>10} {'speed-up':>8}  inputs"
    )
    print(header)
    print("-" * len(header))
    timings: dict[tuple, tuple[float, float]] = {}  # (median, min) seconds
    for device, dtype in default_runs(args.device, args.dtype):
        for name in args.components:
            for compiled, channels_last in variants:
                options = {
                    **base,
                    "device": device,
                    "dtype": dtype,
                    "compile": compiled,
                    "channels_last": channels_last,
                }
                result = run_measurement(name, options)
                label = "compile" if compiled else "channels-last" if channels_last else "eager"
                if channels_last and not result.get("channels_last_parameters"):
                    label = "ch-last (n/a)"
                median = statistics.median(result["runs_s"])
                timings[(name, device, dtype, label)] = (median, min(result["runs_s"]))
                known, gain = compared_with_original(name, result, options)
                deviation = (
                    ""
                    if "max_abs_diff" not in result
                    else ("identical" if result["identical"] else f"{result['max_abs_diff']:.1e}")
                )
                tflop = f"{result['tflop']:.3g}" if "tflop" in result else ""
                print(
                    f"{name:25} {device:6} {dtype:9} {label:13} {result['threads']:3d} "
                    f"{result['parameters'] / 1e6:8.1f} {result['first_s']:8.3f} {median:9.3f} "
                    f"{min(result['runs_s']):8.3f} {tflop:>6} {result['weights_gb']:10.2f} "
                    f"{result['peak_gb']:8.2f} "
                    f"{deviation:>9} {known:>10} {gain:>8}  {result['inputs']}",
                    flush=True,
                )
                if "breakdown_s" in result:
                    print_breakdown(name, result["breakdown_s"], median)
        for label in ("eager", "compile", "channels-last"):
            ours, plain = (
                timings.get(("unet", device, dtype, label)),
                timings.get(("unet_plain", device, dtype, label)),
            )
            if ours and plain:
                print(
                    f"unet / unet_plain ({device} {dtype} {label}): {ours[0] / plain[0]:.3f} (medians), "
                    f"{ours[1] / plain[1]:.3f} (minima): the motion context's cost"
                )
    if any(name in ORIGINAL_SECONDS for name in args.components) and not args.tiny:
        print(
            f"original implementation: CPU float32, {ORIGINAL_THREADS} threads, {ORIGINAL_PEAK_RSS_GB} GB "
            "peak RSS (one process, its three measured components); speed-up = original s / median s"
        )
    print(f"load average at the end: {', '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
