"""Stage 1: train the Video-LaVIT video detokenizer (motion-conditioned 3D U-Net) with `accelerate`.

The denoiser learns Stable Video Diffusion's EDM objective in the parameterisation of the video
pipeline's `EulerDiscreteScheduler` (`v_prediction`, continuous timesteps):

- noise level: `log(sigma) ~ N(p_mean, p_std^2)` (SVD fine-tuning: 0.7, 1.6);
- `x_sigma = x_0 + sigma * noise` on the VAE latents `x_0` (`latent_dist.sample() * scaling_factor`);
- the U-Net sees `c_in * x_sigma` (`c_in = 1 / sqrt(sigma^2 + 1)`, the scheduler's `scale_model_input`),
  the keyframe latent (noise-augmented keyframe, `latent_dist.mode()`, repeated over the frames) and the
  motion at latent size (2 channels), plus the motion condition encoder's features in its
  cross-attentions and the added time ids (fps, motion bucket, noise augmentation); its timestep is
  `c_noise = 0.25 * log(sigma)`;
- the denoised estimate is `c_skip * x_sigma + c_out * F` with `c_skip = 1 / (sigma^2 + 1)` and
  `c_out = -sigma / sqrt(sigma^2 + 1)` (what the scheduler's `step` computes for `v_prediction`), and the
  loss is `lambda(sigma) * |D - x_0|^2` with EDM's weight `lambda = (sigma^2 + 1) / sigma^2`;
- condition dropout: with probability `--condition_dropout` a sample loses its keyframe latent, its motion
  channels and its motion features together, exactly the unconditional branch of classifier-free
  guidance in the pipeline.

Trained: the U-Net and the motion condition encoder. Frozen: the VAE and the motion tokenizer. The motion
condition is the ground-truth motion grid of each clip in the detokenizer's scale
(`decompose_video(...).motion_vectors_unscaled`), resized to the latent size as the pipeline does.

Data: video files (`--videos DIR_OR_FILES`) decomposed with `decompose_video`; each clip's frames are
the source frames resampled to `--fps` (the decomposition's frame rate) from the clip's first frame;
`--synthetic_videos N` writes N synthetic videos instead.

Start from a video-detokenizer pipeline folder (`--pipeline`, e.g. `tiny-video-lavit/detokenizer/video`
or a converted release); the trained pipeline is saved to `--output_dir`. With `accelerate`: mixed
precision (`--mixed_precision bf16`), gradient accumulation, `save_state` checkpoints every
`--checkpointing_steps` and `--resume_from_checkpoint latest|DIR`.

Tiny run on CPU::

    vlavit tiny-checkpoint tiny-video-lavit
    python examples/train_video_detokenizer.py --pipeline tiny-video-lavit/detokenizer/video \\
        --synthetic_videos 2 --resolution 64 --output_dir outputs/video_detokenizer_tiny --max_steps 30
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import av
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from PIL import Image
from torch.utils.data import DataLoader

from diffusers_vlavit.pipelines.pipeline_video import VideoLaVITVideoPipeline
from transformers_vlavit import decompose_video, write_synthetic_video

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STEP_FILE = "step.json"


class VideoDetokenizerTrainingError(ValueError):
    """The command line or the data do not allow the video detokenizer to be trained."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="video-detokenizer pipeline folder to start from")
    parser.add_argument("--videos", nargs="*", default=[], help="video files or folders of videos")
    parser.add_argument("--synthetic_videos", type=int, default=0, help="add this many synthetic videos")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--resolution", type=int, nargs="+", default=[64], help="frame size: SIDE or HEIGHT WIDTH"
    )
    parser.add_argument("--fps", type=int, default=6, help="frame rate of the decomposition and of the clips")
    parser.add_argument("--max_clips", type=int, default=8, help="most clips per video")
    parser.add_argument("--max_steps", type=int, default=100)
    parser.add_argument("--train_batch_size", type=int, default=1)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--weight_decay", type=float, default=1e-2)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--p_mean", type=float, default=0.7, help="mean of log(sigma)")
    parser.add_argument("--p_std", type=float, default=1.6, help="standard deviation of log(sigma)")
    parser.add_argument("--condition_dropout", type=float, default=0.1, help="chance to drop every condition")
    parser.add_argument("--noise_aug_strength", type=float, default=0.02, help="keyframe noise augmentation")
    parser.add_argument("--motion_bucket_id", type=int, default=127)
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


def read_frames(path: str | Path, fps: float) -> list[Image.Image]:
    """The video's frames resampled to `fps`: frame `i` is the source frame on screen at time `i / fps`."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(float(frame.time or 0.0), frame.to_image()) for frame in container.decode(stream)]
    if not decoded:
        raise VideoDetokenizerTrainingError(f"{path} has no video frames.")
    start, end = decoded[0][0], decoded[-1][0]
    frames, source = [], 0
    for index in range(round((end - start) * fps) + 1):
        while source + 1 < len(decoded) and decoded[source + 1][0] - start <= index / fps + 1e-6:
            source += 1
        frames.append(decoded[source][1])
    return frames


def to_pixels(images: list[Image.Image], height: int, width: int) -> torch.Tensor:
    """PIL frames -> `[frames, 3, height, width]` in [-1, 1] (bicubic resize)."""
    arrays = [np.asarray(image.convert("RGB").resize((width, height), Image.BICUBIC)) for image in images]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return pixels / 127.5 - 1.0


def video_clips(path: str | Path, args: argparse.Namespace) -> list[dict[str, torch.Tensor]]:
    """The training clips of one video: `frames [T, 3, H, W]` in [-1, 1] and `motion [2, T, 20, 36]`
    (detokenizer scale); a clip running past the end repeats the last frame."""
    decomposition = decompose_video(path, fps=args.fps, max_clips=args.max_clips)
    frames = read_frames(path, decomposition.fps)
    motion = decomposition.motion_vectors_unscaled
    clip_frames = motion.shape[2]
    height, width = args.resolution
    clips = []
    for clip, start in enumerate(decomposition.keyframe_indices):
        chosen = [frames[min(index, len(frames) - 1)] for index in range(start, start + clip_frames)]
        clips.append({"frames": to_pixels(chosen, height, width), "motion": motion[clip].float()})
    return clips


def video_paths(args: argparse.Namespace) -> list[Path]:
    """The files of `--videos` (folders are searched for video suffixes) and the synthetic videos."""
    paths = []
    for entry in map(Path, args.videos):
        if entry.is_dir():
            paths += sorted(
                p for p in entry.iterdir() if p.suffix.lower() in {".mp4", ".mkv", ".webm", ".avi", ".mov"}
            )
        else:
            paths.append(entry)
    folder = Path(args.output_dir) / "synthetic_videos"
    for index in range(args.synthetic_videos):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"synthetic_{index}.mp4"
        if not path.exists():
            write_synthetic_video(
                path, width=160, height=128, duration=4.5, fps=args.fps, seed=args.seed + index
            )
        paths.append(path)
    if not paths:
        raise VideoDetokenizerTrainingError("no videos: pass --videos or --synthetic_videos.")
    return paths


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack clips: `frames [B, T, 3, H, W]`, `motion [B, 2, T, 20, 36]`."""
    return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


def edm_preconditioning(sigmas: torch.Tensor) -> dict[str, torch.Tensor]:
    """EDM coefficients of `EulerDiscreteScheduler`'s `v_prediction` for `sigmas [B]`, each `[B, 1, 1, 1, 1]`:
    `c_in`, `c_skip`, `c_out`, the loss weight and the U-Net timestep `c_noise [B]`."""
    sigma = sigmas.view(-1, 1, 1, 1, 1)
    return {
        "c_in": 1 / (sigma**2 + 1).sqrt(),
        "c_skip": 1 / (sigma**2 + 1),
        "c_out": -sigma / (sigma**2 + 1).sqrt(),
        "weight": (sigma**2 + 1) / sigma**2,
        "c_noise": 0.25 * sigmas.log(),
    }


def denoising_loss(
    pipe: VideoLaVITVideoPipeline,
    unet,
    motion_encoder,
    batch: dict[str, torch.Tensor],
    args: argparse.Namespace,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The EDM denoising loss of one batch (see the module docstring); `unet` / `motion_encoder` are the
    (possibly `accelerate`-wrapped) trained modules, `pipe` provides the frozen VAE and the helpers."""
    frames, motion = batch["frames"], batch["motion"]
    batch_size, num_frames = frames.shape[:2]
    device, dtype = frames.device, frames.dtype
    height, width = frames.shape[-2:]
    vae = pipe.vae
    with torch.no_grad():
        flat = frames.flatten(0, 1).to(vae.dtype)
        latents = vae.encode(flat).latent_dist.sample(generator) * vae.config.scaling_factor
        latents = latents.view(batch_size, num_frames, *latents.shape[1:]).float()
        keyframes = frames[:, 0] + args.noise_aug_strength * torch.randn(
            frames[:, 0].shape, generator=generator, device=device, dtype=dtype
        )
        image_latents = vae.encode(keyframes.to(vae.dtype)).latent_dist.mode().float()
        motion_latents = pipe.motion_at_latent_size(None, motion, height, width, device).float()

    keep = torch.rand(batch_size, generator=generator, device=device) >= args.condition_dropout
    keep = keep.float()
    motion_features = motion_encoder(motion_latents * keep.view(-1, 1, 1, 1, 1))
    motion_features = motion_features * keep.view(-1, 1, 1, 1)
    image_latents = (image_latents * keep.view(-1, 1, 1, 1)).unsqueeze(1).expand(-1, num_frames, -1, -1, -1)
    motion_latents = motion_latents.transpose(1, 2) * keep.view(-1, 1, 1, 1, 1)

    log_sigma = args.p_mean + args.p_std * torch.randn(batch_size, generator=generator, device=device)
    sigmas = log_sigma.exp()
    coefficients = edm_preconditioning(sigmas)
    noise = torch.randn(latents.shape, generator=generator, device=device)
    noisy = latents + sigmas.view(-1, 1, 1, 1, 1) * noise
    model_input = torch.cat([coefficients["c_in"] * noisy, image_latents, motion_latents], dim=2)
    added_time_ids = pipe.get_add_time_ids(
        args.fps, args.motion_bucket_id, args.noise_aug_strength, batch_size, torch.float32
    ).to(device)
    output = unet(
        model_input,
        coefficients["c_noise"],
        encoder_hidden_states=motion_features,
        added_time_ids=added_time_ids,
        return_dict=False,
    )[0]
    denoised = coefficients["c_skip"] * noisy + coefficients["c_out"] * output.float()
    return (coefficients["weight"] * (denoised - latents) ** 2).mean()


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
    pipe = VideoLaVITVideoPipeline.from_pretrained(args.pipeline, trust_remote_code=True)
    pipe.vae.requires_grad_(False).eval()
    if pipe.motion_tokenizer is not None:
        pipe.motion_tokenizer.requires_grad_(False).eval()
    pipe.vae.to(accelerator.device)
    unet, motion_encoder = pipe.unet.train(), pipe.motion_encoder.train()

    clips = [clip for path in video_paths(args) for clip in video_clips(path, args)]
    loader = DataLoader(
        clips, batch_size=args.train_batch_size, shuffle=True, collate_fn=collate, drop_last=False
    )
    parameters = list(unet.parameters()) + list(motion_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    unet, motion_encoder, optimizer, loader = accelerator.prepare(unet, motion_encoder, optimizer, loader)

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
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
            with accelerator.accumulate(unet, motion_encoder):
                loss = denoising_loss(pipe, unet, motion_encoder, batch, args)
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
        pipe.motion_encoder = accelerator.unwrap_model(motion_encoder).eval()
        pipe.save_pretrained(output_dir)
        if losses:
            print(
                f"video detokenizer loss: first {losses[0]:.4f}, last {losses[-1]:.4f} ({len(losses)} steps)"
            )
    return losses


def main(argv: list[str] | None = None) -> list[float]:
    """Entry point: parse `argv` and train."""
    return train(parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
