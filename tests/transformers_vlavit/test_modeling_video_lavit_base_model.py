"""VideoLaVITModel under VideoLaVITForCausalLM: the base model's API, and folders saved before it existed."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM

from transformers_vlavit.configuration_video_lavit import VideoLaVITConfig
from transformers_vlavit.modeling_video_lavit import (
    VideoLaVITForCausalLM,
    VideoLaVITInputError,
    VideoLaVITModel,
    VideoLaVITModelOutputWithPast,
)

# the weight names of the layout before the base model: Llama directly under the head, tokenizers at the top
OLD_LAYOUT = (
    (r"^model\.language_model\.", "model."),
    (r"^model\.(visual|motion)_tokenizer\.", r"\1_tokenizer."),
)


def batch(config: VideoLaVITConfig) -> dict[str, torch.Tensor]:
    """Two left-padded rows: video + text, and text + image + text."""
    image, video = config.image_token_id, config.video_token_id
    input_ids = torch.tensor([[0, 0, 1, video, 40, 41], [1, 50, image, 52, 53, 54]])
    return {"input_ids": input_ids, "attention_mask": (torch.arange(6) >= torch.tensor([[2], [0]])).long()}


def old_layout_name(name: str) -> str:
    for pattern, replacement in OLD_LAYOUT:
        name = re.sub(pattern, replacement, name)
    return name


@pytest.fixture(scope="module")
def old_folder(model, tmp_path_factory):
    """A folder of `model` as the code before the base model saved it (same config, old weight names)."""
    folder = tmp_path_factory.mktemp("old_layout")
    model.save_pretrained(folder)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    save_file({old_layout_name(name): tensor for name, tensor in tensors.items()}, weights, {"format": "pt"})
    return folder


def test_the_causal_lm_is_a_base_model_under_an_lm_head(model):
    assert isinstance(model.model, VideoLaVITModel)
    assert {name for name, _ in model.named_children()} == {"model", "lm_head"}
    parts = {"language_model", "visual_tokenizer", "motion_tokenizer"}
    assert {name for name, _ in model.model.named_children()} == parts
    prefixes = {".".join(name.split(".")[:2]) for name in model.state_dict()}
    assert prefixes == {f"model.{part}" for part in parts} | {"lm_head.weight"}
    # the head's names for the base model's parts are the parts themselves
    assert model.visual_tokenizer is model.model.visual_tokenizer
    assert model.motion_tokenizer is model.model.motion_tokenizer
    assert model.vocabulary_mapping is model.model.vocabulary_mapping
    assert model.get_input_embeddings() is model.model.language_model.embed_tokens


def test_assigning_a_tokenizer_on_the_head_replaces_the_base_models():
    model = VideoLaVITForCausalLM(VideoLaVITConfig.tiny())
    replacement = type(model.visual_tokenizer)(model.config.visual_tokenizer_config)
    model.visual_tokenizer = replacement
    assert model.model.visual_tokenizer is replacement and model.visual_tokenizer is replacement
    assert not any(name.startswith("visual_tokenizer.") for name in model.state_dict())


def test_old_layout_folder_loads_with_identical_weights_and_logits(model, media, old_folder, tmp_path):
    saved = load_file(old_folder / "model.safetensors")
    assert "model.layers.0.self_attn.q_proj.weight" in saved and "model.embed_tokens.weight" in saved
    assert any(name.startswith("visual_tokenizer.") for name in saved)
    assert not any(name.startswith(("model.language_model.", "model.visual_tokenizer.")) for name in saved)

    loaded, info = VideoLaVITForCausalLM.from_pretrained(old_folder, output_loading_info=True)
    loaded.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    expected = model.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    with torch.no_grad():
        inputs = {**batch(model.config), **media}
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)

    # saved again, it uses the current names
    loaded.save_pretrained(tmp_path)
    assert set(load_file(tmp_path / "model.safetensors")) == set(expected)


def test_auto_model_loads_the_base_model_from_old_and_new_folders(model, media, old_folder, tmp_path):
    model.save_pretrained(tmp_path)
    inputs = {**batch(model.config), **media}
    with torch.no_grad():
        expected = model.model(**inputs)
        for folder in (tmp_path, old_folder):
            base, info = AutoModel.from_pretrained(folder, output_loading_info=True)
            assert type(base) is VideoLaVITModel
            assert not info["missing_keys"] and info["unexpected_keys"] == {"lm_head.weight"}
            output = base.eval()(**inputs)
            assert isinstance(output, VideoLaVITModelOutputWithPast)
            torch.testing.assert_close(output.last_hidden_state, expected.last_hidden_state, rtol=0, atol=0)
            assert torch.equal(output.attention_mask, expected.attention_mask)
    # the head is the LM head over the base model's hidden states, on the spliced sequence
    with torch.no_grad():
        head = model(**inputs)
    torch.testing.assert_close(head.logits, model.lm_head(expected.last_hidden_state), rtol=0, atol=0)
    assert torch.equal(head.attention_mask, expected.attention_mask)
    assert expected.attention_mask.shape[1] > inputs["input_ids"].shape[1]  # images and video were spliced in
    # a folder of the base model alone loads back into the causal LM, under `model.`
    model.model.save_pretrained(tmp_path / "base")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    assert all(torch.equal(t, model.model.state_dict()[n]) for n, t in again.model.state_dict().items())


def test_get_placeholder_mask_marks_the_placeholders_and_the_feature_slots(model):
    config = model.config
    image, video = config.image_token_id, config.video_token_id
    input_ids = torch.tensor([[1, image, 7, video], [video, 5, image, image]])
    image_mask, video_mask = model.get_placeholder_mask(input_ids)
    assert image_mask.tolist() == [[False, True, False, False], [False, False, True, True]]
    assert video_mask.tolist() == [[False, False, False, True], [True, False, False, False]]
    assert model.model.get_placeholder_mask(input_ids)[0].tolist() == image_mask.tolist()
    # on expanded ids the image mask is the feature slots; each row needs a feature per slot
    hidden = config.text_config.hidden_size
    enough, too_few = torch.zeros(2, 2, hidden), torch.zeros(2, 1, hidden)
    assert model.get_placeholder_mask(input_ids, enough)[0].sum().item() == 3
    with pytest.raises(VideoLaVITInputError, match="up to 2 feature slots per row but visual_embeds has 1"):
        model.get_placeholder_mask(input_ids, too_few)


def test_get_video_features_are_the_spliced_clip_contents(model, media):
    with torch.no_grad():
        video = model.get_video_features(media["pixel_values_videos"], media["motion_vectors"])
        video_only = {name: value for name, value in media.items() if name != "pixel_values"}
        first_row = {name: value[:1] for name, value in batch(model.config).items()}
        expanded = model.prepare_multimodal_inputs(**first_row, **video_only)
    assert len(video.keyframe_features) == 2
    assert video.motion_ids.shape == (2, model.config.motion_tokens_per_clip)
    assert model.vocabulary_mapping.is_motion(video.motion_ids).all()
    row = expanded.input_ids[0][expanded.attention_mask[0].bool()]
    assert torch.equal(row[model.vocabulary_mapping.is_motion(row)], video.motion_ids.flatten())
    torch.testing.assert_close(expanded.visual_embeds[0], torch.cat(video.keyframe_features), rtol=0, atol=0)
    with pytest.raises(VideoLaVITInputError, match="one keyframe per clip"):
        model.get_video_features(media["pixel_values_videos"][:1], media["motion_vectors"])


def test_old_lora_adapters_load_onto_the_new_layout(model, tmp_path):
    """An adapter saved before the base model (suffix targets, weights under `model.layers.`) still loads."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(2)
    adapted = peft.get_peft_model(
        VideoLaVITForCausalLM(model.config).eval(),
        peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    torch.manual_seed(2)
    base = VideoLaVITForCausalLM(model.config).eval()  # the same weights as the adapted model's base
    adapted.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    tensors = load_file(weights)
    old = {name.replace(".model.language_model.", ".model."): tensor for name, tensor in tensors.items()}
    assert any(".model.layers.0.self_attn.q_proj.lora_A" in name for name in old) and old != tensors
    save_file(old, weights, {"format": "pt"})
    adapter_config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]

    torch.manual_seed(3)  # the reloaded adapter's own random initialisation must not repeat the saved one
    reloaded = peft.PeftModel.from_pretrained(base, tmp_path).eval()
    for name, tensor in reloaded.state_dict().items():
        if "lora_" in name:
            assert torch.equal(tensor, adapted.state_dict()[name]), name
    input_ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=input_ids).logits, adapted(input_ids=input_ids).logits)
