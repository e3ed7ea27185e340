"""The Session fits a prompt budget (issue 14): a retention chosen and planned until the kept prompt fits."""

from __future__ import annotations

import pytest

from omnizip_cli.compression import ContextTooLong
from omnizip_cli.generation import GenerationOptions, Session
from tests.helpers.synthetic import synthetic_media


def test_session_fits_the_budget_and_says_why(tiny_model) -> None:
    media = synthetic_media(12.0, 12.0, seed=2)
    full = Session.open(tiny_model, media, compression=None)
    budget = full.prefill.length // 2
    session = Session.open(tiny_model, media, compression="45", max_prompt_tokens=budget, question_reserve=20)
    assert session.prefill.length + 20 <= budget
    assert session.context_fit is not None and session.context_fit.changed
    assert session.answer("What is said?", GenerationOptions(max_new_tokens=3)).token_ids


def test_session_refuses_what_cannot_fit(tiny_model) -> None:
    with pytest.raises(ContextTooLong, match="even the strongest compression"):
        Session.open(tiny_model, synthetic_media(6.0, 6.0), compression="45", max_prompt_tokens=60)


def test_a_budget_the_prompt_fits_changes_nothing(tiny_model) -> None:
    media = synthetic_media(4.0, 4.0)
    session = Session.open(tiny_model, media, compression="45", max_prompt_tokens=32768)
    plain = Session.open(tiny_model, media, compression="45")
    assert not session.context_fit.changed and session.prefill.length == plain.prefill.length
