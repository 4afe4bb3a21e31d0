"""Stage 3: instruction tuning of Video-LaVIT with TRL's `SFTTrainer`, optionally with a PEFT LoRA adapter.

Conversations in the chat format (Vicuna-v1 through the processor's chat template) with `<video>` /
`<image>` placeholders, as LLaVA / Video-ChatGPT instruction data; understanding layout: keyframes
enter as continuous features of the frozen visual tokenizer, motion as embeddings of the frozen motion
tokenizer's ids (`VideoLaVITForCausalLM.forward` splices them in). The loss covers the assistant
answers only (`VideoLaVITSFTCollator`: `-100` on the system prompt, the user turns, the role markers, the
visual/motion positions and the padding).

With `--use_lora`, only LoRA matrices on the language model's linear layers (attention and MLP
projections of every decoder layer, never the tokenizers) are trained (plus the visual tokenizer's
`vit_proj` projection into the LLM's space with `--train_projection`, which a model trained from scratch
needs: pre-training sees keyframes only as discrete codes, so that projection is still untrained); `save_model` writes the adapter,
which loads with `PeftModel.from_pretrained(base_model, adapter_dir)` and merges with
`merge_and_unload()`; `--merged_output_dir DIR` also writes the merged model. Without LoRA, the whole
language model is fine-tuned and the two tokenizers stay frozen.

Why a `SFTTrainer` subclass: TRL's default loss patches a fused LM head that runs the base model
(`model.base_model`, our `VideoLaVITModel`) and scores its hidden states against the batch's labels; the
base model splices keyframe features and motion ids in at the placeholders, which lengthens the
sequence, so those labels (aligned with `input_ids`) no longer line up. `VideoLaVITSFTTrainer.compute_loss`
therefore calls the model's own forward, which splices the labels too, as TRL's documentation suggests
for custom losses.

Data (`--train_data`): the `datasets/prepare_instructions.py` output (`messages`, `images`, `videos` and
the stored clips `keyframes` / `motion_vectors` / `clips_per_video`; rows with an `error` are skipped),
or any `save_to_disk` folder or JSON(L) file whose rows hold `messages` and the `videos` (paths) /
`images` of their placeholders; `--synthetic_conversations N` adds N synthetic video, image and text
conversations.

Tiny run on CPU::

    vlavit tiny-checkpoint tiny-video-lavit
    python examples/sft.py --model tiny-video-lavit --synthetic_conversations 2 --use_lora \\
        --output_dir outputs/sft_tiny --max_steps 20 --per_device_train_batch_size 3 --learning_rate 5e-3 \\
        --logging_steps 5 --use_cpu --bf16 false --gradient_checkpointing false \\
        --merged_output_dir outputs/sft_tiny_merged
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_dataset
from peft import LoraConfig, PeftModel
from transformers import HfArgumentParser, Trainer, set_seed
from trl import SFTConfig, SFTTrainer

from transformers_vlavit import VideoLaVITForCausalLM, VideoLaVITProcessor
from transformers_vlavit.data_collator import VideoLaVITSFTCollator
from transformers_vlavit.pipeline_text_to_video import write_text_to_video_task
from transformers_vlavit.prepared_data import load_prepared_dataset
from transformers_vlavit.synthetic_video import write_training_sample_video
from transformers_vlavit.visual_tokenizer_training import fit_projection_to_code_embeddings

# the decoder layers' linear projections of the language model; the tokenizers' modules never match
# the understanding projection of the visual tokenizer (`--train_projection`)
PROJECTION = "vit_proj"
LLM_LINEAR_LAYERS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
SYNTHETIC_ANSWERS = (
    "Colored shapes drift over a panning texture.",
    "Bright blobs glide across a textured background.",
)


class SFTSetupError(ValueError):
    """The command line does not describe a model and data to instruction-tune."""


@dataclass
class SFTScriptArguments:
    """What to tune and how (the optimisation options are TRL's `SFTConfig`)."""

    model: str = field(
        metadata={"help": "Video-LaVIT checkpoint folder (converted release, stage-2 output or tiny)."}
    )
    train_data: str | None = field(
        default=None, metadata={"help": "Conversations: save_to_disk folder or JSON(L)."}
    )
    synthetic_conversations: int = field(
        default=0, metadata={"help": "Add this many synthetic conversations of each kind."}
    )
    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of the whole LLM."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    max_text_length: int | None = field(
        default=None, metadata={"help": "Cut conversations to this many text tokens."}
    )
    max_clips: int = field(default=8, metadata={"help": "Most clips taken from a video file."})
    merged_output_dir: str | None = field(
        default=None, metadata={"help": "Also save the LoRA-merged model here."}
    )
    train_projection: bool = field(
        default=False,
        metadata={
            "help": "Also train the visual tokenizer's `vit_proj` (its features -> the LLM's input space), as "
            "LLaVA trains its projector; with --use_lora it is saved with the adapter (`modules_to_save`)."
        },
    )
    align_projection_images: int = field(
        default=0,
        metadata={
            "help": "Before training, fit `vit_proj` in closed form on up to N keyframes of the training data so "
            "that each continuous keyframe token lands on the embedding of its own discrete code (the inputs "
            "pre-training taught the language model); 0 keeps `vit_proj` as loaded."
        },
    )


class VideoLaVITSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose loss is the model's own forward (which splices images and videos in)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Causal-LM loss of the model's forward on the collator's batch (labels `-100` outside answers)."""
        inputs["use_cache"] = False
        return Trainer.compute_loss(
            self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )


def lora_config(args: SFTScriptArguments) -> LoraConfig:
    """LoRA on the language model's attention and MLP projections."""
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=LLM_LINEAR_LAYERS,
        modules_to_save=[PROJECTION] if args.train_projection else None,
        task_type="CAUSAL_LM",
    )


def synthetic_conversations(folder: Path, count: int, seed: int) -> Dataset:
    """`count` times: two conversations about a new synthetic video and one text-only conversation."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        path = folder / f"synthetic_{index}.mp4"
        write_training_sample_video(path, fps=12, seed=seed + index)
        answer = SYNTHETIC_ANSWERS[index % len(SYNTHETIC_ANSWERS)]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": "<video>\nWhat happens in the video?"},
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": "Is it a real scene?"},
                    {"role": "assistant", "content": "No, it is synthetic."},
                ],
                "videos": [str(path)],
            }
        )
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": "<video>\nDescribe the first frame."},
                    {"role": "assistant", "content": f"A frame of moving shapes, number {index}."},
                ],
                "videos": [str(path)],
            }
        )
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Count to {index + 2}."},
                    {"role": "assistant", "content": " ".join(str(n) for n in range(1, index + 3))},
                ],
                "videos": [],
            }
        )
    return Dataset.from_list(rows)


def load_conversations(args: SFTScriptArguments, output_dir: str, seed: int) -> Dataset:
    """The training conversations from `--train_data` and/or the synthetic ones."""
    parts = []
    if args.train_data:
        path = Path(args.train_data)
        parts.append(
            load_prepared_dataset(path)
            if path.is_dir()
            else load_dataset("json", data_files=str(path), split="train")
        )
    if args.synthetic_conversations:
        parts.append(
            synthetic_conversations(Path(output_dir) / "synthetic_data", args.synthetic_conversations, seed)
        )
    if not parts:
        raise SFTSetupError("no training data: pass --train_data or --synthetic_conversations.")
    dataset = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    if "error" in dataset.column_names:
        dataset = dataset.filter(lambda error: error is None, input_columns="error")
    if "motion_vectors" in dataset.column_names:
        dataset = dataset.with_format("numpy", columns=["motion_vectors"], output_all_columns=True)
    return dataset


def align_projection(model: VideoLaVITForCausalLM, processor: VideoLaVITProcessor, dataset: Dataset, count: int) -> dict:
    """`fit_projection_to_code_embeddings` on the first `count` keyframes of `dataset` (its `keyframes` column)."""
    if "keyframes" not in dataset.column_names:
        raise SFTSetupError("--align_projection_images needs training rows with stored `keyframes` "
                            "(datasets/prepare_instructions.py output)")
    images = []
    for keyframes in dataset.select_columns(["keyframes"]):
        images += [image.convert("RGB") for image in keyframes["keyframes"] or []]
        if len(images) >= count:
            break
    if not images:
        raise SFTSetupError("--align_projection_images: the training data holds no keyframes")
    pixel_values = processor.image_processor(images=images[:count], return_tensors="pt")["pixel_values"]
    config = model.config
    offset, size = config.visual_token_offset, config.visual_codebook_size
    code_embeddings = model.get_input_embeddings().weight[offset : offset + size].detach()
    return fit_projection_to_code_embeddings(model.visual_tokenizer, code_embeddings, pixel_values)


def build_trainer(args: SFTScriptArguments, training_args: SFTConfig) -> VideoLaVITSFTTrainer:
    """The stage-3 trainer: model (tokenizers frozen), optional LoRA, collator and data."""
    set_seed(training_args.seed)
    model = VideoLaVITForCausalLM.from_pretrained(args.model)
    processor = VideoLaVITProcessor.from_pretrained(args.model)
    train_dataset = load_conversations(args, training_args.output_dir, training_args.seed)
    resuming = bool(training_args.resume_from_checkpoint)
    if args.align_projection_images and not resuming:  # a resumed run restores the fitted (and trained) weights
        fit = align_projection(model, processor, train_dataset, args.align_projection_images)
        print(
            f"vit_proj fitted on {fit['tokens']} keyframe tokens: relative error {fit['relative_error']:.4f}, "
            f"nearest code right for {fit['code_accuracy']:.1%}"
        )
    model.visual_tokenizer.requires_grad_(False)
    model.motion_tokenizer.requires_grad_(False)
    if args.align_projection_images and args.use_lora and not args.train_projection:
        raise SFTSetupError("--align_projection_images with --use_lora needs --train_projection (the adapter then "
                            "saves the fitted projection; the merge would otherwise reload the old one)")
    if args.train_projection and not args.use_lora:
        getattr(model.visual_tokenizer, PROJECTION).requires_grad_(True)
    # the collator builds the labels, and its columns are not forward arguments
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    training_args.remove_unused_columns = False
    collator = VideoLaVITSFTCollator(
        processor, max_length=args.max_text_length, decomposition_kwargs={"max_clips": args.max_clips}
    )
    return VideoLaVITSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=processor,
        peft_config=lora_config(args) if args.use_lora else None,
    )


def merge_adapter(base_model: str, adapter_dir: str) -> VideoLaVITForCausalLM:
    """The base checkpoint with the saved LoRA adapter merged into its weights (a plain Video-LaVIT model)."""
    base = VideoLaVITForCausalLM.from_pretrained(base_model)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def losses(trainer: Trainer) -> list[float]:
    """Training losses logged so far (one per `logging_steps`)."""
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def main(argv: list[str] | None = None) -> VideoLaVITSFTTrainer:
    """Parse `argv`, instruction-tune, save the model or adapter (and the processor); returns the trainer."""
    args, training_args = HfArgumentParser((SFTScriptArguments, SFTConfig)).parse_args_into_dataclasses(argv)
    trainer = build_trainer(args, training_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(training_args.output_dir)
        # complete checkpoints (a LoRA adapter folder is not one): text-to-video task and detokenizers
        if not args.use_lora:
            write_text_to_video_task(training_args.output_dir, detokenizer_from=args.model)
        if args.merged_output_dir and args.use_lora:
            merge_adapter(args.model, training_args.output_dir).save_pretrained(args.merged_output_dir)
            trainer.processing_class.save_pretrained(args.merged_output_dir)
            write_text_to_video_task(args.merged_output_dir, detokenizer_from=args.model)
        history = losses(trainer)
        if history:
            print(
                f"instruction-tuning loss: first {history[0]:.4f}, last {history[-1]:.4f} "
                f"({len(history)} logged steps)"
            )
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
