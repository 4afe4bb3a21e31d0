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
  guidance in the pipeline;
- motion shift (`--motion_shift_probability`, default 0, off): a sample's motion grid is rolled by a random
  whole-cell offset in both axes while its keyframe and frames stay, so the U-Net learns to move what the
  keyframe shows along the motion even where the motion field was placed elsewhere. At generation the
  keyframe is rendered from visual codes that need not pin down where the object is, while the language
  model places the motion where it expects it; without this the U-Net moves the object to the motion.

Trained: the U-Net and the motion condition encoder. Frozen: the VAE and the motion tokenizer. The motion
condition is the ground-truth motion grid of each clip in the detokenizer's scale, resized to the latent size
as the pipeline does: `decompose_video(...).motion_vectors` (the motion tokenizer's input scale) divided by
the pipeline's `motion_tokenizer.config.motion_scale_factor`, the factor `decode_for_detokenizer` divides
decoded motion by at generation (10 in the release, so `motion_vectors_unscaled`; 10 without a tokenizer).

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
import sys
from pathlib import Path

import av
import numpy as np
import torch
from accelerate.utils import set_seed
from PIL import Image
from torch.utils.data import DataLoader

# The scripts of this folder are run directly (``python examples/...``), which puts this folder on sys.path.
from detokenizer_training import (
    DashedArgumentParser,
    add_training_arguments,
    build_accelerator,
    parse_training_args,
    run_training,
    to_pixels,
)

from diffusers_vlavit.pipelines.pipeline_video import VideoLaVITVideoPipeline
from transformers_vlavit import decompose_video
from transformers_vlavit.synthetic_video import write_training_sample_video
from transformers_vlavit.video_decomposition import DEFAULT_FPS, DEFAULT_MAX_CLIPS, LLM_MOTION_SCALE

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov"}


class VideoDetokenizerTrainingError(ValueError):
    """The command line or the data do not allow the video detokenizer to be trained."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of this script (every option also takes the dashed spelling, `--output-dir`)."""
    parser = DashedArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="video-detokenizer pipeline folder to start from")
    parser.add_argument("--videos", nargs="*", default=[], help="video files or folders of videos")
    parser.add_argument("--synthetic_videos", type=int, default=0, help="add this many synthetic videos")
    parser.add_argument(
        "--fps", type=int, default=DEFAULT_FPS, help="frame rate of the decomposition and of the clips"
    )
    parser.add_argument("--max_clips", type=int, default=DEFAULT_MAX_CLIPS, help="most clips per video")
    parser.add_argument("--p_mean", type=float, default=0.7, help="mean of log(sigma)")
    parser.add_argument("--p_std", type=float, default=1.6, help="standard deviation of log(sigma)")
    parser.add_argument("--condition_dropout", type=float, default=0.1, help="chance to drop every condition")
    parser.add_argument("--noise_aug_strength", type=float, default=0.02, help="keyframe noise augmentation")
    parser.add_argument("--motion_bucket_id", type=int, default=127)
    parser.add_argument(
        "--motion_shift_probability",
        type=float,
        default=0.0,
        help="chance to roll a sample's motion grid by a random offset (keyframe and frames unchanged)",
    )
    add_training_arguments(parser, train_batch_size=1)
    args = parse_training_args(parser, argv)
    if not 0.0 <= args.motion_shift_probability <= 1.0:
        raise VideoDetokenizerTrainingError(
            f"--motion_shift_probability must lie in [0, 1], got {args.motion_shift_probability}"
        )
    return args


def read_frames(path: str | Path, fps: float, evenly: int | None = None) -> list[Image.Image]:
    """The video's frames resampled to `fps`: frame `i` is the source frame on screen at time `i / fps`.

    With `evenly=N`, only N of those frames, evenly spaced (first and last included), are returned. Only the
    frames returned are converted to RGB (the conversion costs far more than decoding small frames).
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(float(frame.time or 0.0), frame) for frame in container.decode(stream)]
    if not decoded:
        raise VideoDetokenizerTrainingError(f"{path} has no video frames.")
    start, end = decoded[0][0], decoded[-1][0]
    sources, source = [], 0
    for index in range(round((end - start) * fps) + 1):
        while source + 1 < len(decoded) and decoded[source + 1][0] - start <= index / fps + 1e-6:
            source += 1
        sources.append(source)
    if evenly is not None:
        chosen = np.linspace(0, len(sources) - 1, min(evenly, len(sources))).round().astype(int)
        sources = [sources[index] for index in chosen]
    images = {index: decoded[index][1].to_image() for index in set(sources)}
    return [images[index] for index in sources]


def video_clips(
    path: str | Path, args: argparse.Namespace, motion_scale_factor: float = LLM_MOTION_SCALE
) -> list[dict[str, torch.Tensor]]:
    """The training clips of one video: `frames [T, 3, H, W]` in [-1, 1] and `motion [2, T, 20, 36]`
    (detokenizer scale: the decomposition's `motion_vectors / motion_scale_factor`); a clip running past the
    end repeats the last frame."""
    decomposition = decompose_video(path, fps=args.fps, max_clips=args.max_clips)
    frames = read_frames(path, decomposition.fps)
    motion = decomposition.motion_vectors / motion_scale_factor
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
            paths += sorted(p for p in entry.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            paths.append(entry)
    folder = Path(args.output_dir) / "synthetic_videos"
    for index in range(args.synthetic_videos):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"synthetic_{index}.mp4"
        if not path.exists():
            write_training_sample_video(path, fps=args.fps, seed=args.seed + index)
        paths.append(path)
    if not paths:
        raise VideoDetokenizerTrainingError("no videos: pass --videos or --synthetic_videos.")
    return paths


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack clips: `frames [B, T, 3, H, W]`, `motion [B, 2, T, 20, 36]`."""
    return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


def shift_motion(
    motion: torch.Tensor, probability: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Roll each sample's motion grid by a random whole-cell offset with chance `probability`.

    Args:
        motion: `[B, 2, T, h, w]` motion grids.
        probability: chance per sample to be rolled; the offsets are uniform over `[0, h)` x `[0, w)`, so a
            rolled field keeps every vector (what leaves one edge enters at the other) but not its place.
        generator: the random source of the choices and the offsets.

    Returns:
        `[B, 2, T, h, w]`: `motion` itself when `probability <= 0`, else a new tensor in which samples not
        chosen (or drawn offset (0, 0)) are unchanged.
    """
    if probability <= 0:
        return motion
    batch_size, height, width = motion.shape[0], motion.shape[-2], motion.shape[-1]
    device = motion.device
    chosen = torch.rand(batch_size, generator=generator, device=device) < probability
    rows = torch.randint(height, (batch_size,), generator=generator, device=device)
    columns = torch.randint(width, (batch_size,), generator=generator, device=device)
    shifted = []
    for sample, pick, row, column in zip(motion, chosen.tolist(), rows.tolist(), columns.tolist()):
        shifted.append(sample.roll((row, column), dims=(-2, -1)) if pick else sample)
    return torch.stack(shifted)


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
        motion = shift_motion(motion, args.motion_shift_probability, generator)
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


def train(args: argparse.Namespace) -> list[float]:
    """Train and save the pipeline in `args.output_dir`; returns the loss of every optimizer step run."""
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    # the saved components name their classes as code files of the folder
    pipe = VideoLaVITVideoPipeline.from_pretrained(args.pipeline, trust_remote_code=True)
    pipe.vae.requires_grad_(False).eval()
    if pipe.motion_tokenizer is not None:
        pipe.motion_tokenizer.requires_grad_(False).eval()
    pipe.vae.to(accelerator.device)
    unet, motion_encoder = pipe.unet.train(), pipe.motion_encoder.train()

    # the scale the pipeline's motion tokenizer decodes to at generation, so training and sampling agree
    tokenizer = pipe.motion_tokenizer
    factor = LLM_MOTION_SCALE if tokenizer is None else tokenizer.config.motion_scale_factor
    clips = [clip for path in video_paths(args) for clip in video_clips(path, args, factor)]
    loader = DataLoader(
        clips,
        batch_size=args.train_batch_size,
        shuffle=True,
        # shuffled by the seedable sampler; this generator keeps iterators off the global RNG (see run_training)
        generator=torch.Generator().manual_seed(args.seed),
        collate_fn=collate,
    )
    parameters = list(unet.parameters()) + list(motion_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    unet, motion_encoder, optimizer, loader = accelerator.prepare(unet, motion_encoder, optimizer, loader)
    losses = run_training(
        args,
        accelerator,
        (unet, motion_encoder),
        optimizer,
        loader,
        lambda batch: denoising_loss(pipe, unet, motion_encoder, batch, args),
    )

    if accelerator.is_main_process:
        pipe.unet = accelerator.unwrap_model(unet).eval()
        pipe.motion_encoder = accelerator.unwrap_model(motion_encoder).eval()
        pipe.save_pretrained(args.output_dir)
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
