"""Exactness of the model path on the tiny random model in float32 (issues 2, 5, 12 and 13).

* Compression off (and on at rho = 0): greedy tokens and prefill logits equal stock
  ``generate(..., use_audio_in_video=True)``, below the Session and through it (the media prefix
  prefilled once and reused by several questions, and a two-turn conversation).
* Compression on: tokens equal the stock language model run by hand on the pruned sequence (pruned
  embeddings, original positions, no cache), for several questions and a conversation.
* Positions after the prompt follow stock: the first answer token sits at the last prompt token's
  position + 1, also when the audio ends before the video inside the last 2-s chunk (there the last
  prompt position is below the largest one).
* Wrong positions would be caught: the tiny model is position-sensitive.
"""

from __future__ import annotations

import pytest
import torch

from omnizip_cli.compression import OmniZipConfig
from omnizip_cli.generation import GenerationOptions, Session
from omnizip_cli.generation.opening import encode_prepared
from omnizip_cli.generation.stream import generate
from omnizip_cli.measure import StageTimer
from omnizip_cli.models.base import PrefillInputs
from tests.helpers.model_paths import full_prompt, manual_greedy, session_sequence, stock_generate
from tests.helpers.synthetic import synthetic_media

NEW_TOKENS = 12
OFF = OmniZipConfig(rho_audio=0.0, rho_video=0.0)
QUESTIONS = ("What is said?", "How many people are there, and what colour is the car?", "Describe it.")
GREEDY = GenerationOptions(max_new_tokens=NEW_TOKENS)
# The decoders that run here: the eager loop and the static-cache step (its CUDA graph needs a GPU).
DECODERS = ("eager", "fast")


@pytest.fixture(scope="module")
def av_media():
    return synthetic_media(6.0, 6.0)


@pytest.fixture(scope="module")
def av_prompt(tiny_model, av_media):
    return full_prompt(tiny_model, av_media, QUESTIONS[0])


def _encode(tiny_model, prepared, record_saliency=False):
    return tiny_model.adapter.encode(tiny_model.model, prepared, record_saliency=record_saliency, timer=StageTimer())


def test_uncompressed_prefill_equals_stock_generate_bitwise(tiny_model, av_prompt) -> None:
    stock_tokens, stock_logits = stock_generate(tiny_model, av_prompt, NEW_TOKENS)
    encoded = _encode(tiny_model, av_prompt)
    ours = generate(tiny_model.adapter.text_model(tiny_model.model), tiny_model.adapter.prefill_inputs(encoded, None),
                    GREEDY, prompt_ids=encoded.input_ids, head_on_all_positions=True)
    assert ours.token_ids == stock_tokens
    assert torch.equal(ours.prefill_logits, stock_logits)


def test_default_head_on_last_position_gives_the_same_tokens(tiny_model, av_prompt) -> None:
    stock_tokens, stock_logits = stock_generate(tiny_model, av_prompt, NEW_TOKENS)
    encoded = _encode(tiny_model, av_prompt)
    ours = generate(tiny_model.adapter.text_model(tiny_model.model), tiny_model.adapter.prefill_inputs(encoded, None),
                    GREEDY)
    assert ours.token_ids == stock_tokens
    # One-row vs many-row matrix products may differ in the last bit only.
    torch.testing.assert_close(ours.prefill_logits, stock_logits, rtol=0, atol=1e-5)


def test_prefix_and_question_ids_equal_the_stock_processors_prompt(tiny_model, av_media) -> None:
    session = Session.open(tiny_model, av_media, compression=None)
    for question in QUESTIONS:
        stock = full_prompt(tiny_model, av_media, question).input_ids[0].tolist()
        assert session.encoded.input_ids[0].tolist() + session.question_ids(question) == stock


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("compression", [None, OFF], ids=["off", "rho0"])
def test_session_questions_equal_stock_generate(tiny_model, av_media, decoder, compression) -> None:
    """Several questions from one prefilled media prefix: each equals stock generate on its own full prompt."""
    session = Session.open(tiny_model, av_media, compression=compression, decoder=decoder,
                           record_saliency=compression is not None)
    sources = []
    for question in QUESTIONS:
        stock_tokens, stock_logits = stock_generate(tiny_model, full_prompt(tiny_model, av_media, question), NEW_TOKENS)
        stats = session.answer(question, GREEDY)
        assert stats.token_ids == stock_tokens, question
        torch.testing.assert_close(stats.prefill_logits, stock_logits, rtol=0, atol=1e-4)
        sources.append(stats.prefix_source)
    assert sources == ["fresh", "memory", "memory"]
    assert session.answer(QUESTIONS[1], GREEDY).prefilled_tokens == len(session.question_ids(QUESTIONS[1]))


@pytest.mark.parametrize("decoder", DECODERS)
def test_conversation_equals_stock_generate_on_the_whole_conversation(tiny_model, av_media, decoder) -> None:
    session = Session.open(tiny_model, av_media, compression=None, decoder=decoder)
    chat = session.conversation()
    first = chat.answer(QUESTIONS[0], GenerationOptions(max_new_tokens=5))  # cut short: the turn gets closed
    assert first.stop_reason == "max_new_tokens"
    conversation = chat.ids() + chat.question_ids("And then?")
    prompt = full_prompt(tiny_model, av_media, QUESTIONS[0])
    assert conversation[: prompt.length] == prompt.input_ids[0].tolist()
    assert conversation[prompt.length : prompt.length + 5] == first.token_ids
    stock_tokens, _ = stock_generate(tiny_model, prompt, NEW_TOKENS, input_ids=torch.tensor([conversation]))
    second = chat.answer("And then?", GREEDY)
    assert second.token_ids == stock_tokens
    # an independent question afterwards starts again from the prefix
    assert session.answer(QUESTIONS[2], GREEDY).token_ids == stock_generate(
        tiny_model, full_prompt(tiny_model, av_media, QUESTIONS[2]), NEW_TOKENS)[0]


def test_audio_ending_inside_the_last_chunk_continues_like_stock(tiny_model) -> None:
    """Audio 4.4 s, video 6 s: the last prompt position is below the largest; decoding follows stock."""
    media = synthetic_media(6.0, 4.4, seed=5)
    prompt = full_prompt(tiny_model, media, QUESTIONS[0])
    encoded = _encode(tiny_model, prompt)
    positions = encoded.position_ids
    assert int(positions[0, 0, -1]) < int(positions.max())  # the shape that used to differ
    stock_tokens, _ = stock_generate(tiny_model, prompt, NEW_TOKENS)
    for decoder in DECODERS:
        session = Session.open(tiny_model, media, compression=None, decoder=decoder)
        assert session.answer(QUESTIONS[0], GREEDY).token_ids == stock_tokens
        assert session.answer(QUESTIONS[1], GREEDY).token_ids == stock_generate(
            tiny_model, full_prompt(tiny_model, media, QUESTIONS[1]), NEW_TOKENS)[0]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("preset", ["45", "35"])
def test_compressed_session_equals_stock_model_on_the_pruned_sequence(tiny_model, av_media, preset, decoder) -> None:
    session = Session.open(tiny_model, av_media, compression=preset, decoder=decoder)
    plan = session.plan
    assert session.prefill.length == int(plan.keep.sum()) < session.prefix_length
    # kept tokens keep their original positions
    assert torch.equal(session.prefill.position_ids, session.encoded.position_ids[:, :, plan.keep])
    stops = {int(i) for i in session.text.generation_config.eos_token_id}
    for question in QUESTIONS[:2]:
        stats = session.answer(question, GREEDY)
        embeds, positions = session_sequence(session, session.question_ids(question))
        by_hand, by_hand_logits = manual_greedy(session.text, embeds, positions, NEW_TOKENS, stops)
        assert stats.token_ids == by_hand
        torch.testing.assert_close(stats.prefill_logits, by_hand_logits, rtol=0, atol=1e-4)
    # a conversation on the pruned prefix
    chat = session.conversation()
    chat.answer(QUESTIONS[0], GREEDY)
    turn = chat.ids()[session.prefix_length:] + chat.question_ids("And then?")
    stats = chat.answer("And then?", GREEDY)
    embeds, positions = session_sequence(session, turn)
    assert stats.token_ids == manual_greedy(session.text, embeds, positions, NEW_TOKENS, stops)[0]
    counts = session.tokens
    assert counts.text.after == counts.text.before  # text and special tokens are never dropped
    assert counts.total.after == session.prefill.length


def test_compression_at_rho_zero_keeps_every_token(tiny_model, av_media) -> None:
    session = Session.open(tiny_model, av_media, compression=OFF)
    assert session.prefill.length == session.prefix_length
    assert session.plan is not None and bool(session.plan.keep.all())


def test_wrong_positions_would_be_caught(tiny_model, av_media) -> None:
    session = Session.open(tiny_model, av_media, compression="45")
    pruned = session.prefill
    contiguous = torch.arange(pruned.length).view(1, 1, -1).expand(3, 1, -1)
    wrong = PrefillInputs(pruned.embeds, pruned.attention_mask, contiguous)
    right_result = generate(session.text, pruned, GREEDY)
    wrong_result = generate(session.text, wrong, GREEDY)
    assert (right_result.prefill_logits - wrong_result.prefill_logits).abs().max() > 0.5
    assert right_result.token_ids != wrong_result.token_ids


@pytest.mark.parametrize(
    ("video_seconds", "audio_seconds", "kind"),
    [(6.0, None, "video"), (None, 5.0, "audio"), (4.0, 9.0, "video+audio"), (8.0, 3.0, "video+audio")],
)
def test_every_input_kind_answers_through_the_compressed_path(tiny_model, video_seconds, audio_seconds, kind) -> None:
    session = Session.open(tiny_model, synthetic_media(video_seconds, audio_seconds), compression=OmniZipConfig())
    assert session.prepared.kind == kind
    stats = session.answer("Describe it.", GenerationOptions(max_new_tokens=4))
    assert 1 <= len(stats.token_ids) <= 4
    tokens = session.tokens
    assert session.prefill.length < session.prefix_length
    assert tokens.text.after == tokens.text.before
    if video_seconds is not None:
        assert 0 < tokens.video.after < tokens.video.before
    if audio_seconds is not None:
        assert 0 < tokens.audio.after < tokens.audio.before


def test_plan_does_not_depend_on_the_question(tiny_model) -> None:
    media = synthetic_media(6.0, 6.0, seed=3)
    plans = []
    ids = tiny_model.adapter.token_ids(tiny_model.model)
    for question in ("What is said?", "How many people are there, and what colour is the car?"):
        prepared = full_prompt(tiny_model, media, question)
        session = Session.from_video(encode_prepared(tiny_model, prepared, record_saliency=True), OmniZipConfig())
        input_ids = session.encoded.input_ids[0]
        plans.append(session.plan.keep[(input_ids == ids.video) | (input_ids == ids.audio)])
    assert torch.equal(plans[0], plans[1])
