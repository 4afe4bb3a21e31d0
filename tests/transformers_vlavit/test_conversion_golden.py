"""End-to-end conversion of a tiny fake release (original layout and names) against the golden outputs.

The fake ``Video-LaVIT-v1`` folder holds the golden files' original state dicts (motion tokenizer, visual
tokenizer, keyframe decoder, motion condition encoder, video U-Net) where the release keeps them, a tiny Llama
under its transformers-4.33 names (sharded ``.bin`` + index, with the old ``rotary_emb.inv_freq`` buffers), a
SentencePiece model trained here, and tiny diffusers VAEs/U-Net/schedulers. After ``convert_video_lavit``
every component is loaded back with ``from_pretrained`` and must reproduce the golden outputs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    DiffusionPipeline,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)
from PIL import Image
from transformers import AutoProcessor, LlamaConfig, LlamaForCausalLM

from transformers_vlavit import VideoLaVITForCausalLM, synthetic_english_corpus
from transformers_vlavit.conversion import convert as convert_module
from transformers_vlavit.conversion.convert import OutputFolderNotEmptyError, convert_video_lavit

sentencepiece = pytest.importorskip("sentencepiece")

TEXT_VOCAB_SIZE = 400
LLAMA_HIDDEN = 64
VISUAL_CODES = 16384  # the golden visual tokenizer's codebook
MOTION_CODES = 1024  # the golden motion tokenizer's codebook
VOCAB_SIZE = TEXT_VOCAB_SIZE + 4 + VISUAL_CODES + MOTION_CODES
VISUAL_OUTPUTS = ("keep_logprobs", "keep", "merged")
SHARD_SIZE = "10MB"  # small enough that the tiny language model is sharded


def _original(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}


def _train_sentencepiece(path: Path) -> None:
    """A Llama-2-style SentencePiece BPE model: <unk> <s> </s>, byte fallback, split digits, identity."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(synthetic_english_corpus(2000))),
        model_writer=model,
        vocab_size=TEXT_VOCAB_SIZE,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
    )
    path.write_bytes(model.getvalue())


def _llama_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=LLAMA_HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def _write_language_model(
    folder: Path, state_dict: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]
) -> None:
    """Save like transformers 4.33: a 4.33-style config.json, two ``.bin`` shards and their index."""
    folder.mkdir(parents=True)
    config = _llama_config()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_act": "silu",
                "hidden_size": config.hidden_size,
                "intermediate_size": config.intermediate_size,
                "num_hidden_layers": config.num_hidden_layers,
                "num_attention_heads": config.num_attention_heads,
                "num_key_value_heads": config.num_key_value_heads,
                "max_position_embeddings": config.max_position_embeddings,
                "rms_norm_eps": 1e-5,
                "initializer_range": 0.02,
                "pretraining_tp": 1,
                "rope_scaling": None,
                "tie_word_embeddings": False,
                "use_cache": True,
                "vocab_size": VOCAB_SIZE,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": 0,
                "torch_dtype": "float32",
                "transformers_version": "4.33.1",
            }
        )
    )
    state_dict = dict(state_dict)
    for layer in range(config.num_hidden_layers):
        state_dict[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    state_dict.update(extra)
    names = sorted(state_dict)
    shards = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for shard, shard_names in shards.items():
        torch.save({name: state_dict[name].clone() for name in shard_names}, folder / shard)
    weight_map = {name: shard for shard, shard_names in shards.items() for name in shard_names}
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    _train_sentencepiece(folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "add_bos_token": True,
                "add_eos_token": False,
                "legacy": True,
            }
        )
    )


def _tiny_image_detokenizer(folder: Path, keyframe_config: dict) -> None:
    torch.manual_seed(11)
    prompt_dim, pooled_dim = sum(keyframe_config["unet_dims"]), keyframe_config["unet_dims"][1]
    UNet2DConditionModel(
        sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=(2, 4),
        cross_attention_dim=prompt_dim,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + pooled_dim,
        use_linear_projection=True,
    ).save_pretrained(folder / "unet", safe_serialization=False)
    AutoencoderKL(block_out_channels=(32,), latent_channels=4, sample_size=16).save_pretrained(
        folder / "vae", safe_serialization=False
    )
    EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear").save_pretrained(folder / "scheduler")


def _tiny_video_detokenizer(folder: Path, unet_description: dict, unet: dict, encoder: dict) -> None:
    (folder / "unet").mkdir(parents=True)
    config = {
        "_class_name": "UNetSpatioTemporalConditionModel",
        "_diffusers_version": "0.25.0",
        **unet_description,
    }
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    # the released file: U-Net tensors plus the motion condition encoder under `motion_encoder.`
    combined = {**unet, **{f"motion_encoder.{name}": t for name, t in encoder.items()}}
    torch.save(combined, folder / "unet" / "diffusion_pytorch_model.bin")
    torch.manual_seed(12)
    AutoencoderKLTemporalDecoder(block_out_channels=(32,), latent_channels=4, sample_size=16).save_pretrained(
        folder / "vae", safe_serialization=False
    )
    EulerDiscreteScheduler(prediction_type="v_prediction", use_karras_sigmas=True).save_pretrained(
        folder / "scheduler"
    )


def write_fake_release(root: Path, golden_file, golden_tokenizer_kwargs) -> dict:
    """Write the tiny fake release; returns what the checks need (golden tensors, weights, configs)."""
    motion, motion_description = golden_file("motion_tokenizer")
    visual, visual_description = golden_file("visual_tokenizer")
    keyframe, keyframe_description = golden_file("keyframe_token_decoder")
    encoder, encoder_description = golden_file("motion_condition_encoder")
    unet, unet_description = golden_file("video_unet")
    visual_original = _original(visual)
    vit_width = visual_description["config"]["vit_width"]
    # the golden vit_proj targets a 4096-wide Llama; the tiny Llama gets its own, one per checkpoint
    generator = torch.Generator().manual_seed(5)
    vit_proj = {
        variant: {
            "vit_proj.weight": torch.randn(LLAMA_HIDDEN, vit_width, generator=generator),
            "vit_proj.bias": torch.randn(LLAMA_HIDDEN, generator=generator),
        }
        for variant in ("generation", "understanding")
    }
    eva = {
        name.removeprefix("encoder."): t for name, t in visual_original.items() if name.startswith("encoder.")
    }
    tokenizer_encoder = {
        name: t for name, t in visual_original.items() if not name.startswith(("encoder.", "vit_proj."))
    }
    tokenizer_encoder.update(vit_proj["generation"])

    torch.manual_seed(0)
    generation_llama = LlamaForCausalLM(_llama_config()).state_dict()
    torch.manual_seed(1)
    understanding_llama = LlamaForCausalLM(_llama_config()).state_dict()

    _write_language_model(root / "language_model", generation_llama, {})
    understanding_visual = {**visual_original, **vit_proj["understanding"]}
    _write_language_model(
        root / "language_model_sft",
        understanding_llama,
        {
            **{f"model.visual_tokenizer.{name}": t for name, t in understanding_visual.items()},
            **{f"model.motion_tokenizer.{name}": t for name, t in _original(motion).items()},
        },
    )
    merger = {
        name: t
        for name, t in understanding_visual.items()
        if name.startswith(("causal_encoder.", "vit_proj."))
    }
    torch.save(merger, root / "language_model_sft" / "visual_weight.bin")

    (root / "visual_tokenizer").mkdir()
    torch.save(eva, root / "visual_tokenizer" / "eva_vitg_psz14.bin")
    torch.save(tokenizer_encoder, root / "visual_tokenizer" / "tokenizer_encoder.bin")
    torch.save(_original(keyframe), root / "visual_tokenizer" / "highres_tokenizer_decoder.bin")
    torch.save(_original(motion), root / "motion_tokenizer.bin")
    _tiny_image_detokenizer(root / "image_detokenizer", keyframe_description["config"])
    _tiny_video_detokenizer(
        root / "video_detokenizer", unet_description["config"], _original(unet), _original(encoder)
    )

    return {
        "golden": {
            "motion": motion,
            "visual": visual,
            "keyframe": keyframe,
            "encoder": encoder,
            "unet": unet,
        },
        "llama": {"generation": generation_llama, "understanding": understanding_llama},
        "vit_proj": vit_proj,
        "component_configs": component_configs_from_golden(
            motion_description,
            visual_description,
            keyframe_description,
            encoder_description,
            golden_tokenizer_kwargs,
        ),
    }


def component_configs_from_golden(motion, visual, keyframe, encoder, golden_tokenizer_kwargs) -> dict:
    """`convert_video_lavit(component_configs=...)` for the golden sizes."""
    motion, visual, keyframe, encoder = (
        motion["config"],
        visual["config"],
        keyframe["config"],
        encoder["config"],
    )
    return {
        "motion_tokenizer": golden_tokenizer_kwargs.motion(motion),
        "visual_tokenizer": golden_tokenizer_kwargs.visual(visual),
        "keyframe_decoder": {
            "code_dim": keyframe["code_dim"],
            "hidden_size": keyframe["width"],
            "num_layers": keyframe["depth"],
            "num_attention_heads": keyframe["heads"],
            "num_queries": keyframe["num_patches"],
            "max_code_tokens": keyframe["num_patches"],
            "decoder_out_dim": keyframe["decoder_out_dim"],
            "prompt_embed_dims": tuple(keyframe["unet_dims"]),
            "pooled_projection_dim": keyframe["unet_dims"][1],
        },
        "motion_condition_encoder": {
            "out_channels": encoder["out_channels"],
            "num_attention_heads": encoder["num_heads"],
            "attention_head_dim": encoder["dim"] // encoder["num_heads"],
            "num_layers": encoder["depth"],
            "grid_size": tuple(encoder["grid_hw"]),
            "layer_norm_eps": encoder["ln_eps"],
        },
    }


@pytest.fixture(scope="module")
def converted(tmp_path_factory, golden_file, golden_tokenizer_kwargs):
    """`(output folder, fake release info)` after converting the fake release in float32."""
    root = tmp_path_factory.mktemp("released")
    info = write_fake_release(root, golden_file, golden_tokenizer_kwargs)
    out = tmp_path_factory.mktemp("converted") / "video-lavit"
    convert_video_lavit(
        root,
        out,
        dtype=torch.float32,
        max_shard_size=SHARD_SIZE,
        progress=False,
        component_configs=info["component_configs"],
    )
    return out, {**info, "root": root}


def _check_motion_tokenizer(motion_tokenizer, golden):
    with torch.no_grad():
        tokens = motion_tokenizer.encode(golden["input.motion"])
        reconstruction = motion_tokenizer.decode_for_detokenizer(golden["output.tokens"], 40, 72)
    assert torch.equal(tokens, golden["output.tokens"])
    torch.testing.assert_close(reconstruction, golden["output.reconstruction_40x72"], atol=1e-4, rtol=0)


def _check_visual_tokenizer(visual_tokenizer, golden, vit_proj):
    with torch.no_grad():
        output = visual_tokenizer(golden["input.pixel_values"])
        features = visual_tokenizer.encode_features(golden["input.pixel_values"])
    for name in VISUAL_OUTPUTS:
        torch.testing.assert_close(output[name], golden[f"output.{name}"], atol=1e-4, rtol=0)
    assert torch.equal(output.token_ids, golden["output.token_ids"])
    assert torch.equal(output.token_counts, golden["output.token_counts"])
    # this checkpoint's vit_proj applied to the reference's merged features of the kept tokens
    kept = golden["output.merged"][golden["output.keep"].bool()]
    expected = kept @ vit_proj["vit_proj.weight"].T + vit_proj["vit_proj.bias"]
    torch.testing.assert_close(torch.cat(features), expected, atol=1e-4, rtol=1e-4)


def _check_language_model(model, original_llama):
    """Our logits equal transformers' Llama loaded with the original names (what the reference runs)."""
    reference = LlamaForCausalLM(_llama_config()).eval()
    reference.load_state_dict(original_llama, strict=True)
    input_ids = torch.tensor([[1, 5, 77, 300, 12, 9], [1, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        ours = model(input_ids=input_ids).logits
        expected = reference(input_ids=input_ids).logits
    assert ours.shape == (2, 6, VOCAB_SIZE)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def causal_lms(converted) -> dict[str, VideoLaVITForCausalLM]:
    """Both converted causal LMs, loaded with `from_pretrained`."""
    out, _ = converted
    return {
        "generation": VideoLaVITForCausalLM.from_pretrained(out).eval(),
        "understanding": VideoLaVITForCausalLM.from_pretrained(out, subfolder="understanding").eval(),
    }


def _assert_same_weights(module, expected_module):
    """Equal state dicts: `module` holds the weights already checked against the golden outputs."""
    state_dict, expected = module.state_dict(), expected_module.state_dict()
    assert state_dict.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(state_dict[name], tensor), name


@pytest.mark.parametrize("variant", ["generation", "understanding"])
def test_golden_converted_causal_lm_reproduces_the_reference(converted, causal_lms, variant):
    _, info = converted
    model = causal_lms[variant]
    assert model.dtype == torch.float32
    assert model.config.text_vocab_size == TEXT_VOCAB_SIZE and model.config.vocab_size == VOCAB_SIZE
    _check_language_model(model, info["llama"][variant])
    _check_visual_tokenizer(model.visual_tokenizer, info["golden"]["visual"], info["vit_proj"][variant])
    if variant == "generation":
        _check_motion_tokenizer(model.motion_tokenizer, info["golden"]["motion"])
    else:
        # the SFT copy of the motion tokenizer (model.motion_tokenizer.*) holds the same golden weights
        _assert_same_weights(model.motion_tokenizer, causal_lms["generation"].motion_tokenizer)


def test_golden_converted_processor_keeps_the_sentencepiece_encoding_and_layout(converted):
    out, info = converted
    reference = sentencepiece.SentencePieceProcessor(
        model_file=str(info["root"] / "language_model" / "tokenizer.model")
    )
    for folder in (out, out / "understanding"):
        processor = AutoProcessor.from_pretrained(folder)
        tokenizer = processor.tokenizer
        for text in (
            "A dog runs across the park.",
            "two  spaces, digits 2024 and \u00e9\u00fc!",
            "line one\nline two",
        ):
            assert tokenizer(text).input_ids == [reference.bos_id(), *reference.encode(text)], text
        tokens = [
            "<|image_start|>",
            "<|image_end|>",
            "<|visual_00000|>",
            "<|visual_16383|>",
            "<|motion_start|>",
        ]
        tokens += ["<|motion_end|>", "<|motion_0000|>", "<|motion_1023|>", "<image>", "<video>"]
        first_visual, first_motion = TEXT_VOCAB_SIZE + 2, TEXT_VOCAB_SIZE + 4 + VISUAL_CODES
        expected = [TEXT_VOCAB_SIZE, TEXT_VOCAB_SIZE + 1, first_visual, first_visual + VISUAL_CODES - 1]
        expected += [
            first_motion - 2,
            first_motion - 1,
            first_motion,
            VOCAB_SIZE - 1,
            VOCAB_SIZE,
            VOCAB_SIZE + 1,
        ]
        assert tokenizer.convert_tokens_to_ids(tokens) == expected
        assert tokenizer.pad_token_id == 0 and tokenizer.padding_side == "left"
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
            add_generation_prompt=True,
        )
        assert "USER: <video>" in prompt and prompt.rstrip().endswith("ASSISTANT:")
        # the reference tokenizes the text around a placeholder chunk by chunk with SentencePiece
        question = "USER: <image>\nWhat is shown? ASSISTANT:"
        before, after = question.split("<image>")
        image = Image.new("RGB", (32, 32), (200, 30, 30))
        input_ids = processor(text=[question], images=[image], return_tensors="pt")["input_ids"][0].tolist()
        assert input_ids == [
            reference.bos_id(),
            *reference.encode(before),
            VOCAB_SIZE,
            *reference.encode(after),
        ]


def test_golden_converted_keyframe_pipeline_reproduces_the_reference(converted):
    """Keyframe decoder and visual tokenizer against the golden outputs; diffusers parts copied exactly."""
    out, info = converted
    pipe = DiffusionPipeline.from_pretrained(out / "detokenizer" / "keyframe", trust_remote_code=True)
    golden = info["golden"]["keyframe"]
    with torch.no_grad():
        prompt_embeds, pooled = pipe.keyframe_decoder(
            golden["input.code_embeddings"], golden["input.token_counts"]
        )
    torch.testing.assert_close(prompt_embeds, golden["output.prompt_embeds"], atol=1e-4, rtol=0)
    torch.testing.assert_close(pooled, golden["output.pooled_prompt_embeds"], atol=1e-4, rtol=0)
    _check_visual_tokenizer(pipe.visual_tokenizer, info["golden"]["visual"], info["vit_proj"]["generation"])
    released = info["root"] / "image_detokenizer"
    _assert_same_weights(pipe.unet, UNet2DConditionModel.from_pretrained(released / "unet"))
    _assert_same_weights(pipe.vae, AutoencoderKL.from_pretrained(released / "vae"))
    assert isinstance(pipe.scheduler, EulerAncestralDiscreteScheduler)


def test_golden_converted_video_pipeline_reproduces_the_reference(converted, causal_lms):
    out, info = converted
    pipe = DiffusionPipeline.from_pretrained(out / "detokenizer" / "video", trust_remote_code=True)
    encoder, unet = info["golden"]["encoder"], info["golden"]["unet"]
    with torch.no_grad():
        hidden_states = pipe.motion_encoder(encoder["input.motion"])
        sample = pipe.unet(
            unet["input.sample"],
            unet["input.timestep"],
            encoder_hidden_states=unet["input.encoder_hidden_states"],
            added_time_ids=unet["input.added_time_ids"],
        ).sample
    torch.testing.assert_close(hidden_states, encoder["output.hidden_states"], atol=1e-4, rtol=0)
    torch.testing.assert_close(sample, unet["output.sample"], atol=1e-3, rtol=0)
    _assert_same_weights(pipe.motion_tokenizer, causal_lms["generation"].motion_tokenizer)
    released = info["root"] / "video_detokenizer"
    _assert_same_weights(pipe.vae, AutoencoderKLTemporalDecoder.from_pretrained(released / "vae"))
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler) and pipe.scheduler.config.use_karras_sigmas


def test_golden_converted_folder_is_safetensors_sharded_and_not_overwritten(converted):
    out, info = converted
    for folder in (out, out / "understanding"):
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
        assert json.loads((folder / "config.json").read_text())["model_type"] == "video_lavit"
    for pipeline in ("keyframe", "video"):
        assert (out / "detokenizer" / pipeline / "model_index.json").is_file()
    assert list(out.rglob("*.safetensors")) and not list(out.rglob("*.bin"))
    before = sorted(path.relative_to(out) for path in out.rglob("*"))
    with pytest.raises(OutputFolderNotEmptyError, match="overwrite"):
        convert_video_lavit(info["root"], out, progress=False, component_configs=info["component_configs"])
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before


def test_golden_converted_folder_entry_points_without_the_packages(converted, check_hub_folder):
    out, _ = converted
    # golden sizes are too large to generate with here: every entry point is loaded, not run
    check_hub_folder(out, mode="load")


def test_golden_failed_conversion_leaves_no_partial_folder(converted, tmp_path, monkeypatch):
    _, info = converted

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while converting the language model")

    monkeypatch.setattr(convert_module, "convert_causal_lm", broken)
    out = tmp_path / "partial"
    with pytest.raises(RuntimeError, match="simulated failure"):
        convert_video_lavit(info["root"], out, progress=False, component_configs=info["component_configs"])
    assert not out.exists()
