"""VideoLaVITProcessor: Vicuna-v1 chat template, placeholder-aware tokenization, batching of text,
images and videos, errors and save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from jinja2.exceptions import TemplateError
from PIL import Image

from transformers_vlavit import processing_video_lavit
from transformers_vlavit.image_processing_video_lavit import VideoLaVITImageProcessor
from transformers_vlavit.processing_video_lavit import (
    VICUNA_V1_CHAT_TEMPLATE,
    PlaceholderMismatchError,
    VideoLaVITProcessor,
)
from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.tokenizer_training import train_video_lavit_tokenizer
from transformers_vlavit.video_decomposition import decompose_video

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
TEXT_VOCAB = 300


@pytest.fixture(scope="module")
def processor():
    tokenizer = train_video_lavit_tokenizer(
        text_vocab_size=TEXT_VOCAB, visual_codebook_size=16, motion_codebook_size=8
    )
    return VideoLaVITProcessor(image_processor=VideoLaVITImageProcessor(), tokenizer=tokenizer)


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    """12 s at 6 fps of moving shapes: two 24-frame clips by default."""
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    write_synthetic_video(path, width=64, height=48, duration=12.0, fps=12.0, codec="libx264")
    return path


@pytest.fixture(scope="module")
def decomposed(video_path):
    return decompose_video(video_path)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((40, 30), (20, 50))]


def reference_input_ids(tokenizer, prompt: str, placeholder: str, placeholder_id: int) -> list[int]:
    """The reference's `tokenizer_image_token` rule: every piece between placeholders is tokenized on
    its own (with <s>), the first keeps its <s>, later pieces drop it."""
    pieces = [tokenizer(piece).input_ids for piece in prompt.split(placeholder)]
    ids = [tokenizer.bos_token_id]
    for index, piece in enumerate(pieces):
        if index:
            ids.append(placeholder_id)
        ids.extend(piece[1:])
    return ids


def user_video_question(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]


# ---------------------------------------------------------------- chat template


def test_chat_template_reproduces_the_vicuna_v1_prompt(processor):
    prompt = processor.apply_chat_template(
        user_video_question("What is happening in this video?"), add_generation_prompt=True, tokenize=False
    )
    # conversation.py: system + sep " ", "USER: " + "<video>\n" + question + sep " ", then "ASSISTANT:"
    assert prompt == f"{SYSTEM} USER: <video>\nWhat is happening in this video? ASSISTANT:"


def test_chat_template_image_text_only_and_multi_turn(processor):
    image_turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    assert processor.apply_chat_template(image_turn, add_generation_prompt=True) == (
        f"{SYSTEM} USER: <image>\nDescribe it. ASSISTANT:"
    )
    # without media there is no placeholder and no newline (the reference only adds them with media)
    text_turn = [{"role": "user", "content": "Tell me a joke."}]
    assert (
        processor.apply_chat_template(text_turn, add_generation_prompt=True)
        == f"{SYSTEM} USER: Tell me a joke. ASSISTANT:"
    )
    conversation = [
        {"role": "system", "content": "Be brief."},
        *user_video_question("Who is there?"),
        {"role": "assistant", "content": [{"type": "text", "text": "A dog."}]},
        {"role": "user", "content": "What color?"},
    ]
    # sep2 of the reference is " \\n </s>": a literal backslash-n, then the end-of-sequence token
    assert processor.apply_chat_template(conversation, add_generation_prompt=True) == (
        "Be brief. USER: <video>\nWho is there? ASSISTANT: A dog. \\n </s>USER: What color? ASSISTANT:"
    )
    with pytest.raises(TemplateError, match="role tool"):
        processor.apply_chat_template([{"role": "tool", "content": "x"}])


def test_chat_template_is_the_default(processor):
    assert processor.chat_template == VICUNA_V1_CHAT_TEMPLATE


# ---------------------------------------------------------------- tokenization


def test_placeholder_stays_one_token_and_follows_the_reference_rule(processor, decomposed):
    tokenizer = processor.tokenizer
    for prompt, placeholder, placeholder_id in (
        (f"{SYSTEM} USER: <video>\nWhat is the dog doing? ASSISTANT:", "<video>", processor.video_token_id),
        ("<image>A caption after the image.", "<image>", processor.image_token_id),
    ):
        media = (
            {"videos": [decomposed]} if placeholder == "<video>" else {"images": [Image.new("RGB", (8, 8))]}
        )
        ids = processor(text=prompt, **media)["input_ids"][0]
        assert ids == reference_input_ids(tokenizer, prompt, placeholder, placeholder_id)
        assert ids.count(placeholder_id) == 1
    # Llama-2 behaviour the released model saw: the piece after a placeholder starts with "▁"
    ids = processor(text="USER: <video>\nQ", videos=[decomposed])["input_ids"][0]
    after = ids[ids.index(processor.video_token_id) + 1 : ids.index(processor.video_token_id) + 3]
    assert tokenizer.convert_ids_to_tokens(after) == ["▁", "<0x0A>"]


def test_text_only_matches_the_tokenizer(processor):
    texts = ["A man rides a bicycle.", "Two girls dance in the park at night."]
    assert processor(text=texts)["input_ids"] == processor.tokenizer(texts)["input_ids"]


def test_left_and_right_padding(processor):
    texts = ["short", "a much longer sentence about a dog on a green field"]
    left = processor(text=texts, padding=True, return_tensors="pt")
    lengths = left["attention_mask"].sum(dim=1)
    assert left["input_ids"].shape[1] == lengths.max()
    pad = int(left["input_ids"].shape[1] - lengths[0])
    assert pad > 0
    assert left["attention_mask"][0, :pad].sum() == 0 and (left["input_ids"][0, :pad] == 0).all()
    assert left["input_ids"][0, pad] == processor.tokenizer.bos_token_id
    right = processor(text=texts, padding=True, padding_side="right", return_tensors="pt")
    assert (
        right["attention_mask"][0, -pad:].sum() == 0
        and right["input_ids"][0, 0] == processor.tokenizer.bos_token_id
    )
    assert torch.equal(right["input_ids"][0, : lengths[0]], left["input_ids"][0, pad:])


def test_truncation_keeps_placeholders_or_fails(processor):
    prompt = "<image> " + "a dog runs " * 10
    out = processor(text=prompt, images=[Image.new("RGB", (8, 8))], truncation=True, max_length=6)
    assert len(out["input_ids"][0]) == 6 and processor.image_token_id in out["input_ids"][0]
    with pytest.raises(PlaceholderMismatchError, match="max_length"):
        processor(
            text="a dog runs " * 10 + "<image>",
            images=[Image.new("RGB", (8, 8))],
            truncation=True,
            max_length=6,
        )


# ---------------------------------------------------------------- media


def test_mixed_batch_of_text_images_and_videos(processor, video_path, decomposed, images):
    texts = [
        "USER: <video>\nWhat happens? ASSISTANT:",
        "USER: Tell me a joke. ASSISTANT:",
        "USER: <image>\n<image>\nCompare the pictures. ASSISTANT:",
        "USER: <video>\n<image>\nDoes the picture appear in the video? ASSISTANT:",
    ]
    out = processor(
        text=texts,
        images=[*images, images[0]],
        videos=[video_path, decomposed],
        return_tensors="pt",
        padding=True,
    )
    clips = len(decomposed.keyframes)
    assert clips >= 1
    assert out["input_ids"].shape == out["attention_mask"].shape and out["input_ids"].shape[0] == 4
    assert out["pixel_values"].shape == (3, 3, 224, 224)
    assert out["pixel_values_videos"].shape == (2 * clips, 3, 224, 224)
    assert out["motion_vectors"].shape == (2 * clips, 2, 24, 20, 36)
    assert out["clips_per_video"].tolist() == [clips, clips]
    assert out["images_per_sample"].tolist() == [0, 0, 2, 1]
    assert out["videos_per_sample"].tolist() == [1, 0, 0, 1]
    assert (out["input_ids"] == processor.image_token_id).sum(dim=1).tolist() == [0, 0, 2, 1]
    assert (out["input_ids"] == processor.video_token_id).sum(dim=1).tolist() == [1, 0, 0, 1]

    image_processor = processor.image_processor
    expected_images = image_processor(images + [images[0]], return_tensors="pt")["pixel_values"]
    assert torch.equal(out["pixel_values"], expected_images)
    keyframes = image_processor(decomposed.keyframes, return_tensors="pt")["pixel_values"]
    # the path is decomposed inside the processor, the decomposition is used as given
    assert torch.allclose(out["pixel_values_videos"][:clips], keyframes, atol=1e-6)
    assert torch.equal(out["pixel_values_videos"][clips:], keyframes)
    assert torch.allclose(out["motion_vectors"][:clips], decomposed.motion_vectors, atol=1e-6)
    assert torch.equal(out["motion_vectors"][clips:], decomposed.motion_vectors.float())


def test_video_as_bytes_and_decomposition_options(processor, video_path, decomposed):
    assert len(decomposed.keyframes) == 2
    from_bytes = processor(text="<video>", videos=video_path.read_bytes(), return_tensors="pt")
    assert torch.allclose(from_bytes["motion_vectors"], decomposed.motion_vectors, atol=1e-6)
    one_clip = processor(text="<video>", videos=[video_path], max_clips=1, return_tensors="pt")
    assert one_clip["clips_per_video"].tolist() == [1]
    assert one_clip["motion_vectors"].shape == (1, 2, 24, 20, 36)


def test_skip_unused_frames_is_forwarded_to_decompose_video(processor, video_path, decomposed, monkeypatch):
    calls = []

    def recording(video, **kwargs):
        calls.append(kwargs)
        return decomposed

    monkeypatch.setattr(processing_video_lavit, "decompose_video", recording)
    processor(text="<video>", videos=[video_path], skip_unused_frames=False, return_tensors="pt")
    assert calls[0]["skip_unused_frames"] is False


def test_per_sample_media_lists(processor, decomposed, images):
    texts = ["<image> one", "two", "<video> <image> three"]
    nested = processor(
        text=texts, images=[[images[0]], [], [images[1]]], videos=[[], [], [decomposed]], padding=True
    )
    flat = processor(text=texts, images=images, videos=[decomposed], padding=True)
    assert nested["input_ids"] == flat["input_ids"]
    assert torch.equal(nested["pixel_values"], flat["pixel_values"])
    with pytest.raises(PlaceholderMismatchError, match="sample 0"):
        processor(text=texts, images=[[], [images[0]], [images[1]]], videos=[decomposed])


def test_placeholder_count_mismatch_errors(processor, decomposed, images):
    with pytest.raises(PlaceholderMismatchError, match=r"2 <image> placeholder\(s\) but 1 images"):
        processor(text=["<image> <image> two pictures"], images=images[:1])
    with pytest.raises(PlaceholderMismatchError, match=r"0 <video> placeholder\(s\) but 1 videos"):
        processor(text=["no placeholder here"], videos=[decomposed])
    with pytest.raises(PlaceholderMismatchError, match=r"1 <video> placeholder\(s\) but 0 videos"):
        processor(text=["<video> where is it?"])
    with pytest.raises(TypeError, match="each video must be"):
        processor(text=["<video>"], videos=[images[0]])


def test_media_without_text(processor, decomposed, images):
    out = processor(images=images, videos=decomposed, return_tensors="pt")
    assert "input_ids" not in out
    assert out["pixel_values"].shape == (2, 3, 224, 224)
    assert out["motion_vectors"].shape[0] == len(decomposed.keyframes)


# ---------------------------------------------------------------- chat template + tokenize, decode, save/load


def test_apply_chat_template_tokenizes_with_media(processor, video_path):
    conversation = [
        {
            "role": "user",
            "content": [{"type": "video", "path": str(video_path)}, {"type": "text", "text": "What is it?"}],
        },
        {"role": "assistant", "content": "A moving square."},
    ]
    out = processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    prompt = processor.apply_chat_template(conversation)
    direct = processor(text=prompt, videos=[video_path], return_tensors="pt")
    assert torch.equal(out["input_ids"], direct["input_ids"])
    assert torch.allclose(out["motion_vectors"], direct["motion_vectors"])
    answer = processor.decode(out["input_ids"][0][out["assistant_masks"][0].bool()])
    assert answer == "A moving square. \\n </s>"


def test_decode_forwards_to_the_tokenizer(processor, decomposed):
    ids = processor(text=["a dog <video> runs"], videos=[decomposed])["input_ids"]
    assert processor.batch_decode(ids, skip_special_tokens=True) == processor.tokenizer.batch_decode(
        ids, skip_special_tokens=True
    )
    assert processor.decode(ids[0]) == processor.tokenizer.decode(ids[0])
    assert "<video>" in processor.decode(ids[0]) and "<video>" not in processor.decode(
        ids[0], skip_special_tokens=True
    )


def test_post_process_cuts_answers_at_the_turn_end(processor):
    tokenizer = processor.tokenizer
    answers = ["A dog runs. \\n </s>USER: more", "Nothing happens"]
    ids = tokenizer(answers, add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]
    assert processor.post_process_image_text_to_text(ids) == ["A dog runs.", "Nothing happens"]


def test_save_and_load_round_trip(processor, tmp_path, decomposed, images):
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").read_text() == VICUNA_V1_CHAT_TEMPLATE
    reloaded = VideoLaVITProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded.image_processor, VideoLaVITImageProcessor)
    assert reloaded.chat_template == VICUNA_V1_CHAT_TEMPLATE
    texts = ["<video> <image> what?", "plain"]
    before = processor(text=texts, images=images[:1], videos=[decomposed], return_tensors="pt", padding=True)
    after = reloaded(text=texts, images=images[:1], videos=[decomposed], return_tensors="pt", padding=True)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_auto_processor_round_trip(processor, tmp_path):
    from transformers import AutoProcessor

    processor.save_pretrained(tmp_path)
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), VideoLaVITProcessor)
    # remote code: the processor's module and its relative imports are saved next to it
    # (test_remote_code.py loads them in a process without the package)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_video_lavit.VideoLaVITProcessor"
    for module in ("processing_video_lavit.py", "tokenizer_training.py", "video_decomposition.py"):
        assert (tmp_path / module).is_file(), module
