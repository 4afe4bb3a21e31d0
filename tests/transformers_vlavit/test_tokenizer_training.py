"""Local training of the Llama-style Video-LaVIT tokenizer and its token layout."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from transformers_vlavit.configuration_video_lavit import VideoLaVITConfig
from transformers_vlavit.tokenizer_training import (
    NUM_RESERVED_TEXT_TOKENS,
    TokenizerTrainingError,
    layout_tokens,
    motion_token,
    synthetic_english_corpus,
    train_video_lavit_tokenizer,
    visual_token,
)

TEXT_VOCAB, VISUAL_CODES, MOTION_CODES = 300, 16, 8


@pytest.fixture(scope="module")
def tokenizer():
    return train_video_lavit_tokenizer(
        text_vocab_size=TEXT_VOCAB, visual_codebook_size=VISUAL_CODES, motion_codebook_size=MOTION_CODES
    )


def test_layout_matches_the_config():
    config = VideoLaVITConfig.tiny(text_vocab_size=TEXT_VOCAB)
    # the tiny config's codebooks decide the layout; train a tokenizer with exactly those sizes
    tokenizer = train_video_lavit_tokenizer(
        text_vocab_size=TEXT_VOCAB,
        visual_codebook_size=config.visual_codebook_size,
        motion_codebook_size=config.motion_codebook_size,
    )
    ids = tokenizer.convert_tokens_to_ids
    assert ids("<|image_start|>") == config.image_start_token_id == TEXT_VOCAB
    assert ids("<|image_end|>") == config.image_end_token_id
    assert ids(visual_token(0)) == config.visual_token_offset
    assert ids(visual_token(config.visual_codebook_size - 1)) == config.motion_start_token_id - 1
    assert ids("<|motion_start|>") == config.motion_start_token_id
    assert ids("<|motion_end|>") == config.motion_end_token_id
    assert ids(motion_token(0)) == config.motion_token_offset
    assert ids(motion_token(config.motion_codebook_size - 1)) == config.vocab_size - 1
    assert ids("<image>") == tokenizer.image_token_id == config.image_token_id
    assert ids("<video>") == tokenizer.video_token_id == config.video_token_id
    assert len(tokenizer) == config.vocab_size + 2


def test_released_size_layout():
    tokenizer = train_video_lavit_tokenizer(
        text_vocab_size=512, visual_codebook_size=16384, motion_codebook_size=1024
    )
    ids = tokenizer.convert_tokens_to_ids
    # REFERENCE.md §3 with T=512 instead of 32000: every offset after T is the released one
    assert ids(["<|image_start|>", "<|image_end|>", "<|visual_00000|>", "<|visual_16383|>"]) == [
        512,
        513,
        514,
        16897,
    ]
    assert ids(["<|motion_start|>", "<|motion_end|>", "<|motion_0000|>", "<|motion_1023|>"]) == [
        16898,
        16899,
        16900,
        17923,
    ]
    assert ids(["<image>", "<video>"]) == [17924, 17925]
    assert len(layout_tokens(16384, 1024)) == 49412 - 32000


def test_llama_conventions(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]
    assert tokenizer.convert_ids_to_tokens([3, 3 + 0x0A, NUM_RESERVED_TEXT_TOKENS - 1]) == [
        "<0x00>",
        "<0x0A>",
        "<0xFF>",
    ]
    assert (
        tokenizer.unk_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    ) == (0, 1, 2, 0)
    encoded = tokenizer("the man runs").input_ids
    assert encoded[0] == 1 and 2 not in encoded
    assert all(token_id < TEXT_VOCAB for token_id in encoded)
    # characters never seen in training fall back to their UTF-8 bytes instead of <unk>
    assert tokenizer.convert_ids_to_tokens(tokenizer("é", add_special_tokens=False).input_ids)[-2:] == [
        "<0xC3>",
        "<0xA9>",
    ]
    text = "A woman reads a book at night. Où? 42!\nDone"
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_learned_pieces_compress_the_corpus(tokenizer):
    sentence = next(iter(synthetic_english_corpus(1, seed=3)))
    ids = tokenizer(sentence, add_special_tokens=False).input_ids
    # pieces merge characters: fewer tokens than UTF-8 bytes
    assert len(ids) < len(sentence.encode()) * 0.8


def test_code_tokens_are_single_special_tokens(tokenizer):
    text = (
        "<|image_start|><|visual_00003|><|visual_00015|><|image_end|>"
        "<|motion_start|><|motion_0007|><|motion_end|>"
    )
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert ids == [
        TEXT_VOCAB,
        TEXT_VOCAB + 5,
        TEXT_VOCAB + 17,
        TEXT_VOCAB + 1,
        TEXT_VOCAB + 18,
        TEXT_VOCAB + 27,
        TEXT_VOCAB + 19,
    ]
    assert (
        tokenizer.decode(
            ids + tokenizer("a dog", add_special_tokens=False).input_ids, skip_special_tokens=True
        )
        == "a dog"
    )


def test_save_and_auto_tokenizer_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "USER: <video>\nWhat is the dog doing? <|visual_00002|> ASSISTANT:"
    assert reloaded(text).input_ids == tokenizer(text).input_ids
    assert len(reloaded) == len(tokenizer)
    assert (reloaded.image_token, reloaded.video_token) == ("<image>", "<video>")
    assert (reloaded.image_token_id, reloaded.video_token_id) == (
        tokenizer.image_token_id,
        tokenizer.video_token_id,
    )
    assert reloaded.pad_token_id == 0 and reloaded.padding_side == "left"


def test_custom_corpus_and_chat_template():
    texts = ["the quick brown fox jumps over the lazy dog"] * 20
    tokenizer = train_video_lavit_tokenizer(
        texts,
        text_vocab_size=280,
        visual_codebook_size=4,
        motion_codebook_size=4,
        chat_template="{{ messages }}",
    )
    assert tokenizer.chat_template == "{{ messages }}"
    assert tokenizer.convert_tokens_to_ids("▁the") < 280


def test_synthetic_corpus_is_deterministic():
    assert list(synthetic_english_corpus(20, seed=1)) == list(synthetic_english_corpus(20, seed=1))
    assert list(synthetic_english_corpus(20, seed=1)) != list(synthetic_english_corpus(20, seed=2))


def test_too_small_text_vocabulary_is_rejected():
    with pytest.raises(TokenizerTrainingError, match="larger text_vocab_size"):
        train_video_lavit_tokenizer(text_vocab_size=259, visual_codebook_size=4, motion_codebook_size=4)


def test_too_small_corpus_is_rejected():
    with pytest.raises(TokenizerTrainingError, match="more .*text"):
        train_video_lavit_tokenizer(
            ["ab ab ab"], text_vocab_size=400, visual_codebook_size=4, motion_codebook_size=4
        )
