"""`convert_video_lavit` / `vlavit convert` on incomplete input: every missing file named, nothing written."""

from __future__ import annotations

import json
import time

import pytest
import torch

from transformers_vlavit import synthetic_english_corpus
from transformers_vlavit.cli import main
from transformers_vlavit.conversion.convert import (
    CheckpointMismatchError,
    IncompleteCheckpointError,
    build_video_lavit_config,
    convert_released_tokenizer,
    convert_video_lavit,
)


def write_partial_release(root):
    """A partial release: a sharded Llama missing one shard, some tokenizer files, no SFT model."""
    language_model = root / "language_model"
    language_model.mkdir(parents=True)
    (language_model / "config.json").write_text("{}")
    shards = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    index = {"weight_map": {"model.norm.weight": shards[0], "lm_head.weight": shards[1]}}
    (language_model / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    torch.save({"model.norm.weight": torch.zeros(1)}, language_model / shards[0])
    (root / "visual_tokenizer").mkdir()
    torch.save({}, root / "visual_tokenizer" / "eva_vitg_psz14.bin")
    for component in ("vae", "unet"):
        (root / "image_detokenizer" / component).mkdir(parents=True)
        (root / "image_detokenizer" / component / "config.json").write_text("{}")
    torch.save({}, root / "image_detokenizer" / "vae" / "diffusion_pytorch_model.bin")
    (root / "video_detokenizer" / "scheduler").mkdir(parents=True)
    (root / "video_detokenizer" / "scheduler" / "scheduler_config.json").write_text("{}")


EXPECTED_MISSING = (
    "language_model/pytorch_model-00002-of-00002.bin",
    "language_model/tokenizer.model",
    "language_model_sft/",
    "visual_tokenizer/tokenizer_encoder.bin",
    "visual_tokenizer/highres_tokenizer_decoder.bin",
    "motion_tokenizer.bin",
    "image_detokenizer/unet/diffusion_pytorch_model.bin (or diffusion_pytorch_model.safetensors",
    "image_detokenizer/scheduler/scheduler_config.json",
    "video_detokenizer/vae/",
    "video_detokenizer/unet/",
)


def test_incomplete_release_names_every_missing_file_and_writes_nothing(tmp_path):
    write_partial_release(tmp_path / "released")
    out = tmp_path / "out"
    start = time.perf_counter()
    with pytest.raises(IncompleteCheckpointError) as raised:
        convert_video_lavit(tmp_path / "released", out, progress=False)
    assert time.perf_counter() - start < 5
    message = str(raised.value)
    for missing in EXPECTED_MISSING:
        assert missing in message, missing
    # present files are not reported
    assert "pytorch_model-00001-of-00002.bin" not in message and "eva_vitg_psz14.bin" not in message
    assert "image_detokenizer/vae" not in message
    assert not out.exists()


def test_missing_release_folder_is_reported(tmp_path):
    with pytest.raises(IncompleteCheckpointError, match="not a folder"):
        convert_video_lavit(tmp_path / "nowhere", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_unknown_component_config_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown component_configs keys"):
        convert_video_lavit(tmp_path, tmp_path / "out", component_configs={"vae": {}})


def test_cli_reports_the_missing_files_with_exit_code_2(tmp_path, capsys):
    write_partial_release(tmp_path / "released")
    code = main(
        ["convert", "--original", str(tmp_path / "released"), "--out", str(tmp_path / "out"), "--no-progress"]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "motion_tokenizer.bin" in error and "language_model/tokenizer.model" in error
    assert not (tmp_path / "out").exists()


LLAMA_2_7B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "pretraining_tp": 1,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1",
    "vocab_size": 49412,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def test_released_size_config_gives_the_contract_token_layout(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_2_7B_CONFIG))
    config = build_video_lavit_config(tmp_path / "config.json")
    assert config.text_vocab_size == 32000 and config.vocab_size == 49412
    assert (config.image_start_token_id, config.visual_token_offset, config.motion_start_token_id) == (
        32000,
        32002,
        48386,
    )
    assert (config.motion_token_offset, config.image_token_id, config.video_token_id) == (48388, 49412, 49413)
    assert config.text_config.num_hidden_layers == 32 and config.motion_tokens_per_clip == 135
    assert config.visual_tokenizer_config.llm_hidden_size == 4096


def test_tokenizer_of_another_size_than_the_vocabulary_is_rejected(tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(synthetic_english_corpus(500))),
        model_prefix=str(tmp_path / "tokenizer"),
        vocab_size=320,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
    )
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_2_7B_CONFIG))
    config = build_video_lavit_config(tmp_path / "config.json")
    with pytest.raises(CheckpointMismatchError, match="320 pieces.*32000 text ids"):
        convert_released_tokenizer(tmp_path / "tokenizer.model", config)
