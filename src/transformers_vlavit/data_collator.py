"""Data collators of the two language-model training stages of Video-LaVIT.

- [`VideoLaVITPretrainingCollator`] (stage 2, unified generative pre-training): every image and video
  becomes discrete ids of the frozen tokenizers, written into the text in `[video, text]` or
  `[text, video]` order, and the loss covers every token. The batch is a plain causal-LM batch
  (`input_ids`, `attention_mask`, `labels`) that any trainer can feed to the model.
- [`VideoLaVITSFTCollator`] (stage 3, instruction tuning): Vicuna-v1 conversations with `<video>` /
  `<image>` placeholders go through the processor; the model splices the keyframe features and motion
  ids in, and the labels are `-100` everywhere except on the assistant answers.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature

from .modeling_video_lavit import IGNORE_INDEX
from .video_decomposition import decompose_video


class CollatorInputError(ValueError):
    """A training example lacks a field the collator needs, or holds one of the wrong kind."""


class CollatorSettingsError(ValueError):
    """A collator option is out of range."""


@dataclass(frozen=True)
class PrecomputedClips:
    """The clips of a video whose decomposition was stored beforehand (for example by
    `datasets/prepare_video_text.py`): the processor accepts it wherever it accepts a `VideoDecomposition`.

    Attributes:
        keyframes: one RGB keyframe per clip.
        motion_vectors: `[clips, 2, 24, 20, 36]` float motion in the language-model scaling.
    """

    keyframes: list[Image.Image]
    motion_vectors: torch.Tensor


def _as_image(value) -> Image.Image:
    """A PIL image from a PIL image, a path, encoded bytes or a `datasets` `Image` dict, as RGB."""
    if isinstance(value, Mapping):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (str, os.PathLike)):
        value = Image.open(value)
    elif isinstance(value, (bytes, bytearray)):
        value = Image.open(io.BytesIO(value))
    if not isinstance(value, Image.Image):
        raise CollatorInputError(
            f"expected an image (PIL image, path, bytes or a datasets Image), got {type(value).__name__}."
        )
    return value.convert("RGB")


def _as_clips(video) -> Any:
    """A video as the processor takes it: a decomposition stays as it is, a mapping with `keyframes`
    and `motion_vectors` (a stored decomposition) becomes [`PrecomputedClips`]; paths and bytes pass."""
    if isinstance(video, Mapping):
        if "keyframes" not in video or "motion_vectors" not in video:
            raise CollatorInputError(
                "a video given as a mapping needs 'keyframes' and 'motion_vectors' (a stored decomposition); "
                f"got the keys {sorted(video)}."
            )
        return PrecomputedClips(
            keyframes=[_as_image(frame) for frame in video["keyframes"]],
            motion_vectors=torch.as_tensor(np.asarray(video["motion_vectors"]), dtype=torch.float32),
        )
    return video


def _decomposed(video) -> PrecomputedClips | Any:
    """A video with its clips available: decompose paths, bytes and file objects now."""
    video = _as_clips(video)
    if hasattr(video, "keyframes") and hasattr(video, "motion_vectors"):
        return video
    return decompose_video(video)


class VideoLaVITPretrainingCollator:
    r"""
    Stage-2 collator: text, image-text and video-text examples -> causal-LM batches of vocabulary ids.

    Each example is a mapping with
    - `"text"` (or `"caption"`): the caption or the text document (may be empty for a bare video);
    - optionally one video: `"video"` (a path, bytes, a `VideoDecomposition` or a mapping with
      `keyframes`/`motion_vectors`), or the columns `"keyframes"` + `"motion_vectors"` of a dataset
      written by `datasets/prepare_video_text.py`; codes computed beforehand replace them:
      `"motion_token_ids"` `[clips, motion_tokens_per_clip]` and `"keyframe_token_ids"` (one list of
      0-based visual codes per clip) skip the motion and the visual tokenizer;
    - or optionally one `"image"` (PIL image, path, bytes or a `datasets` `Image`), or its
      `"image_token_ids"` (0-based visual codes).
    An example with none of them is text-only.

    A sample is `<s> media text </s>` (`[video, text]`) or `<s> text media </s>` (`[text, video]`), the
    order drawn per sample; an image always comes first (image-to-text, as LaVIT). Media ids follow
    [`VideoLaVITVocabularyMapping`]: per clip `[image_start] keyframe codes [image_end] [motion_start]
    motion codes [motion_end]`. Labels equal `input_ids` on every real token and `-100` on padding.

    Args:
        processor ([`VideoLaVITProcessor`]): its tokenizer encodes the text, its image processor the
            images and keyframes.
        model ([`VideoLaVITForCausalLM`]): provides the frozen `visual_tokenizer`, `motion_tokenizer` and
            `vocabulary_mapping`; the tokenizers run in `torch.no_grad` on their own device and dtype.
        text_first_probability (`float`, defaults to 0.5): chance that a video sample is `[text, video]`.
        max_length (`int`, *optional*): sequences are cut to this many tokens (right side).
        pad_to_multiple_of (`int`, *optional*): round the padded length up to a multiple of this.
        sample_visual_tokens (`bool`, defaults to `False`): Gumbel-sample the kept keyframe tokens
            (the reference tokenizer's behaviour) instead of the deterministic arg-max.
        generator (`torch.Generator`, *optional*): random source of the order draws and the Gumbel
            noise. By default the global torch RNG is used, which `Trainer` seeds (`args.seed`) and
            saves in, and restores from, its checkpoints, so a resumed run draws the same orders.

    Example:

    ```python
    >>> collator = VideoLaVITPretrainingCollator(processor, model)
    >>> batch = collator([{"text": "a dog runs", "video": "clip.mp4"}, {"text": "plain text"}])
    >>> batch["input_ids"].shape, batch["labels"].shape  # [2, L], [2, L]
    ```
    """

    def __init__(
        self,
        processor,
        model,
        *,
        text_first_probability: float = 0.5,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        sample_visual_tokens: bool = False,
        generator: torch.Generator | None = None,
    ):
        if not 0.0 <= text_first_probability <= 1.0:
            raise CollatorSettingsError(
                f"text_first_probability must be in [0, 1] (the share of [text, video] samples), "
                f"got {text_first_probability}."
            )
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.visual_tokenizer = model.visual_tokenizer
        self.motion_tokenizer = model.motion_tokenizer
        self.mapping = model.vocabulary_mapping
        self.pad_token_id = model.config.text_config.pad_token_id or 0
        self.text_first_probability = text_first_probability
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.sample_visual_tokens = sample_visual_tokens
        self.generator = generator

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> BatchFeature:
        """`examples` (see the class docstring) -> `input_ids`, `attention_mask`, `labels` `[batch, L]`."""
        videos = [self._video(example) for example in examples]
        images = [self._image(example) for example in examples]
        for index, (video, image) in enumerate(zip(videos, images)):
            if video is not None and image is not None:
                raise CollatorInputError(
                    f"example {index} has both an image and a video; give one medium per pre-training sample."
                )
        media = self._media_ids(videos, images)
        bos = torch.tensor([self.tokenizer.bos_token_id], dtype=torch.long)
        eos = torch.tensor([self.tokenizer.eos_token_id], dtype=torch.long)
        sequences = []
        for example, medium, video in zip(examples, media, videos):
            text = example.get("text", example.get("caption")) or ""
            text_ids = torch.tensor(
                self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long
            )
            parts = [text_ids] if medium is None else [medium, text_ids]
            if medium is not None and video is not None and self._draw_text_first():
                parts.reverse()
            sequence = torch.cat([bos, *parts, eos])
            sequences.append(sequence[: self.max_length] if self.max_length else sequence)
        return self._pad(sequences)

    @staticmethod
    def _image(example: Mapping[str, Any]) -> dict | None:
        """The example's image as `{"image", "codes"}` (either may be `None`), or `None` without one."""
        codes = example.get("image_token_ids")
        if example.get("image") is None and codes is None:
            return None
        return {
            "image": None if codes is not None else _as_image(example["image"]),
            "codes": None if codes is None else torch.as_tensor(np.asarray(codes), dtype=torch.long),
        }

    @staticmethod
    def _video(example: Mapping[str, Any]) -> dict | None:
        """The example's clips as `{"keyframes", "motion_vectors", "keyframe_codes", "motion_codes"}`
        (stored codes replace the inputs they come from), or `None` without a video."""
        keyframe_codes, motion_codes = example.get("keyframe_token_ids"), example.get("motion_token_ids")
        keyframes = motion = None
        if example.get("video") is not None:
            clips = _decomposed(example["video"])
            keyframes, motion = clips.keyframes, clips.motion_vectors
        elif example.get("keyframes") is not None or example.get("motion_vectors") is not None:
            keyframes, motion = example.get("keyframes"), example.get("motion_vectors")
        if (keyframes is None and keyframe_codes is None) or (motion is None and motion_codes is None):
            if keyframes is None and motion is None and keyframe_codes is None and motion_codes is None:
                return None
            raise CollatorInputError(
                "a video example needs its keyframes ('keyframes' or 'keyframe_token_ids') and its motion "
                f"('motion_vectors' or 'motion_token_ids'); got the keys {sorted(example)}."
            )
        video = {
            "keyframes": None if keyframe_codes is not None else [_as_image(frame) for frame in keyframes],
            "motion_vectors": None
            if motion_codes is not None
            else torch.as_tensor(np.asarray(motion), dtype=torch.float32),
            "keyframe_codes": None
            if keyframe_codes is None
            else [torch.as_tensor(np.asarray(codes), dtype=torch.long) for codes in keyframe_codes],
            "motion_codes": None
            if motion_codes is None
            else torch.as_tensor(np.asarray(motion_codes), dtype=torch.long),
        }
        num_clips = len(video["keyframes"] if keyframe_codes is None else video["keyframe_codes"])
        num_motion = len(video["motion_vectors"] if motion_codes is None else video["motion_codes"])
        if num_clips == 0 or num_clips != num_motion:
            raise CollatorInputError(
                f"a video example has {num_clips} keyframes and {num_motion} motion clips; both must be equal "
                "and at least 1 (drop rows of failed decompositions, whose 'error' is set)."
            )
        return video

    def _draw_text_first(self) -> bool:
        """One Bernoulli draw: `True` for a `[text, video]` sample."""
        return bool(torch.rand((), generator=self.generator) < self.text_first_probability)

    @torch.no_grad()
    def _media_ids(
        self, videos: list[dict | None], images: list[dict | None]
    ) -> list[torch.LongTensor | None]:
        """Vocabulary ids of each example's image or video (`None` for text-only), with one visual and one
        motion tokenizer call for everything of the batch that has no stored codes."""
        pictures = [image["image"] for image in images if image is not None and image["codes"] is None]
        pictures += [
            frame
            for video in videos
            if video is not None and video["keyframe_codes"] is None
            for frame in video["keyframes"]
        ]
        computed = iter(self._visual_codes(pictures)) if pictures else iter(())
        for image in images:
            if image is not None and image["codes"] is None:
                image["codes"] = next(computed)
        for video in videos:
            if video is not None and video["keyframe_codes"] is None:
                video["keyframe_codes"] = [next(computed) for _ in video["keyframes"]]
        self._fill_motion_codes([video for video in videos if video is not None])
        media = []
        for image, video in zip(images, videos):
            if image is not None:
                media.append(self.mapping.image_ids(image["codes"]))
            elif video is not None:
                clips = zip(video["keyframe_codes"], video["motion_codes"])
                media.append(
                    torch.cat([self.mapping.clip_ids(keyframe, motion) for keyframe, motion in clips])
                )
            else:
                media.append(None)
        return media

    def _visual_codes(self, pictures: list[Image.Image]) -> list[torch.LongTensor]:
        """Images `N` -> N LongTensors of 0-based visual codes (on the CPU)."""
        pixel_values = self.processor.image_processor(pictures, return_tensors="pt")["pixel_values"]
        parameter = next(self.visual_tokenizer.parameters())
        pixel_values = pixel_values.to(device=parameter.device, dtype=parameter.dtype)
        codes = self.visual_tokenizer.tokenize(
            pixel_values, sample=self.sample_visual_tokens, generator=self.generator
        )
        return [code.cpu() for code in codes]

    def _fill_motion_codes(self, videos: list[dict]) -> None:
        """Set `motion_codes [clips, tokens]` (0-based, CPU) of the videos without stored ones, with one
        motion tokenizer call."""
        pending = [video for video in videos if video["motion_codes"] is None]
        if not pending:
            return
        motion = torch.cat([video["motion_vectors"] for video in pending])
        parameter = next(self.motion_tokenizer.parameters())
        codes = self.motion_tokenizer.encode(motion.to(device=parameter.device, dtype=parameter.dtype)).cpu()
        for video, video_codes in zip(
            pending, codes.split([len(video["motion_vectors"]) for video in pending])
        ):
            video["motion_codes"] = video_codes

    def _pad(self, sequences: list[torch.LongTensor]) -> BatchFeature:
        """Right-pad 1-D id sequences into `input_ids`, `attention_mask` and `labels` `[batch, L]`."""
        length = max(len(sequence) for sequence in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = sequence
            attention_mask[row, : len(sequence)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return BatchFeature({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})


class VideoLaVITSFTCollator:
    r"""
    Stage-3 collator: conversations with images/videos -> processor batches whose labels cover only the
    assistant answers.

    Each example is a mapping with
    - `"messages"`: a conversation in the chat format (`{"role": "system" | "user" | "assistant",
      "content": str or [{"type": "text" | "image" | "video", ...}]}`); a string content may hold
      `<video>` / `<image>` placeholders (LLaVA / Video-ChatGPT style);
    - `"videos"`: the videos of its `<video>` placeholders in order (paths, bytes, `VideoDecomposition`
      or mappings with `keyframes`/`motion_vectors`), and/or `"images"`: its images;
    - optionally the stored clips of all its videos, `"keyframes"`, `"motion_vectors"`
      `[clips, 2, 24, 20, 36]` and `"clips_per_video"` (the output of `datasets/prepare_instructions.py`),
      used instead of decoding `"videos"` again.

    The text is the processor's chat template (Vicuna-v1). Labels are the token ids of every assistant
    answer including its turn end (`" \n </s>"`, so that the model learns to stop), and `-100` on the
    system prompt, the user turns, the `USER:`/`ASSISTANT:` markers, the placeholders (whose keyframe and
    motion positions the model labels `-100` when it splices them in) and the padding.

    Args:
        processor ([`VideoLaVITProcessor`]): tokenizes the text, prepares the images and the videos.
        max_length (`int`, *optional*): cut each sample to this many tokens (before the model splices
            the media in); a cut that would drop a placeholder raises.
        decomposition_kwargs (`dict`, *optional*): options of `decompose_video` for videos given as
            files (`max_clips`, `fps`, ...).

    Example:

    ```python
    >>> collator = VideoLaVITSFTCollator(processor)
    >>> batch = collator([{"messages": [{"role": "user", "content": "<video>\nWhat happens?"},
    ...                                 {"role": "assistant", "content": "A dog runs."}],
    ...                    "videos": ["clip.mp4"]}])
    >>> batch["labels"].shape == batch["input_ids"].shape
    True
    ```
    """

    def __init__(self, processor, *, max_length: int | None = None, decomposition_kwargs: dict | None = None):
        self.processor = processor
        self.max_length = max_length
        self.decomposition_kwargs = dict(decomposition_kwargs or {})

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> BatchFeature:
        """
        `examples` -> [`BatchFeature`] with `input_ids`, `attention_mask`, `labels` `[batch, L]` (right
        padded) and, when present, `pixel_values [num_images, 3, 224, 224]`, `pixel_values_videos
        [num_clips, 3, 224, 224]`, `motion_vectors [num_clips, 2, 24, 20, 36]`, `clips_per_video
        [num_videos]`, `images_per_sample [batch]`, `videos_per_sample [batch]`.
        """
        texts, spans, videos, images = [], [], [], []
        for index, example in enumerate(examples):
            if "messages" not in example:
                raise CollatorInputError(f"example {index} has no 'messages' (keys: {sorted(example)}).")
            text, answer_spans = self.render(example["messages"])
            texts.append(text)
            spans.append(answer_spans)
            videos.append(self._videos(example))
            images.append([_as_image(image) for image in example.get("images") or []])
        text_kwargs = {"padding": True, "padding_side": "right", "return_offsets_mapping": True}
        if self.max_length:
            text_kwargs.update(truncation=True, max_length=self.max_length)
        batch = self.processor(
            text=texts,
            images=images if any(images) else None,
            videos=videos if any(videos) else None,
            return_tensors="pt",
            **text_kwargs,
            **self.decomposition_kwargs,
        )
        offsets = batch.pop("offset_mapping")
        batch["labels"] = self._labels(batch["input_ids"], batch["attention_mask"], offsets, spans)
        return batch

    @staticmethod
    def _videos(example: Mapping[str, Any]) -> list:
        """The example's videos as the processor takes them; stored clips (`keyframes`, `motion_vectors`
        and `clips_per_video` of all its videos, as `datasets/prepare_instructions.py` writes them)
        replace decoding the files again."""
        if example.get("keyframes") is None or example.get("motion_vectors") is None:
            return [_as_clips(video) for video in example.get("videos") or []]
        motion = torch.as_tensor(np.asarray(example["motion_vectors"]), dtype=torch.float32)
        counts = [
            int(count) for count in np.asarray(example.get("clips_per_video", [len(motion)])).reshape(-1)
        ]
        if sum(counts) != len(motion) or len(example["keyframes"]) != len(motion):
            raise CollatorInputError(
                f"stored clips disagree: clips_per_video sums to {sum(counts)}, with "
                f"{len(example['keyframes'])} keyframes and {len(motion)} motion clips; re-run the data "
                "preparation."
            )
        keyframes = [_as_image(frame) for frame in example["keyframes"]]
        bounds = np.cumsum([0, *counts]).tolist()
        return [
            PrecomputedClips(keyframes[start:end], motion[start:end])
            for start, end in itertools.pairwise(bounds)
        ]

    def render(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """
        The conversation text and the character spans `(start, end)` of its assistant answers.

        A span runs from the end of `"ASSISTANT:"` to the end of the turn, found by rendering the
        conversation up to each answer with and without it, so that it follows the chat template.
        """
        text = self._template(messages, add_generation_prompt=False)
        spans = []
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = len(self._template(messages[:index], add_generation_prompt=True))
            end = len(self._template(messages[: index + 1], add_generation_prompt=False))
            if text[:end] != self._template(messages[: index + 1], add_generation_prompt=False):
                raise CollatorInputError(
                    "the chat template renders a conversation prefix differently from the whole."
                )
            spans.append((start, end))
        if not spans:
            raise CollatorInputError("a conversation without an assistant turn has nothing to learn from.")
        return text, spans

    def _template(self, messages: list[dict], add_generation_prompt: bool) -> str:
        """The chat template's text of `messages` (no tokenization)."""
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _labels(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor,
        offsets: torch.LongTensor,
        spans: list[list[tuple[int, int]]],
    ) -> torch.LongTensor:
        """`input_ids` where a token starts inside an answer span, `-100` elsewhere; `[batch, L]`."""
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        placeholders = (input_ids == self.processor.image_token_id) | (
            input_ids == self.processor.video_token_id
        )
        starts, ends = offsets[..., 0], offsets[..., 1]
        for row, row_spans in enumerate(spans):
            in_answer = torch.zeros_like(input_ids[row], dtype=torch.bool)
            for start, end in row_spans:
                in_answer |= (starts[row] >= start) & (starts[row] < end) & (ends[row] > starts[row])
            keep = in_answer & attention_mask[row].bool() & ~placeholders[row]
            labels[row] = input_ids[row].masked_fill(~keep, IGNORE_INDEX)
        return labels


__all__ = [
    "CollatorInputError",
    "CollatorSettingsError",
    "PrecomputedClips",
    "VideoLaVITPretrainingCollator",
    "VideoLaVITSFTCollator",
]
