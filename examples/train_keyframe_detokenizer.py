"""Stage 1: train the Video-LaVIT keyframe detokenizer (token decoder + SDXL-style U-Net) with `accelerate`.

Each image is tokenized by the frozen visual tokenizer; the keyframe token decoder turns its code
embeddings into SDXL `prompt_embeds` / `pooled_prompt_embeds`, which condition the U-Net (with the
`add_time_ids` original size, crop top-left, target size). The loss is the denoising loss of the
pipeline's noise schedule (a `DDPMScheduler` built from its Euler-ancestral configuration, the SDXL
`scaled_linear` betas): uniform timesteps, `noisy = add_noise(latents, noise, t)`, mean squared error
against the noise (`epsilon`) or the velocity (`v_prediction`), as the schedule's `prediction_type`
says. Condition dropout (`--condition_dropout`) zeroes both embeddings of a sample: the pipeline's
unconditional branch for classifier-free guidance.

Trained: the keyframe token decoder and the U-Net. Frozen: the VAE and the visual tokenizer.

Data: image files or folders (`--images`), or the keyframes of `--synthetic_videos N` synthetic videos.
Start from a keyframe-detokenizer pipeline folder (`--pipeline`, for example
`tiny-video-lavit/detokenizer/keyframe`); the trained pipeline is saved to `--output_dir`. With
`accelerate`: mixed precision, gradient accumulation, `save_state` checkpoints (`--checkpointing_steps`)
and `--resume_from_checkpoint latest|DIR`.

Tiny run on CPU::

    vlavit tiny-checkpoint tiny-video-lavit
    python examples/train_keyframe_detokenizer.py --pipeline tiny-video-lavit/detokenizer/keyframe \\
        --synthetic_videos 4 --resolution 64 --output_dir outputs/keyframe_detokenizer_tiny --max_steps 30
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from PIL import Image
from torch.utils.data import DataLoader

from diffusers_vlavit.pipelines.pipeline_keyframe import VideoLaVITKeyframePipeline
from transformers_vlavit import decompose_video, write_synthetic_video

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STEP_FILE = "step.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class KeyframeDetokenizerTrainingError(ValueError):
    """The command line or the data do not allow the keyframe detokenizer to be trained."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pipeline", required=True, help="keyframe-detokenizer pipeline folder to start from"
    )
    parser.add_argument("--images", nargs="*", default=[], help="image files or folders of images")
    parser.add_argument(
        "--synthetic_videos", type=int, default=0, help="add the keyframes of N synthetic videos"
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--resolution", type=int, nargs="+", default=[64], help="image size: SIDE or HEIGHT WIDTH"
    )
    parser.add_argument("--max_steps", type=int, default=100)
    parser.add_argument("--train_batch_size", type=int, default=4)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--weight_decay", type=float, default=1e-2)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument(
        "--condition_dropout", type=float, default=0.1, help="chance to zero a sample's condition"
    )
    parser.add_argument(
        "--checkpointing_steps", type=int, default=0, help="save_state every N steps (0: never)"
    )
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    parser.add_argument("--logging_steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(args.resolution) == 1:
        args.resolution = args.resolution * 2
    return args


def training_images(args: argparse.Namespace) -> list[Image.Image]:
    """The RGB images of `--images` (folders are searched for image suffixes) and of the synthetic videos."""
    images = []
    for entry in map(Path, args.images):
        files = (
            sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if entry.is_dir()
            else [entry]
        )
        images += [Image.open(path).convert("RGB") for path in files]
    for index in range(args.synthetic_videos):
        video = write_synthetic_video(width=160, height=128, duration=4.5, fps=6, seed=args.seed + index)
        images += decompose_video(video).keyframes
    if not images:
        raise KeyframeDetokenizerTrainingError("no images: pass --images or --synthetic_videos.")
    return images


def collate(images: list[Image.Image], height: int, width: int) -> dict:
    """Images -> `pixels [B, 3, H, W]` in [-1, 1] for the VAE and the PIL images for the visual tokenizer."""
    arrays = [np.asarray(image.resize((width, height), Image.BICUBIC)) for image in images]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return {"pixels": pixels, "images": list(images)}


def denoising_loss(
    pipe: VideoLaVITKeyframePipeline,
    unet,
    keyframe_decoder,
    noise_scheduler: DDPMScheduler,
    batch: dict,
    args: argparse.Namespace,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The denoising loss of one batch (see the module docstring); `unet` / `keyframe_decoder` are the
    (possibly `accelerate`-wrapped) trained modules, `pipe` provides the frozen VAE and visual tokenizer."""
    pixels = batch["pixels"]
    device, batch_size = pixels.device, pixels.shape[0]
    with torch.no_grad():
        latents = pipe.vae.encode(pixels.to(pipe.vae.dtype)).latent_dist.sample(generator)
        latents = latents.float() * pipe.vae.config.scaling_factor
        code_embeddings, token_counts = pipe.embed_token_ids(
            pipe.tokenize_images(batch["images"], device), device
        )
    prompt_embeds, pooled_prompt_embeds = keyframe_decoder(code_embeddings, token_counts)
    keep = (torch.rand(batch_size, generator=generator, device=device) >= args.condition_dropout).float()
    prompt_embeds = prompt_embeds * keep.view(-1, 1, 1)
    pooled_prompt_embeds = pooled_prompt_embeds * keep.view(-1, 1)

    noise = torch.randn(latents.shape, generator=generator, device=device)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator, device=device
    )
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    height, width = pixels.shape[-2:]
    add_time_ids = pipe.get_add_time_ids(
        (height, width), (0, 0), (height, width), pooled_prompt_embeds.shape[-1], torch.float32
    )
    prediction = unet(
        noisy,
        timesteps,
        encoder_hidden_states=prompt_embeds,
        added_cond_kwargs={
            "text_embeds": pooled_prompt_embeds,
            "time_ids": add_time_ids.to(device).repeat(batch_size, 1),
        },
        return_dict=False,
    )[0]
    return F.mse_loss(prediction.float(), target)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The `checkpoint-N` folder of `output_dir` with the largest N, if any."""
    found = [
        (int(m.group(1)), p)
        for p in output_dir.glob("checkpoint-*")
        if (m := CHECKPOINT_PATTERN.match(p.name))
    ]
    return max(found)[1] if found else None


def train(args: argparse.Namespace) -> list[float]:
    """Train and save the pipeline in `args.output_dir`; returns the loss of every optimizer step run."""
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        project_dir=str(output_dir),
    )
    set_seed(args.seed)
    # the saved components name their classes as code files of the folder
    pipe = VideoLaVITKeyframePipeline.from_pretrained(args.pipeline, trust_remote_code=True)
    pipe.vae.requires_grad_(False).eval().to(accelerator.device)
    pipe.visual_tokenizer.requires_grad_(False).eval().to(accelerator.device)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    unet, keyframe_decoder = pipe.unet.train(), pipe.keyframe_decoder.train()

    height, width = args.resolution
    loader = DataLoader(
        training_images(args),
        batch_size=args.train_batch_size,
        shuffle=True,
        collate_fn=lambda images: collate(images, height, width),
    )
    parameters = list(unet.parameters()) + list(keyframe_decoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    unet, keyframe_decoder, optimizer, loader = accelerator.prepare(unet, keyframe_decoder, optimizer, loader)

    step = 0
    resume = (
        latest_checkpoint(output_dir)
        if args.resume_from_checkpoint == "latest"
        else args.resume_from_checkpoint
    )
    if resume is not None:
        accelerator.load_state(str(resume))
        step = json.loads((Path(resume) / STEP_FILE).read_text())["step"]
    batches_per_epoch = len(loader) // args.gradient_accumulation_steps or 1
    losses = []
    while step < args.max_steps:
        # after a resume, skip as many batches of the current epoch as were consumed before the checkpoint
        skip = (step % batches_per_epoch) * args.gradient_accumulation_steps
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            with accelerator.accumulate(unet, keyframe_decoder):
                loss = denoising_loss(pipe, unet, keyframe_decoder, noise_scheduler, batch, args)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            losses.append(accelerator.reduce(loss.detach(), "mean").item())
            if step % args.logging_steps == 0:
                accelerator.print(f"step {step}: loss {losses[-1]:.4f}")
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                folder = output_dir / f"checkpoint-{step}"
                accelerator.save_state(str(folder))
                if accelerator.is_main_process:
                    (folder / STEP_FILE).write_text(json.dumps({"step": step}))
            if step >= args.max_steps:
                break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        pipe.unet = accelerator.unwrap_model(unet).eval()
        pipe.keyframe_decoder = accelerator.unwrap_model(keyframe_decoder).eval()
        pipe.save_pretrained(output_dir)
        if losses:
            print(
                f"keyframe detokenizer loss: first {losses[0]:.4f}, last {losses[-1]:.4f} "
                f"({len(losses)} steps)"
            )
    return losses


def main(argv: list[str] | None = None) -> list[float]:
    """Entry point: parse `argv` and train."""
    return train(parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
