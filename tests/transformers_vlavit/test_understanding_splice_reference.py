"""Understanding inputs spliced as the original does it, checked against a splice built by hand.

Per image: `[image_start]`, the kept tokens' `vit_proj` features, `[image_end]`; per clip of a video, the
same for its keyframe followed by `[motion_start]`, the embeddings of its 135 motion-code ids and
`[motion_end]`; everything in placeholder order and, inside a video, in clip order. The reference below
builds each row's embedding sequence by hand from the two tokenizers and the embedding table, runs each
row alone and unpadded, and must give the model's embeddings (exactly) and logits for a mixed, left-padded
batch.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def media():
    """One image and two videos (2 clips and 1 clip) with random keyframes and motion."""
    generator = torch.Generator().manual_seed(7)
    return {
        "pixel_values": torch.randn(1, 3, 224, 224, generator=generator),
        "pixel_values_videos": torch.randn(3, 3, 224, 224, generator=generator),
        "motion_vectors": torch.randn(3, 2, 24, 20, 36, generator=generator),
        "clips_per_video": torch.tensor([2, 1]),
    }


def batch(config):
    """Rows: video + text; text + image + text + video + text; text only. Left padded."""
    image, video = config.image_token_id, config.video_token_id
    rows = [[1, video, 40, 41], [1, 50, image, 51, video, 52], [1, 60, 61]]
    length = max(map(len, rows))
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for index, row in enumerate(rows):
        input_ids[index, length - len(row) :] = torch.tensor(row)
        attention_mask[index, length - len(row) :] = 1
    return rows, input_ids, attention_mask


def hand_spliced_rows(model, rows, media) -> list[torch.Tensor]:
    """Each row's embeddings `[length_i, hidden]`, built position by position."""
    config = model.config
    embed = model.get_input_embeddings().weight

    def token(token_id):
        return embed[token_id][None]

    image_features = model.visual_tokenizer.encode_features(media["pixel_values"])
    keyframe_features = model.visual_tokenizer.encode_features(media["pixel_values_videos"])
    motion_codes = model.motion_tokenizer.encode(media["motion_vectors"])
    clips = iter(range(len(keyframe_features)))
    videos = iter(media["clips_per_video"].tolist())
    images = iter(image_features)
    spliced = []
    for row in rows:
        pieces = []
        for token_id in row:
            if token_id == config.image_token_id:
                pieces += [token(config.image_start_token_id), next(images), token(config.image_end_token_id)]
            elif token_id == config.video_token_id:
                for _ in range(next(videos)):
                    clip = next(clips)
                    pieces += [
                        token(config.image_start_token_id),
                        keyframe_features[clip],
                        token(config.image_end_token_id),
                        token(config.motion_start_token_id),
                        embed[motion_codes[clip] + config.motion_token_offset],
                        token(config.motion_end_token_id),
                    ]
            else:
                pieces.append(token(token_id))
        spliced.append(torch.cat(pieces))
    return spliced


def row_logits(model, embeddings: torch.Tensor) -> torch.Tensor:
    """Logits `[length, vocab]` of one unpadded row of embeddings."""
    return model.lm_head(model.model(inputs_embeds=embeddings[None]).last_hidden_state[0])


@torch.no_grad()
def test_spliced_embeddings_and_logits_equal_a_splice_by_hand(model, media):
    rows, input_ids, attention_mask = batch(model.config)
    seen = {}
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    try:
        output = model(input_ids=input_ids, attention_mask=attention_mask, **media)
    finally:
        hook.remove()
    expected = hand_spliced_rows(model, rows, media)
    mask = output.attention_mask.bool()
    assert mask.sum(-1).tolist() == [len(row) for row in expected]
    assert (~mask[:, 0]).any() and mask[:, -1].all()  # still left padded
    for index, row in enumerate(expected):
        torch.testing.assert_close(seen["inputs_embeds"][index][mask[index]], row, rtol=0, atol=0)
        torch.testing.assert_close(
            output.logits[index][mask[index]], row_logits(model, row), rtol=1e-5, atol=1e-5
        )


@torch.no_grad()
def test_generate_continues_the_hand_spliced_rows(model, media):
    rows, input_ids, attention_mask = batch(model.config)
    new_tokens = 3
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=new_tokens,
        do_sample=False,
        min_new_tokens=new_tokens,
        **media,
    )
    embed = model.get_input_embeddings().weight
    text_vocab_size = model.config.text_vocab_size
    for index, row in enumerate(hand_spliced_rows(model, rows, media)):
        expected = []
        for _ in range(new_tokens):
            logits = row_logits(model, row)[-1, :text_vocab_size]  # answers are text only
            expected.append(int(logits.argmax()))
            row = torch.cat([row, embed[expected[-1]][None]])
        assert output[index, input_ids.shape[1] :].tolist() == expected
