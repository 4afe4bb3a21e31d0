"""`examples/assemble_checkpoint.py`: separately trained parts become one checkpoint every entry point loads."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, DiffusionPipeline
from transformers import AutoModelForCausalLM, AutoProcessor

from transformers_vlavit import (
    VideoLaVITMotionTokenizer,
    VideoLaVITMotionTokenizerConfig,
    VideoLaVITVisualTokenizer,
    VideoLaVITVisualTokenizerConfig,
)

VAE = {"block_out_channels": [32, 32], "layers_per_block": 1, "latent_channels": 4, "sample_size": 32}
MODEL = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "num_key_value_heads": 2, "max_position_embeddings": 1024},
    "text_vocab_size": 300,
    "keyframe_decoder": {"hidden_size": 32, "num_layers": 1, "num_attention_heads": 2, "num_queries": 4,
                         "decoder_out_dim": 32, "prompt_embed_dims": [16, 16], "pooled_projection_dim": 16},
    "keyframe_unet": {"sample_size": 8, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                      "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "block_out_channels": [32, 32],
                      "layers_per_block": 1, "attention_head_dim": [2, 2], "addition_time_embed_dim": 8,
                      "norm_num_groups": 32},
    "motion_encoder": {"out_channels": 16, "num_attention_heads": 2, "attention_head_dim": 8, "num_layers": 1,
                       "grid_size": [4, 4]},
    "video_unet": {"sample_size": 8, "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
                   "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
                   "block_out_channels": [32, 32], "layers_per_block": 1, "num_attention_heads": [2, 2],
                   "addition_time_embed_dim": 8},
    "generation": {"min_keyframe_tokens": 2},
}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    VideoLaVITVisualTokenizer(VideoLaVITVisualTokenizerConfig(
        image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        merger_num_hidden_layers=1, merger_num_attention_heads=2, codebook_size=64, code_dim=8, llm_hidden_size=48,
    )).save_pretrained(folder / "visual")
    VideoLaVITMotionTokenizer(VideoLaVITMotionTokenizerConfig(
        hidden_size=32, num_attention_heads=2, stage_depths=(1, 1, 1, 1), codebook_size=32, code_dim=8,
    )).save_pretrained(folder / "motion")
    blocks = ["DownEncoderBlock2D"] * 2
    AutoencoderKL(down_block_types=blocks, up_block_types=["UpDecoderBlock2D"] * 2, **VAE).save_pretrained(folder / "vae")
    AutoencoderKLTemporalDecoder(down_block_types=blocks, **VAE).save_pretrained(folder / "tvae")
    (folder / "model.json").write_text(json.dumps(MODEL))
    rows = [{"question": f"What colour is object {i}?", "answer": colour, "caption": f"a {colour} circle moves up"}
            for i, colour in enumerate(["red", "green", "blue", "yellow", "cyan", "magenta"] * 20)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return folder


def _argv(parts, out, *extra):
    return ["--config", str(parts / "model.json"), "--visual-tokenizer", str(parts / "visual"),
            "--motion-tokenizer", str(parts / "motion"), "--keyframe-vae", str(parts / "vae"),
            "--video-vae", str(parts / "tvae"), "--text-corpus", str(parts / "corpus.jsonl"),
            "--output-dir", str(out), *extra]


def test_assembled_checkpoint_loads_everywhere_with_the_trained_parts(scripts, parts, tmp_path, check_hub_folder):
    script = scripts.load(scripts.examples / "assemble_checkpoint.py")
    out = tmp_path / "ckpt"
    assert script.main(_argv(parts, out)) == 0

    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    visual = VideoLaVITVisualTokenizer.from_pretrained(parts / "visual")
    motion = VideoLaVITMotionTokenizer.from_pretrained(parts / "motion")
    for name, tensor in motion.state_dict().items():
        torch.testing.assert_close(model.motion_tokenizer.state_dict()[name], tensor, msg=name)
    for name, tensor in visual.state_dict().items():
        if not name.startswith("vit_proj."):  # re-made at the LLM width (48 -> 32)
            torch.testing.assert_close(model.visual_tokenizer.state_dict()[name], tensor, msg=name)
    assert model.visual_tokenizer.vit_proj.out_features == 32
    assert model.config.vocab_size == 300 + 2 + 64 + 2 + 32
    assert processor.tokenizer.convert_tokens_to_ids("<|motion_start|>") == model.config.motion_start_token_id
    # the config's generation defaults travel in generation_config.json
    assert model.generation_config.min_keyframe_tokens == 2

    keyframe = DiffusionPipeline.from_pretrained(out / "detokenizer" / "keyframe", trust_remote_code=True)
    video = DiffusionPipeline.from_pretrained(out / "detokenizer" / "video", trust_remote_code=True)
    torch.testing.assert_close(keyframe.visual_tokenizer.codebook.weight, visual.codebook.weight)
    torch.testing.assert_close(video.motion_tokenizer.quantizer.codebook.weight, motion.quantizer.codebook.weight)
    trained_vae = AutoencoderKL.from_pretrained(parts / "vae")
    torch.testing.assert_close(keyframe.vae.encoder.conv_in.weight, trained_vae.encoder.conv_in.weight)
    assert video.unet.config.in_channels == 10 and video.unet.config.cross_attention_dim == 16
    image = keyframe(token_ids=[torch.tensor([1, 2, 3])], height=32, width=32, num_inference_steps=2,
                     output_type="np").images
    assert image.shape == (1, 32, 32, 3)
    # a complete checkpoint: every entry point works without our packages
    check_hub_folder(out)

    # an existing folder is kept unless --overwrite
    assert script.main(_argv(parts, out)) == 2
    assert script.main(_argv(parts, out, "--overwrite")) == 0


def test_assemble_refuses_a_corpus_too_small_for_the_vocabulary(scripts, parts, tmp_path):
    script = scripts.load(scripts.examples / "assemble_checkpoint.py")
    config = dict(MODEL, text_vocab_size=4000)
    (tmp_path / "big.json").write_text(json.dumps(config))
    argv = _argv(parts, tmp_path / "ckpt")
    argv[1] = str(tmp_path / "big.json")
    assert script.main(argv) == 2
