"""Stage 3 (`examples/sft.py`, `VideoLaVITSFTCollator`): answer-only labels, LoRA training and merging."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from PIL import Image

from transformers_vlavit import (
    VideoLaVITForCausalLM,
    VideoLaVITProcessor,
    decompose_video,
    write_synthetic_video,
)
from transformers_vlavit.data_collator import CollatorInputError, VideoLaVITSFTCollator
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def sft(scripts):
    """`examples/sft.py` imported as a module."""
    return scripts.load(scripts.examples / "sft.py")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # with detokenizers: the final saves copy them, so their folders are complete checkpoints
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def processor(checkpoint) -> VideoLaVITProcessor:
    return VideoLaVITProcessor.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def video_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    write_synthetic_video(path, width=160, height=128, duration=4.5, fps=12)
    return str(path)


def conversations(video_path: str) -> list[dict]:
    image = Image.new("RGB", (64, 48), (220, 30, 30))
    return [
        {
            "messages": [
                {"role": "system", "content": "You describe videos."},
                {"role": "user", "content": "<video>\nWhat happens?"},
                {"role": "assistant", "content": "Shapes move."},
                {"role": "user", "content": "Which colors?"},
                {"role": "assistant", "content": "Many colors."},
            ],
            "videos": [video_path],
            "images": [],
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
                {"role": "assistant", "content": "A red box."},
            ],
            "videos": [],
            "images": [image],
        },
    ]


def test_sft_collator_labels_only_assistant_answers(checkpoint, processor, video_path):
    batch = VideoLaVITSFTCollator(processor)(conversations(video_path))
    tokenizer = processor.tokenizer
    answers = [tokenizer.decode(batch["input_ids"][row][batch["labels"][row] != -100]) for row in range(2)]
    assert answers == ["Shapes move. \\n </s> Many colors. \\n </s>", "A red box. \\n </s>"]
    # the turn end (</s>) of every answer is a target, so that the model learns to stop
    assert int((batch["labels"] == tokenizer.eos_token_id).sum()) == 3
    for row in range(2):
        prompt = tokenizer.decode(
            batch["input_ids"][row][batch["labels"][row] == -100], skip_special_tokens=False
        )
        assert "USER:" in prompt and "ASSISTANT:" in prompt
    assert "You describe videos." in tokenizer.decode(batch["input_ids"][0][batch["labels"][0] == -100])
    placeholders = (batch["input_ids"] == processor.video_token_id) | (
        batch["input_ids"] == processor.image_token_id
    )
    assert placeholders.sum() == 2 and (batch["labels"][placeholders] == -100).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (
        batch["pixel_values_videos"].shape[0]
        == batch["motion_vectors"].shape[0]
        == int(batch["clips_per_video"].sum())
    )

    # spliced into the model, the keyframe and motion positions are not targets either
    model = VideoLaVITForCausalLM.from_pretrained(checkpoint)
    expanded = model.prepare_multimodal_inputs(
        batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"],
        batch["pixel_values_videos"], batch["motion_vectors"], batch["clips_per_video"],
    )  # fmt: skip
    assert int((expanded.labels != -100).sum()) == int((batch["labels"] != -100).sum())
    assert torch.isfinite(model(**batch).loss)

    # stored clips (as datasets/prepare_instructions.py writes them) give the same batch as the file
    clips = decompose_video(video_path)
    stored = conversations(video_path)
    stored[0].update(
        keyframes=clips.keyframes, motion_vectors=clips.motion_vectors.numpy(), clips_per_video=[1]
    )
    stored_batch = VideoLaVITSFTCollator(processor)(stored)
    for key in ("input_ids", "labels", "pixel_values_videos", "motion_vectors", "clips_per_video"):
        assert torch.equal(stored_batch[key], batch[key]), key

    with pytest.raises(CollatorInputError, match="assistant"):
        VideoLaVITSFTCollator(processor)([{"messages": [{"role": "user", "content": "hi"}]}])


def test_sft_lora_train_save_load_merge(sft, checkpoint, processor, video_path, tmp_path, check_hub_folder):
    from peft import PeftModel

    rows = conversations(video_path)
    rows[1]["images"] = []
    rows[1]["messages"][0]["content"] = "What is two plus two?"
    rows.append(
        {
            "messages": [
                {"role": "user", "content": "<video>\nDescribe it."},
                {"role": "assistant", "content": "A synthetic clip of drifting shapes."},
            ],
            "videos": [video_path],
            "images": [],
        }
    )
    data = tmp_path / "conversations"
    Dataset.from_list(rows).save_to_disk(data)
    output_dir, merged_dir = tmp_path / "adapter", tmp_path / "merged"
    trainer = sft.main(
        [
            "--model", str(checkpoint), "--train_data", str(data), "--use_lora", "--lora_r", "8",
            "--lora_dropout", "0.0", "--output_dir", str(output_dir), "--merged_output_dir", str(merged_dir),
            "--max_steps", "12", "--per_device_train_batch_size", "3", "--learning_rate", "1e-2",
            "--lr_scheduler_type", "constant",
            "--logging_steps", "1", "--use_cpu", "--bf16", "false", "--gradient_checkpointing", "false",
            "--report_to", "none", "--save_strategy", "no", "--seed", "0",
        ]
    )  # fmt: skip
    losses = sft.losses(trainer)
    print(f"stage-3 tiny LoRA over-fit: first loss {losses[0]:.4f}, last loss {losses[-1]:.4f}")
    assert losses[-1] < 0.9 * losses[0]

    # only LoRA matrices of the language model were trained
    trainable = [name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name and ".model.language_model.layers." in name for name in trainable)
    assert not any("tokenizer" in name for name in trainable)
    assert (output_dir / "adapter_config.json").is_file() and (
        output_dir / "adapter_model.safetensors"
    ).is_file()

    base = VideoLaVITForCausalLM.from_pretrained(checkpoint).eval()
    batch = VideoLaVITSFTCollator(processor)(rows[:2])
    with torch.no_grad():
        base_logits = base(**batch).logits
        adapted = PeftModel.from_pretrained(base, output_dir).eval()
        adapter_logits = adapted(**batch).logits
        merged = adapted.merge_and_unload()
        merged_logits = merged(**batch).logits
        saved_logits = VideoLaVITForCausalLM.from_pretrained(merged_dir).eval()(**batch).logits
    assert not torch.allclose(base_logits, adapter_logits, atol=1e-3)
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(saved_logits, adapter_logits, atol=1e-4, rtol=1e-4)
    assert not any("lora" in name for name in merged.state_dict())
    # the merged folder is a complete checkpoint: every entry point works without our packages
    check_hub_folder(merged_dir)


def test_sft_lora_train_projection_trains_and_merges_only_the_projection(sft, checkpoint, video_path, tmp_path):
    rows = [row for row in conversations(video_path) if row["videos"]]
    data = tmp_path / "conversations"
    Dataset.from_list(rows * 2).save_to_disk(data)
    output_dir, merged_dir = tmp_path / "adapter", tmp_path / "merged"
    trainer = sft.main(
        [
            "--model", str(checkpoint), "--train_data", str(data), "--use_lora", "--train_projection",
            "--lora_r", "4", "--output_dir", str(output_dir), "--merged_output_dir", str(merged_dir),
            "--max_steps", "3", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
            "--logging_steps", "1", "--use_cpu", "--bf16", "false", "--gradient_checkpointing", "false",
            "--report_to", "none", "--save_strategy", "no", "--seed", "0",
        ]
    )  # fmt: skip
    trainable = {name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad}
    projection = {name for name in trainable if "vit_proj" in name}
    assert projection and all("lora_" in name for name in trainable - projection)

    base = VideoLaVITForCausalLM.from_pretrained(checkpoint).visual_tokenizer.state_dict()
    merged = VideoLaVITForCausalLM.from_pretrained(merged_dir).visual_tokenizer.state_dict()
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert changed and all(name.startswith("vit_proj.") for name in changed)


def stored_video_rows(video_paths: list[str]) -> list[dict]:
    """Rows as `datasets/prepare_instructions.py` writes them: each video's clips stored next to the messages."""
    rows = []
    for path, answer in zip(video_paths, ("Shapes move.", "Colours change.")):
        clips = decompose_video(path, max_clips=2)
        rows.append({
            "messages": [
                {"role": "user", "content": "<video>\nWhat happens?"},
                {"role": "assistant", "content": answer},
            ],
            "images": [],
            "videos": [path],
            "keyframes": list(clips.keyframes),
            "motion_vectors": clips.motion_vectors.numpy(),
            "clips_per_video": [len(clips.keyframes)],
        })
    return rows


def test_sft_align_projection_fits_vit_proj_on_the_training_keyframes(sft, checkpoint, video_path, tmp_path, capsys):
    from transformers_vlavit.visual_tokenizer_training import fit_projection_to_code_embeddings

    other = tmp_path / "other.mp4"
    write_synthetic_video(other, width=160, height=128, duration=4.5, fps=12, seed=7)
    rows = stored_video_rows([video_path, str(other)])
    data = tmp_path / "conversations"
    Dataset.from_list(rows).save_to_disk(data)
    base_args = [
        "--model", str(checkpoint), "--train_data", str(data), "--use_lora", "--lora_r", "4",
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--learning_rate", "0", "--use_cpu",
        "--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "none", "--save_strategy", "no",
        "--seed", "0", "--align_projection_images", "1",
    ]  # fmt: skip
    with pytest.raises(sft.SFTSetupError, match="--train_projection"):
        sft.main([*base_args, "--output_dir", str(tmp_path / "refused")])

    merged_dir = tmp_path / "merged"
    sft.main([*base_args, "--train_projection", "--output_dir", str(tmp_path / "adapter"),
              "--merged_output_dir", str(merged_dir)])  # fmt: skip
    assert "vit_proj fitted on" in capsys.readouterr().out

    # the same fit, by hand, on the first keyframe of the data (learning rate 0: training kept it)
    expected = VideoLaVITForCausalLM.from_pretrained(checkpoint)
    processor = VideoLaVITProcessor.from_pretrained(checkpoint)
    keyframes = [image.convert("RGB") for image in rows[0]["keyframes"] + rows[1]["keyframes"]][:1]
    pixels = processor.image_processor(images=keyframes, return_tensors="pt")["pixel_values"]
    config = expected.config
    rows_of_codes = expected.get_input_embeddings().weight[
        config.visual_token_offset : config.visual_token_offset + config.visual_codebook_size
    ].detach()
    fit_projection_to_code_embeddings(expected.visual_tokenizer, rows_of_codes, pixels)
    merged = VideoLaVITForCausalLM.from_pretrained(merged_dir).visual_tokenizer.vit_proj
    before = VideoLaVITForCausalLM.from_pretrained(checkpoint).visual_tokenizer.vit_proj
    assert not torch.allclose(merged.weight, before.weight)
    torch.testing.assert_close(merged.weight, expected.visual_tokenizer.vit_proj.weight)
    torch.testing.assert_close(merged.bias, expected.visual_tokenizer.vit_proj.bias)
