"""The fast paths are optimisations: when they cannot run, the answer still comes, and says so."""

from __future__ import annotations

import pytest

from omnizip_cli import runner
from omnizip_cli.decoding import GenerationOptions
from omnizip_cli.inputs import build_inputs
from omnizip_cli.loading import _varlen_self_check
from omnizip_cli.stats import StageTimer
from tests.synthetic import synthetic_media


@pytest.fixture(scope="module")
def inputs(tiny_model):
    return build_inputs(tiny_model.processor, synthetic_media(4.0, 4.0), "What is said?")


def test_a_failing_fast_decoder_falls_back_to_the_eager_loop(tiny_model, inputs, monkeypatch) -> None:
    expected = runner.answer(tiny_model, inputs, None, GenerationOptions(max_new_tokens=6), timer=StageTimer())

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA graph capture failed")

    monkeypatch.setattr("omnizip_cli.fast_decoding.choose_decoder", lambda device, attn: ("fast", None))
    monkeypatch.setattr("omnizip_cli.fast_decoding.generate_fast", broken)
    streamed: list[int] = []
    result = runner.answer(
        tiny_model, inputs, None, GenerationOptions(max_new_tokens=6), timer=StageTimer(), on_token=streamed.append
    )
    assert result.token_ids == expected.token_ids == streamed
    assert any("fast decoder failed" in note and "eager loop used" in note for note in result.generation.notes)


def test_a_fast_decoder_failing_mid_answer_is_not_hidden(tiny_model, inputs, monkeypatch) -> None:
    def half_broken(model, prefill, options, *, on_token, **kwargs):
        on_token(1)
        raise RuntimeError("boom")

    monkeypatch.setattr("omnizip_cli.fast_decoding.choose_decoder", lambda device, attn: ("fast", None))
    monkeypatch.setattr("omnizip_cli.fast_decoding.generate_fast", half_broken)
    with pytest.raises(RuntimeError, match="boom"):
        runner.answer(tiny_model, inputs, None, GenerationOptions(max_new_tokens=6), timer=StageTimer())


def test_varlen_self_check_passes_where_the_kernel_does_not_run(tiny_model) -> None:
    assert _varlen_self_check(tiny_model.model) is None  # CPU: the reference path runs, nothing to check
    assert tiny_model.fast_encoder_attention is False  # and the CPU keeps the stock encoder path
