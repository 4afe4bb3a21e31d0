"""``vlavit generate --model DIR "prompt" --out video.mp4``: text-to-video (image-to-video with ``--image``).

Runs ``pipeline("text-to-video", model=DIR)``: the language model samples each clip's keyframe and motion
tokens, the detokenizers render them, and the frames (24 per clip, 6 fps) are written as an H.264 MP4 with
PyAV. ``--clips N`` makes an N x 4 s video; ``--cpu-offload`` keeps only the running component on the GPU
(see ``VideoLaVITPipeline`` for the memory plan). The keyframe is rendered with the video's aspect ratio
(``--height/--width``) at the keyframe detokenizer's own number of pixels, unless
``--keyframe-height/--keyframe-width`` say otherwise, so a 16:9 video does not start from a squashed square.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .ask import DTYPES
from .inputs import CommandInputError, check_model, check_output_file, model_load_error, read_image


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generate`` sub-command."""
    parser = subparsers.add_parser(
        "generate",
        help="generate a video from a text prompt (or an image) with a Video-LaVIT checkpoint",
        description=__doc__,
    )
    parser.add_argument("--model", required=True, help="Video-LaVIT checkpoint folder (or hub id)")
    parser.add_argument("prompt", nargs="?", default=None, help="text prompt (optional with --image)")
    parser.add_argument("--out", required=True, type=Path, help="output MP4 file")
    parser.add_argument("--image", type=Path, help="image-to-video: this image is the first clip's keyframe")
    parser.add_argument(
        "--sheet", type=Path, help="also write a PNG contact sheet of the video (6 evenly spaced frames per clip)"
    )
    parser.add_argument(
        "--clips", type=int, default=1, help="clips of 24 frames (4 s) to generate (default 1)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the token sampling and the diffusion noise"
    )
    parser.add_argument("--steps", type=int, default=25, help="video detokenizer steps (default 25)")
    parser.add_argument(
        "--keyframe-steps", type=int, default=50, help="keyframe detokenizer steps (default 50)"
    )
    parser.add_argument(
        "--height", type=int, help="video height (default: the detokenizer's, 320 when released)"
    )
    parser.add_argument(
        "--width", type=int, help="video width (default: the detokenizer's, 576 when released)"
    )
    parser.add_argument(
        "--keyframe-height",
        type=int,
        help="keyframe rendering height (default: the video's aspect ratio at the keyframe detokenizer's size)",
    )
    parser.add_argument(
        "--keyframe-width",
        type=int,
        help="keyframe rendering width (default: the video's aspect ratio at the keyframe detokenizer's size)",
    )
    parser.add_argument(
        "--keyframe-guidance", type=float, default=4.0, help="LLM guidance on keyframe tokens"
    )
    parser.add_argument("--motion-guidance", type=float, default=7.0, help="LLM guidance on motion tokens")
    parser.add_argument("--decoder-guidance", type=float, default=3.0, help="keyframe detokenizer guidance")
    parser.add_argument(
        "--sample-motion",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sample the motion tokens (--sample-motion) or take the arg-max (--no-sample-motion); "
        "default: as the original, arg-max in text-to-video and sampled after --image",
    )
    parser.add_argument("--top-k", type=int, default=200, help="top-k of the token sampling (default 200)")
    parser.add_argument("--top-p", type=float, default=1.0, help="top-p of the token sampling (default 1.0)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype (default float32)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--cpu-offload",
        action="store_true",
        help="keep only the running component on --device (needs an accelerator)",
    )
    parser.set_defaults(func=run)


def keyframe_size(height: int, width: int, base_size: int, multiple: int) -> tuple[int, int]:
    """The keyframe ``(height, width)`` with the aspect ratio of a ``height x width`` video and about the
    pixels of a ``base_size`` square (the keyframe detokenizer's own size), both multiples of ``multiple``."""
    scale = math.sqrt(base_size * base_size / (height * width))
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (height, width))


def run(args: argparse.Namespace) -> int:
    """Check the inputs, then generate the video and write it to ``--out``."""
    if args.prompt is None and args.image is None:
        raise CommandInputError("give a prompt, --image, or both")
    check_model(args.model)
    check_output_file(args.out)
    if args.sheet is not None:
        check_output_file(args.sheet)
    image = read_image(args.image) if args.image is not None else None

    import torch
    from transformers import pipeline

    from ..pipeline_text_to_video import TASK, DetokenizerNotFoundError, VideoLaVITTextToVideoPipeline
    from .reconstruct import write_video

    # naming the class runs the installed code also for folders whose config registers the pipeline as
    # custom code (saved by the pipeline), which transformers would otherwise only load as remote code
    options = {
        "model": args.model,
        "dtype": getattr(torch, args.dtype),
        "pipeline_class": VideoLaVITTextToVideoPipeline,
    }
    try:
        pipe = pipeline(TASK, **options) if args.cpu_offload else pipeline(TASK, device=args.device, **options)
    except DetokenizerNotFoundError as error:
        raise CommandInputError(f"--model {args.model}: {error}") from error
    except OSError as error:
        raise model_load_error("--model", args.model, error) from error
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=args.device)
    sizes = {
        "height": args.height,
        "width": args.width,
        "keyframe_height": args.keyframe_height,
        "keyframe_width": args.keyframe_width,
    }
    # the default video size is square like the default keyframe: only a given video size can change the shape
    if args.keyframe_height is None and args.keyframe_width is None and (args.height or args.width):
        detokenizer = pipe.detokenizer
        video_height = args.height or detokenizer.unet.config.sample_size * detokenizer.vae_scale_factor
        video_width = args.width or detokenizer.unet.config.sample_size * detokenizer.vae_scale_factor
        if video_height != video_width:
            base = detokenizer.keyframe_unet.config.sample_size * detokenizer.keyframe_vae_scale_factor
            sizes["keyframe_height"], sizes["keyframe_width"] = keyframe_size(
                video_height, video_width, base, detokenizer.keyframe_vae_scale_factor
            )
    inputs = {"prompt": args.prompt, "image": image}
    result = pipe(
        inputs,
        num_clips=args.clips,
        num_inference_steps=args.steps,
        keyframe_num_inference_steps=args.keyframe_steps,
        **sizes,
        keyframe_guidance_scale=args.keyframe_guidance,
        motion_guidance_scale=args.motion_guidance,
        decoder_guidance_scale=args.decoder_guidance,
        motion_do_sample=args.sample_motion,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=torch.Generator().manual_seed(args.seed),
        output_type="pt",
    )
    write_video(result["frames"], args.out, fps=result["fps"])
    print(f"{len(result['frames'])} frames at {result['fps']} fps written to {args.out}")
    if args.sheet is not None:
        from ..evaluation.report import contact_sheet, sample_frames

        caption = args.prompt if args.prompt is not None else f"after {args.image.name}"
        contact_sheet([(sample_frames(args.out, 6 * args.clips), caption)], args.sheet, frames_per_row=6 * args.clips)
        print(f"contact sheet written to {args.sheet}")
    return 0
