"""Video-LaVIT: a base model (Llama backbone + both tokenizers) and the causal LM head over it.

Understanding: each `<image>` / `<video>` placeholder of the processor's `input_ids` is replaced by
`[image_start] keyframe features [image_end]` (continuous `vit_proj` features of the kept visual
tokens) and, per clip of a video, followed by `[motion_start] 135 motion-code embeddings
[motion_end]`. Pre-training and generation use the same layout with discrete keyframe codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
from transformers import GenerationMixin, LlamaModel, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_video_lavit import VideoLaVITConfig
from .modeling_motion_tokenizer import VideoLaVITMotionTokenizer
from .modeling_visual_tokenizer import VideoLaVITVisualTokenizer

logger = logging.get_logger(__name__)

# the Auto classes of the standard understanding pipelines ("image-text-to-text", "any-to-any"), besides
# AutoModelForCausalLM
UNDERSTANDING_AUTO_CLASSES = ("AutoModelForImageTextToText", "AutoModelForMultimodalLM")

IGNORE_INDEX = -100

# the reference's minimum of keyframe codes before `[image_end]`, set for its 256-patch visual tokenizer; a
# checkpoint whose tokenizer keeps fewer codes overrides it with `generation_config.min_keyframe_tokens`
DEFAULT_MIN_KEYFRAME_TOKENS = 20


class VideoLaVITInputError(ValueError):
    """The placeholders of `input_ids` do not match the images/videos given with them."""


class VideoLaVITTokenRangeLogitsProcessor(LogitsProcessor):
    """
    Keeps only the vocabulary ids inside the given half-open ranges; every other score becomes `-inf`.

    One slice assignment per range instead of a suppress list of tens of thousands of ids: text-only
    answers use `[(0, text_vocab_size)]`, the keyframe phase of video generation the visual codes
    plus `[image_end]`, the motion phase the motion codes.

    Args:
        allowed_ranges (`list[tuple[int, int]]`): `(start, end)` pairs of allowed ids, `end` excluded.
    """

    def __init__(self, allowed_ranges: list[tuple[int, int]]):
        if not allowed_ranges or any(start >= end for start, end in allowed_ranges):
            raise ValueError(
                f"allowed_ranges must be non-empty (start, end) pairs with start < end, got {allowed_ranges}."
            )
        self.allowed_ranges = [(int(start), int(end)) for start, end in allowed_ranges]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """`scores [batch, vocab]` -> the same scores with every id outside the ranges at `-inf`."""
        allowed = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        for start, end in self.allowed_ranges:
            allowed[start:end] = True
        return scores.masked_fill(~allowed, -float("inf"))


class _ConfigField:
    """Read-only attribute that returns the same-named field of its owner's `config`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner: type | None = None):
        if instance is None:
            return self
        return getattr(instance.config, self.name)


class VideoLaVITVocabularyMapping:
    """
    Maps the tokenizers' 0-based code ids to language-model vocabulary ids and back, and builds the
    token sequences of images and video clips (the layout of [`VideoLaVITConfig`]).

    Example:

    ```python
    >>> mapping = VideoLaVITVocabularyMapping(VideoLaVITConfig())
    >>> mapping.visual_to_vocab(torch.tensor([0, 5]))
    tensor([32002, 32007])
    >>> mapping.clip_ids(torch.tensor([7]), torch.tensor([0, 1]))  # keyframe codes, motion codes
    tensor([32000, 32009, 32001, 48386, 48388, 48389, 48387])

    ```
    """

    # the token layout, read from the config (its one source of truth), never copied
    image_start_token_id = _ConfigField()
    image_end_token_id = _ConfigField()
    visual_token_offset = _ConfigField()
    visual_codebook_size = _ConfigField()
    motion_start_token_id = _ConfigField()
    motion_end_token_id = _ConfigField()
    motion_token_offset = _ConfigField()
    motion_codebook_size = _ConfigField()

    def __init__(self, config: VideoLaVITConfig):
        self.config = config

    def visual_to_vocab(self, codes: torch.LongTensor) -> torch.LongTensor:
        """0-based visual codes `[...]` -> vocabulary ids `[...]`."""
        return codes + self.visual_token_offset

    def vocab_to_visual(self, ids: torch.LongTensor) -> torch.LongTensor:
        """Vocabulary ids of visual codes `[...]` -> 0-based visual codes `[...]`."""
        return ids - self.visual_token_offset

    def motion_to_vocab(self, codes: torch.LongTensor) -> torch.LongTensor:
        """0-based motion codes `[...]` -> vocabulary ids `[...]`."""
        return codes + self.motion_token_offset

    def vocab_to_motion(self, ids: torch.LongTensor) -> torch.LongTensor:
        """Vocabulary ids of motion codes `[...]` -> 0-based motion codes `[...]`."""
        return ids - self.motion_token_offset

    @property
    def visual_id_range(self) -> tuple[int, int]:
        """Half-open `(start, end)` range of the visual-code vocabulary ids (32002, 48386)."""
        return self.visual_token_offset, self.visual_token_offset + self.visual_codebook_size

    @property
    def motion_id_range(self) -> tuple[int, int]:
        """Half-open `(start, end)` range of the motion-code vocabulary ids (48388, 49412)."""
        return self.motion_token_offset, self.motion_token_offset + self.motion_codebook_size

    def is_visual(self, ids: torch.LongTensor) -> torch.BoolTensor:
        """Mask `[...]` of the vocabulary ids that are visual codes."""
        start, end = self.visual_id_range
        return (ids >= start) & (ids < end)

    def is_motion(self, ids: torch.LongTensor) -> torch.BoolTensor:
        """Mask `[...]` of the vocabulary ids that are motion codes."""
        start, end = self.motion_id_range
        return (ids >= start) & (ids < end)

    def image_ids(self, visual_codes: torch.LongTensor) -> torch.LongTensor:
        """0-based visual codes `[n]` -> `[n + 2]` vocabulary ids `[image_start] codes [image_end]`."""
        start = visual_codes.new_tensor([self.image_start_token_id])
        end = visual_codes.new_tensor([self.image_end_token_id])
        return torch.cat([start, self.visual_to_vocab(visual_codes), end])

    def motion_ids(self, motion_codes: torch.LongTensor) -> torch.LongTensor:
        """0-based motion codes `[m]` -> `[m + 2]` vocabulary ids `[motion_start] codes [motion_end]`."""
        start = motion_codes.new_tensor([self.motion_start_token_id])
        end = motion_codes.new_tensor([self.motion_end_token_id])
        return torch.cat([start, self.motion_to_vocab(motion_codes), end])

    def clip_ids(self, visual_codes: torch.LongTensor, motion_codes: torch.LongTensor) -> torch.LongTensor:
        """One clip: keyframe codes `[n]` and motion codes `[m]` -> `[n + m + 4]` vocabulary ids."""
        return torch.cat([self.image_ids(visual_codes), self.motion_ids(motion_codes)])


@dataclass
class VideoLaVITModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    [`BaseModelOutputWithPast`] plus the attention mask of the sequence the language model actually saw.

    attention_mask (`torch.LongTensor` of shape `[batch, spliced_length]`, *optional*):
        When images/videos were spliced in, the mask of the spliced, re-padded sequence (aligned with
        `last_hidden_state`); otherwise the mask that was passed in.
    """

    attention_mask: torch.LongTensor | None = None


@dataclass
class VideoLaVITVideoFeaturesOutput(ModelOutput):
    r"""
    Output of [`VideoLaVITModel.get_video_features`]: what each clip of the videos adds to the sequence.

    keyframe_features (`list[torch.FloatTensor]`):
        Per clip, the continuous LLM-space features `[n_c, hidden_size]` of its keyframe's kept visual tokens.
    motion_ids (`torch.LongTensor` of shape `[num_clips, motion_tokens_per_clip]`):
        Per clip, the vocabulary ids of its motion codes.
    """

    keyframe_features: list[torch.Tensor] | None = None
    motion_ids: torch.LongTensor | None = None


@dataclass
class VideoLaVITCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    [`CausalLMOutputWithPast`] plus the attention mask of the sequence the language model actually saw.

    attention_mask (`torch.LongTensor` of shape `[batch, spliced_length]`, *optional*):
        When images/videos were spliced in, the mask of the spliced, re-padded sequence (aligned with
        `logits`); otherwise the mask that was passed in.
    """

    attention_mask: torch.LongTensor | None = None


@dataclass
class VideoLaVITVideoTokensOutput(ModelOutput):
    r"""
    Output of [`VideoLaVITForCausalLM.generate_video_tokens`].

    keyframe_ids (`list[list[torch.LongTensor]]`):
        Per sample, per clip, the 0-based visual codes `[n]` of the keyframe (the keyframe decoder's input).
    motion_ids (`torch.LongTensor` of shape `[batch, num_clips, motion_tokens_per_clip]`):
        0-based motion codes of every clip (the motion tokenizer's `decode` input).
    sequences (`list[torch.LongTensor]`):
        Per sample, the whole vocabulary-id sequence: prompt followed by every generated clip; pass it
        back as a prompt to continue the video.
    """

    keyframe_ids: list[list[torch.LongTensor]] | None = None
    motion_ids: torch.LongTensor | None = None
    sequences: list[torch.LongTensor] | None = None


@dataclass
class _ExpandedBatch:
    """A batch whose placeholders were replaced by their token segments (internal)."""

    input_ids: torch.LongTensor  # [batch, length], continuous-feature positions hold image_token_id
    attention_mask: torch.LongTensor  # [batch, length]
    labels: torch.LongTensor | None  # [batch, length]
    visual_embeds: torch.Tensor | None  # [batch, max_features, hidden], features in marker order


@dataclass
class _EmbeddedInputs:
    """A batch's input embeddings after splicing (internal)."""

    inputs_embeds: torch.Tensor  # [batch, length, hidden]
    attention_mask: torch.LongTensor | None  # [batch, length]
    labels: torch.LongTensor | None  # [batch, length]
    spliced: bool  # the sequence was expanded: positions are recounted from the attention mask


@dataclass
class _Segment:
    """The ids replacing one `<image>` / `<video>` placeholder (internal).

    `ids [n]` are vocabulary ids; the `k` positions equal to `image_token_id` are feature slots, filled in
    order from `features [k, hidden]` (None when the segment has no slots, as in pre-training).
    """

    ids: torch.LongTensor
    features: torch.Tensor | None = None


@dataclass
class _ExpandedRow:
    """One row of `input_ids` with its placeholders replaced (internal): `ids [n]`, `labels [n]` and the
    features of its slots `[k, hidden]` (None without slots)."""

    ids: torch.LongTensor
    labels: torch.LongTensor
    features: torch.Tensor | None


def _left_pad(sequences: list[torch.LongTensor], pad_id: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """1-D sequences -> left-padded `ids [n, max_len]` and `attention_mask [n, max_len]`."""
    length = max(len(sequence) for sequence in sequences)
    ids = sequences[0].new_full((len(sequences), length), pad_id)
    mask = sequences[0].new_zeros((len(sequences), length))
    for row, sequence in enumerate(sequences):
        if len(sequence):
            ids[row, length - len(sequence) :] = sequence
            mask[row, length - len(sequence) :] = 1
    return ids, mask


def _position_ids(attention_mask: torch.Tensor) -> torch.LongTensor:
    """Positions counted over real tokens only, so that left and right padding see the same RoPE."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


class VideoLaVITPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading conventions shared by the Video-LaVIT models."""

    config: VideoLaVITConfig
    config_class = VideoLaVITConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "VideoLaVITVisionLayer", "VideoLaVITTokenMergerLayer"]
    _skip_keys_device_placement = ["cache"]
    _supports_sdpa = True
    # Checkpoints written before the base model existed hold `model.{embed_tokens,layers,norm}` (the Llama
    # directly under the head) and top-level `visual_tokenizer.` / `motion_tokenizer.`; these regexes move
    # them under `model.` (`model.language_model.` for the Llama) and leave current names alone.
    # `from_pretrained` hands them to transformers as `key_mapping`: transformers' conversion registry is
    # keyed by class name, so an entry there would also rename for old copies of this class (remote code).
    # PEFT reads this attribute to rename the weights of LoRA adapters saved on the old layout.
    _checkpoint_conversion_mapping = {
        r"^model\.(embed_tokens|layers|norm)\.": r"model.language_model.\1.",
        r"^visual_tokenizer\.": "model.visual_tokenizer.",
        r"^motion_tokenizer\.": "model.motion_tokenizer.",
    }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, key_mapping=None, **kwargs):
        """`PreTrainedModel.from_pretrained`, also loading folders saved before the base model existed: their
        weight names are renamed on the fly by `_checkpoint_conversion_mapping` (after any `key_mapping`)."""
        key_mapping = {**(key_mapping or {}), **cls._checkpoint_conversion_mapping}
        return super().from_pretrained(
            pretrained_model_name_or_path, *model_args, key_mapping=key_mapping, **kwargs
        )

    def save_pretrained(self, save_directory, *args, save_original_format: bool = False, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, writing the current weight names by default: transformers
        would otherwise write a model loaded from an old folder back under the old names
        (`save_original_format=True` still does)."""
        super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)

    @property
    def _pad_token_id(self) -> int:
        pad = self.config.text_config.pad_token_id
        return 0 if pad is None else pad


class VideoLaVITModel(VideoLaVITPreTrainedModel):
    """
    The Video-LaVIT base model: the Llama backbone (`language_model`) with the visual and motion tokenizers
    and the vocabulary mapping, without the LM head.

    `forward` splices images and videos into the sequence (see `prepare_multimodal_inputs`) and returns the
    backbone's hidden states; `get_image_features`, `get_video_features` and `get_placeholder_mask` are the
    pieces of that splice, as in transformers' VLMs (`llava_next_video`, `emu3`).

    Example:

    ```python
    model = AutoModel.from_pretrained(checkpoint)  # e.g. `vlavit tiny-checkpoint DIR`
    inputs = processor(text=[prompt], videos=["clip.mp4"], return_tensors="pt")
    hidden = model(**inputs).last_hidden_state  # [batch, spliced_length, hidden_size]
    ```
    """

    def __init__(self, config: VideoLaVITConfig):
        super().__init__(config)
        self.language_model = LlamaModel(config.text_config)
        self.visual_tokenizer = VideoLaVITVisualTokenizer(config.visual_tokenizer_config)
        self.motion_tokenizer = VideoLaVITMotionTokenizer(config.motion_tokenizer_config)
        self.vocabulary_mapping = VideoLaVITVocabularyMapping(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The Llama token embedding `[vocab_size, hidden_size]`."""
        return self.language_model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the Llama token embedding."""
        self.language_model.embed_tokens = value

    # ----------------------------------------------------------------------------------------------
    # visual inputs
    # ----------------------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Continuous LLM-space features of images: `[N, 3, 224, 224]` -> N tensors `[n_i, hidden_size]`."""
        pixel_values = pixel_values.to(device=self.visual_tokenizer.device, dtype=self.visual_tokenizer.dtype)
        return self.visual_tokenizer.encode_features(pixel_values)

    def get_motion_ids(self, motion_vectors: torch.Tensor) -> torch.LongTensor:
        """Motion vectors of clips `[C, 2, 24, 20, 36]` -> vocabulary ids of their motion codes `[C, 135]`."""
        motion_vectors = motion_vectors.to(
            device=self.motion_tokenizer.device, dtype=self.motion_tokenizer.dtype
        )
        return self.vocabulary_mapping.motion_to_vocab(self.motion_tokenizer.encode(motion_vectors))

    def get_video_features(
        self, pixel_values_videos: torch.Tensor, motion_vectors: torch.Tensor
    ) -> VideoLaVITVideoFeaturesOutput:
        """
        What the clips of videos add to the understanding sequence: each clip's keyframe features (its
        `[image_start] ... [image_end]` slots) and motion ids (between `[motion_start]` and `[motion_end]`).

        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `[num_clips, 3, 224, 224]`): the keyframes.
            motion_vectors (`torch.FloatTensor` of shape `[num_clips, 2, 24, 20, 36]`): the clips' motion.

        Returns:
            [`VideoLaVITVideoFeaturesOutput`]: `keyframe_features` (per clip `[n_c, hidden_size]`) and
            `motion_ids [num_clips, 135]`.
        """
        if pixel_values_videos.shape[0] != motion_vectors.shape[0]:
            raise VideoLaVITInputError(
                f"pixel_values_videos has {pixel_values_videos.shape[0]} keyframes but motion_vectors "
                f"{motion_vectors.shape[0]} clips; give one keyframe per clip."
            )
        return VideoLaVITVideoFeaturesOutput(
            keyframe_features=self.get_image_features(pixel_values_videos),
            motion_ids=self.get_motion_ids(motion_vectors),
        )

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor, visual_embeds: torch.Tensor | None = None
    ) -> tuple[torch.BoolTensor, torch.BoolTensor]:
        """
        Where the images and videos go: the positions of `image_token_id` and of `video_token_id`.

        In the processor's `input_ids` these are the `<image>` / `<video>` placeholders (one per image/video);
        in expanded ids (`prepare_multimodal_inputs`) the image mask marks the feature slots that take
        `visual_embeds`, in order, row by row.

        Args:
            input_ids (`torch.LongTensor` of shape `[batch, length]`).
            visual_embeds (`torch.FloatTensor` of shape `[batch, max_slots, hidden]`, *optional*): when given,
                checked to hold a feature for every slot of every row.

        Returns:
            `(image_mask, video_mask)`, two `torch.BoolTensor` of shape `[batch, length]`.
        """
        image_mask = input_ids == self.config.image_token_id
        video_mask = input_ids == self.config.video_token_id
        most_slots = int(image_mask.sum(-1).max()) if input_ids.numel() else 0
        if visual_embeds is not None and most_slots > visual_embeds.shape[1]:
            raise VideoLaVITInputError(
                f"input_ids hold up to {most_slots} feature slots per row but visual_embeds has "
                f"{visual_embeds.shape[1]}."
            )
        return image_mask, video_mask

    def _check_visual_inputs(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None,
        pixel_values_videos: torch.Tensor | None,
        motion_vectors: torch.Tensor | None,
        clips_per_video: torch.LongTensor | None,
    ) -> None:
        """Raise `VideoLaVITInputError` when the placeholder counts and the visual inputs disagree."""
        num_images = int((input_ids == self.config.image_token_id).sum())
        num_videos = int((input_ids == self.config.video_token_id).sum())
        given_images = 0 if pixel_values is None else pixel_values.shape[0]
        if num_images != given_images:
            raise VideoLaVITInputError(
                f"input_ids hold {num_images} <image> placeholders but {given_images} images were given in "
                "pixel_values; build the inputs with VideoLaVITProcessor so that both match."
            )
        if num_videos == 0 and pixel_values_videos is None and motion_vectors is None:
            return
        if pixel_values_videos is None or motion_vectors is None or clips_per_video is None:
            raise VideoLaVITInputError(
                f"input_ids hold {num_videos} <video> placeholders; pass pixel_values_videos, "
                "motion_vectors and clips_per_video together (the processor returns all three)."
            )
        if len(clips_per_video) != num_videos:
            raise VideoLaVITInputError(
                f"input_ids hold {num_videos} <video> placeholders but clips_per_video describes "
                f"{len(clips_per_video)} videos."
            )
        num_clips = int(clips_per_video.sum())
        if pixel_values_videos.shape[0] != num_clips or motion_vectors.shape[0] != num_clips:
            raise VideoLaVITInputError(
                f"clips_per_video sums to {num_clips} clips but pixel_values_videos has "
                f"{pixel_values_videos.shape[0]} keyframes and motion_vectors "
                f"{motion_vectors.shape[0]} clips."
            )

    def _expand_placeholders(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor,
        labels: torch.LongTensor | None,
        *,
        image_segments: list[_Segment],
        video_segments: list[_Segment],
        label_segments: bool,
        padding_side: str,
    ) -> _ExpandedBatch:
        """
        Replace every placeholder of `input_ids [batch, length]` by its segment and re-pad the batch.

        `image_segments` / `video_segments` hold one [`_Segment`] per image / video, in placeholder order over
        the whole batch. Inserted positions get label `-100`, or their own ids with `label_segments`.
        """
        image_token_id, video_token_id = self.config.image_token_id, self.config.video_token_id
        segments = {image_token_id: iter(image_segments), video_token_id: iter(video_segments)}
        rows = []
        for row in range(input_ids.shape[0]):
            keep = attention_mask[row].bool()
            ids = input_ids[row][keep]
            row_labels = labels[row][keep] if labels is not None else ids
            rows.append(self._expand_row(ids, row_labels, segments, label_segments))

        length = max(len(row.ids) for row in rows)
        batch_size = len(rows)
        new_ids = input_ids.new_full((batch_size, length), self._pad_token_id)
        new_mask = attention_mask.new_zeros((batch_size, length))
        new_labels = input_ids.new_full((batch_size, length), IGNORE_INDEX)
        for index, row in enumerate(rows):
            span = slice(length - len(row.ids), length) if padding_side == "left" else slice(0, len(row.ids))
            new_ids[index, span] = row.ids
            new_mask[index, span] = 1
            new_labels[index, span] = row.labels
        visual_embeds = self._stack_row_features([row.features for row in rows])
        return _ExpandedBatch(new_ids, new_mask, new_labels if labels is not None else None, visual_embeds)

    def _expand_row(
        self,
        ids: torch.LongTensor,
        labels: torch.LongTensor,
        segments: dict[int, Iterator[_Segment]],
        label_segments: bool,
    ) -> _ExpandedRow:
        """One unpadded row `ids [n]` / `labels [n]` with each placeholder replaced by the next segment of
        its kind (`segments`: placeholder id -> iterator over that kind's segments)."""
        is_placeholder = (ids == self.config.image_token_id) | (ids == self.config.video_token_id)
        pieces, label_pieces, features = [], [], []
        start = 0
        for position in is_placeholder.nonzero().flatten().tolist():
            segment = next(segments[int(ids[position])])
            segment_ids = segment.ids.to(ids.device)
            pieces += [ids[start:position], segment_ids]
            inserted = segment_ids if label_segments else torch.full_like(segment_ids, IGNORE_INDEX)
            label_pieces += [labels[start:position], inserted]
            if segment.features is not None:
                features.append(segment.features)
            start = position + 1
        pieces.append(ids[start:])
        label_pieces.append(labels[start:])
        row_features = torch.cat(features) if features else None
        return _ExpandedRow(torch.cat(pieces), torch.cat(label_pieces), row_features)

    @staticmethod
    def _stack_row_features(rows_features: list[torch.Tensor | None]) -> torch.Tensor | None:
        """Per-row slot features (`[k_i, hidden]` or None) -> `[batch, max k_i, hidden]` zero-padded, or None
        when no row has any."""
        present = [features for features in rows_features if features is not None]
        if not present:
            return None
        count = max(len(features) for features in present)
        visual_embeds = present[0].new_zeros((len(rows_features), count, present[0].shape[-1]))
        for row, features in enumerate(rows_features):
            if features is not None:
                visual_embeds[row, : len(features)] = features
        return visual_embeds

    def prepare_multimodal_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        motion_vectors: torch.Tensor | None = None,
        clips_per_video: torch.LongTensor | None = None,
        padding_side: str | None = None,
    ) -> _ExpandedBatch:
        """
        Understanding layout: expand each `<image>` to `[image_start] n_i feature slots [image_end]` and
        each `<video>` to, per clip, `[image_start] n_c feature slots [image_end] [motion_start] 135
        motion ids [motion_end]`; feature slots hold `image_token_id` and their features are returned in
        `visual_embeds [batch, max_slots, hidden]`. Labels of inserted positions are `-100`.

        `padding_side` defaults to the side the attention mask is padded on.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self._check_visual_inputs(
            input_ids, pixel_values, pixel_values_videos, motion_vectors, clips_per_video
        )
        marker = self.config.image_token_id
        mapping = self.vocabulary_mapping
        image_start = input_ids.new_tensor([mapping.image_start_token_id])
        keyframe_end = input_ids.new_tensor([mapping.image_end_token_id])
        motion_start = input_ids.new_tensor([mapping.motion_start_token_id])
        motion_end = input_ids.new_tensor([mapping.motion_end_token_id])

        def keyframe_slots(features: torch.Tensor) -> torch.LongTensor:
            return torch.cat([image_start, input_ids.new_full((len(features),), marker), keyframe_end])

        image_segments, video_segments = [], []
        if pixel_values is not None:
            for features in self.get_image_features(pixel_values):
                image_segments.append(_Segment(keyframe_slots(features), features))
        if pixel_values_videos is not None:
            video_features = self.get_video_features(pixel_values_videos, motion_vectors)
            keyframe_features = video_features.keyframe_features
            motion_ids = video_features.motion_ids.to(input_ids.device)
            clip = 0
            for num_clips in clips_per_video.tolist():
                clips = range(clip, clip + num_clips)
                ids = [
                    torch.cat([keyframe_slots(keyframe_features[i]), motion_start, motion_ids[i], motion_end])
                    for i in clips
                ]
                features = torch.cat([keyframe_features[i] for i in clips])
                video_segments.append(_Segment(torch.cat(ids), features))
                clip += num_clips
        padding_side = padding_side or self._padding_side(attention_mask)
        return self._expand_placeholders(
            input_ids,
            attention_mask,
            labels,
            image_segments=image_segments,
            video_segments=video_segments,
            label_segments=False,
            padding_side=padding_side,
        )

    @torch.no_grad()
    def prepare_pretraining_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        motion_vectors: torch.Tensor | None = None,
        clips_per_video: torch.LongTensor | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.LongTensor]:
        """
        Pre-training layout: every image/video becomes discrete ids from the two tokenizers and the
        loss covers all real tokens (text, special, visual and motion ids).

        The modality order is the placeholder's place in the text: `"<video> a caption"` gives a
        `[video, text]` sample, `"a caption <video>"` a `[text, video]` one (see `pretraining_text`).

        Args:
            input_ids (`torch.LongTensor` of shape `[batch, length]`): processor ids with placeholders.
            attention_mask (`torch.LongTensor` of shape `[batch, length]`, *optional*): 1 on real tokens.
            pixel_values (`torch.FloatTensor` of shape `[num_images, 3, 224, 224]`, *optional*).
            pixel_values_videos (`torch.FloatTensor` of shape `[num_clips, 3, 224, 224]`, *optional*).
            motion_vectors (`torch.FloatTensor` of shape `[num_clips, 2, 24, 20, 36]`, *optional*).
            clips_per_video (`torch.LongTensor` of shape `[num_videos]`, *optional*).
            sample (`bool`): Gumbel-sample the kept visual tokens instead of the arg-max.
            generator (`torch.Generator`, *optional*): noise source when `sample`.

        Returns:
            `dict` with `input_ids`, `attention_mask` and `labels` (`-100` on padding), each
            `[batch, new_length]`, padded on the side the input was padded on.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self._check_visual_inputs(
            input_ids, pixel_values, pixel_values_videos, motion_vectors, clips_per_video
        )
        mapping = self.vocabulary_mapping
        image_segments, video_segments = [], []
        if pixel_values is not None:
            for codes in self._tokenize_images(pixel_values, sample, generator):
                image_segments.append(_Segment(mapping.image_ids(codes.to(input_ids.device))))
        if pixel_values_videos is not None:
            keyframe_codes = self._tokenize_images(pixel_values_videos, sample, generator)
            motion_codes = self.motion_tokenizer.encode(
                motion_vectors.to(device=self.motion_tokenizer.device, dtype=self.motion_tokenizer.dtype)
            )
            clip = 0
            for num_clips in clips_per_video.tolist():
                clips = [
                    mapping.clip_ids(
                        keyframe_codes[i].to(input_ids.device), motion_codes[i].to(input_ids.device)
                    )
                    for i in range(clip, clip + num_clips)
                ]
                video_segments.append(_Segment(torch.cat(clips)))
                clip += num_clips
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        expanded = self._expand_placeholders(
            input_ids,
            attention_mask,
            labels,
            image_segments=image_segments,
            video_segments=video_segments,
            label_segments=True,
            padding_side=self._padding_side(attention_mask),
        )
        return {
            "input_ids": expanded.input_ids,
            "attention_mask": expanded.attention_mask,
            "labels": expanded.labels,
        }

    def _tokenize_images(
        self, pixel_values: torch.Tensor, sample: bool, generator: torch.Generator | None
    ) -> list[torch.LongTensor]:
        """`[N, 3, 224, 224]` -> N tensors of 0-based visual codes."""
        pixel_values = pixel_values.to(device=self.visual_tokenizer.device, dtype=self.visual_tokenizer.dtype)
        return self.visual_tokenizer.tokenize(pixel_values, sample=sample, generator=generator)

    @staticmethod
    def _padding_side(attention_mask: torch.Tensor) -> str:
        """'left' when some row starts with padding, else 'right'."""
        return "left" if bool((attention_mask[:, 0] == 0).any()) else "right"

    def _embed(self, input_ids: torch.LongTensor, visual_embeds: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings `[batch, length, hidden]` with `visual_embeds` written at the feature slots."""
        slots, _ = self.get_placeholder_mask(input_ids, visual_embeds)
        embeddings = self.get_input_embeddings()
        inputs_embeds = embeddings(input_ids.masked_fill(slots, self._pad_token_id))
        if visual_embeds is None:
            if slots.any():
                raise VideoLaVITInputError(
                    "input_ids hold <image> placeholders but no visual inputs were given; pass pixel_values "
                    "(images) or pixel_values_videos/motion_vectors/clips_per_video (videos)."
                )
            return inputs_embeds
        counts = slots.sum(dim=-1)
        valid = torch.arange(visual_embeds.shape[1], device=counts.device)[None, :] < counts[:, None]
        features = visual_embeds[valid].to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(slots.unsqueeze(-1), features)

    def _check_per_sample_counts(
        self,
        input_ids: torch.LongTensor,
        images_per_sample: torch.LongTensor | None,
        videos_per_sample: torch.LongTensor | None,
    ) -> None:
        """Check the processor's per-sample counts against the placeholders of each row."""
        for name, counts, token_id in (
            ("images_per_sample", images_per_sample, self.config.image_token_id),
            ("videos_per_sample", videos_per_sample, self.config.video_token_id),
        ):
            if counts is None:
                continue
            found = (input_ids == token_id).sum(dim=-1).to(counts.device)
            if not torch.equal(found, counts.to(found.dtype)):
                raise VideoLaVITInputError(
                    f"{name} is {counts.tolist()} but the rows of input_ids hold {found.tolist()} "
                    "placeholders."
                )

    def _embed_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        motion_vectors: torch.Tensor | None = None,
        clips_per_video: torch.LongTensor | None = None,
        images_per_sample: torch.LongTensor | None = None,
        videos_per_sample: torch.LongTensor | None = None,
        visual_embeds: torch.Tensor | None = None,
    ) -> _EmbeddedInputs:
        """
        The input embeddings of a batch, with its images and videos spliced in when it has any.

        Without `visual_embeds`, `input_ids` with `<image>` / `<video>` placeholders (or given visual inputs)
        are expanded by `prepare_multimodal_inputs` (labels `-100` on inserted positions) and re-padded on
        their side; with `visual_embeds` (already-expanded ids, as `generate` passes them) each
        `image_token_id` slot of a row takes the next feature of that row.

        Args:
            input_ids (`torch.LongTensor` of shape `[batch, length]`), attention_mask, labels, pixel_values,
            pixel_values_videos, motion_vectors, clips_per_video, images_per_sample, videos_per_sample,
            visual_embeds: as in [`VideoLaVITForCausalLM.forward`].

        Returns:
            [`_EmbeddedInputs`]: `inputs_embeds [batch, length', hidden]`, `attention_mask` and
            `labels` `[batch, length']` (None when not given), and `spliced` (True when the sequence was
            expanded, so that positions must be recounted).
        """
        self._check_per_sample_counts(input_ids, images_per_sample, videos_per_sample)
        has_visual_inputs = any(
            value is not None for value in (pixel_values, pixel_values_videos, motion_vectors)
        )
        image_mask, video_mask = self.get_placeholder_mask(input_ids)
        spliced = visual_embeds is None and (has_visual_inputs or bool((image_mask | video_mask).any()))
        if spliced:
            expanded = self.prepare_multimodal_inputs(
                input_ids,
                attention_mask,
                labels,
                pixel_values,
                pixel_values_videos,
                motion_vectors,
                clips_per_video,
            )
            input_ids, attention_mask, labels = expanded.input_ids, expanded.attention_mask, expanded.labels
            visual_embeds = expanded.visual_embeds
        return _EmbeddedInputs(self._embed(input_ids, visual_embeds), attention_mask, labels, spliced)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        motion_vectors: torch.Tensor | None = None,
        clips_per_video: torch.LongTensor | None = None,
        images_per_sample: torch.LongTensor | None = None,
        videos_per_sample: torch.LongTensor | None = None,
        visual_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VideoLaVITModelOutputWithPast:
        r"""
        Args: as in [`VideoLaVITForCausalLM.forward`] (without `labels` and `logits_to_keep`).

        Returns:
            [`VideoLaVITModelOutputWithPast`]: `last_hidden_state [batch, length', hidden_size]`, `cache`
            and the `attention_mask` of the spliced sequence.
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise VideoLaVITInputError("forward needs input_ids or inputs_embeds; pass one of them.")
            embedded = self._embed_inputs(
                input_ids,
                attention_mask,
                None,
                pixel_values,
                pixel_values_videos,
                motion_vectors,
                clips_per_video,
                images_per_sample,
                videos_per_sample,
                visual_embeds,
            )
            inputs_embeds, attention_mask = embedded.inputs_embeds, embedded.attention_mask
            if embedded.spliced:
                position_ids = None
        if position_ids is None and attention_mask is not None:
            position_ids = _position_ids(attention_mask)[:, -inputs_embeds.shape[1] :]
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        return VideoLaVITModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            attention_mask=attention_mask,
        )



class VideoLaVITForCausalLM(VideoLaVITPreTrainedModel, GenerationMixin):
    """
    Video-LaVIT: Llama-2 over a vocabulary of text, visual (keyframe) and motion codes; a [`VideoLaVITModel`]
    (`model`: backbone, both tokenizers, vocabulary mapping) under the LM head (`lm_head`).

    - `forward(...)`: understanding (continuous keyframe features at `<image>`/`<video>`
      placeholders, labels `-100` there) or pre-training (discrete ids, see
      `prepare_pretraining_inputs`); causal-LM loss when `labels` are given.
    - `generate(...)`: text answers about images/videos; visual and motion ids are never produced.
    - `generate_video_tokens(...)`: text (or text + image) prompt -> keyframe codes and motion codes
      per clip, with classifier-free guidance.

    `visual_tokenizer`, `motion_tokenizer`, `vocabulary_mapping` and the splicing methods
    (`get_image_features`, `get_video_features`, `get_motion_ids`, `get_placeholder_mask`,
    `prepare_multimodal_inputs`, `prepare_pretraining_inputs`) are the base model's, reachable from here.

    Example:

    ```python
    model = AutoModelForCausalLM.from_pretrained(checkpoint)  # e.g. `vlavit tiny-checkpoint DIR`
    processor = AutoProcessor.from_pretrained(checkpoint)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], videos=["clip.mp4"], return_tensors="pt")
    answer_ids = model.generate(**inputs, max_new_tokens=32)[:, inputs["input_ids"].shape[1] :]
    ```
    """

    _tied_weights_keys = {}
    # as transformers' video LLMs declare them (llava_next_video, qwen2_vl); videos come out of
    # `generate_video_tokens` (and the text-to-video pipeline), text out of `generate`
    input_modalities = ("image", "video", "text")
    output_modalities = ("text", "video")
    # sub-models of the base model that stay assignable here (`model.visual_tokenizer = ...`)
    _base_model_modules = ("visual_tokenizer", "motion_tokenizer")

    def __init__(self, config: VideoLaVITConfig):
        super().__init__(config)
        self.model = VideoLaVITModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def __setattr__(self, name: str, value) -> None:
        # nn.Module registers an assigned module before a property setter could run: hand the tokenizers to
        # the base model, where they live, instead of registering a second copy on the head
        if name in self._base_model_modules and "model" in self.__dict__.get("_modules", {}):
            setattr(self.model, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def visual_tokenizer(self) -> VideoLaVITVisualTokenizer:
        """The base model's visual tokenizer."""
        return self.model.visual_tokenizer

    @property
    def motion_tokenizer(self) -> VideoLaVITMotionTokenizer:
        """The base model's motion tokenizer."""
        return self.model.motion_tokenizer

    @property
    def vocabulary_mapping(self) -> VideoLaVITVocabularyMapping:
        """The base model's mapping between codebook ids and vocabulary ids."""
        return self.model.vocabulary_mapping

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """`VideoLaVITPreTrainedModel.save_pretrained`; a folder saved with its code (`trust_remote_code`)
        also maps `AutoModelForImageTextToText` and `AutoModelForMultimodalLM` to this class in `auto_map`,
        which `pipeline("image-text-to-text")` and `pipeline("any-to-any")` load it with."""
        if self._auto_class is not None:
            target = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            for auto_class in UNDERSTANDING_AUTO_CLASSES:
                auto_map.setdefault(auto_class, target)
            self.config.auto_map = auto_map
        super().save_pretrained(save_directory, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        """The Llama token embedding `[vocab_size, hidden_size]`."""
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the Llama token embedding."""
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head `hidden_size -> vocab_size`."""
        return self.lm_head

    # ----------------------------------------------------------------------------------------------
    # visual inputs: the base model's
    # ----------------------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """[`VideoLaVITModel.get_image_features`]: `[N, 3, 224, 224]` -> N tensors `[n_i, hidden_size]`."""
        return self.model.get_image_features(pixel_values)

    def get_video_features(
        self, pixel_values_videos: torch.Tensor, motion_vectors: torch.Tensor
    ) -> VideoLaVITVideoFeaturesOutput:
        """[`VideoLaVITModel.get_video_features`]: keyframes `[C, 3, 224, 224]` and motion vectors
        `[C, 2, 24, 20, 36]` of C clips -> their keyframe features and motion ids."""
        return self.model.get_video_features(pixel_values_videos, motion_vectors)

    def get_motion_ids(self, motion_vectors: torch.Tensor) -> torch.LongTensor:
        """[`VideoLaVITModel.get_motion_ids`]: `[C, 2, 24, 20, 36]` -> vocabulary ids `[C, 135]`."""
        return self.model.get_motion_ids(motion_vectors)

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor, visual_embeds: torch.Tensor | None = None
    ) -> tuple[torch.BoolTensor, torch.BoolTensor]:
        """[`VideoLaVITModel.get_placeholder_mask`]: `input_ids [batch, length]` -> image and video masks
        `[batch, length]`."""
        return self.model.get_placeholder_mask(input_ids, visual_embeds)

    def prepare_multimodal_inputs(self, *args, **kwargs) -> _ExpandedBatch:
        """[`VideoLaVITModel.prepare_multimodal_inputs`]: the understanding layout of a batch."""
        return self.model.prepare_multimodal_inputs(*args, **kwargs)

    def prepare_pretraining_inputs(self, *args, **kwargs) -> dict[str, torch.LongTensor]:
        """[`VideoLaVITModel.prepare_pretraining_inputs`]: the discrete pre-training layout of a batch."""
        return self.model.prepare_pretraining_inputs(*args, **kwargs)

    # ----------------------------------------------------------------------------------------------
    # forward
    # ----------------------------------------------------------------------------------------------
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        motion_vectors: torch.Tensor | None = None,
        clips_per_video: torch.LongTensor | None = None,
        images_per_sample: torch.LongTensor | None = None,
        videos_per_sample: torch.LongTensor | None = None,
        visual_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VideoLaVITCausalLMOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `[batch, length]`):
                Token ids; `<image>` / `<video>` placeholders (one per image/video, as the processor
                writes them) are replaced by the corresponding inputs below.
            attention_mask (`torch.LongTensor` of shape `[batch, length]`, *optional*):
                1 on real tokens; left or right padding, kept on the same side after splicing.
            position_ids (`torch.LongTensor` of shape `[batch, length]`, *optional*):
                Defaults to positions counted over real tokens (recomputed after splicing).
            cache (`Cache`, *optional*): KV cache for incremental decoding (`past_key_values`, its former
                name, still works until transformers removes it).
            inputs_embeds (`torch.FloatTensor` of shape `[batch, length, hidden]`, *optional*):
                Pre-computed embeddings instead of `input_ids` (no splicing then).
            labels (`torch.LongTensor` of shape `[batch, length]`, *optional*):
                Next-token targets aligned with `input_ids` (`-100` ignored); spliced positions get `-100`.
            pixel_values (`torch.FloatTensor` of shape `[num_images, 3, 224, 224]`, *optional*):
                Images in the order of their `<image>` placeholders over the batch.
            pixel_values_videos (`torch.FloatTensor` of shape `[num_clips, 3, 224, 224]`, *optional*):
                Keyframes of all clips of all videos, in order.
            motion_vectors (`torch.FloatTensor` of shape `[num_clips, 2, 24, 20, 36]`, *optional*):
                Motion of each clip (LLM-path scaling, as `decompose_video` returns it).
            clips_per_video (`torch.LongTensor` of shape `[num_videos]`, *optional*): clips of each video.
            images_per_sample, videos_per_sample (`torch.LongTensor` of shape `[batch]`, *optional*):
                Processor bookkeeping; checked against the placeholders when given.
            visual_embeds (`torch.FloatTensor` of shape `[batch, max_slots, hidden]`, *optional*):
                Features of already-expanded inputs (`generate` passes them): each `image_token_id` slot
                of a row takes the next feature of that row.
            use_cache (`bool`, *optional*): return a KV cache.
            logits_to_keep (`int` or `torch.Tensor`): compute logits only for the last positions.

        Returns:
            [`VideoLaVITCausalLMOutputWithPast`]: `loss` (when `labels`), `logits [batch, length', vocab]`,
            `cache` and the `attention_mask` of the spliced sequence.
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise VideoLaVITInputError("forward needs input_ids or inputs_embeds; pass one of them.")
            # the head splices, not its base model: the labels follow the ids through the splice
            embedded = self.model._embed_inputs(
                input_ids,
                attention_mask,
                labels,
                pixel_values,
                pixel_values_videos,
                motion_vectors,
                clips_per_video,
                images_per_sample,
                videos_per_sample,
                visual_embeds,
            )
            inputs_embeds, attention_mask = embedded.inputs_embeds, embedded.attention_mask
            labels = embedded.labels
            if embedded.spliced:
                position_ids = None
        outputs = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])

        loss = None
        if labels is not None:
            if attention_mask is not None and attention_mask.shape == labels.shape:
                # a token right after padding (the first real one under left padding) is not a target
                follows_padding = torch.zeros_like(labels, dtype=torch.bool)
                follows_padding[:, 1:] = attention_mask[:, :-1] == 0
                labels = labels.masked_fill(follows_padding, IGNORE_INDEX)
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return VideoLaVITCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            attention_mask=attention_mask,
        )

    # ----------------------------------------------------------------------------------------------
    # understanding generation
    # ----------------------------------------------------------------------------------------------
    def prepare_inputs_for_generation(
        self, input_ids, visual_embeds=None, is_first_iteration=False, **kwargs
    ):
        """Hands `visual_embeds` to the model only while the whole prompt is processed (prefill, no cache)."""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, is_first_iteration=is_first_iteration, **kwargs
        )
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["visual_embeds"] = visual_embeds
        return model_inputs

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        motion_vectors: torch.Tensor | None = None,
        clips_per_video: torch.LongTensor | None = None,
        images_per_sample: torch.LongTensor | None = None,
        videos_per_sample: torch.LongTensor | None = None,
        logits_processor: LogitsProcessorList | None = None,
        **kwargs,
    ):
        """
        Text answers about images/videos (or plain text), with every `GenerationMixin.generate` option.

        The placeholders are spliced once (left padding) and the features fed on the prefill only; the
        visual and motion ids are excluded from the answer with a [`VideoLaVITTokenRangeLogitsProcessor`].

        Args:
            input_ids (`torch.LongTensor` of shape `[batch, length]`), attention_mask, pixel_values,
            pixel_values_videos, motion_vectors, clips_per_video, images_per_sample, videos_per_sample:
                As in `forward` (the processor's output).
            logits_processor (`LogitsProcessorList`, *optional*): extra processors, run first.
            **kwargs: generation options (`max_new_tokens`, `do_sample`, ...).

        Returns:
            `torch.LongTensor` of shape `[batch, length + new_tokens]` (or a `GenerateOutput` with
            `return_dict_in_generate=True`): the prompt `input_ids` as given, followed by the answer.
        """
        processors = LogitsProcessorList(logits_processor or [])
        processors.append(VideoLaVITTokenRangeLogitsProcessor([(0, self.config.text_vocab_size)]))
        if input_ids is None:
            return super().generate(attention_mask=attention_mask, logits_processor=processors, **kwargs)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self.model._check_per_sample_counts(input_ids, images_per_sample, videos_per_sample)
        expanded = self.prepare_multimodal_inputs(
            input_ids,
            attention_mask,
            None,
            pixel_values,
            pixel_values_videos,
            motion_vectors,
            clips_per_video,
            padding_side="left",
        )
        if expanded.visual_embeds is not None:
            kwargs["visual_embeds"] = expanded.visual_embeds
        outputs = super().generate(
            input_ids=expanded.input_ids,
            attention_mask=expanded.attention_mask,
            logits_processor=processors,
            **kwargs,
        )
        prompt_length = expanded.input_ids.shape[1]
        if isinstance(outputs, torch.Tensor):
            return torch.cat([input_ids.to(outputs.device), outputs[:, prompt_length:]], dim=1)
        num_returned = outputs.sequences.shape[0] // input_ids.shape[0]
        prompt = input_ids.to(outputs.sequences.device).repeat_interleave(num_returned, dim=0)
        outputs.sequences = torch.cat([prompt, outputs.sequences[:, prompt_length:]], dim=1)
        return outputs

    # ----------------------------------------------------------------------------------------------
    # video generation
    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_video_tokens(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        negative_prompt_ids: torch.LongTensor | None = None,
        negative_prompt_attention_mask: torch.LongTensor | None = None,
        num_clips: int = 1,
        keyframe_guidance_scale: float = 4.0,
        motion_guidance_scale: float = 7.0,
        do_sample: bool = True,
        motion_do_sample: bool | None = None,
        top_k: int | None = 200,
        top_p: float = 1.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        min_keyframe_tokens: int | None = None,
        max_keyframe_tokens: int | None = None,
    ) -> VideoLaVITVideoTokensOutput:
        """
        Text (or text + image) to video tokens, clip by clip.

        Each clip: `[image_start]`, keyframe codes sampled until `[image_end]` (only visual codes and
        `[image_end]` allowed), then `[motion_start]`, exactly `motion_tokens_per_clip` motion codes
        and `[motion_end]`. Later clips continue from the whole sequence so far. Classifier-free
        guidance mixes the log-probabilities of the prompt and of an unconditional branch, run in the
        same batch, as in the reference implementation: `guidance * (cond - uncond) + uncond` on
        log-softmaxed logits, then the phase's allowed ids, then temperature, top-k and top-p. The
        unconditional branch of each phase is the current phase's start token (`[image_start]` or
        `[motion_start]`) followed by the tokens generated in that phase; with a negative prompt it is
        the negative prompt ids as they are (no start token appended, the same ids for both phases and
        every clip) followed by the tokens generated in that phase.

        As in the reference, text-to-video chooses the motion codes greedily (arg-max) and samples only
        the keyframe codes; only the motion of a given keyframe (image-to-video's first clip) is sampled.
        `motion_do_sample` overrides that choice for every clip.

        Args:
            input_ids (`torch.LongTensor` of shape `[batch, length]`, *optional*):
                Text prompt ids (the reference tokenizes prompts without BOS). Left or right padded.
            attention_mask (`torch.LongTensor` of shape `[batch, length]`, *optional*).
            pixel_values (`torch.FloatTensor` of shape `[batch, 3, 224, 224]`, *optional*):
                Image-to-video: each image is tokenized as the first clip's keyframe (after the prompt)
                and only its motion is generated.
            negative_prompt_ids (`torch.LongTensor` of shape `[batch or 1, neg_length]`, *optional*):
                Unconditional prompt of both phases, used as it is; when not given, the unconditional
                branch starts with the phase's start token.
            negative_prompt_attention_mask (`torch.LongTensor`, *optional*): its padding mask.
            num_clips (`int`): clips to generate (24 frames each).
            keyframe_guidance_scale, motion_guidance_scale (`float`): CFG scales (1.0 disables CFG).
            do_sample (`bool`): sample the keyframe codes (True) or take the arg-max.
            motion_do_sample (`bool`, *optional*): sample the motion codes (True) or take the arg-max
                (False). Default (None): the reference's choice, arg-max after a generated keyframe and
                `do_sample` after a keyframe given as `pixel_values`.
            top_k (`int`), top_p (`float`), temperature (`float`): sampling warpers.
            generator (`torch.Generator`, *optional*): random source of the sampling, for reproducibility.
            min_keyframe_tokens (`int`, *optional*): `[image_end]` is forbidden before this many keyframe
                codes. Default: the checkpoint's `generation_config.min_keyframe_tokens` when it sets one,
                else 20, the reference's rule for its 256-patch tokenizer (a checkpoint whose tokenizer
                keeps fewer codes per image, such as Video-LaVIT-Shapes, stores its own minimum there).
            max_keyframe_tokens (`int`, *optional*): keyframes are closed after this many codes
                (default: the visual tokenizer's patch count).

        Returns:
            [`VideoLaVITVideoTokensOutput`] with `keyframe_ids`, `motion_ids [batch, num_clips, 135]`
            and `sequences`.
        """
        config, mapping = self.config, self.vocabulary_mapping
        device = self.lm_head.weight.device
        batch_size = self._video_batch_size(input_ids, pixel_values)
        prompts = self._unpad_rows(input_ids, attention_mask, batch_size, device)
        negatives = self._unpad_rows(negative_prompt_ids, negative_prompt_attention_mask, batch_size, device)
        if negative_prompt_ids is not None and any(len(negative) == 0 for negative in negatives):
            raise VideoLaVITInputError(
                "negative_prompt_ids has a row without real tokens; give every row at least one token, or "
                "pass no negative prompt (the unconditional branch then starts at the phase's start token)."
            )
        max_keyframe_tokens = max_keyframe_tokens or config.visual_tokenizer_config.num_patches
        min_keyframe_tokens = min(self._min_keyframe_tokens(min_keyframe_tokens), max_keyframe_tokens)
        sampling = {"warpers": _sampling_warpers(temperature, top_k, top_p), "generator": generator}
        keyframe_rules = self._keyframe_rules(min_keyframe_tokens, device)
        motion_rules = self._motion_rules()
        given_keyframes = (
            self.model._tokenize_images(pixel_values, False, None) if pixel_values is not None else None
        )

        sequences = list(prompts)
        keyframe_ids: list[list[torch.LongTensor]] = [[] for _ in range(batch_size)]
        motion_ids = []
        image_start = torch.tensor([config.image_start_token_id], device=device)
        motion_start = torch.tensor([config.motion_start_token_id], device=device)
        motion_end = torch.tensor([config.motion_end_token_id], device=device)

        def unconditional(start_token: torch.LongTensor) -> list[torch.LongTensor]:
            # the reference's guidance starts from the negative prompt as given, else from the last prompt
            # token, which is the phase's start token
            if negative_prompt_ids is not None:
                return list(negatives)
            return [start_token] * batch_size

        for clip in range(num_clips):
            keyframe_given = clip == 0 and given_keyframes is not None
            if keyframe_given:
                codes = [codes.to(device) for codes in given_keyframes]
                sequences = [
                    torch.cat([seq, mapping.image_ids(c)]) for seq, c in zip(sequences, codes, strict=True)
                ]
            else:
                sequences = [torch.cat([seq, image_start]) for seq in sequences]
                new_tokens = self._sample_phase(
                    sequences,
                    unconditional(image_start),
                    keyframe_guidance_scale,
                    keyframe_rules,
                    max_new_tokens=max_keyframe_tokens,
                    stop_token_id=config.image_end_token_id,
                    do_sample=do_sample,
                    **sampling,
                )
                codes, sequences = self._close_keyframes(sequences, new_tokens)
            for row in range(batch_size):
                keyframe_ids[row].append(codes[row])
            sequences = [torch.cat([seq, motion_start]) for seq in sequences]
            if motion_do_sample is None:
                # the reference samples motion only in image-to-video (after the given keyframe)
                sample_motion = do_sample and keyframe_given
            else:
                sample_motion = motion_do_sample
            new_tokens = self._sample_phase(
                sequences,
                unconditional(motion_start),
                motion_guidance_scale,
                motion_rules,
                max_new_tokens=config.motion_tokens_per_clip,
                stop_token_id=None,
                do_sample=sample_motion,
                **sampling,
            )
            sequences = [
                torch.cat([seq, tokens, motion_end])
                for seq, tokens in zip(sequences, new_tokens, strict=True)
            ]
            motion_ids.append(mapping.vocab_to_motion(torch.stack(new_tokens)))
        return VideoLaVITVideoTokensOutput(
            keyframe_ids=keyframe_ids, motion_ids=torch.stack(motion_ids, dim=1), sequences=sequences
        )

    def _min_keyframe_tokens(self, value: int | None) -> int:
        """The keyframe minimum to use: `value`, else `generation_config.min_keyframe_tokens`, else 20."""
        source = "min_keyframe_tokens"
        if value is None:
            value = getattr(self.generation_config, "min_keyframe_tokens", None)
            source = "generation_config.min_keyframe_tokens"
        if value is None:
            return DEFAULT_MIN_KEYFRAME_TOKENS
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise VideoLaVITInputError(f"{source} must be a non-negative integer, got {value!r}")
        return value

    def _keyframe_rules(self, min_keyframe_tokens: int, device: torch.device) -> LogitsProcessorList:
        """What a keyframe phase may sample: visual codes and `[image_end]`, the latter only after
        `min_keyframe_tokens` codes."""
        # The reference only suppresses the text ids 3..31999 (and the motion ids) here, so ids 0-2 and
        # [image_start] stay allowed; none of them is a keyframe code (its keyframe decoder drops them, and
        # the pad id 2 is cut from the sequence), so only the visual codes and [image_end] are allowed.
        # Closing a keyframe after `max_keyframe_tokens` (the tokenizer's patch count, the most a real
        # keyframe has) instead of the reference's 500 keeps the sequence a well-formed clip.
        image_end = self.config.image_end_token_id
        return LogitsProcessorList(
            [
                VideoLaVITTokenRangeLogitsProcessor(
                    [self.vocabulary_mapping.visual_id_range, (image_end, image_end + 1)]
                ),
                MinLengthLogitsProcessor(min_keyframe_tokens, image_end, device=device),
            ]
        )

    def _motion_rules(self) -> LogitsProcessorList:
        """What a motion phase may sample: motion codes only."""
        # The reference samples motion until [motion_end] (ids 0-2, [motion_start] and [motion_end] allowed,
        # at most 500 tokens) and its video detokenizer then keeps the motion codes, cut or padded with code
        # 0 to 135. Here exactly `motion_tokens_per_clip` motion codes are sampled and [motion_end] is
        # appended: the same codes whenever the reference's model closes the clip at 135, and never a
        # padded or cut motion grid (nor a sequence whose next clip follows an unclosed motion segment).
        motion_codes = VideoLaVITTokenRangeLogitsProcessor([self.vocabulary_mapping.motion_id_range])
        return LogitsProcessorList([motion_codes])

    def _close_keyframes(
        self, sequences: list[torch.LongTensor], new_tokens: list[torch.LongTensor]
    ) -> tuple[list[torch.LongTensor], list[torch.LongTensor]]:
        """A keyframe phase's sampled tokens (one 1-D tensor per row, maybe ending in `[image_end]`) -> each
        row's 0-based visual codes, and the sequences extended by those codes and `[image_end]`."""
        image_end_id = self.config.image_end_token_id
        codes, closed = [], []
        for sequence, tokens in zip(sequences, new_tokens, strict=True):
            visual = tokens[tokens != image_end_id]
            codes.append(self.vocabulary_mapping.vocab_to_visual(visual))
            closed.append(torch.cat([sequence, visual, visual.new_tensor([image_end_id])]))
        return codes, closed

    @staticmethod
    def _video_batch_size(input_ids: torch.LongTensor | None, pixel_values: torch.Tensor | None) -> int:
        """Batch size of a video-generation call; checks that the prompt and the images agree."""
        if input_ids is not None and pixel_values is not None and input_ids.shape[0] != pixel_values.shape[0]:
            raise VideoLaVITInputError(
                f"input_ids has {input_ids.shape[0]} prompts but pixel_values {pixel_values.shape[0]} "
                "images; give one keyframe image per prompt."
            )
        if input_ids is not None:
            return input_ids.shape[0]
        return pixel_values.shape[0] if pixel_values is not None else 1

    def _unpad_rows(
        self,
        ids: torch.LongTensor | None,
        attention_mask: torch.LongTensor | None,
        batch_size: int,
        device: torch.device,
    ) -> list[torch.LongTensor]:
        """`[rows, length]` ids (rows 1 or `batch_size`) -> `batch_size` 1-D tensors of their real tokens."""
        if ids is None:
            return [torch.zeros(0, dtype=torch.long, device=device) for _ in range(batch_size)]
        if ids.shape[0] not in (1, batch_size):
            raise VideoLaVITInputError(
                f"Expected 1 or {batch_size} rows of prompt ids (one shared prompt or one per sample), got "
                f"{ids.shape[0]}."
            )
        if bool(((ids >= self.config.vocab_size) | (ids < 0)).any()):
            raise VideoLaVITInputError(
                "Video-generation prompts must be vocabulary ids without <image>/<video> placeholders; "
                "pass an image as pixel_values instead."
            )
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask
        rows = [row_ids[row_mask.bool()].to(device) for row_ids, row_mask in zip(ids, mask, strict=True)]
        return rows * batch_size if len(rows) == 1 else rows

    def _sample_phase(
        self,
        prompts: list[torch.LongTensor],
        unconditional_prompts: list[torch.LongTensor],
        guidance_scale: float,
        rules: LogitsProcessorList,
        max_new_tokens: int,
        stop_token_id: int | None,
        do_sample: bool,
        warpers: LogitsProcessorList,
        generator: torch.Generator | None,
    ) -> list[torch.LongTensor]:
        """
        Sample up to `max_new_tokens` tokens after each prompt (exactly that many when `stop_token_id`
        is None) with a KV cache; the conditional and unconditional rows run as one batch.

        Returns one 1-D tensor per prompt (ending with the stop token when it was produced).
        """
        batch_size = len(prompts)
        use_guidance = guidance_scale != 1.0
        rows = prompts + unconditional_prompts if use_guidance else prompts
        input_ids, attention_mask = _left_pad(rows, self._pad_token_id)
        position_ids = _position_ids(attention_mask)
        cache = DynamicCache(config=self.config.text_config)
        generated = input_ids.new_zeros((batch_size, 0))
        finished = torch.zeros(batch_size, dtype=torch.bool, device=input_ids.device)
        lengths = torch.full((batch_size,), max_new_tokens, device=input_ids.device)
        step_ids = input_ids
        for step in range(max_new_tokens):
            hidden = self.model.language_model(
                input_ids=step_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            ).last_hidden_state
            logits = self.lm_head(hidden[:, -1]).float()
            scores = logits[:batch_size].log_softmax(dim=-1)
            if use_guidance:
                unconditional = logits[batch_size:].log_softmax(dim=-1)
                scores = guidance_scale * (scores - unconditional) + unconditional
            scores = warpers(generated, rules(generated, scores))
            if do_sample:
                probabilities = scores.softmax(dim=-1)
                if generator is not None:
                    # sample where the generator lives, so that a CPU generator also drives CUDA runs
                    probabilities = probabilities.to(generator.device)
                next_tokens = (
                    torch.multinomial(probabilities, 1, generator=generator).squeeze(1).to(generated.device)
                )
            else:
                next_tokens = scores.argmax(dim=-1)
            if stop_token_id is not None:
                next_tokens = next_tokens.masked_fill(finished, stop_token_id)
                newly_finished = (next_tokens == stop_token_id) & ~finished
                lengths[newly_finished] = step + 1
                finished |= newly_finished
            generated = torch.cat([generated, next_tokens[:, None]], dim=1)
            if bool(finished.all()):
                break
            step_ids = next_tokens.repeat(2 if use_guidance else 1)[:, None]
            attention_mask = torch.cat(
                [attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=1
            )
            position_ids = position_ids[:, -1:] + 1
        return [generated[row, : int(lengths[row])] for row in range(batch_size)]


def _sampling_warpers(temperature: float, top_k: int | None, top_p: float) -> LogitsProcessorList:
    """Temperature, top-k and top-p warpers, each only when it changes the distribution."""
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return warpers


def pretraining_text(caption: str, placeholder: str, order: str) -> str:
    """
    The text of one pre-training sample: `"<video>caption"` for `order="video_first"` (a
    `[video, text]` sample) or `"caption<video>"` for `order="text_first"`.
    """
    if order == "video_first":
        return f"{placeholder}{caption}"
    if order == "text_first":
        return f"{caption}{placeholder}"
    raise ValueError(f"order must be 'video_first' or 'text_first', got {order!r}.")


__all__ = [
    "VideoLaVITCausalLMOutputWithPast",
    "VideoLaVITForCausalLM",
    "VideoLaVITInputError",
    "VideoLaVITModel",
    "VideoLaVITModelOutputWithPast",
    "VideoLaVITPreTrainedModel",
    "VideoLaVITTokenRangeLogitsProcessor",
    "VideoLaVITVideoFeaturesOutput",
    "VideoLaVITVideoTokensOutput",
    "VideoLaVITVocabularyMapping",
    "pretraining_text",
]