"""Train a Video-LaVIT text tokenizer locally, with no download.

The released model uses the Llama-2 SentencePiece vocabulary (32000 pieces) extended with the
visual and motion code tokens. For tests, demos and from-scratch training we build a tokenizer of
the same family from any corpus with the `tokenizers` library: byte-pair encoding with byte
fallback, `<unk>`/`<s>`/`</s>` at ids 0/1/2, the 256 byte tokens `<0x00>`..`<0xFF>` next, then the
learned pieces, exactly like Llama-2. The special and code tokens of the shared vocabulary follow at
the ids of `VideoLaVITConfig`'s layout, then the two placeholders `<image>` and `<video>`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaTokenizer

UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
IMAGE_START_TOKEN = "<|image_start|>"
IMAGE_END_TOKEN = "<|image_end|>"
MOTION_START_TOKEN = "<|motion_start|>"
MOTION_END_TOKEN = "<|motion_end|>"
IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"

# Llama's special text tokens, at ids 0, 1, 2
TEXT_SPECIAL_TOKENS = (UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)
# SentencePiece's word-boundary marker, as in the Llama vocabulary
WORD_BOUNDARY = "\u2581"
NUM_BYTE_TOKENS = 256
# the special text tokens and the byte tokens come before any learned piece
NUM_RESERVED_TEXT_TOKENS = len(TEXT_SPECIAL_TOKENS) + NUM_BYTE_TOKENS


class TokenizerTrainingError(ValueError):
    """The tokenizer cannot be trained with the requested sizes on the given corpus."""


def visual_token(index: int) -> str:
    """String of visual (keyframe) code `index`, e.g. `visual_token(7) == "<|visual_00007|>"`."""
    return f"<|visual_{index:05d}|>"


def motion_token(index: int) -> str:
    """String of motion code `index`, e.g. `motion_token(7) == "<|motion_0007|>"`."""
    return f"<|motion_{index:04d}|>"


def layout_tokens(visual_codebook_size: int, motion_codebook_size: int) -> list[str]:
    """The added tokens of the shared vocabulary, in id order, starting at `text_vocab_size`.

    Order: `<|image_start|>`, `<|image_end|>`, the `visual_codebook_size` visual codes,
    `<|motion_start|>`, `<|motion_end|>`, the `motion_codebook_size` motion codes
    (2 + 16384 + 2 + 1024 = 17412 strings at the released size).
    """
    return [
        IMAGE_START_TOKEN,
        IMAGE_END_TOKEN,
        *(visual_token(i) for i in range(visual_codebook_size)),
        MOTION_START_TOKEN,
        MOTION_END_TOKEN,
        *(motion_token(i) for i in range(motion_codebook_size)),
    ]


_SUBJECTS = (
    "a man",
    "a woman",
    "the child",
    "two girls",
    "a group of friends",
    "an old farmer",
    "the chef",
    "a young boy",
    "the dancer",
    "a cyclist",
    "the dog",
    "a black cat",
    "a brown horse",
    "the teacher",
    "a musician",
    "the crowd",
    "a small bird",
    "the runner",
    "a police officer",
    "the driver",
)
_ACTIONS = (
    "is cooking pasta",
    "plays the guitar",
    "rides a bicycle",
    "walks slowly",
    "is painting a wall",
    "jumps into the water",
    "throws a red ball",
    "reads a book",
    "is slicing vegetables",
    "drives a car",
    "climbs a tall tree",
    "is singing a song",
    "waves at the camera",
    "kicks a football",
    "is washing the dishes",
    "opens the door",
    "is talking on the phone",
    "dances happily",
    "carries a heavy box",
    "is swimming quickly",
    "feeds the chickens",
    "builds a sand castle",
)
_PLACES = (
    "in the kitchen",
    "on a busy street",
    "at the beach",
    "in a quiet park",
    "inside the house",
    "near the river",
    "on the stage",
    "in a snowy forest",
    "at the train station",
    "on a green field",
    "in the classroom",
    "under a bridge",
    "on the mountain",
    "in a crowded market",
    "by the lake",
)
_TIMES = (
    "in the morning",
    "at night",
    "during the sunset",
    "on a rainy day",
    "in the afternoon",
    "while it snows",
    "before dinner",
    "after school",
)
_SHOTS = (
    "The camera pans to the left.",
    "The camera zooms in slowly.",
    "The scene changes quickly.",
    "The video is filmed in slow motion.",
    "The shot is steady and bright.",
    "The light is warm and soft.",
    "Another person appears in the background.",
    "The picture becomes darker.",
)
_QUESTIONS = (
    "What is happening in this video?",
    "What is the person doing?",
    "Where does this take place?",
    "How many people are there?",
    "Describe the video in detail.",
    "What color is the ball?",
    "Why is the crowd cheering?",
    "What happens at the end of the clip?",
)


def synthetic_english_corpus(num_sentences: int = 4000, seed: int = 0) -> Iterator[str]:
    """Yield `num_sentences` short English video captions, questions and answers.

    A small built-in corpus, deterministic for a given `seed`, with a few hundred distinct words:
    enough to train text vocabularies of up to about 900 tokens for tests and demos.
    """
    rng = random.Random(seed)
    for index in range(num_sentences):
        subject, action, place = rng.choice(_SUBJECTS), rng.choice(_ACTIONS), rng.choice(_PLACES)
        kind = index % 4
        if kind == 0:
            yield f"{subject.capitalize()} {action} {place} {rng.choice(_TIMES)}. {rng.choice(_SHOTS)}"
        elif kind == 1:
            yield f"{rng.choice(_QUESTIONS)} In the video, {subject} {action} {place}."
        elif kind == 2:
            people, seconds = rng.randint(2, 12), rng.randint(1, 59)
            yield f"There are {people} people {place}, and {subject} {action} for {seconds} seconds."
        else:
            yield f"First {subject} {action}; then {rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)} {place}!"


def _train_bpe_pieces(
    texts: Iterable[str], num_pieces: int, limit_alphabet: int | None
) -> tuple[list[str], list[tuple[str, str]]]:
    """Learn at most `num_pieces` BPE pieces (alphabet included) with Llama's word-boundary
    handling; returns the pieces in learning order and the merges."""
    bpe = Tokenizer(models.BPE(unk_token=UNK_TOKEN, byte_fallback=True))
    # split at word boundaries while learning so that no piece spans two words (as SentencePiece does)
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=WORD_BOUNDARY, prepend_scheme="first", split=True
    )
    trainer = trainers.BpeTrainer(
        vocab_size=num_pieces,
        limit_alphabet=limit_alphabet if limit_alphabet is not None else min(1000, max(1, num_pieces // 2)),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    pieces = [piece for piece, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [
        tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ", 1)) for merge in model["merges"]
    ]
    return pieces, merges


def train_video_lavit_tokenizer(
    texts: Iterable[str] | None = None,
    *,
    text_vocab_size: int,
    visual_codebook_size: int,
    motion_codebook_size: int,
    limit_alphabet: int | None = None,
    model_max_length: int = 4096,
    padding_side: str = "left",
    chat_template: str | None = None,
) -> LlamaTokenizer:
    """Train a Llama-style tokenizer on `texts` and extend it with the Video-LaVIT tokens.

    Args:
        texts: any iterable of strings; `None` uses [`synthetic_english_corpus`].
        text_vocab_size: number of text tokens `T` (32000 for Llama-2); the first
            `NUM_RESERVED_TEXT_TOKENS` (259) are `<unk>`, `<s>`, `</s>` and the byte tokens, the rest
            are learned, so the corpus must be rich enough to learn `T - 259` pieces.
        visual_codebook_size: number of visual code tokens (16384 at the released size).
        motion_codebook_size: number of motion code tokens (1024 at the released size).
        limit_alphabet: most characters kept as single-character pieces (others fall back to
            bytes); by default half of the learned pieces, at most 1000.
        model_max_length: longest sequence the model takes (Llama-2: 4096).
        padding_side: `"left"` for generation (as the reference inference code), `"right"` for training.
        chat_template: stored as the tokenizer's chat template when given (for example
            `processing_video_lavit.VICUNA_V1_CHAT_TEMPLATE`).

    Returns:
        A fast `LlamaTokenizer` (`LlamaTokenizerFast`) that adds `<s>` to every encoding and pads
        with `<unk>` (id 0) like the reference. Ids `[0, T)` are text, then the layout of
        `VideoLaVITConfig` (`<|image_start|>` = T, `<|image_end|>` = T + 1, `<|visual_00000|>` = T + 2,
        ..., `<|motion_start|>`, `<|motion_end|>`, `<|motion_0000|>`, ...), then `<image>` and
        `<video>` at `vocab_size` and `vocab_size + 1` (`tokenizer.image_token_id` /
        `tokenizer.video_token_id`). `len(tokenizer) == T + V + M + 6`.

    Example:
        >>> tokenizer = train_video_lavit_tokenizer(
        ...     text_vocab_size=300, visual_codebook_size=16, motion_codebook_size=8
        ... )
        >>> tokenizer.convert_tokens_to_ids(["<|image_start|>", "<video>"])
        [300, 329]
    """
    num_learned = text_vocab_size - NUM_RESERVED_TEXT_TOKENS
    if num_learned < 1:
        raise TokenizerTrainingError(
            f"text_vocab_size={text_vocab_size} leaves no room for learned pieces: the first "
            f"{NUM_RESERVED_TEXT_TOKENS} ids are <unk>, <s>, </s> and the byte tokens; "
            "pass a larger text_vocab_size."
        )
    if visual_codebook_size < 1 or motion_codebook_size < 1:
        raise TokenizerTrainingError(
            "codebook sizes must be positive, got "
            f"visual={visual_codebook_size}, motion={motion_codebook_size}."
        )

    pieces, merges = _train_bpe_pieces(
        synthetic_english_corpus() if texts is None else texts, num_learned, limit_alphabet
    )
    vocab = {token: index for index, token in enumerate(TEXT_SPECIAL_TOKENS)}
    vocab.update({f"<0x{byte:02X}>": len(TEXT_SPECIAL_TOKENS) + byte for byte in range(NUM_BYTE_TOKENS)})
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    if len(vocab) != text_vocab_size:
        raise TokenizerTrainingError(
            f"the corpus only yields {len(vocab) - NUM_RESERVED_TEXT_TOKENS} distinct pieces but "
            f"text_vocab_size={text_vocab_size} needs {num_learned}: train on more (or more varied) text, "
            f"or lower text_vocab_size to at most {len(vocab)}."
        )

    layout = layout_tokens(visual_codebook_size, motion_codebook_size)
    added_tokens = {
        text_vocab_size + offset: AddedToken(token, special=True, normalized=False)
        for offset, token in enumerate(layout)
    }
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        pad_token=UNK_TOKEN,
        added_tokens_decoder=added_tokens,
        # named multimodal tokens: added after the layout, exposed as tokenizer.image_token(_id)
        extra_special_tokens={"image_token": IMAGE_PLACEHOLDER, "video_token": VIDEO_PLACEHOLDER},
        model_max_length=model_max_length,
        padding_side=padding_side,
    )
    _check_layout(tokenizer, text_vocab_size, layout)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _check_layout(tokenizer: LlamaTokenizer, text_vocab_size: int, layout: list[str]) -> None:
    """Raise `TokenizerTrainingError` unless every added token sits at its contract id."""
    vocab_size = text_vocab_size + len(layout)
    expected = {token: text_vocab_size + offset for offset, token in enumerate(layout)}
    expected[IMAGE_PLACEHOLDER] = vocab_size
    expected[VIDEO_PLACEHOLDER] = vocab_size + 1
    tokens = list(expected)
    wrong = [
        (token, actual, expected[token])
        for token, actual in zip(tokens, tokenizer.convert_tokens_to_ids(tokens), strict=True)
        if actual != expected[token]
    ]
    if wrong or len(tokenizer) != vocab_size + 2:
        raise TokenizerTrainingError(
            f"added tokens landed at the wrong ids (token, id, expected id): {wrong[:5]}, "
            f"tokenizer length {len(tokenizer)} (expected {vocab_size + 2}); this is a bug, please report it."
        )


__all__ = [
    "TEXT_SPECIAL_TOKENS",
    "TokenizerTrainingError",
    "layout_tokens",
    "motion_token",
    "synthetic_english_corpus",
    "train_video_lavit_tokenizer",
    "visual_token",
]
