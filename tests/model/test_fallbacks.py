"""The fast paths are optimisations: when they cannot run, the answer still comes, and says so."""

from __future__ import annotations

import pytest

from omnizip_cli.generation import GenerationOptions, Session
from omnizip_cli.models.registry import _varlen_self_check
from tests.helpers.synthetic import synthetic_media

OPTIONS = GenerationOptions(max_new_tokens=6)


@pytest.fixture(scope="module")
def media():
    return synthetic_media(4.0, 4.0)


def test_a_failing_fast_decoder_falls_back_to_the_eager_loop(tiny_model, media, monkeypatch) -> None:
    expected = Session.open(tiny_model, media, compression=None, decoder="eager").answer("What is said?", OPTIONS)

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA graph capture failed")

    monkeypatch.setattr("omnizip_cli.generation.static_graph.StaticGraphDecoder", broken)
    session = Session.open(tiny_model, media, compression=None, decoder="fast")
    streamed = [chunk.token for chunk in session.ask("What is said?", OPTIONS) if chunk.token is not None]
    stats = session.answer("What is said?", OPTIONS)
    assert stats.token_ids == expected.token_ids == streamed
    assert stats.decoder == "eager"
    assert any("fast decoder failed" in note and "eager loop used" in note for note in stats.notes)


def test_a_fast_decoder_failing_mid_answer_is_not_hidden(tiny_model, media, monkeypatch) -> None:
    class HalfBroken:
        name, pipelined, notes, warmup_seconds = "static", False, [], 0.0

        def __init__(self, *args, **kwargs) -> None:
            pass

        def step(self, token):
            raise RuntimeError("boom")

    monkeypatch.setattr("omnizip_cli.generation.static_graph.StaticGraphDecoder", HalfBroken)
    session = Session.open(tiny_model, media, compression=None, decoder="fast")
    chunks = session.ask("What is said?", OPTIONS)
    first = next(chunks)
    assert first.token is not None  # the first token is out ...
    with pytest.raises(RuntimeError, match="boom"):  # ... so the failure after it is raised, not hidden
        list(chunks)


def test_varlen_self_check_passes_where_the_kernel_does_not_run(tiny_model) -> None:
    encoders = tiny_model.adapter.encoder_modules(tiny_model.model)
    assert _varlen_self_check(encoders) is None  # CPU: the reference path runs, nothing to check
    assert tiny_model.fast_encoder_attention is False  # and the CPU keeps the stock encoder path
