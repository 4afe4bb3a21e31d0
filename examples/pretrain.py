"""Stage 2: unified generative pre-training of Video-LaVIT with `transformers.Trainer`.

Every image and video becomes discrete ids of the frozen visual and motion tokenizers and the
language model learns next-token prediction on all of them (text, keyframe codes, motion codes), with
video-text pairs in both orders (`[video, text]` and `[text, video]`, drawn per sample), image-text
pairs and text-only documents mixed in one stream (`VideoLaVITPretrainingCollator`).

Start from
- a Video-LaVIT checkpoint folder (`--model`): a converted release or `vlavit tiny-checkpoint DIR`;
- or a plain Llama checkpoint (`--llama`) whose vocabulary is extended with the layout of
  `VideoLaVITConfig` and whose tokenizers come from a Video-LaVIT checkpoint (`--tokenizers_from`).
  The new embedding and LM-head rows are drawn from a normal distribution with the mean and covariance
  of the existing rows (`resize_token_embeddings(mean_resizing=True)`): the new tokens start where the
  text tokens live, so the first losses stay close to the text model's.

Data (any mix; each a folder written by `datasets.Dataset.save_to_disk` or a CSV/JSON(L)/TXT file):
- `--video_text`: `datasets/prepare_video_text.py` output (`caption`, `keyframes`, `motion_vectors`,
  optional `motion_token_ids`; rows with an `error` are skipped) or rows with a `video` path + `caption`;
- `--image_text`: rows with `image` (path or Image) + `caption`/`text`;
- `--text`: rows with `text` (a `.txt` file is one document per line);
- `--synthetic_videos N`: N synthetic moving-shape videos, their keyframes as images and a synthetic
  English corpus, for the tiny CPU run below.

Every `TrainingArguments` option applies (`--max_steps`, `--learning_rate`, `--bf16`,
`--gradient_accumulation_steps`, `--save_steps`, `--resume_from_checkpoint`, ...). Multi-GPU: launch the
same command with `accelerate launch` or `torchrun`.

Tiny run on CPU::

    vlavit tiny-checkpoint tiny-video-lavit
    python examples/pretrain.py --model tiny-video-lavit --synthetic_videos 4 \\
        --output_dir outputs/pretrain_tiny \\
        --max_steps 30 --per_device_train_batch_size 4 --learning_rate 1e-3 --logging_steps 5 --use_cpu
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, load_dataset
from torch.utils.data import ConcatDataset
from transformers import (
    AutoTokenizer,
    HfArgumentParser,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers_vlavit import (
    VideoLaVITConfig,
    VideoLaVITForCausalLM,
    VideoLaVITImageProcessor,
    VideoLaVITProcessor,
    decompose_video,
    synthetic_english_corpus,
)
from transformers_vlavit.data_collator import VideoLaVITPretrainingCollator
from transformers_vlavit.pipeline_text_to_video import write_text_to_video_task
from transformers_vlavit.prepared_data import load_prepared_dataset
from transformers_vlavit.synthetic_video import write_training_sample_video
from transformers_vlavit.tokenizer_training import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, layout_tokens

SYNTHETIC_CAPTIONS = (
    "colored shapes drift over a panning texture",
    "a slow camera pan across a textured wall with moving shapes",
    "bright blobs glide from left to right",
    "shapes move across a noisy background",
)


class PretrainingSetupError(ValueError):
    """The command line does not describe a model and data to pre-train on."""


@dataclass
class PretrainingArguments:
    """What to train and on what (the optimisation options are `TrainingArguments`)."""

    model: str | None = field(default=None, metadata={"help": "Video-LaVIT checkpoint folder to start from."})
    llama: str | None = field(
        default=None, metadata={"help": "Plain Llama checkpoint whose vocabulary is extended."}
    )
    tokenizers_from: str | None = field(
        default=None,
        metadata={"help": "With --llama: Video-LaVIT checkpoint providing the visual/motion tokenizers."},
    )
    video_text: list[str] = field(default_factory=list, metadata={"help": "Video-text datasets."})
    image_text: list[str] = field(default_factory=list, metadata={"help": "Image-text datasets."})
    text: list[str] = field(default_factory=list, metadata={"help": "Text-only datasets."})
    synthetic_videos: int = field(
        default=0, metadata={"help": "Add this many synthetic video/image/text samples."}
    )
    text_first_probability: float = field(
        default=0.5, metadata={"help": "Share of [text, video] video samples."}
    )
    max_length: int | None = field(default=None, metadata={"help": "Cut sequences to this many tokens."})
    sample_visual_tokens: bool = field(
        default=False, metadata={"help": "Gumbel-sample the kept keyframe tokens."}
    )


def extend_llama_to_video_lavit(
    llama: LlamaForCausalLM,
    llama_tokenizer: PreTrainedTokenizerBase,
    tokenizer_source: VideoLaVITForCausalLM,
) -> tuple[VideoLaVITForCausalLM, PreTrainedTokenizerBase]:
    """
    A Video-LaVIT model from a plain Llama: the vocabulary grows from `T` text tokens to the layout of
    `VideoLaVITConfig` (`T + 4 + V + M` rows) and the visual/motion tokenizers come from `tokenizer_source`.

    The new embedding and LM-head rows follow a normal distribution with the mean and covariance of the
    old rows (`resize_token_embeddings(mean_resizing=True)`); the old rows are kept as they are. The
    tokenizer gains the layout tokens and the `<image>`/`<video>` placeholders at the config's ids.

    Args:
        llama: the text model, `vocab_size = T` rows (modified in place: its embeddings are resized).
        llama_tokenizer: its tokenizer with exactly `T` tokens (modified in place).
        tokenizer_source: a Video-LaVIT model whose tokenizers (and their configs) are copied.

    Returns:
        The Video-LaVIT model and the extended tokenizer.
    """
    text_vocab_size = llama.config.vocab_size
    if len(llama_tokenizer) != text_vocab_size:
        raise PretrainingSetupError(
            f"the Llama tokenizer has {len(llama_tokenizer)} tokens but the model {text_vocab_size} "
            "embedding rows; "
            "extend a checkpoint whose tokenizer and embeddings agree."
        )
    source_config = tokenizer_source.config
    config = VideoLaVITConfig(
        text_config=LlamaConfig.from_dict(llama.config.to_dict()),
        visual_tokenizer_config=source_config.visual_tokenizer_config.to_dict(),
        motion_tokenizer_config=source_config.motion_tokenizer_config.to_dict(),
        text_vocab_size=text_vocab_size,
    )
    added = layout_tokens(config.visual_codebook_size, config.motion_codebook_size)
    llama_tokenizer.add_tokens([*added, IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER], special_tokens=True)
    expected = {
        added[0]: config.image_start_token_id,
        added[-1]: config.vocab_size - 1,
        IMAGE_PLACEHOLDER: config.image_token_id,
        VIDEO_PLACEHOLDER: config.video_token_id,
    }
    found = dict(zip(expected, llama_tokenizer.convert_tokens_to_ids(list(expected))))
    if found != expected:
        raise PretrainingSetupError(f"extended tokenizer ids {found} differ from the layout {expected}.")

    llama.resize_token_embeddings(config.vocab_size, mean_resizing=True)
    model = VideoLaVITForCausalLM(config)
    model.model.language_model.load_state_dict(llama.model.state_dict())
    model.lm_head.load_state_dict(llama.lm_head.state_dict())
    model.visual_tokenizer.load_state_dict(tokenizer_source.visual_tokenizer.state_dict())
    model.motion_tokenizer.load_state_dict(tokenizer_source.motion_tokenizer.state_dict())
    return model, llama_tokenizer


def load_model_and_processor(args: PretrainingArguments) -> tuple[VideoLaVITForCausalLM, VideoLaVITProcessor]:
    """The model to pre-train (tokenizers frozen) and its processor, from `--model` or `--llama`."""
    if (args.model is None) == (args.llama is None):
        raise PretrainingSetupError(
            "give exactly one of --model (Video-LaVIT checkpoint) or --llama (plain Llama)."
        )
    if args.model is not None:
        model = VideoLaVITForCausalLM.from_pretrained(args.model)
        processor = VideoLaVITProcessor.from_pretrained(args.model)
    else:
        if args.tokenizers_from is None:
            raise PretrainingSetupError(
                "--llama needs --tokenizers_from, a Video-LaVIT checkpoint with the tokenizers."
            )
        source = VideoLaVITForCausalLM.from_pretrained(args.tokenizers_from)
        model, tokenizer = extend_llama_to_video_lavit(
            LlamaForCausalLM.from_pretrained(args.llama), AutoTokenizer.from_pretrained(args.llama), source
        )
        processor = VideoLaVITProcessor(image_processor=VideoLaVITImageProcessor(), tokenizer=tokenizer)
    model.visual_tokenizer.requires_grad_(False).eval()
    model.motion_tokenizer.requires_grad_(False).eval()
    return model, processor


def load_table(path: str) -> Dataset:
    """A dataset from a prepared folder (`save_to_disk` or Parquet shards) or a CSV / JSON(L) / TXT file."""
    if Path(path).is_dir():
        return load_prepared_dataset(path)
    suffix = Path(path).suffix.lower()
    builders = {".csv": "csv", ".json": "json", ".jsonl": "json", ".txt": "text"}
    if suffix not in builders:
        raise PretrainingSetupError(
            f"cannot read {path}: give a save_to_disk folder or a .csv/.json/.jsonl/.txt file."
        )
    return load_dataset(builders[suffix], data_files=path, split="train")


def prepare_video_text(dataset: Dataset) -> Dataset:
    """Drop failed decompositions and serve the motion arrays as tensors (keyframes stay PIL images)."""
    if "error" in dataset.column_names:
        dataset = dataset.filter(lambda error: error is None, input_columns="error")
    arrays = [name for name in ("motion_vectors", "motion_token_ids") if name in dataset.column_names]
    return dataset.with_format("torch", columns=arrays, output_all_columns=True) if arrays else dataset


def synthetic_samples(folder: Path, num_videos: int, seed: int) -> list[dict]:
    """`num_videos` synthetic video-text samples plus as many image-text and text-only ones."""
    folder.mkdir(parents=True, exist_ok=True)
    samples, sentences = [], synthetic_english_corpus(num_sentences=num_videos, seed=seed)
    for index in range(num_videos):
        path = folder / f"synthetic_{index}.mp4"
        write_training_sample_video(path, fps=12, seed=seed + index)
        clips = decompose_video(path)
        caption = SYNTHETIC_CAPTIONS[index % len(SYNTHETIC_CAPTIONS)]
        samples.append({"caption": caption, "video": clips})
        samples.append({"caption": f"a still frame: {caption}", "image": clips.keyframes[0]})
        samples.append({"text": next(sentences)})
    return samples


def build_train_dataset(args: PretrainingArguments, output_dir: str, seed: int) -> torch.utils.data.Dataset:
    """All requested sources in one map-style dataset (the sampler shuffles across them)."""
    parts = [prepare_video_text(load_table(path)) for path in args.video_text]
    parts += [load_table(path) for path in args.image_text + args.text]
    if args.synthetic_videos:
        parts.append(synthetic_samples(Path(output_dir) / "synthetic_data", args.synthetic_videos, seed))
    if not parts:
        raise PretrainingSetupError(
            "no training data: pass --video_text, --image_text, --text or --synthetic_videos."
        )
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def build_trainer(args: PretrainingArguments, training_args: TrainingArguments) -> Trainer:
    """The `Trainer` of stage 2 (model, processor, data and collator set up from the arguments)."""
    set_seed(training_args.seed)
    model, processor = load_model_and_processor(args)
    collator = VideoLaVITPretrainingCollator(
        processor,
        model,
        text_first_probability=args.text_first_probability,
        max_length=args.max_length,
        sample_visual_tokens=args.sample_visual_tokens,
    )
    # the collator's columns are not forward arguments: keep them all
    training_args.remove_unused_columns = False
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=build_train_dataset(args, training_args.output_dir, training_args.seed),
        data_collator=collator,
        processing_class=processor,
    )


def losses(trainer: Trainer) -> list[float]:
    """Training losses logged so far (one per `logging_steps`)."""
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def main(argv: list[str] | None = None) -> Trainer:
    """Parse `argv`, pre-train, save the model and processor in `--output_dir`; returns the trainer."""
    args, training_args = HfArgumentParser(
        (PretrainingArguments, TrainingArguments)
    ).parse_args_into_dataclasses(argv)
    trainer = build_trainer(args, training_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        # a complete checkpoint: the text-to-video task and the detokenizers of the starting checkpoint
        write_text_to_video_task(training_args.output_dir, detokenizer_from=args.model or args.tokenizers_from)
    history = losses(trainer)
    if history and trainer.is_world_process_zero():
        print(
            f"pre-training loss: first {history[0]:.4f}, last {history[-1]:.4f} ({len(history)} logged steps)"
        )
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
