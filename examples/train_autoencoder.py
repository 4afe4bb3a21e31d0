"""Stage 1: train the detokenizers' autoencoders (diffusers `AutoencoderKL` / `AutoencoderKLTemporalDecoder`).

A model trained from scratch (the shapes world, a new domain) needs its own latent space before its
detokenizers can be trained: the keyframe detokenizer diffuses in the latents of an `AutoencoderKL` and the
video detokenizer in those of an `AutoencoderKLTemporalDecoder` (a per-frame encoder and a decoder with
temporal layers, as in Stable Video Diffusion). The loss is the usual VAE objective: reconstruction (L1 by
default, or L2) plus `--kl-weight` times the KL divergence of the posterior from a standard normal. No
perceptual or adversarial term.

* `--kind image`: frames one by one through an `AutoencoderKL`.
* `--kind video`: clips of `--num-frames` consecutive frames (at the decomposition's 6 fps) through an
  `AutoencoderKLTemporalDecoder`, decoded together (`num_frames=`), as the video pipeline decodes its latents
  in chunks of `decode_chunk_size` frames.

Start from `--config` (a JSON of the diffusers model's config, e.g. `examples/configs/shapes/vae_image.json`) or
continue a saved model (`--model-name-or-path`, e.g. `tiny-video-lavit/detokenizer/video/vae`). At the end
the latent `scaling_factor` is set to 1 / std of the training latents (as Stable Diffusion's was chosen), the
model is saved in `--output-dir` (`from_pretrained` loads it) and the PSNR of `--validation-videos` frames is
written to `<output-dir>/metrics.jsonl` (also every `--eval-steps`). `accelerate`: mixed precision, gradient
accumulation, `save_state` checkpoints (`--checkpointing-steps`) and `--resume-from-checkpoint latest|DIR`.

Example (the shapes world)::

    python examples/train_autoencoder.py --kind image --config examples/configs/shapes/vae_image.json \\
        --videos data/shapes/videos/train --validation-videos data/shapes/videos/validation \\
        --resolution 64 --output-dir outputs/shapes/vae_image --max-steps 2000 --learning-rate 1e-3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder
from torch.utils.data import DataLoader

# The scripts of this folder are run directly (``python examples/...``), which puts this folder on sys.path.
from detokenizer_training import (
    DashedArgumentParser,
    add_training_arguments,
    build_accelerator,
    media_files,
    parse_training_args,
    run_training,
    to_pixels,
)
from train_video_detokenizer import VIDEO_SUFFIXES, read_frames

from transformers_vlavit.video_decomposition import DEFAULT_FPS

MODEL_CLASSES = {"image": AutoencoderKL, "video": AutoencoderKLTemporalDecoder}
METRICS_FILE = "metrics.jsonl"


class AutoencoderTrainingError(ValueError):
    """The command line or the data do not allow the autoencoder to be trained."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of this script (every option also takes the underscored spelling)."""
    parser = DashedArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=tuple(MODEL_CLASSES), required=True,
                        help="image: AutoencoderKL (keyframes); video: AutoencoderKLTemporalDecoder (clips)")
    parser.add_argument("--config", help="JSON file of the diffusers model config (a new model)")
    parser.add_argument("--model_name_or_path", help="saved autoencoder folder to continue training")
    parser.add_argument("--videos", nargs="+", required=True, help="video files or folders of training videos")
    parser.add_argument("--validation_videos", nargs="*", default=[], help="held-out videos for the PSNR")
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help="rate at which frames are taken")
    parser.add_argument("--num_frames", type=int, default=8, help="--kind video: frames per training clip")
    parser.add_argument("--frames_per_video", type=int, default=8,
                        help="--kind image: frames taken evenly from each video")
    parser.add_argument("--reconstruction_loss", choices=("l1", "l2"), default="l1", help="pixel loss")
    parser.add_argument("--kl_weight", type=float, default=1e-6, help="weight of the KL divergence")
    parser.add_argument("--eval_steps", type=int, default=0, help="PSNR of the validation videos every N steps")
    parser.add_argument("--max_eval_samples", type=int, default=64, help="validation images or clips used")
    add_training_arguments(parser, train_batch_size=16)
    args = parse_training_args(parser, argv)
    if bool(args.config) == bool(args.model_name_or_path):
        parser.error("pass exactly one of --config (new model) and --model-name-or-path (continue one)")
    return args


def video_files(entries: list[str]) -> list[Path]:
    """Video files of `entries` (folders are searched for video suffixes)."""
    try:
        return media_files(entries, VIDEO_SUFFIXES)
    except FileNotFoundError as error:
        raise AutoencoderTrainingError(str(error)) from error


def samples_of_video(path: Path, args: argparse.Namespace) -> list[torch.Tensor]:
    """Training samples of one video: frames `[3, H, W]` (image) or clips `[T, 3, H, W]` (video), in [-1, 1]."""
    height, width = args.resolution
    if args.kind == "image":
        return list(to_pixels(read_frames(path, args.fps, evenly=args.frames_per_video), height, width))
    frames = to_pixels(read_frames(path, args.fps), height, width)
    if len(frames) < args.num_frames:
        return []
    return [frames[start : start + args.num_frames] for start in range(0, len(frames) - args.num_frames + 1, args.num_frames)]


def load_samples(entries: list[str], args: argparse.Namespace, limit: int | None = None) -> list[torch.Tensor]:
    """All samples of the videos of `entries` (at most `limit`, taken evenly)."""
    samples = [sample for path in video_files(entries) for sample in samples_of_video(path, args)]
    if limit is not None and len(samples) > limit:
        samples = [samples[index] for index in np.linspace(0, len(samples) - 1, limit).round().astype(int)]
    return samples


def build_model(args: argparse.Namespace):
    """The autoencoder to train: new from `--config`, or loaded from `--model-name-or-path`."""
    model_class = MODEL_CLASSES[args.kind]
    if args.model_name_or_path:
        return model_class.from_pretrained(args.model_name_or_path)
    return model_class.from_config(json.loads(Path(args.config).read_text()))


def reconstruct(model, pixels: torch.Tensor, kind: str, sample_posterior: bool, generator=None):
    """Encode and decode `pixels` (`[B, 3, H, W]` or `[B, T, 3, H, W]`); returns `(reconstruction, posterior)`."""
    flat = pixels.flatten(0, 1) if kind == "video" else pixels
    posterior = model.encode(flat).latent_dist
    latents = posterior.sample(generator) if sample_posterior else posterior.mode()
    if kind == "video":
        decoded = model.decode(latents, num_frames=pixels.shape[1]).sample
        return decoded.view(pixels.shape), posterior
    return model.decode(latents).sample, posterior


def autoencoder_loss(model, batch: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """Reconstruction + `kl_weight` * KL of one batch (KL summed over latent elements, averaged over samples)."""
    reconstruction, posterior = reconstruct(model, batch, args.kind, sample_posterior=True)
    if args.reconstruction_loss == "l1":
        pixel_loss = F.l1_loss(reconstruction.float(), batch.float())
    else:
        pixel_loss = F.mse_loss(reconstruction.float(), batch.float())
    return pixel_loss + args.kl_weight * posterior.kl().mean()


@torch.no_grad()
def psnr(model, samples: list[torch.Tensor], kind: str, batch_size: int, device) -> float:
    """Mean PSNR (dB, pixels in [0, 1]) of posterior-mode reconstructions of `samples`."""
    values = []
    for start in range(0, len(samples), batch_size):
        batch = torch.stack(samples[start : start + batch_size]).to(device)
        reconstruction, _ = reconstruct(model, batch, kind, sample_posterior=False)
        error = ((reconstruction.float().clamp(-1, 1) - batch) / 2).pow(2)
        per_sample = error.flatten(1).mean(dim=1).clamp_min(1e-10)
        values += (10 * torch.log10(1.0 / per_sample)).tolist()
    return float(np.mean(values))


@torch.no_grad()
def latent_scaling_factor(model, samples: list[torch.Tensor], kind: str, batch_size: int, device) -> float:
    """1 / std of the posterior-mode latents of `samples` (the diffusion models' unit-variance latents)."""
    latents = []
    for start in range(0, len(samples), batch_size):
        batch = torch.stack(samples[start : start + batch_size]).to(device)
        flat = batch.flatten(0, 1) if kind == "video" else batch
        latents.append(model.encode(flat).latent_dist.mode().float().flatten())
    return float(1.0 / torch.cat(latents).std().clamp_min(1e-6))


def train(args: argparse.Namespace) -> dict:
    """Train and save the autoencoder in `args.output_dir`; returns `{"losses": [...], "psnr": dB, ...}`."""
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    model = build_model(args).train()
    samples = load_samples(args.videos, args)
    if not samples:
        raise AutoencoderTrainingError(
            f"no training samples in {args.videos} (clips need {args.num_frames} frames at {args.fps} fps)"
        )
    validation = load_samples(args.validation_videos, args, limit=args.max_eval_samples)
    loader = DataLoader(
        samples,
        batch_size=args.train_batch_size,
        shuffle=True,
        # shuffled by the seedable sampler; this generator keeps iterators off the global RNG (see run_training)
        generator=torch.Generator().manual_seed(args.seed),
        collate_fn=torch.stack,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    metrics_path = output_dir / METRICS_FILE

    def log(record: dict) -> None:
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            with metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def on_step(step: int) -> None:
        if validation and args.eval_steps and step % args.eval_steps == 0:
            unwrapped = accelerator.unwrap_model(model).eval()
            value = psnr(unwrapped, validation, args.kind, args.train_batch_size, accelerator.device)
            unwrapped.train()
            log({"step": step, "validation_psnr": value})
            accelerator.print(f"step {step}: validation PSNR {value:.2f} dB")

    losses = run_training(
        args, accelerator, (model,), optimizer, loader, lambda batch: autoencoder_loss(model, batch, args), on_step
    )
    result = {"losses": losses}
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(model).eval()
        scale = latent_scaling_factor(
            trained, samples[: args.max_eval_samples * 4], args.kind, args.train_batch_size, accelerator.device
        )
        trained.register_to_config(scaling_factor=scale)
        trained.save_pretrained(output_dir)
        result["scaling_factor"] = scale
        if validation:
            result["psnr"] = psnr(trained, validation, args.kind, args.train_batch_size, accelerator.device)
        log({"final": True, "steps": len(losses), "first_loss": losses[0] if losses else None,
             "last_loss": losses[-1] if losses else None, **{k: v for k, v in result.items() if k != "losses"}})
        if losses:
            summary = f"autoencoder loss: first {losses[0]:.4f}, last {losses[-1]:.4f} ({len(losses)} steps)"
            if "psnr" in result:
                summary += f"; validation PSNR {result['psnr']:.2f} dB"
            accelerator.print(summary + f"; scaling_factor {scale:.4f}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse `argv` and train; exit code 2 on unusable input."""
    try:
        train(parse_args(argv))
    except AutoencoderTrainingError as error:
        print(f"train_autoencoder: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
