"""``vlavit reconstruct --model DIR VIDEO --out recon.mp4``: tokenize a video and decode it back.

The paper's check of the tokenizers: every clip of ``VIDEO`` is decomposed into a keyframe and motion,
the keyframe is tokenized by the visual tokenizer and rendered back by the keyframe pipeline, the motion
is tokenized by the motion tokenizer and, with the rendered keyframe, decoded into frames by the video
pipeline. The clips are written to ``--out`` and compared with the input frames at the same size
(PSNR and SSIM, printed).

``DIR`` holds the detokenizer pipelines as ``DIR/detokenizer/{keyframe,video}`` (the layout of
``vlavit tiny-checkpoint``) or ``DIR/{keyframe,video}``.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..layout import DETOKENIZER_FOLDER, KEYFRAME_FOLDER, VIDEO_FOLDER
from ..pipeline_text_to_video import DetokenizerNotFoundError
from ..video_encoding import REPRODUCIBLE_X264_OPTIONS
from .ask import DTYPES
from .inputs import CommandInputError, check_output_file, decompose_input_video

# Wang et al. (2004): 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reconstruct`` sub-command."""
    parser = subparsers.add_parser(
        "reconstruct",
        help="tokenize a video (keyframes + motion) and decode it back; prints PSNR and SSIM",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("video", help="input video (any container/codec FFmpeg reads)")
    parser.add_argument("--model", required=True, type=Path, help="checkpoint folder with the detokenizers")
    parser.add_argument("--out", required=True, type=Path, help="output video (.mp4)")
    parser.add_argument("--height", type=int, default=None, help="frame height (default: the video U-Net's)")
    parser.add_argument("--width", type=int, default=None, help="frame width (default: the video U-Net's)")
    parser.add_argument(
        "--max-clips", type=int, default=8, help="most clips taken from the video (default 8)"
    )
    parser.add_argument(
        "--keyframe-steps", type=int, default=25, help="keyframe denoising steps (default 25)"
    )
    parser.add_argument(
        "--keyframe-guidance", type=float, default=3.0, help="keyframe guidance (default 3.0)"
    )
    parser.add_argument("--video-steps", type=int, default=25, help="video denoising steps (default 25)")
    parser.add_argument(
        "--min-guidance", type=float, default=1.0, help="first frame's guidance (default 1.0)"
    )
    parser.add_argument("--max-guidance", type=float, default=4.0, help="last frame's guidance (default 4.0)")
    parser.add_argument("--decode-chunk-size", type=int, default=8, help="frames per VAE decode (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise (default 0)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype (default float32)")
    parser.set_defaults(func=run)


def find_detokenizer_folders(model_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Return the ``(keyframe, video)`` pipeline folders of a checkpoint folder."""
    model_dir = Path(model_dir)
    for root in (model_dir / DETOKENIZER_FOLDER, model_dir):
        folders = (root / KEYFRAME_FOLDER, root / VIDEO_FOLDER)
        if all((folder / "model_index.json").is_file() for folder in folders):
            return folders
    raise DetokenizerNotFoundError(
        f"no detokenizer pipelines in {model_dir}: expected {DETOKENIZER_FOLDER}/{KEYFRAME_FOLDER} and "
        f"{DETOKENIZER_FOLDER}/{VIDEO_FOLDER} (or {KEYFRAME_FOLDER}/ and {VIDEO_FOLDER}/) with a "
        "model_index.json each; "
        "`vlavit tiny-checkpoint DIR` writes a tiny checkpoint with them"
    )


def read_clip_frames(
    video: str | os.PathLike, starts: list[int], num_frames: int, fps: float, size: tuple[int, int]
) -> list[torch.Tensor]:
    """The input frames of each clip, as the decomposition's re-encode at ``fps`` sees them.

    Frame ``k`` of the resampled stream is the source frame nearest in time to ``k / fps`` after the first
    one (what FFmpeg's ``fps`` filter picks), resized bicubically to ``size``.

    Args:
        video: the input video.
        starts: first frame (in the resampled stream) of each clip.
        num_frames: frames per clip.
        fps: frame rate of the resampled stream.
        size: ``(height, width)`` of the returned frames.

    Returns:
        One float tensor ``[frames_i, 3, height, width]`` in [0, 1] per clip; a clip at the end of a short
        video has fewer frames (those that exist).
    """
    import av
    import numpy as np
    from PIL import Image

    wanted = sorted({start + offset for start in starts for offset in range(num_frames)})
    frames: dict[int, torch.Tensor] = {}
    height, width = size

    def keep(index: int, frame: av.VideoFrame) -> None:
        image = frame.to_image().convert("RGB").resize((width, height), Image.BICUBIC)
        frames[index] = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or fps)
        first_time, previous, position = None, None, 0
        for count, frame in enumerate(container.decode(stream)):
            time = frame.time if frame.time is not None else count / rate
            first_time = time if first_time is None else first_time
            # every wanted output time that lies between the previous and this source frame is now decided
            while position < len(wanted) and first_time + wanted[position] / fps <= time:
                target = first_time + wanted[position] / fps
                closer_previous = previous is not None and target - previous[0] < time - target
                keep(wanted[position], previous[1] if closer_previous else frame)
                position += 1
            if position == len(wanted):
                break
            previous = (time, frame)
        # output frames past the last source frame repeat it, as long as they lie within one frame interval
        while (
            previous is not None
            and position < len(wanted)
            and first_time + wanted[position] / fps < previous[0] + 1 / rate
        ):
            keep(wanted[position], previous[1])
            position += 1
    clips = []
    for start in starts:
        indices = [index for index in range(start, start + num_frames) if index in frames]
        clips.append(torch.stack([frames[index] for index in indices]))
    return clips


def psnr(reconstruction: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape tensors with values in [0, 1]."""
    mse = F.mse_loss(reconstruction.float(), reference.float()).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _gaussian_profile(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` (float64), centred on the middle sample."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-(coords**2) / (2 * sigma**2))
    return profile / profile.sum()


def ssim(reconstruction: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean structural similarity (Gaussian window 11, sigma 1.5) of images in [0, 1].

    Args:
        reconstruction, reference: ``[N, C, H, W]``; each channel is compared separately and the SSIM map
            averaged over channels, positions and images. Images smaller than the window use a window of
            their size.
    """
    x, y = reconstruction.float(), reference.float()
    channels = x.shape[1]
    size = min(SSIM_WINDOW, x.shape[-2], x.shape[-1])
    profile = _gaussian_profile(size, SSIM_SIGMA).to(x)
    # the Gaussian window is separable: a row pass then a column pass costs 2k instead of k^2 per pixel
    rows = profile.view(1, 1, 1, size).expand(channels, 1, 1, size)
    columns = profile.view(1, 1, size, 1).expand(channels, 1, size, 1)

    def local_mean(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(image, rows, groups=channels), columns, groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    covariance = local_mean(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean().item()


def write_video(frames: torch.Tensor, path: str | os.PathLike, fps: float) -> None:
    """Write ``frames [N, 3, H, W]`` in [0, 1] (even H and W) as an H.264 MP4 with PyAV; the same frames always give the same file."""
    import av

    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height = pixels.shape[2], pixels.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = dict(REPRODUCIBLE_X264_OPTIONS)
        for image in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def reconstruct_clips(
    decomposition,
    keyframe_pipe,
    video_pipe,
    height: int,
    width: int,
    *,
    keyframe_steps: int = 25,
    keyframe_guidance: float = 3.0,
    video_steps: int = 25,
    min_guidance: float = 1.0,
    max_guidance: float = 4.0,
    decode_chunk_size: int = 8,
    seed: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Tokenize and detokenize every clip of a :class:`VideoDecomposition`, one clip at a time.

    Args:
        decomposition: the input video's keyframes and ``motion_vectors [clips, 2, 24, 20, 36]``.
        keyframe_pipe: a `VideoLaVITKeyframePipeline` with its visual tokenizer.
        video_pipe: a `VideoLaVITVideoPipeline` with its motion tokenizer.
        height, width: size of the rendered keyframes and frames.
        seed: clip ``i``'s diffusion noise is drawn from a generator seeded with ``seed + i``.

    Returns:
        ``(frames, keyframes)``: per clip, the decoded frames ``[clip_frames, 3, height, width]`` and the
        rendered keyframe ``[3, height, width]``, both in [0, 1].
    """
    device = video_pipe.device
    motion_tokenizer = video_pipe.motion_tokenizer
    frames, keyframes = [], []
    for clip, keyframe in enumerate(decomposition.keyframes):
        generator = torch.Generator(device).manual_seed(seed + clip)
        with torch.no_grad():
            visual_codes = keyframe_pipe.tokenize_images([keyframe], keyframe_pipe.device)
            motion = decomposition.motion_vectors[clip : clip + 1].to(device, motion_tokenizer.dtype)
            motion_codes = motion_tokenizer.encode(motion)
        rendered = keyframe_pipe(
            token_ids=visual_codes,
            height=height,
            width=width,
            num_inference_steps=keyframe_steps,
            guidance_scale=keyframe_guidance,
            generator=generator,
            output_type="pt",
        ).images
        clip_frames = video_pipe(
            rendered,
            motion_ids=motion_codes,
            height=height,
            width=width,
            num_inference_steps=video_steps,
            min_guidance_scale=min_guidance,
            max_guidance_scale=max_guidance,
            decode_chunk_size=decode_chunk_size,
            generator=generator,
            output_type="pt",
        ).frames
        frames.append(clip_frames[0].float().cpu())
        keyframes.append(rendered[0].float().cpu())
    return frames, keyframes


def run(args: argparse.Namespace) -> int:
    """Check the paths and decompose the video, then load the pipelines, tokenize, detokenize, write the clip
    video and print PSNR / SSIM."""
    from diffusers import DiffusionPipeline

    check_output_file(args.out)
    try:
        keyframe_dir, video_dir = find_detokenizer_folders(args.model)
    except DetokenizerNotFoundError as error:
        raise CommandInputError(str(error)) from error
    decomposition = decompose_input_video(args.video, max_clips=args.max_clips)

    dtype = getattr(torch, args.dtype)
    keyframe_pipe = DiffusionPipeline.from_pretrained(keyframe_dir, trust_remote_code=True, dtype=dtype)
    video_pipe = DiffusionPipeline.from_pretrained(video_dir, trust_remote_code=True, dtype=dtype)
    for pipe in (keyframe_pipe, video_pipe):
        pipe.to(args.device)
    if keyframe_pipe.visual_tokenizer is None or video_pipe.motion_tokenizer is None:
        raise CommandInputError(
            f"{args.model} lacks the visual or motion tokenizer inside its detokenizer pipelines; "
            "reconstruction needs both to tokenize the video"
        )
    height = args.height or video_pipe.unet.config.sample_size * video_pipe.vae_scale_factor
    width = args.width or video_pipe.unet.config.sample_size * video_pipe.vae_scale_factor

    frames, keyframes = reconstruct_clips(
        decomposition,
        keyframe_pipe,
        video_pipe,
        height,
        width,
        keyframe_steps=args.keyframe_steps,
        keyframe_guidance=args.keyframe_guidance,
        video_steps=args.video_steps,
        min_guidance=args.min_guidance,
        max_guidance=args.max_guidance,
        decode_chunk_size=args.decode_chunk_size,
        seed=args.seed,
    )
    num_frames = frames[0].shape[0]
    references = read_clip_frames(
        args.video, decomposition.keyframe_indices, num_frames, decomposition.fps, (height, width)
    )
    write_video(torch.cat(frames), args.out, decomposition.fps)

    # padded clips (shorter videos) are compared on the frames the input has
    compared = [(clip[: len(reference)], reference) for clip, reference in zip(frames, references)]
    reconstruction = torch.cat([clip for clip, _ in compared])
    reference = torch.cat([reference for _, reference in compared])
    keyframe_reference = torch.stack([reference[0] for reference in references])
    print(f"clips: {len(frames)} x {num_frames} frames at {width}x{height}, written to {args.out}")
    print(
        f"keyframes: PSNR {psnr(torch.stack(keyframes), keyframe_reference):.2f} dB, "
        f"SSIM {ssim(torch.stack(keyframes), keyframe_reference):.4f}"
    )
    print(f"video: PSNR {psnr(reconstruction, reference):.2f} dB, SSIM {ssim(reconstruction, reference):.4f}")
    return 0
