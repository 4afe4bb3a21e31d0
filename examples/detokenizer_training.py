"""What the two stage-1 detokenizer scripts share: their common command-line options, the pixel format of
their VAE, and the `accelerate` training loop with step checkpoints and resume.

`train_video_detokenizer.py` and `train_keyframe_detokenizer.py` import it from this folder (running a
script puts its folder on `sys.path`, also under `accelerate launch`).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from PIL import Image
from torch.utils.data import DataLoader

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STEP_FILE = "step.json"


class DashedArgumentParser(argparse.ArgumentParser):
    """An `argparse` parser that accepts every `--some_option` also as `--some-option` (as
    `HfArgumentParser` does), so that all training scripts take the dashed spelling."""

    def add_argument(self, *name_or_flags: str, **kwargs):
        """`ArgumentParser.add_argument` with a dashed alias for each long option that has underscores."""
        dashed = [name.replace("_", "-") for name in name_or_flags if name.startswith("--") and "_" in name]
        return super().add_argument(*name_or_flags, *dashed, **kwargs)


def add_training_arguments(parser: argparse.ArgumentParser, *, train_batch_size: int) -> None:
    """Add the options both detokenizer scripts share: output, sizes, optimisation, precision, checkpoints."""
    parser.add_argument("--output_dir", required=True, help="folder of the checkpoints and the trained model")
    parser.add_argument("--resolution", type=int, nargs="+", default=[64], help="SIDE or HEIGHT WIDTH of training images")
    parser.add_argument("--max_steps", type=int, default=100, help="optimizer steps of the whole run")
    parser.add_argument("--train_batch_size", type=int, default=train_batch_size, help="samples per micro-batch")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--learning_rate", type=float, default=1e-5, help="AdamW learning rate")
    parser.add_argument("--weight_decay", type=float, default=1e-2, help="AdamW weight decay")
    parser.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping norm")
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no", help="autocast precision")
    parser.add_argument("--checkpointing_steps", type=int, default=0, help="save_state every N steps (0: never)")
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    parser.add_argument("--logging_steps", type=int, default=1, help="print the loss every N steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and noise")


def parse_training_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`; a single `--resolution SIDE` becomes `[SIDE, SIDE]` (height, width)."""
    args = parser.parse_args(argv)
    if len(args.resolution) == 1:
        args.resolution = args.resolution * 2
    return args


def media_files(entries: Sequence[str], suffixes: set[str]) -> list[Path]:
    """The files of `entries`: files as given, folders searched (sorted) for `suffixes` (lower-case, with dot).

    Raises:
        FileNotFoundError: an entry is neither a file nor a folder.
    """
    paths = []
    for entry in map(Path, entries):
        if entry.is_dir():
            paths += sorted(p for p in entry.iterdir() if p.suffix.lower() in suffixes)
        elif entry.is_file():
            paths.append(entry)
        else:
            raise FileNotFoundError(f"{entry}: no such file or folder")
    return paths


def to_pixels(images: Sequence[Image.Image], height: int, width: int) -> torch.Tensor:
    """PIL images -> `[N, 3, height, width]` float32 in [-1, 1] (bicubic resize), the VAE's input range."""
    arrays = [np.asarray(image.convert("RGB").resize((width, height), Image.BICUBIC)) for image in images]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return pixels / 127.5 - 1.0


def build_accelerator(args: argparse.Namespace) -> Accelerator:
    """The `Accelerator` of a run: precision and accumulation from `args`, project folder `--output_dir`."""
    return Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        project_dir=str(args.output_dir),
        # shuffling seeded by seed + epoch: a resume in the middle of an epoch sees the same batches
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The `checkpoint-N` folder of `output_dir` with the largest N, if any."""
    found = [
        (int(match.group(1)), path)
        for path in output_dir.glob("checkpoint-*")
        if (match := CHECKPOINT_PATTERN.match(path.name))
    ]
    return max(found)[1] if found else None


def resume_folder(args: argparse.Namespace) -> Path | None:
    """The checkpoint `--resume_from_checkpoint` (`latest` or a folder) names; None when there is none."""
    requested = args.resume_from_checkpoint
    if requested == "latest":
        return latest_checkpoint(Path(args.output_dir))
    return None if requested is None else Path(requested)


def resume_step(accelerator: Accelerator, args: argparse.Namespace) -> int:
    """Restore the state of `--resume_from_checkpoint` (`latest` or a folder) and return its optimizer
    step; 0 when there is nothing to resume."""
    folder = resume_folder(args)
    if folder is None:
        return 0
    accelerator.load_state(str(folder))
    return json.loads((Path(folder) / STEP_FILE).read_text())["step"]


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int) -> None:
    """`save_state` into `output_dir/checkpoint-<step>` with the step counter beside it."""
    folder = output_dir / f"checkpoint-{step}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / STEP_FILE).write_text(json.dumps({"step": step}))


def run_training(
    args: argparse.Namespace,
    accelerator: Accelerator,
    trained: Sequence[torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    compute_loss: Callable[[dict], torch.Tensor],
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """
    Optimise until `--max_steps` optimizer steps, resuming from `--resume_from_checkpoint` if given.

    Args:
        args: the parsed options of `add_training_arguments`.
        accelerator: the run's accelerator; `trained`, `optimizer` and `loader` went through its `prepare`.
        trained: the modules being trained (gradient accumulation and clipping cover their parameters).
        optimizer: their optimizer.
        loader: batches for `compute_loss`.
        compute_loss: batch -> scalar loss tensor.
        on_step: called with the step number after every optimizer step, before that step's checkpoint (so
            that what it changes, such as a renormalised codebook, is saved): upkeep, metrics, evaluation.

    Returns:
        The loss of every optimizer step run by this call (averaged over processes).
    """
    output_dir = Path(args.output_dir)
    parameters = [parameter for module in trained for parameter in module.parameters()]
    step = resume_step(accelerator, args)
    batches_per_epoch = len(loader) // args.gradient_accumulation_steps or 1
    losses = []
    while step < args.max_steps:
        # after a resume, skip as many batches of the current epoch as were consumed before the checkpoint
        skip = (step % batches_per_epoch) * args.gradient_accumulation_steps
        loader.set_epoch(step // batches_per_epoch)
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            with accelerator.accumulate(*trained):
                loss = compute_loss(batch)
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
            if on_step is not None:
                on_step(step)
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, output_dir, step)
            if step >= args.max_steps:
                break
    accelerator.wait_for_everyone()
    return losses
