"""VideoLaVITConfig token layout and VideoLaVITForCausalLM: splicing, losses, training, generation."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GenerationConfig

from transformers_vlavit.configuration_video_lavit import VideoLaVITConfig
from transformers_vlavit.modeling_video_lavit import (
    IGNORE_INDEX,
    VideoLaVITForCausalLM,
    VideoLaVITInputError,
    VideoLaVITTokenRangeLogitsProcessor,
    VideoLaVITVocabularyMapping,
    pretraining_text,
)


def mixed_batch(config: VideoLaVITConfig, padding_side: str):
    """Rows: video + text, text + image + text, text only; padded on `padding_side`."""
    image, video = config.image_token_id, config.video_token_id
    rows = [[1, video, 40, 41, 42], [1, 50, 51, image, 52, 53, 54], [1, 60, 61]]
    length = max(map(len, rows))
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for index, row in enumerate(rows):
        span = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
        input_ids[index, span] = torch.tensor(row)
        attention_mask[index, span] = 1
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return input_ids, attention_mask, labels


def test_config_token_layout_at_released_size():
    config = VideoLaVITConfig()
    assert (config.image_start_token_id, config.image_end_token_id, config.visual_token_offset) == (
        32000,
        32001,
        32002,
    )
    assert config.visual_token_offset + config.visual_codebook_size - 1 == 48385
    assert (config.motion_start_token_id, config.motion_end_token_id, config.motion_token_offset) == (
        48386,
        48387,
        48388,
    )
    assert config.vocab_size == config.text_config.vocab_size == 49412
    assert (config.image_token_id, config.video_token_id) == (49412, 49413)
    assert config.motion_tokens_per_clip == 135
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (4096, 32)


def test_tiny_config_is_one_call_and_roundtrips(tmp_path):
    config = VideoLaVITConfig.tiny()
    assert (
        config.vocab_size
        == config.text_vocab_size + 4 + config.visual_codebook_size + config.motion_codebook_size
    )
    config.save_pretrained(tmp_path)
    loaded = VideoLaVITConfig.from_pretrained(tmp_path)
    assert loaded.vocab_size == config.vocab_size and loaded.text_config.hidden_size == 64
    with pytest.raises(ValueError, match="llm_hidden_size"):
        VideoLaVITConfig.tiny(text_config={"hidden_size": 32, "num_attention_heads": 4})


def test_vocabulary_mapping_and_range_processor():
    config = VideoLaVITConfig()
    mapping = VideoLaVITVocabularyMapping(config)
    clip = mapping.clip_ids(torch.tensor([0, 16383]), torch.tensor([0, 1023]))
    assert clip.tolist() == [32000, 32002, 48385, 32001, 48386, 48388, 49411, 48387]
    assert mapping.vocab_to_motion(mapping.motion_to_vocab(torch.tensor([7]))).item() == 7
    assert mapping.is_visual(torch.tensor([32001, 32002, 48385, 48386])).tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert mapping.visual_id_range == (32002, 48386)
    assert mapping.motion_id_range == (48388, 49412)
    assert mapping.is_motion(torch.tensor([48387, 48388, 49411, 49412])).tolist() == [False, True, True, False]
    processor = VideoLaVITTokenRangeLogitsProcessor([(2, 4), (6, 7)])
    scores = processor(None, torch.zeros(2, 8))
    assert torch.isfinite(scores).nonzero()[:, 1].unique().tolist() == [2, 3, 6]


def test_splicing_layout_labels_and_errors(model, media):
    config = model.config
    input_ids, attention_mask, labels = mixed_batch(config, "right")
    expanded = model.prepare_multimodal_inputs(input_ids, attention_mask, labels, **media)
    ids, mask = expanded.input_ids, expanded.attention_mask
    keyframe_counts = [len(f) for f in model.get_image_features(media["pixel_values_videos"])]
    image_count = len(model.get_image_features(media["pixel_values"])[0])
    # video row: <s>, per clip [image_start] n slots [image_end] [motion_start] 135 [motion_end], text
    video_row = ids[0][mask[0].bool()]
    assert len(video_row) == 1 + sum(n + 2 + 135 + 2 for n in keyframe_counts) + 3
    assert video_row[1].item() == config.image_start_token_id
    motion_start = 1 + keyframe_counts[0] + 2
    assert video_row[motion_start].item() == config.motion_start_token_id
    assert model.vocabulary_mapping.is_motion(video_row[motion_start + 1 : motion_start + 136]).all()
    assert video_row[motion_start + 136].item() == config.motion_end_token_id
    assert mask.sum(-1).tolist() == [len(video_row), 6 + image_count + 2, 3]
    # every inserted position is ignored by the loss, text keeps its labels
    inserted = (ids >= config.text_vocab_size) & (mask == 1)
    assert (expanded.labels[inserted] == IGNORE_INDEX).all()
    assert (expanded.labels[(~inserted) & (mask == 1)] == ids[(~inserted) & (mask == 1)]).all()
    assert expanded.visual_embeds.shape == (3, sum(keyframe_counts), config.text_config.hidden_size)
    with pytest.raises(VideoLaVITInputError, match="<image> placeholders"):
        model(input_ids=input_ids, attention_mask=attention_mask)


def test_left_and_right_padding_give_the_same_logits_and_loss(model, media):
    outputs = {}
    with torch.no_grad():
        for side in ("right", "left"):
            input_ids, attention_mask, labels = mixed_batch(model.config, side)
            outputs[side] = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **media)
    right, left = outputs["right"], outputs["left"]
    assert right.logits.shape == left.logits.shape and right.logits.shape[-1] == model.config.vocab_size
    for row in range(3):
        real_right = right.logits[row][right.attention_mask[row].bool()]
        real_left = left.logits[row][left.attention_mask[row].bool()]
        torch.testing.assert_close(real_left, real_right, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(left.loss, right.loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("order", ["video_first", "text_first"])
def test_pretraining_inputs_cover_all_tokens_in_both_orders(model, media, order):
    config = model.config
    text = pretraining_text("caption", "<video>", order)
    video_first = text.startswith("<video>")
    caption = [70, 71, 72, 2]
    row = (
        [1, config.video_token_id, *caption] if video_first else [1, *caption[:-1], config.video_token_id, 2]
    )
    input_ids = torch.tensor([row, [1, 80, 81, 82, 83, 2] + [0] * (len(row) - 6)])
    attention_mask = (torch.arange(input_ids.shape[1]) < torch.tensor([[len(row)], [6]])).long()
    video = {key: media[key] for key in ("pixel_values_videos", "motion_vectors", "clips_per_video")}
    batch = model.prepare_pretraining_inputs(input_ids, attention_mask, **video)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    real = batch["attention_mask"][0].bool()
    assert torch.equal(labels[real], ids[real]) and (labels[~real] == IGNORE_INDEX).all()
    assert (ids < config.vocab_size).all()
    assert int(model.vocabulary_mapping.is_motion(ids).sum()) == 2 * 135
    assert int((ids == config.image_start_token_id).sum()) == 2
    first_visual = int((ids == config.image_start_token_id).nonzero()[0])
    first_caption = int((ids == 70).nonzero()[0])
    assert (first_visual < first_caption) == video_first
    output = model(**batch)
    logits = output.logits[:, :-1].reshape(-1, config.vocab_size)
    expected = torch.nn.functional.cross_entropy(logits, batch["labels"][:, 1:].reshape(-1))
    torch.testing.assert_close(output.loss, expected)


def test_tiny_model_trains_on_a_fixed_batch(media):
    torch.manual_seed(0)
    model = VideoLaVITForCausalLM(VideoLaVITConfig.tiny()).train()
    config = model.config
    input_ids = torch.tensor([[1, config.video_token_id, 90, 91, 92, 2]])
    video = {key: media[key] for key in ("pixel_values_videos", "motion_vectors", "clips_per_video")}
    batch = model.prepare_pretraining_inputs(input_ids, **video)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8 and losses == sorted(losses, reverse=True), losses
    # understanding mode back-propagates into the keyframe projection
    model.zero_grad()
    input_ids, attention_mask, labels = mixed_batch(config, "right")
    model(
        input_ids=input_ids[:2], attention_mask=attention_mask[:2], labels=labels[:2], **media
    ).loss.backward()
    assert model.visual_tokenizer.vit_proj.weight.grad.abs().sum() > 0
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_generate_with_cache_equals_without_cache(model, media):
    input_ids, attention_mask, _ = mixed_batch(model.config, "left")
    runs = [
        model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=5,
            do_sample=False,
            use_cache=use_cache,
            **media,
        )
        for use_cache in (True, False)
    ]
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][:, : input_ids.shape[1]], input_ids)
    new_tokens = runs[0][:, input_ids.shape[1] :]
    assert new_tokens.shape == (3, 5)
    assert (new_tokens < model.config.text_vocab_size).all()


def check_clip_structure(config, sequence, prompt_length, keyframes, motion):
    """`sequence[prompt_length:]` must be one clip per entry of `keyframes`."""
    position = prompt_length
    for codes, motion_codes in zip(keyframes, motion, strict=True):
        expected = torch.cat(
            [
                torch.tensor([config.image_start_token_id]),
                codes + config.visual_token_offset,
                torch.tensor([config.image_end_token_id, config.motion_start_token_id]),
                motion_codes + config.motion_token_offset,
                torch.tensor([config.motion_end_token_id]),
            ]
        )
        assert torch.equal(sequence[position : position + len(expected)], expected)
        position += len(expected)
    assert position == len(sequence)


def test_generate_video_tokens_two_clips_with_guidance(model):
    config = model.config
    input_ids = torch.tensor([[0, 0, 30, 31], [40, 41, 42, 43]])
    attention_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    output = model.generate_video_tokens(
        input_ids=input_ids,
        attention_mask=attention_mask,
        num_clips=2,
        min_keyframe_tokens=2,
        max_keyframe_tokens=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert output.motion_ids.shape == (2, 2, config.motion_tokens_per_clip)
    assert output.motion_ids.min() >= 0 and output.motion_ids.max() < config.motion_codebook_size
    for row, prompt_length in enumerate((2, 4)):
        assert len(output.keyframe_ids[row]) == 2
        for codes in output.keyframe_ids[row]:
            assert 2 <= len(codes) <= 4
            assert codes.min() >= 0 and codes.max() < config.visual_codebook_size
        assert torch.equal(output.sequences[row][:prompt_length], input_ids[row][attention_mask[row].bool()])
        check_clip_structure(
            config, output.sequences[row], prompt_length, output.keyframe_ids[row], output.motion_ids[row]
        )


def test_image_to_video_is_seeded_and_keeps_the_keyframe(model, media):
    config = model.config
    images = torch.cat([media["pixel_values"], media["pixel_values_videos"][:1]])
    kwargs = {
        "input_ids": torch.tensor([[30, 31], [32, 33]]),
        "pixel_values": images,
        "negative_prompt_ids": torch.tensor([[50]]),
        "top_k": 20,
    }
    first = model.generate_video_tokens(**kwargs, generator=torch.Generator().manual_seed(3))
    again = model.generate_video_tokens(**kwargs, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.motion_ids, again.motion_ids)
    keyframes = model.visual_tokenizer.tokenize(images)
    for row in range(2):
        assert torch.equal(first.keyframe_ids[row][0], keyframes[row])
        check_clip_structure(config, first.sequences[row], 2, first.keyframe_ids[row], first.motion_ids[row])
    greedy = model.generate_video_tokens(**kwargs, do_sample=False, motion_guidance_scale=1.0)
    assert greedy.motion_ids.shape == (2, 1, config.motion_tokens_per_clip)
    assert not torch.equal(greedy.motion_ids, first.motion_ids)


def test_a_flat_black_image_gets_one_visual_token_for_understanding_and_generation(model):
    from PIL import Image

    from transformers_vlavit.image_processing_video_lavit import VideoLaVITImageProcessor

    black = VideoLaVITImageProcessor()(Image.new("RGB", (64, 48)), return_tensors="pt")["pixel_values"]
    model = copy.deepcopy(model)
    tokenizer = model.visual_tokenizer
    with torch.no_grad():
        # a random tiny predictor is near 50/50 on every patch: shift it to drop them all, scores still apart
        tokenizer.token_predictor.classifier.bias.add_(torch.tensor([-50.0, 50.0]))
        keep_logprobs = tokenizer.token_predictor(tokenizer.vision_model(black))
    assert (keep_logprobs.argmax(dim=-1) == 1).all()  # the predictor drops every patch of it
    (features,) = model.get_image_features(black)
    assert features.shape == (1, model.config.text_config.hidden_size)
    video = model.generate_video_tokens(
        input_ids=torch.tensor([[30, 31]]), pixel_values=black, top_k=20, generator=torch.Generator().manual_seed(0)
    )
    assert video.keyframe_ids[0][0].numel() == 1
    check_clip_structure(model.config, video.sequences[0], 2, video.keyframe_ids[0], video.motion_ids[0])


def test_keyframe_minimum_comes_from_the_argument_then_the_generation_config_then_20(model, tmp_path):
    config = model.config
    image_end = config.image_end_token_id
    model = copy.deepcopy(model)
    # [image_end] far above every other logit: each keyframe closes as soon as the minimum allows it
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits.index_add(
        -1, torch.tensor([image_end]), torch.full((*logits.shape[:-1], 1), 1e4)
    ))

    def keyframe_lengths(**kwargs) -> list[int]:
        output = model.generate_video_tokens(
            input_ids=torch.tensor([[30, 31], [40, 41]]), num_clips=2, do_sample=False,
            max_keyframe_tokens=30, keyframe_guidance_scale=1.0, motion_guidance_scale=1.0, **kwargs,
        )
        return sorted({len(codes) for row in output.keyframe_ids for codes in row})

    assert keyframe_lengths() == [20]  # nothing set: the reference's rule
    # a generation config of its own (one derived from the model config drops unknown keys when loaded)
    text = config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id,
        min_keyframe_tokens=3,
    )
    assert keyframe_lengths() == [3]
    assert keyframe_lengths(min_keyframe_tokens=5) == [5]  # the argument wins
    assert keyframe_lengths(min_keyframe_tokens=0) == [0]
    model.save_pretrained(tmp_path)
    reloaded = VideoLaVITForCausalLM.from_pretrained(tmp_path)
    assert reloaded.generation_config.min_keyframe_tokens == 3
    for bad in (-1, 2.5, True):
        model.generation_config.min_keyframe_tokens = bad
        with pytest.raises(VideoLaVITInputError, match="generation_config.min_keyframe_tokens"):
            keyframe_lengths()
    with pytest.raises(VideoLaVITInputError, match="^min_keyframe_tokens"):
        keyframe_lengths(min_keyframe_tokens=-2)
