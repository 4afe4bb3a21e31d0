"""`generate_video_tokens` against a step-by-step re-implementation of the original's guided loop.

The original (`VideoLaVIT/models/video_lavit_for_generation.py`) runs each phase through transformers'
`generate` with `guidance_scale`, i.e. the unbatched classifier-free guidance of transformers 4.33: at every
step the scores are `g * (log_softmax(cond) - log_softmax(uncond)) + log_softmax(uncond)`, where the
unconditional branch is the last prompt token (the phase's start token) or, with a negative prompt, the
negative prompt ids as they are, followed by the tokens generated so far in the phase. Then the suppressed
ids (and `[image_end]` before the minimum length) go to `-inf`, then temperature, top-k and top-p, then one
multinomial draw (or the arg-max). Text-to-video chooses its motion greedily; only image-to-video samples
its motion.

The reference below runs every sample and every branch as its own unpadded batch-of-one sequence, fed
incrementally through the backbone's own cache, so it shares nothing with the implementation (which runs the
conditional and unconditional rows of all samples as one left-padded batch) but the model's weights. Two documented
differences are built into it, as in the implementation: only visual codes and `[image_end]` are allowed in
the keyframe phase (the original also leaves ids 0-2 and `[image_start]`), and the motion phase takes
exactly 135 codes (the original samples until `[motion_end]`, then pads or cuts to 135).
"""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache

from transformers_vlavit.configuration_video_lavit import VideoLaVITConfig
from transformers_vlavit.modeling_video_lavit import VideoLaVITForCausalLM, VideoLaVITInputError

MIN_KEYFRAME, MAX_KEYFRAME = 3, 7


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = VideoLaVITForCausalLM(VideoLaVITConfig.tiny()).eval()
    config = model.config
    with torch.no_grad():
        # make [image_end] a likely token, so that keyframes end both by [image_end] and by length
        weight = model.lm_head.weight
        weight[config.image_end_token_id] = 4.0 * weight[config.visual_token_offset + 3]
    return model


def left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(map(len, rows))
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for index, row in enumerate(rows):
        ids[index, length - len(row) :] = torch.tensor(row)
        mask[index, length - len(row) :] = 1
    return ids, mask


class Sequence:
    """One sample's token sequence of one branch, batch of one, no padding; only new tokens are fed."""

    def __init__(self, model):
        self.model = model
        self.fed: list[int] = []
        self.cache = DynamicCache(config=model.config.text_config)

    def next_token_logits(self, ids: list[int]) -> torch.Tensor:
        """Logits `[vocab]` after `ids`, a continuation of the ids seen so far."""
        assert ids[: len(self.fed)] == self.fed and len(ids) > len(self.fed)
        new = torch.tensor([ids[len(self.fed) :]])
        hidden = self.model.model(input_ids=new, cache=self.cache, use_cache=True).last_hidden_state
        self.fed = list(ids)
        return self.model.lm_head(hidden[0, -1]).float()


def warp(scores: torch.Tensor, temperature: float, top_k: int | None, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p (the order of transformers 4.33's sampling warpers)."""
    scores = scores / temperature
    if top_k:
        kth = torch.topk(scores, min(top_k, scores.shape[-1])).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p < 1.0:
        probabilities, order = scores.softmax(-1).sort(-1, descending=True)
        mass_before = probabilities.cumsum(-1) - probabilities
        remove_sorted = mass_before >= top_p
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        scores = scores.masked_fill(remove, -float("inf"))
    return scores


def reference_phase(
    model,
    conditional_runs: list[Sequence],
    conditional: list[list[int]],
    unconditional: list[list[int]],
    guidance_scale: float,
    allowed: torch.Tensor,
    max_new_tokens: int,
    stop_id: int | None,
    min_new_tokens: int,
    do_sample: bool,
    sampling: dict,
) -> list[list[int]]:
    """One phase of the original's guided generation for every sample (stop token kept when produced)."""
    rows = len(conditional)
    unconditional_runs = [Sequence(model) for _ in range(rows)]
    generated = [[] for _ in range(rows)]
    finished = [False] * rows
    vocab = allowed.numel()
    for _ in range(max_new_tokens):
        step_scores = []
        for row in range(rows):
            if finished[row]:
                step_scores.append(torch.zeros(vocab))  # drawn for, then ignored
                continue
            scores = (
                conditional_runs[row].next_token_logits(conditional[row] + generated[row]).log_softmax(-1)
            )
            if guidance_scale != 1.0:
                uncond = unconditional_runs[row].next_token_logits(unconditional[row] + generated[row])
                uncond = uncond.log_softmax(-1)
                scores = guidance_scale * (scores - uncond) + uncond
            scores = scores.masked_fill(~allowed, -float("inf"))
            if stop_id is not None and len(generated[row]) < min_new_tokens:
                scores[stop_id] = -float("inf")
            step_scores.append(scores)
        scores = torch.stack(step_scores)
        if do_sample:
            probabilities = warp(scores, **sampling["warpers"]).softmax(-1)
            tokens = torch.multinomial(probabilities, 1, generator=sampling["generator"])[:, 0]
        else:
            tokens = scores.argmax(-1)
        for row in range(rows):
            if not finished[row]:
                generated[row].append(int(tokens[row]))
                finished[row] = stop_id is not None and int(tokens[row]) == stop_id
        if all(finished):
            break
    return generated


def reference_video_tokens(
    model,
    prompts: list[list[int]],
    num_clips: int,
    negative: list[list[int]] | None = None,
    given_keyframes: list[list[int]] | None = None,
    keyframe_guidance_scale: float = 4.0,
    motion_guidance_scale: float = 7.0,
    do_sample: bool = False,
    motion_do_sample: bool | None = None,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = 200,
    top_p: float = 1.0,
):
    """Clip by clip, the original's two phases; returns (keyframe codes, motion codes, sequences)."""
    config = model.config
    vocab = config.vocab_size
    visual = torch.zeros(vocab, dtype=torch.bool)
    visual[config.visual_token_offset : config.visual_token_offset + config.visual_codebook_size] = True
    visual[config.image_end_token_id] = True
    motion = torch.zeros(vocab, dtype=torch.bool)
    motion[config.motion_token_offset : config.motion_token_offset + config.motion_codebook_size] = True
    sampling = {
        "generator": generator,
        "warpers": {"temperature": temperature, "top_k": top_k, "top_p": top_p},
    }
    sequences = [list(prompt) for prompt in prompts]
    runs = [Sequence(model) for _ in prompts]
    keyframes = [[] for _ in prompts]
    motions = [[] for _ in prompts]
    for clip in range(num_clips):
        given = clip == 0 and given_keyframes is not None
        if given:
            for row, codes in enumerate(given_keyframes):
                vocab_codes = [code + config.visual_token_offset for code in codes]
                sequences[row] += [config.image_start_token_id, *vocab_codes, config.image_end_token_id]
                keyframes[row].append(list(codes))
        else:
            start = config.image_start_token_id
            for sequence in sequences:
                sequence.append(start)
            unconditional = negative if negative is not None else [[start]] * len(prompts)
            new = reference_phase(
                model,
                runs,
                sequences,
                unconditional,
                keyframe_guidance_scale,
                visual,
                MAX_KEYFRAME,
                config.image_end_token_id,
                MIN_KEYFRAME,
                do_sample,
                sampling,
            )
            for row, tokens in enumerate(new):
                codes = [token for token in tokens if token != config.image_end_token_id]
                keyframes[row].append([code - config.visual_token_offset for code in codes])
                sequences[row] += [*codes, config.image_end_token_id]
        start = config.motion_start_token_id
        for sequence in sequences:
            sequence.append(start)
        unconditional = negative if negative is not None else [[start]] * len(prompts)
        sample_motion = (do_sample and given) if motion_do_sample is None else motion_do_sample
        new = reference_phase(
            model,
            runs,
            sequences,
            unconditional,
            motion_guidance_scale,
            motion,
            config.motion_tokens_per_clip,
            None,
            0,
            sample_motion,
            sampling,
        )
        for row, tokens in enumerate(new):
            motions[row].append([token - config.motion_token_offset for token in tokens])
            sequences[row] += [*tokens, config.motion_end_token_id]
    return keyframes, motions, sequences


def assert_same_tokens(output, reference):
    keyframes, motions, sequences = reference
    assert [[codes.tolist() for codes in row] for row in output.keyframe_ids] == keyframes
    assert output.motion_ids.tolist() == motions
    assert [sequence.tolist() for sequence in output.sequences] == sequences


PROMPTS = [[30, 31, 32], [40, 41, 42, 43, 44, 45]]


def run(model, **kwargs):
    input_ids, attention_mask = left_padded(PROMPTS)
    return model.generate_video_tokens(
        input_ids=input_ids,
        attention_mask=attention_mask,
        min_keyframe_tokens=MIN_KEYFRAME,
        max_keyframe_tokens=MAX_KEYFRAME,
        **kwargs,
    )


def test_greedy_guided_loop_matches_the_reference_over_clips(model):
    output = run(model, num_clips=2, do_sample=False)
    reference = reference_video_tokens(model, PROMPTS, num_clips=2)
    assert_same_tokens(output, reference)
    # both ends of a keyframe are exercised: closed by [image_end], and closed at the length limit
    lengths = {len(codes) for row in reference[0] for codes in row}
    assert MAX_KEYFRAME in lengths and min(lengths) < MAX_KEYFRAME


def test_negative_prompt_is_the_unconditional_branch_as_it_is(model):
    negative = [[50, 51], [60]]
    ids, mask = left_padded(negative)
    output = run(
        model, num_clips=2, do_sample=False, negative_prompt_ids=ids, negative_prompt_attention_mask=mask
    )
    assert_same_tokens(output, reference_video_tokens(model, PROMPTS, num_clips=2, negative=negative))
    shared = run(model, num_clips=1, do_sample=False, negative_prompt_ids=torch.tensor([[70, 71, 72]]))
    assert_same_tokens(
        shared, reference_video_tokens(model, PROMPTS, num_clips=1, negative=[[70, 71, 72]] * 2)
    )


def test_guidance_scales_of_one_run_without_an_unconditional_branch(model):
    output = run(model, num_clips=1, do_sample=False, keyframe_guidance_scale=1.0, motion_guidance_scale=1.0)
    reference = reference_video_tokens(
        model, PROMPTS, num_clips=1, keyframe_guidance_scale=1.0, motion_guidance_scale=1.0
    )
    assert_same_tokens(output, reference)


def test_text_to_video_samples_keyframes_and_takes_motion_greedily(model):
    options = {"temperature": 0.8, "top_k": 50, "top_p": 0.9}
    output = run(model, num_clips=2, do_sample=True, generator=torch.Generator().manual_seed(5), **options)
    reference = reference_video_tokens(
        model, PROMPTS, num_clips=2, do_sample=True, generator=torch.Generator().manual_seed(5), **options
    )
    assert_same_tokens(output, reference)
    greedy_motion = reference_video_tokens(model, PROMPTS, num_clips=2)
    assert reference[1] != greedy_motion[1]  # keyframes were sampled, so the greedy motion follows them


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 0.6, "top_k": 30, "top_p": 0.8},
        {"temperature": 1.7, "top_k": 8, "top_p": 1.0},
        {"temperature": 2.5, "top_k": None, "top_p": 0.5},
    ],
)
def test_sampling_applies_temperature_then_top_k_then_top_p(model, options):
    output = run(
        model,
        num_clips=1,
        do_sample=True,
        motion_do_sample=True,
        generator=torch.Generator().manual_seed(1),
        negative_prompt_ids=torch.tensor([[80, 81]]),
        **options,
    )
    reference = reference_video_tokens(
        model,
        PROMPTS,
        num_clips=1,
        do_sample=True,
        motion_do_sample=True,
        generator=torch.Generator().manual_seed(1),
        negative=[[80, 81]] * 2,
        **options,
    )
    assert_same_tokens(output, reference)


def test_image_to_video_samples_the_motion_of_the_given_keyframe(model):
    generator = torch.Generator().manual_seed(2)
    pixel_values = torch.randn(2, 3, 224, 224, generator=generator)
    given = [codes.tolist() for codes in model.visual_tokenizer.tokenize(pixel_values)]
    output = run(model, pixel_values=pixel_values, num_clips=2, generator=torch.Generator().manual_seed(4))
    reference = reference_video_tokens(
        model,
        PROMPTS,
        num_clips=2,
        given_keyframes=given,
        do_sample=True,
        generator=torch.Generator().manual_seed(4),
    )
    assert_same_tokens(output, reference)
    # the first clip's motion is sampled, not the arg-max the text-to-video phase would take
    greedy = reference_video_tokens(
        model, PROMPTS, num_clips=1, given_keyframes=given, motion_do_sample=False
    )
    assert reference[1][0][0] != greedy[1][0][0]


def test_motion_is_always_exactly_135_codes_closed_by_motion_end(model):
    config = model.config
    for do_sample in (False, True):
        output = run(
            model,
            num_clips=2,
            do_sample=do_sample,
            motion_do_sample=do_sample,
            generator=torch.Generator().manual_seed(0),
        )
        assert output.motion_ids.shape == (2, 2, config.motion_tokens_per_clip) == (2, 2, 135)
        for sequence in output.sequences:
            starts = (sequence == config.motion_start_token_id).nonzero()[:, 0]
            ends = (sequence == config.motion_end_token_id).nonzero()[:, 0]
            assert (ends - starts).tolist() == [136, 136]
            image_ends = (sequence == config.image_end_token_id).nonzero()[:, 0]
            assert (starts - image_ends).tolist() == [1, 1]  # every keyframe is closed, also when cut


def test_empty_negative_prompt_row_is_rejected(model):
    with pytest.raises(VideoLaVITInputError, match="negative_prompt_ids has a row without real tokens"):
        run(
            model,
            negative_prompt_ids=torch.tensor([[0, 5]]),
            negative_prompt_attention_mask=torch.tensor([[0, 0]]),
        )
