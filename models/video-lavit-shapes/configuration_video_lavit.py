"""Configuration of the Video-LaVIT causal language model.

The composite config holds the Llama text config and the two tokenizer configs, and is the single
source of truth for the token-id layout of the shared vocabulary::

    [0, T)                         text tokens (T = text_vocab_size)
    T                              image start
    T + 1                          image end
    T + 2 ... T + 2 + V - 1        visual (keyframe) codes, V = visual codebook size
    T + 2 + V                      motion start
    T + 3 + V                      motion end
    T + 4 + V ... vocab_size - 1   motion codes, M = motion codebook size

At the released size (T=32000, V=16384, M=1024) this gives 32000, 32001, 32002..48385, 48386,
48387, 48388..49411 and ``vocab_size`` 49412. Two placeholder ids follow the vocabulary,
``image_token_id = vocab_size`` and ``video_token_id = vocab_size + 1``: they mark where an image or
a video goes in the processor's ``input_ids`` and are replaced by the model before any embedding
lookup, so they have no row in the embedding matrix.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

from .configuration_motion_tokenizer import VideoLaVITMotionTokenizerConfig
from .configuration_visual_tokenizer import VideoLaVITVisualTokenizerConfig

# Llama-2-7B as released in Video-LaVIT-v1 (`language_model/config.json`); pad is <unk> (id 0) as in
# the reference inference code.
LLAMA_2_7B_DEFAULTS = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
}


@strict
class VideoLaVITConfig(PreTrainedConfig):
    r"""
    Configuration of [`VideoLaVITForCausalLM`]: a Llama backbone whose vocabulary is extended with
    the visual (keyframe) codes of the visual tokenizer and the motion codes of the motion tokenizer.

    Args:
        text_config (`dict` or `LlamaConfig`, *optional*):
            The Llama backbone. Its `vocab_size` is always set from the token layout below (49412 at
            the released size); every other field defaults to Llama-2-7B.
        visual_tokenizer_config (`dict` or `VideoLaVITVisualTokenizerConfig`, *optional*):
            The keyframe/image tokenizer; its codebook size is the number of visual codes.
        motion_tokenizer_config (`dict` or `VideoLaVITMotionTokenizerConfig`, *optional*):
            The motion tokenizer; its codebook size is the number of motion codes and its
            `num_tokens` (135 at full size) the number of motion codes per clip.
        text_vocab_size (`int`, *optional*, defaults to 32000):
            Number of text tokens `T`; the special and code tokens follow it.

    Example (a tiny model in one call):

    ```python
    >>> config = VideoLaVITConfig.tiny()
    >>> config.vocab_size, config.image_token_id, config.video_token_id
    (900, 900, 901)

    ```
    """

    model_type = "video_lavit"
    keys_to_ignore_at_inference = ["cache"]
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=LlamaConfig, init_kwargs=LLAMA_2_7B_DEFAULTS),
        "visual_tokenizer_config": VideoLaVITVisualTokenizerConfig,
        "motion_tokenizer_config": VideoLaVITMotionTokenizerConfig,
    }

    text_config: dict | PreTrainedConfig | None = None
    visual_tokenizer_config: dict | PreTrainedConfig | None = None
    motion_tokenizer_config: dict | PreTrainedConfig | None = None
    text_vocab_size: int = 32000
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if isinstance(self.text_config, dict):
            # a partial dict (e.g. a tiny config) still gets the Llama-2 defaults it does not override
            self.text_config = {**LLAMA_2_7B_DEFAULTS, **self.text_config}
        super().__post_init__(**kwargs)
        # the backbone's vocabulary is the layout's, whatever the text config said
        self.text_config.vocab_size = self.vocab_size
        if self.visual_tokenizer_config.llm_hidden_size != self.text_config.hidden_size:
            raise ValueError(
                f"visual_tokenizer_config.llm_hidden_size ({self.visual_tokenizer_config.llm_hidden_size}) "
                f"must equal text_config.hidden_size ({self.text_config.hidden_size}): vit_proj maps "
                "keyframe features into the language model's input space. Set both to the same width."
            )

    @property
    def visual_codebook_size(self) -> int:
        """Number of visual (keyframe/image) codes, from the visual tokenizer config (16384)."""
        return self.visual_tokenizer_config.codebook_size

    @property
    def motion_codebook_size(self) -> int:
        """Number of motion codes, from the motion tokenizer config (1024)."""
        return self.motion_tokenizer_config.codebook_size

    @property
    def motion_tokens_per_clip(self) -> int:
        """Number of motion codes one 24-frame clip is tokenized into (135 at full size)."""
        return self.motion_tokenizer_config.num_tokens

    @property
    def image_start_token_id(self) -> int:
        """Id of the token opening an image or a keyframe (32000)."""
        return self.text_vocab_size

    @property
    def image_end_token_id(self) -> int:
        """Id of the token closing an image or a keyframe (32001)."""
        return self.text_vocab_size + 1

    @property
    def visual_token_offset(self) -> int:
        """Vocabulary id of visual code 0 (32002)."""
        return self.text_vocab_size + 2

    @property
    def motion_start_token_id(self) -> int:
        """Id of the token opening a clip's motion codes (48386)."""
        return self.visual_token_offset + self.visual_codebook_size

    @property
    def motion_end_token_id(self) -> int:
        """Id of the token closing a clip's motion codes (48387)."""
        return self.motion_start_token_id + 1

    @property
    def motion_token_offset(self) -> int:
        """Vocabulary id of motion code 0 (48388)."""
        return self.motion_start_token_id + 2

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding matrix and columns of the LM head (49412)."""
        return self.motion_token_offset + self.motion_codebook_size

    @property
    def image_token_id(self) -> int:
        """Placeholder id of one `<image>` in the processor's `input_ids` (outside the vocabulary)."""
        return self.vocab_size

    @property
    def video_token_id(self) -> int:
        """Placeholder id of one `<video>` in the processor's `input_ids` (outside the vocabulary)."""
        return self.vocab_size + 1

    @classmethod
    def tiny(cls, text_vocab_size: int = 512, **kwargs) -> VideoLaVITConfig:
        """A small random-weight configuration for tests and demos.

        Llama width 64 with 2 layers, a visual tokenizer of width 32 with 28-pixel patches (64 patches of
        a 224 x 224 image) and 256 codes, a motion tokenizer of width 32 with one block per stage (still
        135 tokens per clip) and 128 codes. Keyword arguments override the fields of the returned config.
        """
        text_hidden_size = 64
        defaults = {
            "text_config": {
                "hidden_size": text_hidden_size,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 4,
                "max_position_embeddings": 4096,
            },
            "visual_tokenizer_config": {
                "patch_size": 28,
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "merger_num_hidden_layers": 1,
                "merger_num_attention_heads": 2,
                "codebook_size": 256,
                "code_dim": 16,
                "llm_hidden_size": text_hidden_size,
            },
            "motion_tokenizer_config": {
                "hidden_size": 32,
                "num_attention_heads": 2,
                "stage_depths": (1, 1, 1, 1),
                "codebook_size": 128,
                "code_dim": 16,
            },
            "text_vocab_size": text_vocab_size,
        }
        return cls(**{**defaults, **kwargs})


__all__ = ["VideoLaVITConfig"]
