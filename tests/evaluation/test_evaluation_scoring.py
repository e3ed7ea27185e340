"""Scoring: the prompt, the letter extraction rule (a table of tricky answers) and open answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnizip_cli.evaluation.datasets import Item
from omnizip_cli.evaluation.scoring import (
    MC_INSTRUCTION,
    build_prompt,
    extract_choice,
    normalise_answer,
    score,
)

OPTIONS = ("red ball", "blue square", "green bar", "yellow digit")

TRICKY = [
    # rule 1: the whole answer is a letter
    ("B", "B"),
    ("b", "B"),
    ("(B)", "B"),
    ("[c]", "C"),
    ("B.", "B"),
    ("D)", "D"),
    ("  C:  ", "C"),
    ("**C**", "C"),
    # rule 2: a leading letter
    ("B. blue square", "B"),
    ("(C) green bar", "C"),
    ("C) green bar", "C"),
    ("D: the yellow digit", "D"),
    ("A red ball", "A"),            # "A" + option A's text
    ("A ball rolls by", None),       # "A" is an article here
    # rule 3: an explicit marker (the last one wins)
    ("The answer is B", "B"),
    ("The answer is B.", "B"),
    ("Answer: b) blue square", "B"),
    ("answer: (c)", "C"),
    ("The correct option is (D).", "D"),
    ("The correct answer is: C. green bar", "C"),
    ("Option D", "D"),
    ("My first answer was A, but the final answer is C", "C"),
    ("The answer is A because it rolls", "A"),
    ("answer is b", "B"),
    # reasoning: only what follows the last </think> counts
    ("<think>It could be A or C.</think> B", "B"),
    ("<think>A? no</think>\n\nThe answer is D", "D"),
    # rule 4: an option's text
    ("blue square", "B"),
    ("The red ball.", "A"),
    ("It is a green bar that sweeps.", "C"),
    ("The answer is a red ball", "A"),
    # rule 5: a lone capital letter
    ("I think C is right", "C"),
    ("A is correct", "A"),
    # nothing usable
    ("A and B", None),
    ("A B", None),
    ("", None),
    ("E", None),                     # only 4 options
    ("F. something", None),
    ("I don't know", None),
    ("<think>probably B</think>", None),
]


@pytest.mark.parametrize(("response", "expected"), TRICKY)
def test_extract_choice_table(response: str, expected: str | None) -> None:
    assert extract_choice(response, OPTIONS) == expected


def test_extract_choice_longest_option_text_wins() -> None:
    options = ("ball", "red ball", "blue square")
    assert extract_choice("I saw a red ball", options) == "B"
    assert extract_choice("ball", options) == "A"


def test_extract_choice_without_options_is_none() -> None:
    assert extract_choice("A", ()) is None


def test_prompt_lists_lettered_options_and_asks_for_the_letter() -> None:
    item = Item(id="q", video=Path("v.mp4"), video_name="v.mp4", question="What rolls?", answer="A",
                options=("a red ball", "a blue square"))
    assert build_prompt(item) == f"What rolls?\nOptions:\nA. a red ball\nB. a blue square\n{MC_INSTRUCTION}"


@pytest.mark.parametrize(("text", "expected"), [
    ("The  Red-Ball!", "red ball"),
    ("Four.", "4"),
    ("Café", "cafe"),
    ("  an apple ", "apple"),
])
def test_normalise_answer(text: str, expected: str) -> None:
    assert normalise_answer(text) == expected


def test_score_open_and_multiple_choice() -> None:
    open_item = Item(id="o", video=Path("v"), video_name="v", question="How many?", answer="4")
    assert score(open_item, "Four.") == ("4", True)
    assert score(open_item, "five") == ("5", False)
    assert score(open_item, "") == (None, False)
    mc = Item(id="m", video=Path("v"), video_name="v", question="?", answer="B", options=OPTIONS)
    assert score(mc, "The answer is B") == ("B", True)
    assert score(mc, "A") == ("A", False)
    assert score(mc, "no idea") == (None, False)


WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=3, max_size=20).map(str.strip).filter(
    lambda t: len(t) >= 3 and len(t.split()) >= 1)


@given(options=st.lists(WORDS, min_size=2, max_size=6, unique=True), data=st.data())
def test_decorated_letters_always_extract(options: list[str], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(options) - 1))
    letter = "ABCDEF"[index]
    template = data.draw(st.sampled_from(["{L}", "({L})", "{L}.", "{l}", "The answer is {L}.", "Answer: {l})",
                                          "{L}. {text}", "<think>maybe A</think> {L}", "({L}) {text}"]))
    response = template.format(L=letter, l=letter.lower(), text=options[index])
    assert extract_choice(response, tuple(options)) == letter
