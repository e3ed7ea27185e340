"""Exactness of the model path (issues 2 and 5), on the tiny random model in float32.

* Compression off, and compression on at rho = 0: generated tokens and prefill logits equal stock
  ``generate(..., use_audio_in_video=True)``.
* Compression on: our prefill and decoding equal the stock language model run by hand on the pruned
  sequence (pruned embeddings, original positions, no cache), and the KV cache holds the kept length.
* Wrong positions would be caught: the tiny model is position-sensitive.
"""

from __future__ import annotations

import pytest
import torch

from omnizip_cli.compression import OmniZipConfig
from omnizip_cli.decoding import GenerationOptions, generate
from omnizip_cli.inputs import build_inputs
from omnizip_cli.pipeline import (
    PrefillInputs,
    compressed_prefill,
    count_tokens,
    encode_prompt,
    plan_compression,
    uncompressed_prefill,
)
from omnizip_cli.runner import answer
from omnizip_cli.stats import StageTimer

from tests.synthetic import synthetic_media

NEW_TOKENS = 12
OFF = OmniZipConfig(rho_audio=0.0, rho_video=0.0)


def stock_generate(model, inputs, new_tokens: int = NEW_TOKENS):
    out = model.generate(
        **inputs.generate_kwargs(),
        max_new_tokens=new_tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    prompt_length = inputs.input_ids.shape[1]
    return out.sequences[0, prompt_length:].tolist(), out.logits[0][0]


@pytest.fixture(scope="module")
def av_inputs(tiny_model):
    return build_inputs(tiny_model.processor, synthetic_media(6.0, 6.0), "What is said?")


def test_uncompressed_path_equals_stock_generate_bitwise(tiny_model, av_inputs) -> None:
    model = tiny_model.model
    stock_tokens, stock_logits = stock_generate(model, av_inputs)
    encoded = encode_prompt(model, av_inputs)
    ours = generate(
        model,
        uncompressed_prefill(encoded),
        GenerationOptions(max_new_tokens=NEW_TOKENS),
        prompt_ids=encoded.input_ids,
        head_on_all_positions=True,
    )
    assert ours.token_ids == stock_tokens
    assert torch.equal(ours.prefill_logits, stock_logits)


def test_default_head_on_last_position_gives_the_same_tokens(tiny_model, av_inputs) -> None:
    model = tiny_model.model
    stock_tokens, stock_logits = stock_generate(model, av_inputs)
    encoded = encode_prompt(model, av_inputs)
    ours = generate(model, uncompressed_prefill(encoded), GenerationOptions(max_new_tokens=NEW_TOKENS))
    assert ours.token_ids == stock_tokens
    # One-row vs many-row matrix products may differ in the last bit only.
    torch.testing.assert_close(ours.prefill_logits, stock_logits, rtol=0, atol=1e-5)


def test_ask_runner_without_compression_equals_stock_generate(tiny_model, av_inputs) -> None:
    stock_tokens, _ = stock_generate(tiny_model.model, av_inputs)
    result = answer(tiny_model, av_inputs, None, GenerationOptions(max_new_tokens=NEW_TOKENS), timer=StageTimer())
    assert result.token_ids == stock_tokens
    assert result.answer == tiny_model.processor.tokenizer.decode(stock_tokens, skip_special_tokens=True)


def test_compression_at_rho_zero_equals_stock_generate_bitwise(tiny_model, av_inputs) -> None:
    stock_tokens, stock_logits = stock_generate(tiny_model.model, av_inputs)
    result = answer(
        tiny_model,
        av_inputs,
        OFF,
        GenerationOptions(max_new_tokens=NEW_TOKENS),
        timer=StageTimer(),
        head_on_all_positions=True,
    )
    assert result.prefill_length == result.prompt_length
    assert result.token_ids == stock_tokens
    assert torch.equal(result.generation.prefill_logits, stock_logits)


def manual_greedy(model, prefill: PrefillInputs, new_tokens: int) -> tuple[list[int], torch.Tensor]:
    """The stock language model by hand: the whole (pruned) sequence each step, no KV cache at all."""
    language_model = model.model.language_model
    embeds, positions = prefill.embeds, prefill.position_ids
    tokens: list[int] = []
    first_logits = None
    for step in range(new_tokens):
        hidden = language_model(inputs_embeds=embeds, position_ids=positions, use_cache=False).last_hidden_state
        logits = model.lm_head(hidden)[0, -1]
        first_logits = logits if first_logits is None else first_logits
        token = int(torch.argmax(logits))
        tokens.append(token)
        token_embed = language_model.embed_tokens(torch.tensor([[token]]))
        embeds = torch.cat([embeds, token_embed], dim=1)
        next_position = torch.full((3, 1, 1), prefill.next_position + step, dtype=torch.long)
        positions = torch.cat([positions, next_position], dim=2)
    return tokens, first_logits


@pytest.mark.parametrize("preset", [OmniZipConfig(rho_audio=0.3, rho_video=0.6), OmniZipConfig(rho_audio=0.4, rho_video=0.7)])
def test_compressed_prefill_equals_stock_model_on_the_pruned_sequence(tiny_model, av_inputs, preset) -> None:
    model = tiny_model.model
    encoded = encode_prompt(model, av_inputs, record_saliency=True)
    plan = plan_compression(model, encoded, preset)
    pruned = compressed_prefill(encoded, plan)
    assert pruned.length < encoded.length
    assert pruned.length == int(plan.keep.sum())
    # positions are the original ones of the kept tokens, and decoding continues after the largest one
    assert torch.equal(pruned.position_ids, encoded.position_ids[:, :, plan.keep])
    assert pruned.next_position == int(encoded.position_ids.max()) + 1

    ours = generate(model, pruned, GenerationOptions(max_new_tokens=NEW_TOKENS), head_on_all_positions=True)
    by_hand_tokens, by_hand_logits = manual_greedy(model, pruned, NEW_TOKENS)
    assert ours.token_ids[: len(by_hand_tokens)] == by_hand_tokens[: len(ours.token_ids)]
    assert torch.equal(ours.prefill_logits, by_hand_logits)
    assert ours.cache_length == pruned.length  # the KV cache holds exactly the kept tokens

    counts = count_tokens(model, encoded, plan.keep)
    assert counts.text.after == counts.text.before  # text and special tokens are never dropped
    assert counts.total.after == pruned.length


def test_wrong_positions_would_be_caught(tiny_model, av_inputs) -> None:
    model = tiny_model.model
    encoded = encode_prompt(model, av_inputs, record_saliency=True)
    pruned = compressed_prefill(encoded, plan_compression(model, encoded, OmniZipConfig()))
    contiguous = torch.arange(pruned.length).view(1, 1, -1).expand(3, 1, -1)
    wrong = PrefillInputs(pruned.embeds, pruned.attention_mask, contiguous, pruned.length)
    right_result = generate(model, pruned, GenerationOptions(max_new_tokens=NEW_TOKENS))
    wrong_result = generate(model, wrong, GenerationOptions(max_new_tokens=NEW_TOKENS))
    assert (right_result.prefill_logits - wrong_result.prefill_logits).abs().max() > 0.5
    assert right_result.token_ids != wrong_result.token_ids


@pytest.mark.parametrize(
    ("video_seconds", "audio_seconds", "kind"),
    [(6.0, None, "video"), (None, 5.0, "audio"), (4.0, 9.0, "video+audio"), (8.0, 3.0, "video+audio")],
)
def test_every_input_kind_answers_through_the_compressed_path(
    tiny_model, video_seconds, audio_seconds, kind
) -> None:
    inputs = build_inputs(tiny_model.processor, synthetic_media(video_seconds, audio_seconds), "Describe it.")
    assert inputs.kind == kind
    result = answer(tiny_model, inputs, OmniZipConfig(), GenerationOptions(max_new_tokens=4), timer=StageTimer())
    assert 1 <= len(result.token_ids) <= 4
    assert result.prefill_length < result.prompt_length
    tokens = result.tokens
    assert tokens.text.after == tokens.text.before
    if video_seconds is not None:
        assert 0 < tokens.video.after < tokens.video.before
    if audio_seconds is not None:
        assert 0 < tokens.audio.after < tokens.audio.before
    assert result.generation.cache_length == result.prefill_length


def test_plan_does_not_depend_on_the_question(tiny_model) -> None:
    media = synthetic_media(6.0, 6.0, seed=3)
    plans = []
    for question in ("What is said?", "How many people are there, and what colour is the car?"):
        inputs = build_inputs(tiny_model.processor, media, question)
        encoded = encode_prompt(tiny_model.model, inputs, record_saliency=True)
        plan = plan_compression(tiny_model.model, encoded, OmniZipConfig())
        ids = encoded.input_ids[0]
        media_mask = (ids == tiny_model.model.config.video_token_id) | (ids == tiny_model.model.config.audio_token_id)
        plans.append(plan.keep[media_mask])
    assert torch.equal(plans[0], plans[1])
