"""Stage 2 (`examples/pretrain.py`, `VideoLaVITPretrainingCollator`): layout, over-fit, resume, Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from transformers_vlavit import (
    VideoLaVITForCausalLM,
    VideoLaVITProcessor,
    decompose_video,
    write_synthetic_video,
)
from transformers_vlavit.data_collator import (
    CollatorInputError,
    CollatorSettingsError,
    PrecomputedClips,
    VideoLaVITPretrainingCollator,
)
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def pretrain(scripts):
    """`examples/pretrain.py` imported as a module."""
    return scripts.load(scripts.examples / "pretrain.py")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # with detokenizers: the final saves copy them, so their folders are complete checkpoints
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def model_and_processor(checkpoint):
    return VideoLaVITForCausalLM.from_pretrained(checkpoint).eval(), VideoLaVITProcessor.from_pretrained(
        checkpoint
    )


@pytest.fixture(scope="module")
def clips() -> PrecomputedClips:
    decomposition = decompose_video(write_synthetic_video(width=160, height=128, duration=4.5, fps=12))
    return PrecomputedClips(decomposition.keyframes, decomposition.motion_vectors)


def test_pretraining_collator_rejects_a_probability_outside_0_1(model_and_processor):
    model, processor = model_and_processor
    with pytest.raises(CollatorSettingsError, match=r"\[0, 1\]"):
        VideoLaVITPretrainingCollator(processor, model, text_first_probability=1.5)


def test_pretraining_collator_layout_both_orders(model_and_processor, clips):
    model, processor = model_and_processor
    config, tokenizer = model.config, processor.tokenizer
    caption = "shapes move"
    caption_ids = tokenizer(caption, add_special_tokens=False)["input_ids"]
    examples = [{"caption": caption, "video": clips}, {"text": "plain text only"}]

    video_first = VideoLaVITPretrainingCollator(processor, model, text_first_probability=0.0)(examples)
    text_first = VideoLaVITPretrainingCollator(processor, model, text_first_probability=1.0)(examples)

    row = video_first["input_ids"][0][video_first["attention_mask"][0].bool()].tolist()
    assert row[0] == tokenizer.bos_token_id and row[-1] == tokenizer.eos_token_id
    assert row[1] == config.image_start_token_id
    assert row[-1 - len(caption_ids) : -1] == caption_ids
    motion_start = row.index(config.motion_start_token_id)
    assert row[motion_start + 1 + config.motion_tokens_per_clip] == config.motion_end_token_id
    assert all(
        config.motion_token_offset <= i < config.vocab_size
        for i in row[motion_start + 1 : motion_start + 136]
    )
    keyframe = row[2 : row.index(config.image_end_token_id)]
    assert keyframe and all(config.visual_token_offset <= i < config.motion_start_token_id for i in keyframe)

    swapped = text_first["input_ids"][0][text_first["attention_mask"][0].bool()].tolist()
    media = row[1 : -1 - len(caption_ids)]
    assert swapped == [tokenizer.bos_token_id, *caption_ids, *media, tokenizer.eos_token_id]

    # labels: every real token, -100 on the padding of the shorter text-only row
    labels, mask = video_first["labels"], video_first["attention_mask"]
    assert torch.equal(labels[mask.bool()], video_first["input_ids"][mask.bool()])
    assert (labels[~mask.bool()] == -100).all() and (~mask.bool()).any()
    text_row = video_first["input_ids"][1][mask[1].bool()].tolist()
    assert text_row == [
        tokenizer.bos_token_id,
        *tokenizer("plain text only", add_special_tokens=False)["input_ids"],
        2,
    ]


def test_pretraining_collator_stored_codes_match_computed(model_and_processor, clips):
    model, processor = model_and_processor
    collator = VideoLaVITPretrainingCollator(processor, model, text_first_probability=0.0)
    with torch.no_grad():
        pixels = processor.image_processor(clips.keyframes, return_tensors="pt")["pixel_values"]
        keyframe_codes = [codes.tolist() for codes in model.visual_tokenizer.tokenize(pixels)]
        motion_codes = model.motion_tokenizer.encode(clips.motion_vectors)
    image = clips.keyframes[0]
    computed = collator([{"caption": "a", "video": clips}, {"caption": "b", "image": image}])
    stored = collator(
        [
            {"caption": "a", "keyframe_token_ids": keyframe_codes, "motion_token_ids": motion_codes.numpy()},
            {"caption": "b", "image_token_ids": keyframe_codes[0]},
        ]
    )
    assert torch.equal(computed["input_ids"], stored["input_ids"])
    # the columns of datasets/prepare_video_text.py (keyframes + motion arrays) give the same ids
    columns = collator(
        [
            {"caption": "a", "keyframes": clips.keyframes, "motion_vectors": clips.motion_vectors.numpy()},
            {"caption": "b", "image": image},
        ]
    )
    assert torch.equal(computed["input_ids"], columns["input_ids"])
    with pytest.raises(CollatorInputError, match="keyframes"):
        collator([{"caption": "a", "motion_token_ids": motion_codes.numpy()}])


def test_pretraining_order_draws_follow_the_seeded_generator(model_and_processor):
    model, processor = model_and_processor

    def draws(seed: int) -> list[bool]:
        collator = VideoLaVITPretrainingCollator(
            processor, model, generator=torch.Generator().manual_seed(seed)
        )
        return [collator._draw_text_first() for _ in range(32)]

    assert draws(3) == draws(3)
    assert 4 < sum(draws(3)) < 28  # both orders occur


def stored_code_dataset(folder: Path, config, num_videos: int = 3) -> Path:
    """Video-text rows with stored codes (no tokenizer call per step) plus text rows, saved to disk."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index in range(num_videos):
        keyframes = [
            torch.randint(0, config.visual_codebook_size, (6 + index,), generator=generator).tolist()
        ]
        motion = torch.randint(
            0, config.motion_codebook_size, (1, config.motion_tokens_per_clip), generator=generator
        )
        rows.append(
            {
                "caption": f"moving shapes number {index}",
                "keyframe_token_ids": keyframes,
                "motion_token_ids": motion.tolist(),
            }
        )
    for text in ("the chef cooks a meal", "a dog runs in the park"):
        rows.append({"caption": text, "keyframe_token_ids": None, "motion_token_ids": None})
    Dataset.from_list(rows).save_to_disk(folder)
    return folder


def run_pretraining(pretrain, checkpoint: Path, data: Path, output_dir: Path, *extra: str):
    return pretrain.main(
        [
            "--model", str(checkpoint), "--video_text", str(data), "--output_dir", str(output_dir),
            "--per_device_train_batch_size", "5", "--learning_rate", "3e-3", "--logging_steps", "1",
            "--use_cpu", "--report_to", "none", "--seed", "7", "--save_strategy", "steps",
            *extra,
        ]
    )  # fmt: skip


def test_pretrain_loss_falls_on_a_fixed_batch_train(
    pretrain, checkpoint, model_and_processor, tmp_path, check_hub_folder
):
    data = stored_code_dataset(tmp_path / "data", model_and_processor[0].config)
    trainer = run_pretraining(
        pretrain,
        checkpoint,
        data,
        tmp_path / "run",
        "--max_steps",
        "12",
        "--save_steps",
        "100",
        "--text_first_probability",
        "1.0",
    )
    losses = pretrain.losses(trainer)
    print(f"stage-2 tiny over-fit: first loss {losses[0]:.4f}, last loss {losses[-1]:.4f}")
    assert len(losses) == 12
    assert losses[-1] < 0.8 * losses[0]
    saved = VideoLaVITForCausalLM.from_pretrained(tmp_path / "run")
    # the tokenizers are frozen: identical to the starting checkpoint
    start = model_and_processor[0]
    for name, tensor in start.motion_tokenizer.state_dict().items():
        assert torch.equal(tensor, saved.motion_tokenizer.state_dict()[name]), name
    assert not torch.equal(start.lm_head.weight, saved.lm_head.weight)
    # the final save is a complete checkpoint: every entry point works without our packages
    check_hub_folder(tmp_path / "run")


def test_pretrain_resume_restores_step_optimizer_and_rng_train(
    pretrain, checkpoint, model_and_processor, tmp_path
):
    data = stored_code_dataset(tmp_path / "data", model_and_processor[0].config, num_videos=4)
    # batch 3 of 6 rows with random orders: data order and order draws both depend on the RNG state
    common = ["--max_steps", "4", "--save_steps", "2", "--per_device_train_batch_size", "3"]
    straight = run_pretraining(pretrain, checkpoint, data, tmp_path / "straight", *common)
    resumed = run_pretraining(
        pretrain,
        checkpoint,
        data,
        tmp_path / "resumed",
        *common,
        "--resume_from_checkpoint",
        str(tmp_path / "straight" / "checkpoint-2"),
    )
    state = json.loads((tmp_path / "resumed" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and resumed.state.global_step == 4

    def logged(trainer) -> dict[int, float]:
        return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}

    assert set(logged(resumed)) == {1, 2, 3, 4}
    for step in (3, 4):
        assert logged(resumed)[step] == pytest.approx(logged(straight)[step], rel=1e-5), step
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, msg=name)


def plain_llama_tokenizer(tokenizer, text_vocab_size: int):
    """The text part of a Video-LaVIT tokenizer as a plain Llama tokenizer (no layout tokens)."""
    from transformers import LlamaTokenizer

    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab = {piece: index for piece, index in model["vocab"].items() if index < text_vocab_size}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, pad_token="<unk>")


def test_extend_plain_llama_vocabulary_train(pretrain, model_and_processor, clips):
    from transformers import LlamaConfig, LlamaForCausalLM

    source, processor = model_and_processor
    text_vocab_size = source.config.text_vocab_size
    tokenizer = plain_llama_tokenizer(processor.tokenizer, text_vocab_size)
    assert len(tokenizer) == text_vocab_size
    torch.manual_seed(0)
    text_config = source.config.text_config.to_dict()
    text_config["vocab_size"] = text_vocab_size
    llama = LlamaForCausalLM(
        LlamaConfig(**{k: v for k, v in text_config.items() if k not in ("model_type", "architectures")})
    )
    old_embeddings = llama.get_input_embeddings().weight.detach().clone()

    model, extended = pretrain.extend_llama_to_video_lavit(llama, tokenizer, source)

    config = model.config
    assert config.vocab_size == source.config.vocab_size and config.text_vocab_size == text_vocab_size
    assert extended.convert_tokens_to_ids(["<|image_start|>", "<|motion_end|>", "<image>", "<video>"]) == [
        config.image_start_token_id, config.motion_end_token_id, config.image_token_id, config.video_token_id
    ]  # fmt: skip
    embeddings = model.get_input_embeddings().weight.detach()
    torch.testing.assert_close(embeddings[:text_vocab_size], old_embeddings)
    new_rows = embeddings[text_vocab_size:]
    # mean-resizing: the new rows are centred on the old rows' mean (and are not all equal)
    assert (new_rows.mean(0) - old_embeddings.mean(0)).abs().max() < 0.2 * old_embeddings.std()
    assert new_rows.std(0).mean() > 0
    for part in ("visual_tokenizer", "motion_tokenizer"):
        expected = getattr(source, part).state_dict()
        for name, tensor in getattr(model, part).state_dict().items():
            assert torch.equal(tensor, expected[name]), f"{part}.{name}"

    new_processor = VideoLaVITProcessor(image_processor=processor.image_processor, tokenizer=extended)
    batch = VideoLaVITPretrainingCollator(new_processor, model)([{"caption": "shapes", "video": clips}])
    assert torch.isfinite(model(**batch).loss)
