"""Assemble a complete Video-LaVIT checkpoint folder from separately trained stage-1 parts.

Training from scratch produces the parts one by one: a visual tokenizer (`train_visual_tokenizer.py`), a motion
tokenizer (`train_motion_tokenizer.py`), the two autoencoders (`train_autoencoder.py`). This script puts them
together with a new (random) language model and new detokenizer networks of the sizes given in `--config`, and a
text tokenizer trained on `--text-corpus`, into the layout every other script and entry point reads:

    <output-dir>/                       VideoLaVITForCausalLM (both tokenizers inside), processor, tokenizer,
                                        chat template: the starting point of `pretrain.py`
    <output-dir>/detokenizer/keyframe   keyframe token decoder + SDXL-style U-Net (new), the trained AutoencoderKL,
                                        scheduler, the visual tokenizer: the start of `train_keyframe_detokenizer.py`
    <output-dir>/detokenizer/video      motion condition encoder + 3D U-Net (new), the trained temporal VAE,
                                        scheduler, the motion tokenizer: the start of `train_video_detokenizer.py`

`--config` is a JSON object with
    text_config        Llama fields of the language model (hidden_size, num_hidden_layers, ...)
    text_vocab_size    text tokens of the tokenizer trained on the corpus
    keyframe_decoder   `KeyframeTokenDecoder` arguments (code_dim and max_code_tokens come from the tokenizer)
    keyframe_unet      `UNet2DConditionModel` config (cross-attention and added-embedding widths are derived)
    motion_encoder     `MotionConditionEncoder` arguments
    video_unet         `UNetSpatioTemporalMotionModel` config (cross-attention width and frames are derived)
    generation         optional defaults of the language model's `generation_config` (for example
                       `min_keyframe_tokens`, the fewest codes a generated keyframe may have)
(see `examples/configs/shapes/model.json`). Text corpus files: `.txt` (one text per line), `.csv` / `.jsonl` /
`.json` (every string in a `caption`, `question`, `answer`, `value` or `prompt` field).

Example::

    python examples/assemble_checkpoint.py --config examples/configs/shapes/model.json \\
        --visual-tokenizer outputs/shapes/visual_tokenizer --motion-tokenizer outputs/shapes/motion_tokenizer \\
        --keyframe-vae outputs/shapes/vae_image --video-vae outputs/shapes/vae_video \\
        --text-corpus data/shapes/train_video_text.csv data/shapes/train_instructions.json \\
        --output-dir outputs/shapes/assembled
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, UNet2DConditionModel
from transformers import GenerationConfig

from diffusers_vlavit.models.keyframe_decoder import KeyframeTokenDecoder
from diffusers_vlavit.models.motion_condition_encoder import MotionConditionEncoder
from diffusers_vlavit.models.unet_spatio_temporal_motion import UNetSpatioTemporalMotionModel
from diffusers_vlavit.pipelines.pipeline_keyframe import VideoLaVITKeyframePipeline
from diffusers_vlavit.pipelines.pipeline_video import VideoLaVITVideoPipeline
from diffusers_vlavit.pipelines.pipeline_video_lavit import VideoLaVITPipeline
from diffusers_vlavit.tiny import tiny_edm_scheduler, tiny_sdxl_scheduler
from transformers_vlavit import (
    VideoLaVITConfig,
    VideoLaVITForCausalLM,
    VideoLaVITImageProcessor,
    VideoLaVITMotionTokenizer,
    VideoLaVITProcessor,
    VideoLaVITVisualTokenizer,
    VICUNA_V1_CHAT_TEMPLATE,
    TokenizerTrainingError,
    train_video_lavit_tokenizer,
)
from transformers_vlavit.layout import DETOKENIZER_FOLDER, KEYFRAME_FOLDER, VIDEO_FOLDER
from transformers_vlavit.pipeline_text_to_video import write_text_to_video_task

TEXT_FIELDS = ("caption", "question", "answer", "value", "prompt")
# SDXL conditions on 6 micro-conditioning ids (sizes and crop), SVD on 3 (fps, motion bucket, noise level)
SDXL_TIME_IDS, SVD_TIME_IDS = 6, 3


class AssemblyError(ValueError):
    """The parts or the config do not fit together."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="JSON file of the new parts' sizes (see the docstring)")
    parser.add_argument("--visual-tokenizer", required=True, help="trained VideoLaVITVisualTokenizer folder")
    parser.add_argument("--motion-tokenizer", required=True, help="trained VideoLaVITMotionTokenizer folder")
    parser.add_argument("--keyframe-vae", required=True, help="trained AutoencoderKL folder")
    parser.add_argument("--video-vae", required=True, help="trained AutoencoderKLTemporalDecoder folder")
    parser.add_argument("--text-corpus", nargs="+", required=True, help="files the text tokenizer is trained on")
    parser.add_argument("--output-dir", required=True, help="folder of the assembled checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of every new weight")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    return parser.parse_args(argv)


def _strings(value) -> Iterator[str]:
    """Every string under the text fields of a JSON value (nested lists and objects included)."""
    if isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in TEXT_FIELDS and isinstance(item, str):
                yield item.replace("<video>", "").replace("<image>", "").strip()
            elif isinstance(item, (list, dict)):
                yield from _strings(item)


def corpus_texts(paths: list[str]) -> list[str]:
    """The texts of the corpus files (see the module docstring)."""
    texts = []
    for path in map(Path, paths):
        if not path.is_file():
            raise AssemblyError(f"{path}: no such corpus file")
        if path.suffix == ".txt":
            texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                texts += [row[key] for row in csv.DictReader(handle) for key in TEXT_FIELDS if row.get(key)]
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                texts += list(_strings(json.loads(line)))
        elif path.suffix == ".json":
            texts += list(_strings(json.loads(path.read_text(encoding="utf-8"))))
        else:
            raise AssemblyError(f"{path}: corpus files are .txt, .csv, .jsonl or .json")
    if not texts:
        raise AssemblyError("the text corpus is empty")
    return texts


def build_language_model(
    config: dict, visual: VideoLaVITVisualTokenizer, motion: VideoLaVITMotionTokenizer, seed: int
) -> VideoLaVITForCausalLM:
    """A new language model around the trained tokenizers (`vit_proj` is new when the LLM width changes)."""
    text_config = dict(config["text_config"])
    visual_config = visual.config.to_dict()
    visual_config["llm_hidden_size"] = text_config["hidden_size"]
    model_config = VideoLaVITConfig(
        text_config=text_config,
        visual_tokenizer_config=visual_config,
        motion_tokenizer_config=motion.config.to_dict(),
        text_vocab_size=config["text_vocab_size"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoLaVITForCausalLM(model_config).eval()
    visual_state = visual.state_dict()
    if visual.config.llm_hidden_size != text_config["hidden_size"]:
        # vit_proj is trained with the language model (understanding), not in stage 1: keep the new one
        visual_state = {k: v for k, v in visual_state.items() if not k.startswith("vit_proj.")}
    missing, unexpected = model.visual_tokenizer.load_state_dict(visual_state, strict=False)
    if unexpected or [name for name in missing if not name.startswith("vit_proj.")]:
        raise AssemblyError(f"visual tokenizer does not fit: missing {missing}, unexpected {unexpected}")
    model.motion_tokenizer.load_state_dict(motion.state_dict())
    model.generation_config = GenerationConfig(
        bos_token_id=model_config.text_config.bos_token_id,
        eos_token_id=model_config.text_config.eos_token_id,
        pad_token_id=model_config.text_config.pad_token_id,
        **config.get("generation", {}),
    )
    return model


def build_keyframe_pipeline(config: dict, model: VideoLaVITForCausalLM, vae: AutoencoderKL, seed: int):
    """New keyframe token decoder and U-Net on the trained VAE and the model's visual tokenizer."""
    decoder_args = dict(config["keyframe_decoder"])
    token_config = model.visual_tokenizer.config
    unet_config = dict(config["keyframe_unet"])
    embed_dims = decoder_args.get("prompt_embed_dims", (768, 1280))
    pooled = decoder_args.get("pooled_projection_dim", 1280)
    time_dim = unet_config.setdefault("addition_time_embed_dim", 256)
    unet_config.update(
        in_channels=vae.config.latent_channels,
        out_channels=vae.config.latent_channels,
        cross_attention_dim=sum(embed_dims),
        addition_embed_type="text_time",
        projection_class_embeddings_input_dim=SDXL_TIME_IDS * time_dim + pooled,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        keyframe_decoder = KeyframeTokenDecoder(
            code_dim=token_config.code_dim, max_code_tokens=token_config.num_patches, **decoder_args
        )
        unet = UNet2DConditionModel(**unet_config)
    return VideoLaVITKeyframePipeline(
        keyframe_decoder=keyframe_decoder,
        unet=unet,
        vae=vae,
        scheduler=tiny_sdxl_scheduler(),
        visual_tokenizer=model.visual_tokenizer,
    )


def build_video_pipeline(config: dict, model: VideoLaVITForCausalLM, vae: AutoencoderKLTemporalDecoder, seed: int):
    """New motion condition encoder and 3D U-Net on the trained temporal VAE and the model's motion tokenizer."""
    encoder_args = dict(config["motion_encoder"])
    unet_config = dict(config["video_unet"])
    time_dim = unet_config.setdefault("addition_time_embed_dim", 256)
    unet_config.update(
        in_channels=2 * vae.config.latent_channels + 2,
        out_channels=vae.config.latent_channels,
        cross_attention_dim=encoder_args["out_channels"],
        projection_class_embeddings_input_dim=SVD_TIME_IDS * time_dim,
        num_frames=model.motion_tokenizer.config.num_frames,
        motion_grid_size=tuple(encoder_args.get("grid_size", (16, 16))),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        motion_encoder = MotionConditionEncoder(**encoder_args)
        unet = UNetSpatioTemporalMotionModel(**unet_config)
    return VideoLaVITVideoPipeline(
        unet=unet,
        motion_encoder=motion_encoder,
        vae=vae,
        scheduler=tiny_edm_scheduler(),
        motion_tokenizer=model.motion_tokenizer,
    )


def assemble(args: argparse.Namespace) -> Path:
    """Write the assembled checkpoint (see the module docstring); returns its folder."""
    output_dir = Path(args.output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        if not args.overwrite:
            raise AssemblyError(f"{output_dir} is not empty; pass --overwrite to replace it")
        shutil.rmtree(output_dir)
    config = json.loads(Path(args.config).read_text())
    visual = VideoLaVITVisualTokenizer.from_pretrained(args.visual_tokenizer)
    motion = VideoLaVITMotionTokenizer.from_pretrained(args.motion_tokenizer)
    model = build_language_model(config, visual, motion, args.seed)
    try:
        tokenizer = train_video_lavit_tokenizer(
            corpus_texts(args.text_corpus),
            text_vocab_size=model.config.text_vocab_size,
            visual_codebook_size=model.config.visual_codebook_size,
            motion_codebook_size=model.config.motion_codebook_size,
            chat_template=VICUNA_V1_CHAT_TEMPLATE,
        )
    except TokenizerTrainingError as error:
        raise AssemblyError(f"text tokenizer: {error} (text_vocab_size is set in --config)") from error
    if (tokenizer.image_token_id, tokenizer.video_token_id) != (model.config.image_token_id, model.config.video_token_id):
        raise AssemblyError("the trained tokenizer's placeholder ids differ from the model's token layout")
    # keyframes are resized to the visual tokenizer's own input size (224 at full size)
    side = model.config.visual_tokenizer_config.image_size
    image_processor = VideoLaVITImageProcessor(size={"height": side, "width": side})
    processor = VideoLaVITProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    write_text_to_video_task(output_dir)
    detokenizer = output_dir / DETOKENIZER_FOLDER
    build_keyframe_pipeline(config, model, AutoencoderKL.from_pretrained(args.keyframe_vae), args.seed).save_pretrained(
        detokenizer / KEYFRAME_FOLDER
    )
    build_video_pipeline(
        config, model, AutoencoderKLTemporalDecoder.from_pretrained(args.video_vae), args.seed
    ).save_pretrained(detokenizer / VIDEO_FOLDER)
    # the end-to-end pipeline's code: the text-to-video pipeline assembles the two detokenizers with it
    VideoLaVITPipeline.save_code(detokenizer)
    return output_dir


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 2 when the parts do not fit."""
    try:
        folder = assemble(parse_args(argv))
    except AssemblyError as error:
        print(f"assemble_checkpoint: {error}", file=sys.stderr)
        return 2
    print(f"assembled checkpoint written to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
