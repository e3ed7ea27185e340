"""CLI plumbing on a fake session (no model load): several questions, streaming, JSON, quiet, errors.

The fake (tests/helpers/fakes.py) has hand-made figures; a few real end-to-end runs are in
test_cli_ask.py and test_cli_processes.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from omnizip_cli.cli import app
from tests.helpers.fakes import FakeLoaded, FakeSession, install_fake_opening


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSession:
    session = FakeSession()
    loaded = FakeLoaded()
    loaded.processor = type("P", (), {"tokenizer": staticmethod(lambda text, **_: {"input_ids": text.split()})})()
    session.opened_with = install_fake_opening(monkeypatch, session, loaded)  # type: ignore[attr-defined]
    monkeypatch.setenv("COLUMNS", "120")
    return session


def run(*args: str):
    return CliRunner().invoke(app, ["ask", "clip.mp4", *args], catch_exceptions=False)


def test_several_questions_share_one_session_and_answer_in_order(fake: FakeSession) -> None:
    result = run("What is said?", "Who speaks?", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout == "An answer to What is said?\nAn answer to Who speaks?\n"
    assert fake.asked == [("What is said?", False), ("Who speaks?", False)]  # independent questions


def test_json_of_several_questions_is_one_object_with_a_list(fake: FakeSession) -> None:
    result = run("What is said?", "Who speaks?", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    data = json.loads(result.stdout)
    assert data["kind"] == "answers" and data["schema_version"] == 2
    first, second = data["answers"]
    assert (first["question"], second["question"]) == ("What is said?", "Who speaks?")
    assert first["generation"]["prefix_source"] == "fresh" and second["generation"]["prefix_source"] == "memory"
    assert second["generation"]["prefilled_tokens"] < first["generation"]["prefilled_tokens"]
    assert not second["timings"]["stages"]["vision_encoder"]["ran"]  # only the first pays the set-up
    assert first["timings"]["stages"]["vision_encoder"]["ran"]


def test_the_report_adds_a_questions_table(fake: FakeSession) -> None:
    result = run("What is said?", "Who speaks?")
    assert result.exit_code == 0
    assert "Questions" in result.stderr
    rows = [line.split() for line in result.stderr.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[2] for row in rows] == ["fresh", "memory"]


def test_the_prompt_budget_reaches_the_session(fake: FakeSession) -> None:
    assert run("What is said?", "--max-prompt-tokens", "5000", "-q").exit_code == 0
    assert fake.opened_with["max_prompt_tokens"] == 5000  # type: ignore[attr-defined]
    assert fake.opened_with["question_reserve"] == len("What is said?".split()) + 16  # type: ignore[attr-defined]


@pytest.mark.parametrize(("args", "message"), [
    (["  "], "question 1 is empty"),
    (["q", "--max-prompt-tokens", "0"], "--max-prompt-tokens must be at least 1"),
    (["q", "--temperature", "inf"], "--temperature must be >= 0 and finite"),
    (["q", "--seed", "-1"], "--seed must be between 0"),
])
def test_bad_values_fail_before_any_work(fake: FakeSession, args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2 and message in result.stderr
    assert fake.asked == []


def test_a_question_that_is_not_utf8_is_a_usage_error(fake: FakeSession) -> None:
    result = CliRunner().invoke(app, ["ask", "clip.mp4", "fine", "caf\udce9?"])
    assert result.exit_code == 2 and "question 2 is not valid UTF-8" in result.stderr and not fake.asked


@pytest.mark.parametrize("command", ["ask", "chat", "keep-map", "profile", "evaluate"])
def test_help_names_the_arguments_as_the_docstrings_do(command: str) -> None:
    usage = CliRunner().invoke(app, [command, "--help"]).output
    first = usage.splitlines()[0]
    assert "{video}" not in first and "{dataset}" not in first
    assert ("DATASET" if command == "evaluate" else "VIDEO") in first
    if command in ("ask", "chat", "keep-map"):
        assert "45 (the default" in usage
