"""Convert the released Video-LaVIT-v1 checkpoint into one Hugging Face folder.

The released folder (``rain1011/Video-LaVIT-v1``) is laid out for the reference code::

    language_model/             Llama-2 for generation: config.json, tokenizer.model, (sharded) weights
    language_model_sft/         Llama-2 for understanding, with model.visual_tokenizer.* and
                                model.motion_tokenizer.*, plus visual_weight.bin
    visual_tokenizer/           eva_vitg_psz14.bin, tokenizer_encoder.bin, highres_tokenizer_decoder.bin
    motion_tokenizer.bin
    image_detokenizer/          diffusers vae/, unet/ (SDXL), scheduler/
    video_detokenizer/          diffusers vae/, unet/ (also holds motion_encoder.*), scheduler/

:func:`convert_video_lavit` writes::

    <out>/                      VideoLaVITForCausalLM (generation weights, both tokenizers inside) + processor
    <out>/understanding/        the same classes with the understanding (SFT) weights + processor
    <out>/detokenizer/keyframe  VideoLaVITKeyframePipeline (keyframe decoder, SDXL U-Net, VAE, scheduler,
                                visual tokenizer)
    <out>/detokenizer/video     VideoLaVITVideoPipeline (3D U-Net, motion condition encoder, temporal VAE,
                                scheduler, motion tokenizer)

Each unit is converted, saved and released before the next one starts, and the source tensors are
memory-mapped, so the peak memory is about one unit in the target dtype (the language model with its
tokenizers). The Llama, U-Net, VAE and scheduler configurations come from the released ``config.json`` files;
the tokenizers, the keyframe decoder and the motion condition encoder have no released config (the reference
code fixes their sizes), so they use their classes' defaults, which are the released sizes, unless
``component_configs`` overrides them.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import AddedToken
from transformers import GenerationConfig, LlamaConfig, LlamaTokenizer
from transformers.tokenization_utils_base import generate_merges
from transformers.utils import logging

from ..configuration_motion_tokenizer import VideoLaVITMotionTokenizerConfig
from ..configuration_video_lavit import VideoLaVITConfig
from ..configuration_visual_tokenizer import VideoLaVITVisualTokenizerConfig
from ..image_processing_video_lavit import VideoLaVITImageProcessor
from ..modeling_motion_tokenizer import VideoLaVITMotionTokenizer
from ..modeling_video_lavit import VideoLaVITForCausalLM
from ..modeling_visual_tokenizer import VideoLaVITVisualTokenizer
from ..layout import (
    DETOKENIZER_FOLDER,
    EVA_VIT_FILE,
    IMAGE_DETOKENIZER_FOLDER,
    KEYFRAME_DECODER_FILE,
    LANGUAGE_MODEL_FOLDER,
    MOTION_TOKENIZER_FILE,
    SENTENCEPIECE_FILE,
    TOKENIZER_ENCODER_FILE,
    UNDERSTANDING_FOLDER,
    UNDERSTANDING_LANGUAGE_MODEL_FOLDER,
    UNDERSTANDING_VISUAL_WEIGHT_FILE,
    VIDEO_DETOKENIZER_FOLDER,
    VISUAL_TOKENIZER_FOLDER,
)
# the converted pipelines' folders, importable from here under their former names
from ..layout import KEYFRAME_FOLDER as KEYFRAME_PIPELINE_FOLDER
from ..layout import VIDEO_FOLDER as VIDEO_PIPELINE_FOLDER
from ..pipeline_text_to_video import write_text_to_video_task
from ..processing_video_lavit import VICUNA_V1_CHAT_TEMPLATE, VideoLaVITProcessor
from ..tokenizer_training import (
    IMAGE_PLACEHOLDER,
    TEXT_SPECIAL_TOKENS,
    UNK_TOKEN,
    VIDEO_PLACEHOLDER,
    layout_tokens,
)
from .keyframe_decoder import convert_keyframe_decoder_state_dict
from .language_model import convert_video_lavit_state_dict
from .motion_condition_encoder import PREFIX as MOTION_ENCODER_PREFIX
from .motion_condition_encoder import convert_motion_condition_encoder_state_dict
from .motion_tokenizer import convert_motion_tokenizer_state_dict
from .video_unet import convert_video_unet_state_dict
from .visual_tokenizer import (
    combine_released_visual_tokenizer_state_dicts,
    convert_visual_tokenizer_state_dict,
)

logger = logging.get_logger(__name__)

# weight file names tried in each folder, safetensors first; each may also be sharded (`<name>.index.json`)
_TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_INDEX_SUFFIX = ".index.json"
# bookkeeping fields of a saved LlamaConfig that are not part of the architecture
_LLAMA_BOOKKEEPING_KEYS = (
    "architectures",
    "_name_or_path",
    "transformers_version",
    "model_type",
    "dtype",
    "torch_dtype",
)
# keys of `component_configs`
COMPONENT_CONFIG_KEYS = (
    "visual_tokenizer",
    "motion_tokenizer",
    "keyframe_decoder",
    "motion_condition_encoder",
)


class IncompleteCheckpointError(FileNotFoundError):
    """The released folder lacks files the conversion needs; the message lists every one of them."""


class CheckpointMismatchError(ValueError):
    """The released files disagree with each other (e.g. tokenizer size vs. the Llama vocabulary)."""


class OutputFolderNotEmptyError(FileExistsError):
    """The output folder already holds files and `overwrite` was not set."""


@dataclass
class _ModelFiles:
    """Config and weight files of one saved model folder."""

    folder: Path
    config: Path
    weights: list[Path]


@dataclass
class ReleasedCheckpoint:
    """Resolved paths of every file of a released Video-LaVIT-v1 folder (see :func:`find_released_files`).

    ``image_detokenizer`` / ``video_detokenizer`` are the diffusers folders holding ``vae/``, ``unet/`` and
    ``scheduler/``; ``video_unet`` is the video U-Net's files (the image U-Net is read by diffusers itself).
    """

    root: Path
    language_model: _ModelFiles
    understanding_language_model: _ModelFiles
    sentencepiece_model: Path
    understanding_sentencepiece_model: Path
    eva_vit: Path
    tokenizer_encoder: Path
    keyframe_decoder: Path
    understanding_visual_weight: Path
    motion_tokenizer: Path
    video_unet: _ModelFiles
    image_detokenizer: Path
    video_detokenizer: Path


def _weight_files(folder: Path, names: tuple[str, ...], missing: list[str], root: Path) -> list[Path]:
    """The weight files of `folder` (single file or every shard of an index); records what is missing."""
    for name in names:
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}{_INDEX_SUFFIX}"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            absent = [shard for shard in shards if not (folder / shard).is_file()]
            missing.extend(str((folder / shard).relative_to(root)) for shard in absent)
            return [folder / shard for shard in shards]
    # the release has `.bin` files; safetensors and sharded indexes are accepted too
    missing.append(
        f"{folder.relative_to(root)}/{names[-1]} (or {', '.join(names[:-1])}, or a sharded *{_INDEX_SUFFIX})"
    )
    return []


def _require(path: Path, missing: list[str], root: Path) -> Path:
    """`path`; recorded in `missing` (relative to `root`) when it is not a file."""
    if not path.is_file():
        missing.append(str(path.relative_to(root)))
    return path


def _model_files(
    folder: Path, config_name: str, weights: tuple[str, ...], missing: list[str], root: Path
) -> _ModelFiles:
    """The config and weight files of one model folder; records what is missing."""
    if not folder.is_dir():
        missing.append(f"{folder.relative_to(root)}/")
        return _ModelFiles(folder, folder / config_name, [])
    return _ModelFiles(
        folder, _require(folder / config_name, missing, root), _weight_files(folder, weights, missing, root)
    )


def find_released_files(original_dir: str | os.PathLike) -> ReleasedCheckpoint:
    """Locate every file of a released Video-LaVIT-v1 folder, without reading any weight.

    Args:
        original_dir: the downloaded ``rain1011/Video-LaVIT-v1`` folder.

    Returns:
        The resolved paths.

    Raises:
        IncompleteCheckpointError: naming every missing file or folder (relative to `original_dir`).
    """
    root = Path(original_dir)
    if not root.is_dir():
        raise IncompleteCheckpointError(
            f"{root} is not a folder; pass the downloaded Video-LaVIT-v1 folder (e.g. "
            "`huggingface-cli download rain1011/Video-LaVIT-v1 --local-dir DIR`)."
        )
    missing: list[str] = []
    language_model = _model_files(
        root / LANGUAGE_MODEL_FOLDER, "config.json", _TRANSFORMERS_WEIGHTS, missing, root
    )
    understanding = _model_files(
        root / UNDERSTANDING_LANGUAGE_MODEL_FOLDER, "config.json", _TRANSFORMERS_WEIGHTS, missing, root
    )
    unets = {}
    for detokenizer in (IMAGE_DETOKENIZER_FOLDER, VIDEO_DETOKENIZER_FOLDER):
        folder = root / detokenizer
        _model_files(folder / "vae", "config.json", _DIFFUSERS_WEIGHTS, missing, root)
        unets[detokenizer] = _model_files(folder / "unet", "config.json", _DIFFUSERS_WEIGHTS, missing, root)
        _require(folder / "scheduler" / "scheduler_config.json", missing, root)
    visual = root / VISUAL_TOKENIZER_FOLDER
    files = ReleasedCheckpoint(
        root=root,
        language_model=language_model,
        understanding_language_model=understanding,
        sentencepiece_model=_require(language_model.folder / SENTENCEPIECE_FILE, missing, root),
        understanding_sentencepiece_model=_require(understanding.folder / SENTENCEPIECE_FILE, missing, root),
        eva_vit=_require(visual / EVA_VIT_FILE, missing, root),
        tokenizer_encoder=_require(visual / TOKENIZER_ENCODER_FILE, missing, root),
        keyframe_decoder=_require(visual / KEYFRAME_DECODER_FILE, missing, root),
        understanding_visual_weight=_require(
            understanding.folder / UNDERSTANDING_VISUAL_WEIGHT_FILE, missing, root
        ),
        motion_tokenizer=_require(root / MOTION_TOKENIZER_FILE, missing, root),
        video_unet=unets[VIDEO_DETOKENIZER_FOLDER],
        image_detokenizer=root / IMAGE_DETOKENIZER_FOLDER,
        video_detokenizer=root / VIDEO_DETOKENIZER_FOLDER,
    )
    if missing:
        listed = "\n  ".join(sorted(set(missing)))
        raise IncompleteCheckpointError(
            f"the released checkpoint at {root} is incomplete; missing:\n  {listed}\n"
            "Download the whole rain1011/Video-LaVIT-v1 repository into that folder and run the conversion "
            "again."
        )
    return files


def load_original_state_dict(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Read released weight files (``.bin`` pickles or ``.safetensors``) into one state dict.

    ``.bin`` files are read with ``torch.load(..., weights_only=True, mmap=True)``: tensors stay
    memory-mapped, so they cost no memory until used.

    Args:
        paths: the files of one model (all shards).

    Returns:
        Every tensor under its original name.
    """
    state_dict: dict[str, torch.Tensor] = {}
    for path in paths:
        if path.suffix == ".safetensors":
            state_dict.update(load_file(path, device="cpu"))
        else:
            state_dict.update(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    return state_dict


def _cast(state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating-point tensors in `dtype`; integer tensors (counters, ids) unchanged."""
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state_dict.items()}


def _materialize(
    build: Callable[[], torch.nn.Module], state_dict: dict[str, torch.Tensor]
) -> torch.nn.Module:
    """Build a module without allocating its random weights, then take `state_dict`'s tensors (strictly)."""
    with torch.device("meta"):
        module = build()
    module.load_state_dict(state_dict, strict=True, assign=True)
    return module.eval()


# ------------------------------------------------------------------------------------------------------------
# configurations
# ------------------------------------------------------------------------------------------------------------
def build_video_lavit_config(
    llama_config_path: str | os.PathLike, component_configs: Mapping[str, Mapping] | None = None
) -> VideoLaVITConfig:
    """The `VideoLaVITConfig` of a released language model folder.

    Args:
        llama_config_path: ``language_model/config.json`` (or the SFT one).
        component_configs: optional overrides of the tokenizer configs,
            ``{"visual_tokenizer": {...}, "motion_tokenizer": {...}}`` (released sizes by default).

    Returns:
        The composite config; its ``text_vocab_size`` is the Llama vocabulary minus the visual and motion
        tokens (32000 at the released size).

    Raises:
        CheckpointMismatchError: when the Llama vocabulary is too small for the tokenizers' codebooks.
    """
    component_configs = component_configs or {}
    llama = LlamaConfig.from_pretrained(Path(llama_config_path).parent)
    text_config = {k: v for k, v in llama.to_dict().items() if k not in _LLAMA_BOOKKEEPING_KEYS}
    visual_config = VideoLaVITVisualTokenizerConfig(
        **{"llm_hidden_size": llama.hidden_size, **component_configs.get("visual_tokenizer", {})}
    )
    motion_config = VideoLaVITMotionTokenizerConfig(**component_configs.get("motion_tokenizer", {}))
    # the layout tokens (image/motion start and end, both codebooks) follow the text vocabulary
    num_layout_tokens = len(layout_tokens(visual_config.codebook_size, motion_config.codebook_size))
    text_vocab_size = llama.vocab_size - num_layout_tokens
    if text_vocab_size < len(TEXT_SPECIAL_TOKENS):
        raise CheckpointMismatchError(
            f"the Llama vocabulary ({llama.vocab_size}) cannot hold {', '.join(TEXT_SPECIAL_TOKENS)} and the "
            f"{num_layout_tokens} layout tokens of {visual_config.codebook_size} visual and "
            f"{motion_config.codebook_size} motion codes; check component_configs' codebook sizes."
        )
    return VideoLaVITConfig(
        text_config=text_config,
        visual_tokenizer_config=visual_config.to_dict(),
        motion_tokenizer_config=motion_config.to_dict(),
        text_vocab_size=text_vocab_size,
    )


def _generation_config(folder: Path, config: VideoLaVITConfig) -> GenerationConfig:
    """The released ``generation_config.json`` when present, else the Llama special tokens.

    The released sampling defaults are kept: the reference's ``generate`` used them too.
    """
    text = config.text_config
    if not (folder / "generation_config.json").is_file():
        return GenerationConfig(
            bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id
        )
    generation_config = GenerationConfig.from_pretrained(folder)
    if generation_config.pad_token_id is None:
        # the reference pads with <unk>; batched generation needs a pad id
        generation_config.pad_token_id = text.pad_token_id
    return generation_config


# ------------------------------------------------------------------------------------------------------------
# tokenizer and processor
# ------------------------------------------------------------------------------------------------------------
def convert_released_tokenizer(
    sentencepiece_model: str | os.PathLike,
    config: VideoLaVITConfig,
    chat_template: str | None = VICUNA_V1_CHAT_TEMPLATE,
) -> LlamaTokenizer:
    """Turn the released SentencePiece model into a fast Llama tokenizer with the Video-LaVIT tokens.

    The pieces and their merge order are read with the ``sentencepiece`` library (no protobuf needed); the
    text part encodes like the SentencePiece model (byte fallback, ``<s>`` prepended). The layout tokens of
    ``config`` follow the text vocabulary, then the ``<image>``/``<video>`` placeholders.

    Args:
        sentencepiece_model: ``language_model/tokenizer.model`` (or the SFT one).
        config: gives the token layout; ``text_vocab_size`` must equal the number of SentencePiece pieces.
        chat_template: stored as the tokenizer's chat template (Vicuna-v1 by default).

    Returns:
        A ``LlamaTokenizer`` (tokenizers backend) of length ``config.vocab_size + 2``.

    Raises:
        ImportError: when ``sentencepiece`` is not installed.
        CheckpointMismatchError: when the piece count differs from ``config.text_vocab_size``.
    """
    try:
        import sentencepiece
    except ImportError as error:
        raise ImportError(
            "converting the released tokenizer needs sentencepiece: `pip install sentencepiece`"
        ) from error
    processor = sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_model))
    vocab = {processor.id_to_piece(index): index for index in range(processor.get_piece_size())}
    if len(vocab) != config.text_vocab_size:
        raise CheckpointMismatchError(
            f"{sentencepiece_model} has {len(vocab)} pieces but the language model's vocabulary leaves "
            f"{config.text_vocab_size} text ids; the tokenizer and config.json come from different "
            "checkpoints."
        )
    added_tokens = {
        config.text_vocab_size + offset: AddedToken(token, special=True, normalized=False)
        for offset, token in enumerate(
            layout_tokens(config.visual_codebook_size, config.motion_codebook_size)
        )
    }
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        # SentencePiece BPE merges in piece order, as transformers' own SentencePiece conversion does
        merges=generate_merges(vocab),
        unk_token=processor.id_to_piece(processor.unk_id()),
        bos_token=processor.id_to_piece(processor.bos_id()),
        eos_token=processor.id_to_piece(processor.eos_id()),
        pad_token=UNK_TOKEN,
        add_bos_token=True,
        add_eos_token=False,
        added_tokens_decoder=added_tokens,
        extra_special_tokens={"image_token": IMAGE_PLACEHOLDER, "video_token": VIDEO_PLACEHOLDER},
        model_max_length=config.text_config.max_position_embeddings,
        padding_side="left",
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    _check_token_layout(tokenizer, config)
    return tokenizer


def _check_token_layout(tokenizer: LlamaTokenizer, config: VideoLaVITConfig) -> None:
    """Raise `CheckpointMismatchError` unless the Llama specials and the layout tokens sit at their ids."""
    expected = {token: index for index, token in enumerate(TEXT_SPECIAL_TOKENS)}
    expected[IMAGE_PLACEHOLDER] = config.image_token_id
    expected[VIDEO_PLACEHOLDER] = config.video_token_id
    layout = layout_tokens(config.visual_codebook_size, config.motion_codebook_size)
    expected.update({layout[0]: config.image_start_token_id, layout[-1]: config.vocab_size - 1})
    found = dict(zip(expected, tokenizer.convert_tokens_to_ids(list(expected)), strict=True))
    if found != expected or len(tokenizer) != config.vocab_size + 2:
        raise CheckpointMismatchError(
            f"the converted tokenizer's ids {found} (length {len(tokenizer)}) differ from the layout "
            f"{expected} (length {config.vocab_size + 2}); check that the SentencePiece model has <unk>, "
            "<s>, </s> at ids 0, 1, 2, as Llama-2's does."
        )


# ------------------------------------------------------------------------------------------------------------
# the converted units
# ------------------------------------------------------------------------------------------------------------
def _visual_tokenizer_original(
    files: ReleasedCheckpoint, understanding: bool = False
) -> dict[str, torch.Tensor]:
    """The released visual tokenizer files under original names (with `visual_weight.bin` if `understanding`)."""
    return combine_released_visual_tokenizer_state_dicts(
        load_original_state_dict([files.eva_vit]),
        load_original_state_dict([files.tokenizer_encoder]),
        load_original_state_dict([files.understanding_visual_weight]) if understanding else None,
    )


def convert_released_video_unet_state_dict(
    unet_file: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split ``video_detokenizer/unet/diffusion_pytorch_model.bin`` into our two models' state dicts.

    Returns:
        ``(unet, motion_condition_encoder)``: the ``UNetSpatioTemporalMotionModel`` tensors and the
        ``MotionConditionEncoder`` tensors (from ``motion_encoder.*``), under our names.
    """
    encoder = {name: t for name, t in unet_file.items() if name.startswith(MOTION_ENCODER_PREFIX)}
    return convert_video_unet_state_dict(unet_file), convert_motion_condition_encoder_state_dict(encoder)


def convert_causal_lm(
    files: ReleasedCheckpoint, config: VideoLaVITConfig, understanding: bool, dtype: torch.dtype
) -> VideoLaVITForCausalLM:
    """Build the generation (``language_model/``) or understanding (``language_model_sft/``) causal LM.

    Generation: the Llama weights with the visual tokenizer files and ``motion_tokenizer.bin``. Understanding:
    the SFT Llama; its own ``model.visual_tokenizer.*`` / ``model.motion_tokenizer.*`` tensors are what the
    reference loads, and any tokenizer tensor they lack comes from the released tokenizer files (with
    ``visual_weight.bin``'s merger and ``vit_proj``).

    Returns:
        The model, strictly loaded, with memory-mapped tensors where no cast was needed.
    """
    language_model = load_original_state_dict(
        (files.understanding_language_model if understanding else files.language_model).weights
    )
    state_dict = convert_video_lavit_state_dict(
        language_model,
        _visual_tokenizer_original(files, understanding),
        load_original_state_dict([files.motion_tokenizer]),
        config,
    )
    model = _materialize(lambda: VideoLaVITForCausalLM(config), _cast(state_dict, dtype))
    folder = (files.understanding_language_model if understanding else files.language_model).folder
    model.generation_config = _generation_config(folder, config)
    return model


def _diffusers_component(kind: str, folder: Path, dtype: torch.dtype):
    """A diffusers model or scheduler of the released folder, loaded by its own class.

    diffusers reads ``.bin`` weights with ``torch.load(..., weights_only=True)``.
    """
    import diffusers

    config_name = "scheduler_config.json" if kind == "scheduler" else "config.json"
    class_name = json.loads((folder / config_name).read_text(encoding="utf-8"))["_class_name"]
    component_class = getattr(diffusers, class_name)
    if kind == "scheduler":
        return component_class.from_pretrained(folder)
    # say which format is there, so that diffusers does not first look for the missing one
    use_safetensors = any(folder.glob(f"{_DIFFUSERS_WEIGHTS[0].removesuffix('.safetensors')}*.safetensors"))
    return component_class.from_pretrained(folder, torch_dtype=dtype, use_safetensors=use_safetensors).eval()


def convert_keyframe_pipeline(
    files: ReleasedCheckpoint,
    config: VideoLaVITConfig,
    dtype: torch.dtype,
    keyframe_decoder_config: Mapping | None = None,
):
    """The keyframe (image) detokenizer as a ``VideoLaVITKeyframePipeline``.

    Args:
        files: the released files.
        config: gives the visual tokenizer configuration.
        dtype: target dtype of every model.
        keyframe_decoder_config: ``KeyframeTokenDecoder`` keyword arguments (released size by default).
    """
    from diffusers_vlavit import KeyframeTokenDecoder, VideoLaVITKeyframePipeline

    visual = convert_visual_tokenizer_state_dict(_visual_tokenizer_original(files))
    decoder = convert_keyframe_decoder_state_dict(load_original_state_dict([files.keyframe_decoder]))
    folder = files.image_detokenizer
    return VideoLaVITKeyframePipeline(
        keyframe_decoder=_materialize(
            lambda: KeyframeTokenDecoder(**(keyframe_decoder_config or {})), _cast(decoder, dtype)
        ),
        unet=_diffusers_component("unet", folder / "unet", dtype),
        vae=_diffusers_component("vae", folder / "vae", dtype),
        scheduler=_diffusers_component("scheduler", folder / "scheduler", dtype),
        visual_tokenizer=_materialize(
            lambda: VideoLaVITVisualTokenizer(config.visual_tokenizer_config), _cast(visual, dtype)
        ),
    )


def convert_video_pipeline(
    files: ReleasedCheckpoint,
    config: VideoLaVITConfig,
    dtype: torch.dtype,
    motion_condition_encoder_config: Mapping | None = None,
):
    """The video detokenizer as a ``VideoLaVITVideoPipeline``.

    The released U-Net file holds the 3D U-Net and, under ``motion_encoder.``, the motion condition encoder;
    both are converted from it. The U-Net's motion grid follows the encoder's.

    Args:
        files: the released files.
        config: gives the motion tokenizer configuration.
        dtype: target dtype of every model.
        motion_condition_encoder_config: ``MotionConditionEncoder`` keyword arguments (released size by
            default).
    """
    from diffusers_vlavit import (
        MotionConditionEncoder,
        UNetSpatioTemporalMotionModel,
        VideoLaVITVideoPipeline,
    )

    unet_weights, encoder_weights = convert_released_video_unet_state_dict(
        load_original_state_dict(files.video_unet.weights)
    )
    encoder = _materialize(
        lambda: MotionConditionEncoder(**(motion_condition_encoder_config or {})),
        _cast(encoder_weights, dtype),
    )
    unet_config = UNetSpatioTemporalMotionModel.load_config(files.video_unet.folder)
    unet = _materialize(
        lambda: UNetSpatioTemporalMotionModel.from_config(
            unet_config, motion_grid_size=encoder.config.grid_size
        ),
        _cast(unet_weights, dtype),
    )
    motion = convert_motion_tokenizer_state_dict(
        load_original_state_dict([files.motion_tokenizer]), config.motion_tokenizer_config
    )
    folder = files.video_detokenizer
    return VideoLaVITVideoPipeline(
        unet=unet,
        motion_encoder=encoder,
        vae=_diffusers_component("vae", folder / "vae", dtype),
        scheduler=_diffusers_component("scheduler", folder / "scheduler", dtype),
        motion_tokenizer=_materialize(
            lambda: VideoLaVITMotionTokenizer(config.motion_tokenizer_config), _cast(motion, dtype)
        ),
    )


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    """Create `out_dir`, emptying it first when `overwrite`; refuse a non-empty one otherwise."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputFolderNotEmptyError(
                f"{out_dir} is not empty; choose a new folder, or pass overwrite=True (--overwrite) to "
                "replace it."
            )
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def convert_video_lavit(
    original_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.bfloat16,
    max_shard_size: str | int = "5GB",
    progress: bool = True,
    component_configs: Mapping[str, Mapping] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert the released Video-LaVIT-v1 folder into one Hugging Face folder (see the module docstring).

    Every file is checked before anything is written. Weights are written as safetensors, sharded above
    `max_shard_size`.

    Args:
        original_dir: the downloaded ``rain1011/Video-LaVIT-v1`` folder.
        out_dir: the output folder (created; must be empty unless `overwrite`).
        dtype: dtype of every converted weight (the reference runs in bfloat16).
        max_shard_size: largest safetensors shard (``"5GB"``).
        progress: show a progress bar over the converted units.
        component_configs: overrides of the sizes that the release has no config file for, under the keys
            ``"visual_tokenizer"`` / ``"motion_tokenizer"`` (config fields) and ``"keyframe_decoder"`` /
            ``"motion_condition_encoder"`` (constructor arguments); the released sizes by default.
        overwrite: replace a non-empty `out_dir`.

    Returns:
        `out_dir`. Load with ``AutoModelForCausalLM.from_pretrained(out_dir)`` (``subfolder="understanding"``
        for question answering), ``AutoProcessor.from_pretrained(out_dir)`` and
        ``DiffusionPipeline.from_pretrained(out_dir / "detokenizer" / "keyframe", trust_remote_code=True)``
        (``"video"`` for the video detokenizer).

    Raises:
        IncompleteCheckpointError: listing every missing file; nothing is written.
        OutputFolderNotEmptyError: when `out_dir` holds files and `overwrite` is false.
        CheckpointMismatchError: when released files disagree (tokenizer vs. vocabulary size).
    """
    component_configs = dict(component_configs or {})
    unknown = set(component_configs) - set(COMPONENT_CONFIG_KEYS)
    if unknown:
        raise ValueError(
            f"unknown component_configs keys {sorted(unknown)}; use {list(COMPONENT_CONFIG_KEYS)}."
        )
    files = find_released_files(original_dir)
    out_dir = Path(out_dir)
    config = build_video_lavit_config(files.language_model.config, component_configs)
    understanding_config = build_video_lavit_config(
        files.understanding_language_model.config, component_configs
    )
    tokenizers = {
        out_dir: convert_released_tokenizer(files.sentencepiece_model, config),
        out_dir / UNDERSTANDING_FOLDER: convert_released_tokenizer(
            files.understanding_sentencepiece_model, understanding_config
        ),
    }
    _prepare_output(out_dir, overwrite)
    save = {"max_shard_size": max_shard_size, "safe_serialization": True}
    detokenizers = out_dir / DETOKENIZER_FOLDER

    def write_processors() -> None:
        for folder, tokenizer in tokenizers.items():
            VideoLaVITProcessor(
                image_processor=VideoLaVITImageProcessor(), tokenizer=tokenizer
            ).save_pretrained(folder)

    def write_generation_model() -> None:
        convert_causal_lm(files, config, False, dtype).save_pretrained(out_dir, max_shard_size=max_shard_size)
        write_text_to_video_task(out_dir)

    def write_understanding_model() -> None:
        model = convert_causal_lm(files, understanding_config, True, dtype)
        model.save_pretrained(out_dir / UNDERSTANDING_FOLDER, max_shard_size=max_shard_size)

    def write_keyframe_pipeline() -> None:
        pipeline = convert_keyframe_pipeline(files, config, dtype, component_configs.get("keyframe_decoder"))
        pipeline.save_pretrained(detokenizers / KEYFRAME_PIPELINE_FOLDER, **save)

    def write_video_pipeline() -> None:
        pipeline = convert_video_pipeline(
            files, config, dtype, component_configs.get("motion_condition_encoder")
        )
        pipeline.save_pretrained(detokenizers / VIDEO_PIPELINE_FOLDER, **save)
        # the end-to-end pipeline's code, which the text-to-video pipeline assembles the two into
        from diffusers_vlavit import VideoLaVITPipeline

        VideoLaVITPipeline.save_code(detokenizers)

    units = {
        "processor": write_processors,
        "generation model": write_generation_model,
        "understanding model": write_understanding_model,
        "keyframe detokenizer": write_keyframe_pipeline,
        "video detokenizer": write_video_pipeline,
    }
    try:
        with logging.tqdm(
            units.items(), desc="Converting Video-LaVIT", unit="part", disable=not progress
        ) as bar:
            for name, write in bar:
                bar.set_postfix_str(name)
                write()
                # the unit's tensors are gone before the next unit loads its own
                gc.collect()
                logger.info("converted the %s", name)
    except BaseException:
        # a half-written folder would load as a broken checkpoint
        logger.error("conversion failed; removing the partial output %s", out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return out_dir


__all__ = [
    "COMPONENT_CONFIG_KEYS",
    "CheckpointMismatchError",
    "IncompleteCheckpointError",
    "OutputFolderNotEmptyError",
    "ReleasedCheckpoint",
    "build_video_lavit_config",
    "convert_causal_lm",
    "convert_keyframe_pipeline",
    "convert_released_tokenizer",
    "convert_released_video_unet_state_dict",
    "convert_video_lavit",
    "convert_video_pipeline",
    "find_released_files",
    "load_original_state_dict",
]
