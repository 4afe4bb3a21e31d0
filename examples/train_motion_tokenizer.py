"""Stage 1: train the Video-LaVIT motion tokenizer (VQ-VAE over motion-vector grids) with `accelerate`.

The model is :class:`VideoLaVITMotionTokenizer`; one training step minimises its reconstruction loss (MSE on
the motion grid), the commitment loss and, without EMA, the codebook loss. With ``"codebook_ema": true`` in
the config (as the released tokenizer was trained, decay 0.99) the codebook follows moving averages of the
encoder outputs instead. Rarely used codes are re-seeded from recent encoder outputs every
``--restart-dead-codes-every`` optimizer steps, and the codebook usage and perplexity are logged.

Data: the Arrow dataset written by ``datasets/prepare_video_text.py`` (every clip of every successful row
is one sample of ``motion_vectors [2, 24, 20, 36]``), or random smooth motion fields with ``--synthetic``.

Runs on one process or many, whatever ``accelerate launch`` sets up (see ``examples/configs/``):
mixed precision, gradient accumulation, ``save_state``/``load_state`` checkpoints (model, optimizer,
scheduler, RNG states, plus the step counter in ``training_state.json``) and exact resumption in the middle
of an epoch. Metrics go to ``<output-dir>/metrics.jsonl`` and to any ``--report-to`` tracker.

Examples::

    python examples/train_motion_tokenizer.py --synthetic --config examples/configs/motion_tokenizer_tiny.json \\
        --output-dir outputs/motion_tokenizer_tiny --max-steps 50
    accelerate launch --config_file examples/configs/ddp.yaml examples/train_motion_tokenizer.py \\
        --dataset data/video_text --config examples/configs/motion_tokenizer_full.json --output-dir outputs/mt
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.logging import get_logger
from accelerate.tracking import GeneralTracker, on_main_process
from accelerate.utils import DistributedType, set_seed
from datasets import Array4D, Dataset, Features
from torch.utils.data import DataLoader
from transformers import get_scheduler

from transformers_vlavit.configuration_motion_tokenizer import VideoLaVITMotionTokenizerConfig
from transformers_vlavit.modeling_motion_tokenizer import VideoLaVITMotionTokenizer
from transformers_vlavit.prepared_data import load_prepared_dataset

logger = get_logger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE_FILE = "training_state.json"
METRICS_FILE = "metrics.jsonl"
# Cap on the encoder outputs each process keeps as candidates for re-seeding dead codes.
MAX_RESTART_LATENTS = 16384


class TrainingSetupError(RuntimeError):
    """The command line, the data or the launch environment do not allow training to start."""


class JsonLinesTracker(GeneralTracker):
    """An `accelerate` tracker appending one JSON object per ``log`` call to ``<logging_dir>/metrics.jsonl``."""

    name = "jsonl"
    requires_logging_directory = True

    # Nothing here may touch the accelerate state: the tracker is built before the Accelerator.
    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        self.run_name = run_name
        self.path = Path(logging_dir) / METRICS_FILE

    @on_main_process
    def start(self):
        """Create the logging folder (called by ``Accelerator.init_trackers``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self):
        """The file the metrics are appended to."""
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict):
        """Record the run's hyper-parameters as the first line of a run."""
        self._write({"run": self.run_name, "config": values})

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs):
        """Append ``values`` (scalars) with their optimizer ``step``."""
        self._write({"step": step, **values})

    def _write(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


@dataclass
class TrainingProgress:
    """Counters saved with every checkpoint: optimizer steps, current epoch and batches consumed in it."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the training script."""
    parser = argparse.ArgumentParser(description="Train the Video-LaVIT motion tokenizer with accelerate.")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="folder written by datasets/prepare_video_text.py (either engine)")
    data.add_argument("--synthetic", action="store_true", help="train on random smooth motion fields instead")
    data.add_argument("--synthetic-samples", type=int, default=64, help="clips in the synthetic data set")
    data.add_argument("--dataloader-num-workers", type=int, default=0)
    model = parser.add_argument_group("model")
    model.add_argument("--config", help="JSON file of VideoLaVITMotionTokenizerConfig fields (new model)")
    model.add_argument("--model-name-or-path", help="saved VideoLaVITMotionTokenizer to continue training")
    model.add_argument("--gradient-checkpointing", action="store_true")
    model.add_argument(
        "--train-decoder-only",
        action="store_true",
        help="refit the decoder of a saved tokenizer (--model-name-or-path): encoder and codebook frozen, so every "
        "motion id stays the same and models trained on the ids need no retraining",
    )
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--output-dir", required=True)
    optim.add_argument("--max-steps", type=int, required=True, help="optimizer steps of the whole schedule")
    optim.add_argument(
        "--stop-after-steps",
        type=int,
        help="end this invocation after N more steps with a checkpoint (wall-clock-limited jobs); resume later",
    )
    optim.add_argument("--batch-size", type=int, default=8, help="clips per process and micro-batch")
    optim.add_argument("--gradient-accumulation-steps", type=int, default=1)
    optim.add_argument("--learning-rate", type=float, default=1e-4)
    optim.add_argument("--weight-decay", type=float, default=0.01)
    optim.add_argument("--adam-beta1", type=float, default=0.9)
    optim.add_argument("--adam-beta2", type=float, default=0.99)
    optim.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    optim.add_argument("--lr-scheduler", default="cosine", help="any transformers.get_scheduler name")
    optim.add_argument("--warmup-steps", type=int, default=0)
    optim.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="overrides the accelerate config")
    optim.add_argument("--cpu", action="store_true", help="train on CPU (with several processes: gloo)")
    optim.add_argument("--seed", type=int, default=0)
    codebook = parser.add_argument_group("codebook")
    codebook.add_argument("--restart-dead-codes-every", type=int, default=0, help="steps between restarts, 0: off")
    codebook.add_argument("--dead-code-min-count", type=int, default=1, help="uses below this since the last restart")
    run = parser.add_argument_group("checkpoints and logging")
    run.add_argument("--checkpointing-steps", type=int, default=500, help="save_state every N steps, 0: only at the end")
    run.add_argument("--checkpoints-total-limit", type=int, default=None, help="keep only the newest N checkpoints")
    run.add_argument("--resume-from-checkpoint", help="a checkpoint folder, or 'latest' (starts afresh if none)")
    run.add_argument("--logging-steps", type=int, default=10)
    run.add_argument("--report-to", nargs="*", default=[], help="extra accelerate trackers (tensorboard, wandb, ...)")
    args = parser.parse_args(argv)
    if args.synthetic == bool(args.dataset):
        parser.error("give exactly one of --dataset and --synthetic")
    if bool(args.config) == bool(args.model_name_or_path):
        parser.error("give exactly one of --config and --model-name-or-path")
    if args.train_decoder_only and not args.model_name_or_path:
        parser.error("--train-decoder-only refits a trained tokenizer: give --model-name-or-path")
    if args.train_decoder_only and args.restart_dead_codes_every:
        parser.error("--train-decoder-only keeps the codebook frozen: drop --restart-dead-codes-every")
    return args


DECODER_MODULES = ("decoder", "motion_projection")


def freeze_all_but_decoder(model: VideoLaVITMotionTokenizer) -> None:
    """Leave only the decoder side (`decoder`, `motion_projection`: code vectors -> motion) trainable.

    The encoder, code projection and codebook get no gradient, and `set_training_modes` keeps them in eval mode,
    which also stops the EMA codebook updates: `encode` gives the same ids before and after training.
    """
    model.requires_grad_(False)
    for name in DECODER_MODULES:
        getattr(model, name).requires_grad_(True)


def set_training_modes(model: torch.nn.Module, decoder_only: bool) -> None:
    """`model.train()`, or with `decoder_only` eval mode everywhere but the decoder modules (no EMA updates:
    the tokenizer's forward updates its EMA codebook only in training mode)."""
    if not decoder_only:
        model.train()
        return
    model.eval()
    for name in DECODER_MODULES:
        getattr(model, name).train()


def build_model(args: argparse.Namespace) -> VideoLaVITMotionTokenizer:
    """A new tokenizer from ``--config`` (JSON of config fields) or a saved one from ``--model-name-or-path``."""
    if args.model_name_or_path:
        return VideoLaVITMotionTokenizer.from_pretrained(args.model_name_or_path)
    fields = json.loads(Path(args.config).read_text())
    return VideoLaVITMotionTokenizer(VideoLaVITMotionTokenizerConfig(**fields))


def clip_shape(config: VideoLaVITMotionTokenizerConfig) -> tuple[int, int, int, int]:
    """Shape of one training sample: ``(channels, frames, height, width)``."""
    return (config.in_channels, config.num_frames, *config.grid_size)


def synthetic_motion(config: VideoLaVITMotionTokenizerConfig, num_samples: int, seed: int) -> Dataset:
    """Random smooth motion fields ``[num_samples, 2, frames, height, width]`` as a `datasets.Dataset`.

    Low-resolution Gaussian noise upsampled trilinearly, so the fields are spatially and temporally coherent
    like real motion (and learnable), at the magnitude of LLM-path motion grids.
    """
    channels, frames, height, width = clip_shape(config)
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_samples, channels, max(frames // 6, 2), max(height // 5, 2), max(width // 6, 2), generator=generator)
    motion = torch.nn.functional.interpolate(coarse, size=(frames, height, width), mode="trilinear", align_corners=True)
    features = Features({"motion_vectors": Array4D(shape=clip_shape(config), dtype="float32")})
    return Dataset.from_dict({"motion_vectors": (0.3 * motion).numpy()}, features=features)


def prepared_motion_clips(path: str, config: VideoLaVITMotionTokenizerConfig) -> Dataset:
    """Every clip of every successful row of a prepared dataset, as rows of ``motion_vectors [2, T, H, W]``."""
    videos = load_prepared_dataset(path)
    if "motion_vectors" not in videos.column_names:
        raise TrainingSetupError(f"{path} has no motion_vectors column; prepare it with datasets/prepare_video_text.py")
    stored = tuple(videos.features["motion_vectors"].shape[1:])
    if stored != clip_shape(config):
        raise TrainingSetupError(
            f"{path} stores motion grids of shape {stored} but the model expects {clip_shape(config)}; "
            "set num_frames/grid_size in --config to match the data"
        )
    usable = videos.filter(lambda error: error is None, input_columns="error", desc="dropping failed rows")
    usable = usable.select_columns(["motion_vectors"]).with_format("numpy")
    features = Features({"motion_vectors": Array4D(shape=stored, dtype="float32")})
    clips = usable.map(
        lambda batch: {"motion_vectors": [clip for grid in batch["motion_vectors"] for clip in np.asarray(grid)]},
        batched=True,
        features=features,
        desc="splitting videos into clips",
    )
    if len(clips) == 0:
        raise TrainingSetupError(f"{path} holds no clips (every row failed or had no 24-frame clip)")
    return clips


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders in ``output_dir``, oldest first."""
    found = [(int(match[1]), item) for item in output_dir.glob("checkpoint-*") if (match := CHECKPOINT_PATTERN.match(item.name))]
    return [item for _, item in sorted(found)]


def save_checkpoint(accelerator: Accelerator, output_dir: Path, progress: TrainingProgress, limit: int | None) -> Path:
    """``save_state`` into ``checkpoint-<step>`` with the progress counters; prune beyond ``limit``."""
    folder = output_dir / f"checkpoint-{progress.step}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / TRAINING_STATE_FILE).write_text(json.dumps(asdict(progress)))
        if limit is not None:
            for old in checkpoint_folders(output_dir)[:-limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return folder


def resume(accelerator: Accelerator, output_dir: Path, requested: str) -> TrainingProgress:
    """Restore model, optimizer, scheduler and RNG states and the progress counters of a checkpoint."""
    if requested == "latest":
        folders = checkpoint_folders(output_dir)
        if not folders:
            logger.info("No checkpoint in %s yet, starting from scratch", output_dir)
            return TrainingProgress()
        folder = folders[-1]
    else:
        folder = Path(requested)
    state_file = folder / TRAINING_STATE_FILE
    if not state_file.is_file():
        raise TrainingSetupError(f"{folder} is not a checkpoint of this script (no {TRAINING_STATE_FILE})")
    accelerator.load_state(str(folder))
    progress = TrainingProgress(**json.loads(state_file.read_text()))
    logger.info("Resumed from %s at step %d (epoch %d, batch %d)", folder, progress.step, progress.epoch, progress.batches_in_epoch)
    return progress


def check_launch(accelerator: Accelerator) -> None:
    """Refuse to run several independent copies when a multi-process launch fell back to one process each."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and accelerator.num_processes == 1:
        raise TrainingSetupError(
            f"launched as {world_size} processes but accelerate set up a single-process run (no GPU found?); "
            "pass --cpu to this script (or set ACCELERATE_USE_CPU=true) to train on CPU with gloo"
        )


def check_strategy(accelerator: Accelerator, config: VideoLaVITMotionTokenizerConfig, restarts: bool) -> None:
    """Refuse in-place codebook updates under engines that keep their own (sharded or fp32) copy of the weights."""
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if sharded and (config.codebook_ema or restarts):
        raise TrainingSetupError(
            f"{accelerator.distributed_type.value} keeps its own copy of the parameters, which the EMA codebook "
            "updates and dead-code restarts (made in place) would not reach; train the motion tokenizer with "
            "examples/configs/ddp.yaml (158 M parameters fit on one GPU), or set codebook_ema false and drop "
            "--restart-dead-codes-every"
        )


class CodebookMonitor:
    """Follows code assignments: usage and perplexity since the last log, and the counts and encoder latents
    (at most ``MAX_RESTART_LATENTS`` per process) since the last dead-code restart."""

    def __init__(self, codebook_size: int, code_dim: int, device: torch.device, keep_latents: bool):
        self.code_dim = code_dim
        self.keep_latents = keep_latents
        self.window_counts = torch.zeros(codebook_size, dtype=torch.long, device=device)
        self.restart_counts = torch.zeros_like(self.window_counts)
        self.latents: list[torch.Tensor] = []

    def update(self, code_counts: torch.Tensor, encoder_latents: torch.Tensor) -> None:
        """Add one micro-batch: ``code_counts [codebook_size]``, ``encoder_latents [batch, tokens, code_dim]``."""
        self.window_counts += code_counts
        self.restart_counts += code_counts
        if self.keep_latents:
            self.latents.append(encoder_latents.reshape(-1, self.code_dim).float())
            while sum(item.shape[0] for item in self.latents) > MAX_RESTART_LATENTS and len(self.latents) > 1:
                self.latents.pop(0)

    def statistics(self, accelerator: Accelerator) -> dict[str, float]:
        """Usage (fraction of codes chosen at least once) and perplexity over all processes; resets the window."""
        counts = accelerator.reduce(self.window_counts, "sum").double().cpu()
        self.window_counts.zero_()
        probabilities = counts / counts.sum().clamp_min(1)
        entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum()
        return {"codebook_usage": (counts > 0).double().mean().item(), "codebook_perplexity": entropy.exp().item()}

    def restart_dead_codes(self, model: VideoLaVITMotionTokenizer, min_count: int) -> int:
        """Re-seed codes used fewer than ``min_count`` times since the last restart (collective call)."""
        restarted = model.restart_dead_codes(torch.cat(self.latents), code_counts=self.restart_counts, min_count=min_count)
        self.restart_counts.zero_()
        self.latents.clear()
        return restarted.numel()


class LossWindow:
    """The losses of the micro-batches since the last log."""

    names = ("loss", "reconstruction_loss", "commitment_loss", "codebook_loss")

    def __init__(self):
        self.values: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}

    def update(self, output) -> None:
        """Add one micro-batch's model output."""
        for name in self.names:
            self.values[name].append(getattr(output, name).detach().float())

    def last_step(self, accelerator: Accelerator, micro_batches: int) -> float:
        """Mean loss of the last optimizer step (its ``micro_batches``) over all processes."""
        return accelerator.reduce(torch.stack(self.values["loss"][-micro_batches:]).mean(), "mean").item()

    def means(self, accelerator: Accelerator) -> dict[str, float]:
        """Mean of every loss over the window and all processes; resets the window."""
        means = {name: accelerator.reduce(torch.stack(values).mean(), "mean").item() for name, values in self.values.items()}
        self.values = {name: [] for name in self.names}
        return means


def build_dataloader(args: argparse.Namespace, train_data: Dataset, num_processes: int) -> DataLoader:
    """Shuffled batches of ``motion_vectors [batch, 2, frames, height, width]``."""
    if len(train_data) < args.batch_size * num_processes:
        raise TrainingSetupError(
            f"{len(train_data)} clips cannot fill one batch of {args.batch_size} on {num_processes} "
            "processes; lower --batch-size or add data"
        )
    # Shuffling comes from accelerate's seedable sampler (seed + epoch); the loader's own generator only seeds
    # its workers, and keeps iterator creation from drawing on the global RNG, which checkpoints restore.
    return DataLoader(
        train_data.with_format("torch"),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )


def build_optimizer(args: argparse.Namespace, model: torch.nn.Module, num_processes: int):
    """AdamW over the trainable parameters (the EMA codebook is not one) and the learning-rate schedule."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.weight_decay
    )
    # The prepared scheduler steps once per process per optimizer step.
    scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.warmup_steps * num_processes,
        num_training_steps=args.max_steps * num_processes,
    )
    return optimizer, scheduler


def train(args, accelerator, model, optimizer, scheduler, dataloader, progress: TrainingProgress) -> list[float]:
    """Run optimizer steps until ``--max-steps`` (or ``--stop-after-steps``); returns every step's mean loss."""
    output_dir = Path(args.output_dir)
    unwrapped = accelerator.unwrap_model(model)
    config = unwrapped.config
    monitor = CodebookMonitor(config.codebook_size, config.code_dim, accelerator.device, bool(args.restart_dead_codes_every))
    losses = LossWindow()
    step_losses: list[float] = []
    end_step = args.max_steps if args.stop_after_steps is None else min(args.max_steps, progress.step + args.stop_after_steps)
    set_training_modes(model if not hasattr(model, "module") else model.module, args.train_decoder_only)
    while progress.step < end_step:
        dataloader.set_epoch(progress.epoch)
        skip = progress.batches_in_epoch
        for batch in accelerator.skip_first_batches(dataloader, skip) if skip else dataloader:
            with accelerator.accumulate(model):
                output = model(batch["motion_vectors"])
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            progress.batches_in_epoch += 1
            losses.update(output)
            monitor.update(output.code_counts, output.encoder_latents)
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            step_losses.append(losses.last_step(accelerator, args.gradient_accumulation_steps))
            if not math.isfinite(step_losses[-1]):
                raise FloatingPointError(f"loss became {step_losses[-1]} at step {progress.step}; lower --learning-rate")
            if progress.step % args.logging_steps == 0 or progress.step in (1, end_step):
                metrics = {**losses.means(accelerator), **monitor.statistics(accelerator)}
                metrics.update(learning_rate=scheduler.get_last_lr()[0], epoch=progress.epoch)
                accelerator.log(metrics, step=progress.step)
                logger.info("step %d: %s", progress.step, ", ".join(f"{key} {value:.5g}" for key, value in metrics.items()))
            if args.restart_dead_codes_every and progress.step % args.restart_dead_codes_every == 0:
                restarted = monitor.restart_dead_codes(unwrapped, args.dead_code_min_count)
                accelerator.log({"restarted_codes": restarted}, step=progress.step)
            if args.checkpointing_steps and progress.step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, output_dir, progress, args.checkpoints_total_limit)
            if progress.step >= end_step:
                break
        else:
            progress.epoch += 1
            progress.batches_in_epoch = 0
    if not args.checkpointing_steps or progress.step % args.checkpointing_steps:
        save_checkpoint(accelerator, output_dir, progress, args.checkpoints_total_limit)
    return step_losses


def main(argv: list[str] | None = None) -> int:
    """Train; returns the process exit code."""
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=[JsonLinesTracker("motion_tokenizer", output_dir), *args.report_to],
        project_dir=str(output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    check_launch(accelerator)
    set_seed(args.seed)

    model = build_model(args)
    if args.train_decoder_only:
        freeze_all_but_decoder(model)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    check_strategy(accelerator, model.config, bool(args.restart_dead_codes_every))
    with accelerator.main_process_first():
        train_data = (
            synthetic_motion(model.config, args.synthetic_samples, args.seed)
            if args.synthetic
            else prepared_motion_clips(args.dataset, model.config)
        )
    dataloader = build_dataloader(args, train_data, accelerator.num_processes)
    optimizer, scheduler = build_optimizer(args, model, accelerator.num_processes)
    logger.info(
        "%d clips, %d processes, batch %d x accumulation %d, %d parameters",
        len(train_data), accelerator.num_processes, args.batch_size, args.gradient_accumulation_steps,
        sum(parameter.numel() for parameter in model.parameters()),
    )
    model, optimizer, dataloader, scheduler = accelerator.prepare(model, optimizer, dataloader, scheduler)
    accelerator.init_trackers("motion_tokenizer", config={k: v for k, v in vars(args).items() if not isinstance(v, list)})
    progress = resume(accelerator, output_dir, args.resume_from_checkpoint) if args.resume_from_checkpoint else TrainingProgress()

    step_losses = train(args, accelerator, model, optimizer, scheduler, dataloader, progress)

    if step_losses:
        logger.info("first loss %.5f, last loss %.5f (step %d)", step_losses[0], step_losses[-1], progress.step)
    if progress.step < args.max_steps:
        logger.info("Stopped at step %d of %d; continue with --resume-from-checkpoint latest", progress.step, args.max_steps)
    else:
        accelerator.unwrap_model(model).save_pretrained(
            output_dir,
            state_dict=accelerator.get_state_dict(model),
            is_main_process=accelerator.is_main_process,
            save_function=accelerator.save,
        )
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
