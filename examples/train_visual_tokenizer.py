"""Stage 1: train LaVIT's dynamic visual tokenizer (token predictor, merger, codebook) with `accelerate`.

The objective of LaVIT (arXiv 2309.04669), which its authors never released: with the vision transformer
frozen, the token predictor keeps a content-dependent subset of the patches (Gumbel-softmax decisions with a
straight-through estimator), the token merger folds the dropped patches into the kept ones, the kept tokens
are quantised to the codebook, and a training-only feature decoder reconstructs the ViT features of every
patch from the quantised kept tokens (cosine loss). Commitment and codebook losses train the quantiser; a
keep-ratio loss steers the share of kept patches towards `--target-keep-ratio`; codes unused for
`--restart-dead-codes-every` steps are re-seeded from recent latents. See
`transformers_vlavit.visual_tokenizer_training`.

Model: a new tokenizer from `--config` (JSON of `VideoLaVITVisualTokenizerConfig` fields), optionally with the
vision transformer of a saved tokenizer (`--vision-model-from`: for a real run, the EVA-CLIP ViT-g of the
released checkpoint after `vlavit convert`, i.e. `video-lavit-hf/detokenizer/keyframe/visual_tokenizer`), or
a saved tokenizer to continue (`--model-name-or-path`). The ViT and `vit_proj` stay frozen (`vit_proj` is
trained with the language model for understanding).

Data: frames of videos (`--videos`, `--frames-per-video` each), images (`--images`) and the keyframes of a
dataset written by `datasets/prepare_video_text.py` (`--dataset`), preprocessed as the model sees keyframes
(`VideoLaVITImageProcessor`: bicubic resize, CLIP normalisation).

Logged to `<output-dir>/metrics.jsonl`: every loss, the keep ratio and kept tokens per image, the codebook
perplexity and usage, restarted codes. The trained tokenizer is saved in `--output-dir` (loads with
`VideoLaVITVisualTokenizer.from_pretrained`), the feature decoder in `--output-dir/feature_decoder`.

Example (the shapes world)::

    python examples/train_visual_tokenizer.py --config examples/configs/shapes/visual_tokenizer.json \\
        --videos data/shapes/videos/train --output-dir outputs/shapes/visual_tokenizer --max-steps 1500 \\
        --learning-rate 1e-3 --target-keep-ratio 0.25 --restart-dead-codes-every 50
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from accelerate.utils import set_seed
from PIL import Image
from torch.utils.data import DataLoader

# The scripts of this folder are run directly (``python examples/...``), which puts this folder on sys.path.
from detokenizer_training import (
    DashedArgumentParser,
    add_training_arguments,
    build_accelerator,
    media_files,
    parse_training_args,
    run_training,
)
from train_video_detokenizer import VIDEO_SUFFIXES, read_frames

from transformers_vlavit import (
    VideoLaVITImageProcessor,
    VideoLaVITVisualTokenizer,
    VideoLaVITVisualTokenizerConfig,
)
from transformers_vlavit.prepared_data import load_prepared_dataset
from transformers_vlavit.video_decomposition import DEFAULT_FPS
from transformers_vlavit.visual_tokenizer_training import (
    FeatureDecoderConfig,
    VideoLaVITFeatureDecoder,
    VisualTokenizerWithFeatureDecoder,
    normalize_codebook_,
    restart_dead_visual_codes,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
METRICS_FILE = "metrics.jsonl"
DECODER_FOLDER = "feature_decoder"
# most recent kept-token latents kept as candidates for re-seeding dead codes
MAX_RESTART_LATENTS = 8192


class VisualTokenizerTrainingError(ValueError):
    """The command line or the data do not allow the visual tokenizer to be trained."""


class CodebookUsage:
    """Code counts and recent kept-token latents since the last dead-code restart.

    Registered with `accelerator.register_for_checkpointing`, so a resumed run restarts the same codes with
    the same latents as an uninterrupted one.
    """

    def __init__(self, codebook_size: int):
        self.counts = torch.zeros(codebook_size, dtype=torch.long)
        self.latents: list[torch.Tensor] = []

    def add(self, counts: torch.Tensor, latents: torch.Tensor) -> None:
        """Count a batch's codes `[codebook_size]` and keep its latents `[n, code_dim]`."""
        self.counts += counts.cpu()
        self.latents = (self.latents + [latents.float().cpu()])[-64:]

    def recent_latents(self) -> torch.Tensor:
        """The most recent latents, `[<= MAX_RESTART_LATENTS, code_dim]`."""
        return torch.cat(self.latents)[-MAX_RESTART_LATENTS:] if self.latents else torch.empty(0)

    def reset(self) -> None:
        """Forget the counts (after a restart)."""
        self.counts.zero_()

    def state_dict(self) -> dict:
        """Checkpoint state."""
        return {"counts": self.counts, "latents": self.recent_latents()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint's state."""
        self.counts = state["counts"].clone()
        self.latents = [state["latents"]] if state["latents"].numel() else []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of this script (every option also takes the underscored spelling)."""
    parser = DashedArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="JSON file of VideoLaVITVisualTokenizerConfig fields (a new tokenizer)")
    parser.add_argument("--model_name_or_path", help="saved VideoLaVITVisualTokenizer to continue training")
    parser.add_argument("--vision_model_from", help="saved tokenizer whose vision transformer a new one starts with")
    parser.add_argument("--decoder_hidden_size", type=int, default=128, help="width of the feature decoder")
    parser.add_argument("--decoder_layers", type=int, default=2, help="blocks of the feature decoder")
    parser.add_argument("--decoder_heads", type=int, default=4, help="attention heads of the feature decoder")
    parser.add_argument("--videos", nargs="*", default=[], help="video files or folders of videos")
    parser.add_argument("--frames_per_video", type=int, default=4, help="frames taken evenly from each video")
    parser.add_argument("--images", nargs="*", default=[], help="image files or folders of images")
    parser.add_argument("--dataset", help="folder of datasets/prepare_video_text.py (its keyframes are used)")
    parser.add_argument("--target_keep_ratio", type=float, default=0.5, help="share of patches to keep")
    parser.add_argument("--keep_ratio_weight", type=float, default=2.0, help="weight of the keep-ratio loss")
    parser.add_argument("--commitment_cost", type=float, default=0.25, help="weight of the commitment loss")
    parser.add_argument("--reconstruction_target", choices=("cosine", "standardized"), default="cosine",
                        help="cosine to the ViT features (LaVIT) or squared error to the batch-standardised features")
    parser.add_argument("--decision_entropy_weight", type=float, default=0.0,
                        help="weight of the keep probabilities' binary entropy (confident keep decisions)")
    parser.add_argument("--restart_dead_codes_every", type=int, default=0,
                           help="re-seed codes unused in the last N steps (0: never)")
    add_training_arguments(parser, train_batch_size=16)
    args = parse_training_args(parser, argv)
    if bool(args.config) == bool(args.model_name_or_path):
        parser.error("pass exactly one of --config (new tokenizer) and --model-name-or-path (continue one)")
    if not (args.videos or args.images or args.dataset):
        parser.error("no data: pass --videos, --images and/or --dataset")
    return args


def _files(entries: list[str], suffixes: set[str]) -> list[Path]:
    """`media_files` with this script's error type."""
    try:
        return media_files(entries, suffixes)
    except FileNotFoundError as error:
        raise VisualTokenizerTrainingError(str(error)) from error


def training_images(args: argparse.Namespace) -> list[Image.Image]:
    """Every training image: frames of `--videos`, files of `--images`, keyframes of `--dataset`."""
    images = []
    for path in _files(args.videos, VIDEO_SUFFIXES):
        images += [frame.convert("RGB") for frame in read_frames(path, DEFAULT_FPS, evenly=args.frames_per_video)]
    images += [Image.open(path).convert("RGB") for path in _files(args.images, IMAGE_SUFFIXES)]
    if args.dataset:
        dataset = load_prepared_dataset(args.dataset)
        images += [keyframe.convert("RGB") for row in dataset["keyframes"] for keyframe in (row or [])]
    if not images:
        raise VisualTokenizerTrainingError("the data holds no images")
    return images


def build_tokenizer(args: argparse.Namespace) -> VideoLaVITVisualTokenizer:
    """The tokenizer to train (see the module docstring)."""
    if args.model_name_or_path:
        return VideoLaVITVisualTokenizer.from_pretrained(args.model_name_or_path)
    tokenizer = VideoLaVITVisualTokenizer(VideoLaVITVisualTokenizerConfig(**json.loads(Path(args.config).read_text())))
    if args.vision_model_from:
        source = VideoLaVITVisualTokenizer.from_pretrained(args.vision_model_from)
        tokenizer.vision_model.load_state_dict(source.vision_model.state_dict())
    return tokenizer


def train(args: argparse.Namespace) -> dict:
    """Train and save the tokenizer in `args.output_dir`; returns `{"losses": [...], "metrics": last record}`."""
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    tokenizer = build_tokenizer(args)
    decoder = VideoLaVITFeatureDecoder(
        FeatureDecoderConfig.for_tokenizer(
            tokenizer,
            hidden_size=args.decoder_hidden_size,
            num_layers=args.decoder_layers,
            num_attention_heads=args.decoder_heads,
        )
    )
    if args.model_name_or_path and (Path(args.model_name_or_path) / DECODER_FOLDER).is_dir():
        decoder = VideoLaVITFeatureDecoder.from_pretrained(Path(args.model_name_or_path) / DECODER_FOLDER)
    module = VisualTokenizerWithFeatureDecoder(
        tokenizer,
        decoder,
        target_keep_ratio=args.target_keep_ratio,
        commitment_cost=args.commitment_cost,
        keep_ratio_weight=args.keep_ratio_weight,
        reconstruction_target=args.reconstruction_target,
        decision_entropy_weight=args.decision_entropy_weight,
    ).train()
    processor = VideoLaVITImageProcessor(
        size={"height": tokenizer.config.image_size, "width": tokenizer.config.image_size}
    )
    loader = DataLoader(
        training_images(args),
        batch_size=args.train_batch_size,
        shuffle=True,
        # shuffled by the seedable sampler; this generator keeps iterators off the global RNG (see run_training)
        generator=torch.Generator().manual_seed(args.seed),
        collate_fn=lambda images: processor(images, return_tensors="pt")["pixel_values"],
    )
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    unwrapped = accelerator.unwrap_model(module)
    usage = CodebookUsage(tokenizer.config.codebook_size)
    accelerator.register_for_checkpointing(usage)
    state = {"stats": {}, "last": {}}

    def compute_loss(pixel_values: torch.Tensor) -> torch.Tensor:
        output = module(pixel_values)
        usage.add(output.code_counts, output.latents)
        state["stats"] = {
            "loss": output.loss.item(),
            "reconstruction_loss": output.reconstruction_loss.item(),
            "commitment_loss": output.commitment_loss.item(),
            "codebook_loss": output.codebook_loss.item(),
            "keep_ratio_loss": output.keep_ratio_loss.item(),
            "keep_ratio": output.keep_ratio.item(),
            "kept_tokens_per_image": output.keep_ratio.item() * tokenizer.config.num_patches,
            "argmax_kept_tokens_per_image": output.argmax_keep_ratio.item() * tokenizer.config.num_patches,
            "perplexity": output.perplexity.item(),
        }
        return output.loss

    def on_step(step: int) -> None:
        normalize_codebook_(unwrapped.tokenizer)
        record = {"step": step, **state["stats"], "codebook_usage": float((usage.counts > 0).float().mean())}
        every = args.restart_dead_codes_every
        if every and step % every == 0:
            latents = usage.recent_latents().to(accelerator.device)
            restarted = restart_dead_visual_codes(unwrapped.tokenizer, latents, usage.counts)
            record["restarted_codes"] = int(restarted.numel())
            usage.reset()
        state["last"] = record
        if accelerator.is_main_process and step % args.logging_steps == 0:
            output_dir.mkdir(parents=True, exist_ok=True)
            with (output_dir / METRICS_FILE).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    losses = run_training(args, accelerator, (module,), optimizer, loader, compute_loss, on_step)
    if accelerator.is_main_process:
        unwrapped.tokenizer.save_pretrained(output_dir)
        unwrapped.decoder.save_pretrained(output_dir / DECODER_FOLDER)
        if losses:
            last = state["last"]
            accelerator.print(
                f"visual tokenizer loss: first {losses[0]:.4f}, last {losses[-1]:.4f} ({len(losses)} steps); "
                f"reconstruction {last.get('reconstruction_loss', float('nan')):.4f}, "
                f"kept tokens/image {last.get('kept_tokens_per_image', float('nan')):.1f}, "
                f"perplexity {last.get('perplexity', float('nan')):.1f}"
            )
    return {"losses": losses, "metrics": state["last"]}


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse `argv` and train; exit code 2 on unusable input."""
    try:
        train(parse_args(argv))
    except VisualTokenizerTrainingError as error:
        print(f"train_visual_tokenizer: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
