"""``omnizip chat``: scripted conversations (stdin not a terminal) on the tiny model and on a fake session.

* Tiny model (greedy): a two-turn chat answers exactly ``session.answer(q1)`` then
  ``session.conversation()``'s; after ``/reset`` the next answer is an independent question's.
* Fake session: blank lines, ``/stats``, ``/quit``, ``--json`` lines, and Ctrl-C during an answer
  stopping only that answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import omnizip_cli.generation.opening
from omnizip_cli.cli import app
from omnizip_cli.compression import CompressionSetting
from omnizip_cli.generation import GenerationChunk, GenerationOptions, Session
from omnizip_cli.media import MediaOptions, load_media
from omnizip_cli.terminal import sanitize_answer
from tests.helpers.fakes import FakeLoaded, FakeSession, install_fake_opening, make_media

ROOT = Path(__file__).resolve().parents[2]
TALKING = ROOT / "samples" / "talking.mp4"
NEW_TOKENS = 6
FAST = ["--model", "tiny", "--device", "cpu", "--max-new-tokens", str(NEW_TOKENS), "--fps", "2", "--max-frames", "8",
        "--min-pixels", str(64 * 28 * 28), "--max-pixels", str(96 * 28 * 28)]
MEDIA = MediaOptions(fps=2, max_frames=8, min_pixels=64 * 28 * 28, max_pixels=96 * 28 * 28)
GREEDY = GenerationOptions(max_new_tokens=NEW_TOKENS)


def chat(*args: Any, input: str) -> Any:
    return CliRunner().invoke(app, ["chat", *(str(a) for a in args)], input=input, catch_exceptions=False)


# --------------------------------------------------------------------------------------------- tiny model
@pytest.fixture(scope="module")
def tiny_in_cli(tiny_model: Any) -> Iterator[Any]:
    patch = pytest.MonkeyPatch()
    patch.setattr(omnizip_cli.generation.opening, "load_model", lambda spec: tiny_model)
    yield tiny_model
    patch.undo()


@pytest.fixture(scope="module")
def reference(tiny_in_cli: Any) -> Session:
    return Session.open(tiny_in_cli, load_media(TALKING, MEDIA), compression=CompressionSetting.from_options())


def test_a_scripted_chat_answers_like_the_session_conversation(reference: Session) -> None:
    q1, q2, q3 = "What is said?", "And who says it?", "Describe the scene."
    result = chat(TALKING, *FAST, "-q", input=f"{q1}\n\n   \n{q2}\n/reset\n{q3}\n")
    assert result.exit_code == 0, result.output
    conversation = reference.conversation()
    first = conversation.answer(q1, GREEDY)
    second = conversation.answer(q2, GREEDY)
    conversation.reset()
    independent = conversation.answer(q3, GREEDY)
    assert independent.token_ids != second.token_ids or q3 == q2
    expected = [sanitize_answer(s.text) for s in (first, second, independent)]
    assert result.stdout.split("\n")[:3] == expected
    assert result.stdout.count("\n") == 3
    # the follow-up really continued the conversation: it differs from the same question asked alone
    assert reference.answer(q2, GREEDY).token_ids != second.token_ids


def test_chat_json_lines_say_turn_and_prefix_source(tiny_in_cli: Any) -> None:
    result = chat(TALKING, *FAST, "--json", input="What is said?\nAnd then?\n")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["turn"] for p in lines] == [1, 2]
    assert [p["generation"]["prefix_source"] for p in lines] == ["fresh", "memory"]
    assert lines[1]["generation"]["prefilled_tokens"] < lines[0]["generation"]["prefilled_tokens"]


# --------------------------------------------------------------------------------------------- fake session
class InterruptingSession(FakeSession):
    """Raises KeyboardInterrupt (Ctrl-C) in the middle of the answer to a question containing "stop"."""

    resets: int = 0

    def ask(self, question: str, options: Any = None, *, origin: float | None = None, follow_up: bool = False
            ) -> Iterator[GenerationChunk]:
        for index, chunk in enumerate(super().ask(question, options, follow_up=follow_up)):
            if "stop" in question and index == 2:
                raise KeyboardInterrupt
            yield chunk

    def reset(self) -> None:
        self.resets += 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> InterruptingSession:
    session = InterruptingSession()
    loaded = FakeLoaded()
    loaded.processor = SimpleNamespace(tokenizer=lambda text, **_: {"input_ids": text.split()})  # type: ignore[attr-defined]
    install_fake_opening(monkeypatch, session, loaded, SimpleNamespace(summary=make_media()))
    return session


def test_commands_blank_lines_and_follow_ups(fake: InterruptingSession) -> None:
    result = chat(TALKING, "--model", "tiny", input="\nq1\n  \nq2\n/stats\n/reset\n/rest\nq3\n/quit\nnever asked\n")
    assert result.exit_code == 0, result.output
    assert fake.asked == [("q1", False), ("q2", True), ("q3", False)]
    assert fake.resets == 1
    assert result.stdout.splitlines() == [FakeSession.answer_for(q) for q in ("q1", "q2", "q3")]
    assert "Prompt:" in result.stderr and "forgotten" in result.stderr  # /stats printed the report on stderr
    assert "unknown command /rest" in result.stderr


def test_ctrl_c_during_an_answer_stops_only_that_answer(fake: InterruptingSession) -> None:
    result = chat(TALKING, "--model", "tiny", input="q1\nplease stop\nq3\n")
    assert result.exit_code == 0, result.output
    assert [q for q, _ in fake.asked] == ["q1", "please stop", "q3"]
    lines = result.stdout.splitlines()
    assert lines[0] == FakeSession.answer_for("q1")
    assert lines[1] == "An answer"  # the stopped answer's line was finished
    assert lines[2] == FakeSession.answer_for("q3")
    assert "answer stopped" in result.stderr


def test_no_questions_is_fine(fake: InterruptingSession) -> None:
    result = chat(TALKING, "--model", "tiny", input="")
    assert result.exit_code == 0 and result.stdout == "" and fake.asked == []


def test_a_line_that_is_not_utf8_is_refused_and_the_chat_goes_on(fake: InterruptingSession) -> None:
    result = CliRunner().invoke(app, ["chat", str(TALKING), "--model", "tiny"], input=b"q1\n\xff\xfebad\nq2\n",
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [q for q, _ in fake.asked] == ["q1", "q2"]
    assert "refused: that line is not valid UTF-8" in result.stderr


def test_a_system_prompt_that_is_not_utf8_is_a_usage_error(fake: InterruptingSession) -> None:
    result = chat(TALKING, "--model", "tiny", "--system", "be \udcff brief", input="q1\n")
    assert result.exit_code == 2 and "--system is not valid UTF-8" in result.stderr


def test_a_question_longer_than_the_budget_is_refused_and_the_chat_goes_on(tiny_in_cli: Any) -> None:
    """Not a prefill growing past the machine's memory: one line naming the question, then the next one."""
    huge = "why " * 25_000
    result = chat(TALKING, *FAST, "--json", input=f"What is said?\n{huge}\nAnd then?\n")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["question"] for p in lines] == ["What is said?", "And then?"]
    assert [p["turn"] for p in lines] == [1, 2]  # the refused line left the conversation as it was
    refusal = next(line for line in result.stderr.splitlines() if line.startswith("refused:"))
    assert "'why why" in refusal and "99,999 characters" in refusal and "--max-prompt-tokens" in refusal


def test_a_conversation_that_outgrows_the_budget_is_refused_until_reset(tiny_in_cli: Any) -> None:
    session_prefix = Session.open(tiny_in_cli, load_media(TALKING, MEDIA), compression=CompressionSetting.from_options(),
                                  max_prompt_tokens=100_000, question_reserve=128)
    budget = session_prefix.prefill.length + 128 + 40  # the prefix, chat's question reserve, and a little room
    questions = "\n".join(f"Question {i}, tell me more?" for i in range(6))
    result = chat(TALKING, *FAST, "--json", "--max-prompt-tokens", budget, input=f"{questions}\n/reset\nAgain?\n")
    assert result.exit_code == 0, result.output
    answered = [json.loads(line) for line in result.stdout.splitlines()]
    assert any("conversation" in line and "/reset" in line for line in result.stderr.splitlines()
               if line.startswith("refused:"))
    assert all(p["tokens"]["prefill"] <= budget for p in answered)
    assert answered[-1]["question"] == "Again?" and answered[-1]["turn"] == 1
