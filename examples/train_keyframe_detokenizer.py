"""Stage 1: train the Video-LaVIT keyframe detokenizer (token decoder + SDXL-style U-Net) with `accelerate`.

Each image is tokenized by the frozen visual tokenizer; the keyframe token decoder turns its code
embeddings into SDXL `prompt_embeds` / `pooled_prompt_embeds`, which condition the U-Net (with the
`add_time_ids` original size, crop top-left, target size). The loss is the denoising loss of the
pipeline's noise schedule (a `DDPMScheduler` built from its Euler-ancestral configuration, the SDXL
`scaled_linear` betas): timesteps drawn uniformly, or with `--timestep_sampling logit_normal` from
SD3's logit-normal density (`--logit_mean` above 0 draws noisier timesteps more often, where the condition
decides colour and layout), `noisy = add_noise(latents, noise, t)`, mean squared error
against the noise (`epsilon`) or the velocity (`v_prediction`), as the schedule's `prediction_type`
says. Condition dropout (`--condition_dropout`) zeroes both embeddings of a sample: the pipeline's
unconditional branch for classifier-free guidance.

`--whiten_code_embeddings N` starts the token decoder's input projection from a whitening of the code
embeddings of N training keyframes: a small tokenizer's l2-normalised codes can lie within 0.005 of each
other around one dominant direction, so a plain linear projection sees every keyframe as nearly the same
input; `W' = W P`, `b' = b - W P mean` with `P = Cov^(-1/2)` (eigenvalues floored at `--whitening_floor` of
their mean) gives the decoder's first layer the codes' differences at unit scale (the same layer, new values).

Trained: the keyframe token decoder and the U-Net. Frozen: the VAE and the visual tokenizer.

Data: image files or folders (`--images`), the clip keyframes of `datasets/prepare_video_text.py` folders
(`--dataset`), or the keyframes of `--synthetic_videos N` synthetic videos.
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
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling
from PIL import Image
from torch.utils.data import DataLoader

# The scripts of this folder are run directly (``python examples/...``), which puts this folder on sys.path.
from detokenizer_training import (
    DashedArgumentParser,
    add_training_arguments,
    build_accelerator,
    parse_training_args,
    resume_folder,
    run_training,
    to_pixels,
)

from diffusers_vlavit.pipelines.pipeline_keyframe import VideoLaVITKeyframePipeline
from transformers_vlavit import decompose_video
from transformers_vlavit.prepared_data import load_prepared_dataset
from transformers_vlavit.synthetic_video import write_training_sample_video
from transformers_vlavit.video_decomposition import DEFAULT_FPS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class KeyframeDetokenizerTrainingError(ValueError):
    """The command line or the data do not allow the keyframe detokenizer to be trained."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of this script (every option also takes the dashed spelling, `--output-dir`)."""
    parser = DashedArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pipeline", required=True, help="keyframe-detokenizer pipeline folder to start from"
    )
    parser.add_argument("--images", nargs="*", default=[], help="image files or folders of images")
    parser.add_argument(
        "--dataset",
        nargs="*",
        default=[],
        help="folders of datasets/prepare_video_text.py: the keyframe of every clip (rows with an error skipped)",
    )
    parser.add_argument(
        "--synthetic_videos", type=int, default=0, help="add the keyframes of N synthetic videos"
    )
    parser.add_argument(
        "--condition_dropout", type=float, default=0.1, help="chance to zero a sample's condition"
    )
    parser.add_argument(
        "--timestep_sampling",
        choices=("uniform", "logit_normal"),
        default="uniform",
        help="density of the training timesteps (logit_normal: SD3's, see --logit_mean / --logit_std)",
    )
    parser.add_argument("--logit_mean", type=float, default=0.0, help="logit-normal mean (> 0: noisier)")
    parser.add_argument("--logit_std", type=float, default=1.0, help="logit-normal standard deviation")
    parser.add_argument(
        "--whiten_code_embeddings",
        type=int,
        default=0,
        help="start the token decoder's input projection from a whitening of N keyframes' codes (0: no)",
    )
    parser.add_argument(
        "--whitening_floor", type=float, default=1e-3, help="eigenvalue floor, a fraction of their mean"
    )
    add_training_arguments(parser, train_batch_size=4)
    args = parse_training_args(parser, argv)
    if args.logit_std <= 0:
        raise KeyframeDetokenizerTrainingError(f"--logit_std must be positive, got {args.logit_std}")
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
    for folder in args.dataset:
        images += prepared_keyframes(folder)
    for index in range(args.synthetic_videos):
        video = write_training_sample_video(fps=DEFAULT_FPS, seed=args.seed + index)
        images += decompose_video(video).keyframes
    if not images:
        raise KeyframeDetokenizerTrainingError("no images: pass --images, --dataset or --synthetic_videos.")
    return images


def prepared_keyframes(folder: str) -> list[Image.Image]:
    """The keyframes (one RGB image per clip) of a prepared video-text folder; rows with an `error` are skipped."""
    rows = load_prepared_dataset(folder)
    if "keyframes" not in rows.column_names:
        raise KeyframeDetokenizerTrainingError(f"{folder}: no 'keyframes' column (columns: {rows.column_names})")
    if "error" in rows.column_names:
        rows = rows.filter(lambda error: not error, input_columns="error")
    return [image.convert("RGB") for keyframes in rows["keyframes"] for image in keyframes]


def collate(images: list[Image.Image], height: int, width: int) -> dict:
    """Images -> `pixels [B, 3, H, W]` in [-1, 1] for the VAE and the PIL images for the visual tokenizer."""
    return {"pixels": to_pixels(images, height, width), "images": list(images)}


def code_whitening(code_embeddings: torch.Tensor, floor: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `[code_dim]` and whitening matrix `P [code_dim, code_dim]` (symmetric, `Cov^(-1/2)`) of
    `code_embeddings [N, code_dim]`; eigenvalues below `floor` times their mean are raised to it."""
    values = code_embeddings.double()
    mean = values.mean(0)
    centred = values - mean
    covariance = centred.T @ centred / max(len(values) - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues = eigenvalues.clamp(min=floor * float(eigenvalues.mean().clamp(min=1e-12)))
    whitening = eigenvectors @ torch.diag(eigenvalues.rsqrt()) @ eigenvectors.T
    return mean.float(), whitening.float()


@torch.no_grad()
def whiten_input_projection(keyframe_decoder, mean: torch.Tensor, whitening: torch.Tensor) -> None:
    """Make `keyframe_decoder.in_proj(x)` compute `W P (x - mean) + b` (its own `W`, `b` before)."""
    projection = keyframe_decoder.in_proj
    weight = projection.weight.double() @ whitening.double().to(projection.weight.device)
    projection.bias.sub_((weight @ mean.double().to(weight.device)).to(projection.bias.dtype))
    projection.weight.copy_(weight.to(projection.weight.dtype))


def whiten_from_images(pipe: VideoLaVITKeyframePipeline, images: list[Image.Image], args, device) -> None:
    """`--whiten_code_embeddings`: whiten the decoder's input over the codes of the first N `images`."""
    chosen = images[: args.whiten_code_embeddings]
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(chosen), 64):
            codes, _ = pipe.embed_token_ids(pipe.tokenize_images(chosen[start : start + 64], device), device)
            embeddings.append(codes.float().cpu())
    mean, whitening = code_whitening(torch.cat(embeddings), args.whitening_floor)
    whiten_input_projection(pipe.keyframe_decoder, mean, whitening)


def training_timesteps(
    args: argparse.Namespace,
    num_train_timesteps: int,
    batch_size: int,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """`[batch_size]` training timesteps in `[0, num_train_timesteps)`: uniform, or `t = floor(T * u)` with
    `u = sigmoid(n)`, `n ~ N(--logit_mean, --logit_std)` (`--timestep_sampling logit_normal`)."""
    if args.timestep_sampling == "uniform":
        return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=device)
    u = compute_density_for_timestep_sampling(
        "logit_normal", batch_size, args.logit_mean, args.logit_std, device=device, generator=generator
    )
    return (u * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)


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
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    timesteps = training_timesteps(args, num_train_timesteps, batch_size, device, generator)
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


def train(args: argparse.Namespace) -> list[float]:
    """Train and save the pipeline in `args.output_dir`; returns the loss of every optimizer step run."""
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    # the saved components name their classes as code files of the folder
    pipe = VideoLaVITKeyframePipeline.from_pretrained(args.pipeline, trust_remote_code=True)
    pipe.vae.requires_grad_(False).eval().to(accelerator.device)
    pipe.visual_tokenizer.requires_grad_(False).eval().to(accelerator.device)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    unet, keyframe_decoder = pipe.unet.train(), pipe.keyframe_decoder.train()

    height, width = args.resolution
    images = training_images(args)
    if args.whiten_code_embeddings > 0 and resume_folder(args) is None:
        # a resumed run's checkpoint holds the whitened projection it trained on
        whiten_from_images(pipe, images, args, accelerator.device)
    loader = DataLoader(
        images,
        batch_size=args.train_batch_size,
        shuffle=True,
        # shuffled by the seedable sampler; this generator keeps iterators off the global RNG (see run_training)
        generator=torch.Generator().manual_seed(args.seed),
        collate_fn=lambda images: collate(images, height, width),
    )
    parameters = list(unet.parameters()) + list(keyframe_decoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    unet, keyframe_decoder, optimizer, loader = accelerator.prepare(unet, keyframe_decoder, optimizer, loader)
    losses = run_training(
        args,
        accelerator,
        (unet, keyframe_decoder),
        optimizer,
        loader,
        lambda batch: denoising_loss(pipe, unet, keyframe_decoder, noise_scheduler, batch, args),
    )

    if accelerator.is_main_process:
        pipe.unet = accelerator.unwrap_model(unet).eval()
        pipe.keyframe_decoder = accelerator.unwrap_model(keyframe_decoder).eval()
        pipe.save_pretrained(args.output_dir)
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
