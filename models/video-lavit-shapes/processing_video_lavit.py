"""Processor of Video-LaVIT: text, images and videos to one batch of model inputs.

Each image and each video is one placeholder token (`<image>` / `<video>`) in `input_ids`. The
processor does not expand it: how many keyframe tokens an image or a clip becomes is decided by the
visual tokenizer inside the model. It does decompose every video into clips (keyframe + motion
vectors, `video_decomposition.decompose_video`) and turns images and keyframes into `pixel_values`.
"""

import io
import os
import re
from collections.abc import Sequence
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack, VideosKwargs

from .tokenizer_training import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER
from .video_decomposition import VideoDecomposition, decompose_video

# The reference's Vicuna-v1 conversation (`conversation.py`, `default_conversation`): the system
# text, then "USER: ..." and "ASSISTANT: ..." turns separated by " ". Media placeholders open the user
# turn, each followed by a newline. A finished assistant turn ends with " \n </s>" where "\n" is the
# two characters backslash and "n", not a newline: that is what the reference writes (its inference
# code also stops generation on that literal text), so the released model expects it.
VICUNA_V1_CHAT_TEMPLATE = r"""{%- set ns = namespace(
    system="A chat between a curious user and an artificial intelligence assistant. "
    ~ "The assistant gives helpful, detailed, and polite answers to the user's questions."
) -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set ns.system = messages[0]['content'] -%}
    {%- else -%}
        {%- set ns.system = messages[0]['content'] | selectattr('type', 'equalto', 'text')
            | map(attribute='text') | join(' ') -%}
    {%- endif -%}
    {%- set messages = messages[1:] -%}
{%- endif -%}
{{- ns.system + ' ' -}}
{%- for message in messages -%}
    {%- if message['content'] is string -%}
        {%- set text = message['content'] -%}
    {%- else -%}
        {%- set text = message['content'] | selectattr('type', 'equalto', 'text')
            | map(attribute='text') | join(' ') -%}
    {%- endif -%}
    {%- if message['role'] == 'user' -%}
        {{- 'USER: ' -}}
        {%- if message['content'] is not string -%}
            {%- for item in message['content'] -%}
                {%- if item['type'] == 'image' -%}
                    {{- '<image>\n' -}}
                {%- elif item['type'] == 'video' -%}
                    {{- '<video>\n' -}}
                {%- endif -%}
            {%- endfor -%}
        {%- endif -%}
        {{- text + ' ' -}}
    {%- elif message['role'] == 'assistant' -%}
        {{- 'ASSISTANT: ' -}}
        {%- generation -%}
            {{- text + ' \\n </s>' -}}
        {%- endgeneration -%}
    {%- else -%}
        {{- raise_exception("Vicuna-v1 conversations have system, user and assistant messages only, "
            ~ "got role " ~ message['role']) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- 'ASSISTANT:' -}}
{%- endif -%}"""

# End of an answer in the reference's conversations: the literal backslash-n of the turn separator
ANSWER_END = "\\n"

# keyword arguments of `decompose_video` that the processor forwards from `videos_kwargs`
_DECOMPOSITION_KWARGS = (
    "transcode",
    "fps",
    "clip_frames",
    "max_clips",
    "bit_rate",
    "decoder_threads",
    "encoder_threads",
    "overlap",
    "skip_unused_frames",
)
# model-loading options that `pipeline()` forwards to `AutoProcessor.from_pretrained` along with the model's;
# they are no processor settings, and the tokenizer would otherwise keep them and write them to its config
_MODEL_LOADING_KWARGS = (
    "dtype",
    "torch_dtype",
    "device_map",
    "max_memory",
    "offload_folder",
    "offload_state_dict",
    "low_cpu_mem_usage",
    "attn_implementation",
    "quantization_config",
    "tp_plan",
    "tp_size",
)
# text keyword arguments the placeholder-aware tokenization below implements
_SUPPORTED_TEXT_KWARGS = {
    "add_special_tokens",
    "padding",
    "truncation",
    "max_length",
    "pad_to_multiple_of",
    "padding_side",
    "return_attention_mask",
    "return_offsets_mapping",
    "return_tensors",
    # asked for by `apply_chat_template`; nothing is replaced here, so there are no offsets to report
    "return_text_replacement_offsets",
}


class VideoLaVITVideosKwargs(VideosKwargs, total=False):
    """
    transcode (`bool`, *optional*, defaults to `True`):
        Re-encode the video to MPEG-4 Part 2 (6 fps, GOP 12) before reading its motion vectors, as the
        reference does. `False` reads an MPEG-4 Part 2 stream as it is.
    clip_frames (`int`, *optional*, defaults to 24):
        Frames per clip.
    max_clips (`int`, *optional*, defaults to the processor's `max_clips`, 16):
        Most clips taken from one video (evenly spread over it when it has more).
    bit_rate (`int`, *optional*, defaults to 8000000):
        Bit rate of the re-encoded MPEG-4 stream in bit/s.
    decoder_threads (`int`, *optional*, defaults to 0):
        Threads of the source decoder (0: FFmpeg's choice); results do not depend on it.
    encoder_threads (`int`, *optional*, defaults to 1):
        Threads of the MPEG-4 encoder; more is faster but changes the motion vectors.
    overlap (`bool`, *optional*, defaults to `True`):
        Encode in a second thread while the source is decoded (same results).
    skip_unused_frames (`bool`, *optional*, defaults to `True`):
        Leave undecoded the unreferenced source frames the 6 fps resampling drops (same results).
    """

    transcode: bool
    clip_frames: int
    max_clips: int
    bit_rate: int
    decoder_threads: int
    encoder_threads: int
    overlap: bool
    skip_unused_frames: bool


class VideoLaVITProcessorKwargs(ProcessingKwargs, total=False):
    """Keyword arguments of [`VideoLaVITProcessor.__call__`]."""

    videos_kwargs: VideoLaVITVideosKwargs


class PlaceholderMismatchError(ValueError):
    """The `<image>`/`<video>` placeholders in the text do not match the images/videos given."""


class VideoLaVITProcessor(ProcessorMixin):
    r"""
    Builds Video-LaVIT model inputs from text, images and videos.

    Args:
        image_processor ([`VideoLaVITImageProcessor`]):
            Resizes images and keyframes to 224 x 224 and normalises them with the CLIP statistics.
        tokenizer ([`LlamaTokenizer`]):
            Llama-style tokenizer with the `<image>` and `<video>` placeholder tokens (see
            [`train_video_lavit_tokenizer`]).
        chat_template (`str`, *optional*):
            Jinja chat template; defaults to the reference's Vicuna-v1 conversation
            ([`VICUNA_V1_CHAT_TEMPLATE`]).
        max_clips (`int`, *optional*, defaults to 16):
            Most clips read from one video for understanding when a call does not say: 16, what the
            reference's understanding entry point (`build_model(max_video_clips=16)`) uses. Saved with
            the processor, so a converted checkpoint carries it. (`decompose_video` on its own keeps its
            default of 8, the reference's video processor default.)

    Example:

    ```python
    >>> inputs = processor(
    ...     text=["USER: <video>\nWhat happens? ASSISTANT:", "USER: Tell a joke. ASSISTANT:"],
    ...     videos=["clip.mp4"],
    ...     return_tensors="pt",
    ...     padding=True,
    ... )
    >>> inputs["input_ids"].shape, inputs["pixel_values_videos"].shape, inputs["motion_vectors"].shape
    (torch.Size([2, L]), torch.Size([clips, 3, 224, 224]), torch.Size([clips, 2, 24, 20, 36]))
    ```
    """

    valid_processor_kwargs = VideoLaVITProcessorKwargs

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, max_clips: int = 16):
        if tokenizer is None or image_processor is None:
            raise ValueError("VideoLaVITProcessor needs both an `image_processor` and a `tokenizer`.")
        if int(max_clips) < 1:
            raise ValueError(f"max_clips must be at least 1, got {max_clips}.")
        self.max_clips = int(max_clips)
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_PLACEHOLDER
        self.video_token = getattr(tokenizer, "video_token", None) or VIDEO_PLACEHOLDER
        self.image_token_id = _placeholder_id(tokenizer, self.image_token)
        self.video_token_id = _placeholder_id(tokenizer, self.video_token)
        super().__init__(
            image_processor,
            tokenizer,
            chat_template=VICUNA_V1_CHAT_TEMPLATE if chat_template is None else chat_template,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """
        Load the processor (image processor, tokenizer, chat template) saved in a folder or hub repository.

        Model-loading options among `kwargs` (`dtype`, `device_map`, ... which `pipeline()` passes to
        `AutoProcessor` as well as to the model) are dropped: they are no processor settings, and the
        tokenizer would otherwise store them and write them to `tokenizer_config.json` on `save_pretrained`
        (failing outright on a `torch.dtype`).
        """
        for name in _MODEL_LOADING_KWARGS:
            kwargs.pop(name, None)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def __call__(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        videos=None,
        **kwargs: Unpack[VideoLaVITProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Tokenize `text` and prepare the images and videos its placeholders refer to.

        Args:
            images: PIL images or arrays, one per `<image>` placeholder, in the order the placeholders
                appear in the batch; either a flat list or one list per sample.
            text (`str` or `list[str]`): prompts; each `<image>` / `<video>` stays a single token.
            videos: one per `<video>` placeholder, flat or one list per sample; each a path, `bytes`,
                a binary file object or an already decomposed [`VideoDecomposition`].
            **kwargs: tokenizer arguments (`padding`, `truncation`, `max_length`, `padding_side`,
                `pad_to_multiple_of`, `add_special_tokens`, `return_attention_mask`,
                `return_offsets_mapping`), image processor arguments, decomposition arguments
                (`transcode`, `fps`, `clip_frames`, `max_clips`, `bit_rate`, `decoder_threads`,
                `encoder_threads`, `overlap`, `skip_unused_frames`; see `decompose_video`) and
                `return_tensors`.

        Returns:
            [`BatchFeature`] with, where they apply:
            - `input_ids` `[batch, length]` and `attention_mask` `[batch, length]`;
            - `pixel_values` `[num_images, 3, 224, 224]`, the images in placeholder order;
            - `pixel_values_videos` `[num_clips, 3, 224, 224]`, the keyframes of all clips of all videos;
            - `motion_vectors` `[num_clips, 2, 24, 20, 36]`, the clips' motion (LLM-path scaling);
            - `clips_per_video` `[num_videos]`, `images_per_sample` `[batch]`, `videos_per_sample` `[batch]`.

        Raises:
            PlaceholderMismatchError: the placeholders and the images/videos given do not match.
        """
        output_kwargs = self._merge_kwargs(
            VideoLaVITProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        if text is None and images is None and videos is None:
            raise ValueError("VideoLaVITProcessor needs at least one of `text`, `images` or `videos`.")
        texts = [text] if isinstance(text, str) else None if text is None else list(text)
        if texts is not None and not all(isinstance(sample, str) for sample in texts):
            raise TypeError("`text` must be a string or a list of strings.")

        image_counts = video_counts = None
        if texts is not None:
            image_counts = [sample.count(self.image_token) for sample in texts]
            video_counts = [sample.count(self.video_token) for sample in texts]
        images = _flatten_media(images, image_counts, self.image_token, "images")
        videos = _flatten_media(videos, video_counts, self.video_token, "videos")

        data: dict[str, Any] = {}
        if images:
            data["pixel_values"] = self._preprocess_pixels(images, output_kwargs["images_kwargs"])
        if videos:
            data.update(
                self._prepare_videos(videos, output_kwargs["videos_kwargs"], output_kwargs["images_kwargs"])
            )
        if texts is not None:
            data.update(self._tokenize(texts, output_kwargs["text_kwargs"]))
            data["images_per_sample"] = image_counts
            data["videos_per_sample"] = video_counts

        return_tensors = output_kwargs["text_kwargs"].get("return_tensors")
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        """Names of the inputs this processor produces for `VideoLaVITForCausalLM`."""
        return [
            "input_ids",
            "attention_mask",
            "pixel_values",
            "pixel_values_videos",
            "motion_vectors",
            "clips_per_video",
            "images_per_sample",
            "videos_per_sample",
        ]

    def post_process_image_text_to_text(
        self, generated_outputs, skip_special_tokens=True, **kwargs
    ) -> list[str]:
        """Decode generated answers as the reference does: cut at the turn end (a literal backslash-n,
        see `VICUNA_V1_CHAT_TEMPLATE`) and strip.

        Args:
            generated_outputs: the new token ids of `generate`, `[batch, new_tokens]`.
            skip_special_tokens: drop special tokens (`</s>`, placeholders, code tokens) when decoding.
            **kwargs: passed to the tokenizer's `batch_decode`.

        Returns:
            One answer string per sample.
        """
        texts = self.tokenizer.batch_decode(
            generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs
        )
        return [text.split(ANSWER_END)[0].strip() for text in texts]

    def _preprocess_pixels(self, images: list, images_kwargs: dict) -> torch.Tensor:
        """Images or keyframes -> normalised `pixel_values` `[N, 3, 224, 224]` (float32)."""
        images_kwargs = {**images_kwargs, "return_tensors": "pt"}
        return self.image_processor(images, **images_kwargs)["pixel_values"]

    def _prepare_videos(
        self, videos: list, videos_kwargs: dict, images_kwargs: dict
    ) -> dict[str, torch.Tensor]:
        """Decompose every video into clips and stack the keyframes and motion of all clips.

        Returns `pixel_values_videos` `[num_clips, 3, 224, 224]`, `motion_vectors`
        `[num_clips, 2, 24, 20, 36]` and `clips_per_video` (LongTensor `[num_videos]`).
        """
        decomposition_kwargs = {
            key: videos_kwargs[key]
            for key in _DECOMPOSITION_KWARGS
            if videos_kwargs.get(key) is not None
        }
        decomposition_kwargs.setdefault("max_clips", self.max_clips)
        keyframes, motion, clips_per_video = [], [], []
        for video in videos:
            decomposition = (
                video if _is_decomposition(video) else decompose_video(video, **decomposition_kwargs)
            )
            keyframes.extend(decomposition.keyframes)
            motion.append(decomposition.motion_vectors)
            clips_per_video.append(len(decomposition.keyframes))
        return {
            "pixel_values_videos": self._preprocess_pixels(keyframes, images_kwargs),
            "motion_vectors": torch.cat(motion).float(),
            "clips_per_video": torch.tensor(clips_per_video, dtype=torch.long),
        }

    def _tokenize(self, texts: list[str], text_kwargs: dict) -> dict[str, list]:
        """Tokenize `texts`, keeping each placeholder a single token.

        As in the reference (`tokenizer_image_token`), the text between placeholders is tokenized
        piece by piece, so the text right after a placeholder starts a new SentencePiece-style
        "word" (Llama-2 then encodes "<video>\\nQ" as `<video>`, "▁", "<0x0A>", ...). The special
        tokens (`<s>` for Llama) wrap the whole sample.
        """
        unsupported = sorted(
            key for key, value in text_kwargs.items() if value and key not in _SUPPORTED_TEXT_KWARGS
        )
        if unsupported:
            raise ValueError(
                f"VideoLaVITProcessor does not support the text arguments {unsupported}; drop them."
            )
        add_special_tokens = text_kwargs.get("add_special_tokens", True)
        return_offsets = bool(text_kwargs.get("return_offsets_mapping"))

        splitter = re.compile(f"({re.escape(self.image_token)}|{re.escape(self.video_token)})")
        pieces = [splitter.split(sample) for sample in texts]
        # pieces alternate text, placeholder, text, ...: encode all text parts of the batch at once
        chunks = [part for sample_pieces in pieces for part in sample_pieces[0::2]]
        encoded = self.tokenizer(chunks, add_special_tokens=False, return_offsets_mapping=return_offsets)
        prefix, suffix = self._special_token_affixes() if add_special_tokens else ([], [])
        placeholder_ids = {self.image_token: self.image_token_id, self.video_token: self.video_token_id}

        batch_ids, batch_offsets, chunk_index = [], [], 0
        for sample_pieces in pieces:
            ids, offsets, position = list(prefix), [(0, 0)] * len(prefix), 0
            for piece_index, part in enumerate(sample_pieces):
                if piece_index % 2:
                    ids.append(placeholder_ids[part])
                    offsets.append((position, position + len(part)))
                else:
                    ids.extend(encoded["input_ids"][chunk_index])
                    if return_offsets:
                        offsets.extend(
                            (position + start, position + end)
                            for start, end in encoded["offset_mapping"][chunk_index]
                        )
                    chunk_index += 1
                position += len(part)
            ids.extend(suffix)
            offsets.extend([(0, 0)] * len(suffix))
            batch_ids.append(ids)
            batch_offsets.append(offsets)

        if text_kwargs.get("truncation") and text_kwargs.get("max_length"):
            batch_ids, batch_offsets = self._truncate(batch_ids, batch_offsets, text_kwargs["max_length"])
        padded = self.tokenizer.pad(
            {"input_ids": batch_ids},
            padding=text_kwargs.get("padding", False),
            max_length=text_kwargs.get("max_length"),
            pad_to_multiple_of=text_kwargs.get("pad_to_multiple_of"),
            padding_side=text_kwargs.get("padding_side"),
            return_attention_mask=text_kwargs.get("return_attention_mask", True),
        )
        result = {key: padded[key] for key in ("input_ids", "attention_mask") if key in padded}
        if return_offsets:
            result["offset_mapping"] = _pad_like(
                batch_offsets, result["input_ids"], text_kwargs, self.tokenizer.padding_side
            )
        return result

    def _special_token_affixes(self) -> tuple[list[int], list[int]]:
        """Ids the tokenizer puts before and after a sequence (`[<s>]`, `[]` for Llama)."""
        probe = "a"
        bare = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        wrapped = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        for start in range(len(wrapped) - len(bare) + 1):
            if wrapped[start : start + len(bare)] == bare:
                return wrapped[:start], wrapped[start + len(bare) :]
        raise ValueError(
            f"cannot tell the special tokens of {type(self.tokenizer).__name__} apart from the text; "
            "call the processor with add_special_tokens=False and add them to the text yourself."
        )

    def _truncate(
        self, batch_ids: list[list[int]], batch_offsets: list[list[tuple[int, int]]], max_length: int
    ) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """Cut every sample to `max_length` tokens on the tokenizer's truncation side; a cut that
        would drop a placeholder raises `PlaceholderMismatchError`."""
        placeholders = {self.image_token_id, self.video_token_id}
        keep_left = self.tokenizer.truncation_side == "right"
        truncated_ids, truncated_offsets = [], []
        for ids, offsets in zip(batch_ids, batch_offsets, strict=True):
            kept = slice(0, max_length) if keep_left else slice(max(0, len(ids) - max_length), len(ids))
            if sum(token in placeholders for token in ids[kept]) != sum(
                token in placeholders for token in ids
            ):
                raise PlaceholderMismatchError(
                    f"truncating a sample of {len(ids)} tokens to max_length={max_length} would cut off an "
                    "image or video placeholder; raise max_length or shorten the text."
                )
            truncated_ids.append(ids[kept])
            truncated_offsets.append(offsets[kept])
        return truncated_ids, truncated_offsets


def _placeholder_id(tokenizer, token: str) -> int:
    """Id of a placeholder token, which must be a single token of `tokenizer`."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(
            f"the tokenizer has no {token!r} token; build it with `train_video_lavit_tokenizer` or add "
            f"{token!r} as a special token (`tokenizer.add_special_tokens`)."
        )
    return token_id


def _is_decomposition(value) -> bool:
    """Whether `value` is an already decomposed video. Checked by its fields too, because a processor
    loaded as remote code has its own copy of the `VideoDecomposition` class."""
    return isinstance(value, VideoDecomposition) or (
        hasattr(value, "keyframes") and hasattr(value, "motion_vectors")
    )


def _is_video_input(value) -> bool:
    """Whether `value` is one video: a path, encoded bytes, a binary file object or a decomposition."""
    return (
        isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview, io.IOBase))
        or hasattr(value, "read")
        or _is_decomposition(value)
    )


def _flatten_media(media, counts: list[int] | None, placeholder: str, name: str) -> list:
    """Flatten `media` (one item, a flat list, or one list per sample) into placeholder order and
    check it against the per-sample placeholder `counts` (`None` when there is no text)."""
    if media is None:
        media = []
    elif not isinstance(media, (list, tuple)):
        media = [media]
    nested = len(media) > 0 and all(isinstance(item, (list, tuple)) for item in media)
    if nested and counts is not None:
        if len(media) != len(counts):
            raise PlaceholderMismatchError(
                f"{name} were given for {len(media)} samples but the text has {len(counts)}; pass one list "
                "per sample or a flat list in placeholder order."
            )
        for sample_index, (sample_media, count) in enumerate(zip(media, counts, strict=True)):
            if len(sample_media) != count:
                raise PlaceholderMismatchError(
                    f"sample {sample_index} has {count} {placeholder} placeholder(s) but "
                    f"{len(sample_media)} {name}; put one {placeholder} in the text for each of its {name}."
                )
    flat = [item for sample_media in media for item in sample_media] if nested else list(media)
    if counts is not None and len(flat) != sum(counts):
        raise PlaceholderMismatchError(
            f"the text has {sum(counts)} {placeholder} placeholder(s) but {len(flat)} {name} were given; "
            f"put exactly one {placeholder} in the text for each item of `{name}`."
        )
    if name == "videos":
        for video in flat:
            if not _is_video_input(video):
                raise TypeError(
                    "each video must be a path, bytes, a binary file object or a VideoDecomposition, "
                    f"got {type(video).__name__}."
                )
    return flat


def _pad_like(
    batch_offsets: list[list[tuple[int, int]]], padded_ids, text_kwargs: dict, default_side: str
) -> list[list[tuple[int, int]]]:
    """Pad the character offsets with `(0, 0)` to the padded `input_ids` lengths, on the same side."""
    side = text_kwargs.get("padding_side") or default_side
    padded = []
    for offsets, ids in zip(batch_offsets, padded_ids, strict=True):
        filler = [(0, 0)] * (len(ids) - len(offsets))
        padded.append(filler + offsets if side == "left" else offsets + filler)
    return padded


__all__ = ["ANSWER_END", "VICUNA_V1_CHAT_TEMPLATE", "PlaceholderMismatchError", "VideoLaVITProcessor"]
