"""Video-MME and WorldSense prompts and parsers as lmms-eval's tasks have them, without a default letter."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnizip_cli.evaluation.benchmark_prompts import (
    prompt_style,
    videomme_choice,
    videomme_prompt,
    worldsense_choice,
    worldsense_prompt,
)
from omnizip_cli.evaluation.datasets import Item
from omnizip_cli.evaluation.scoring import build_prompt, score

OPTIONS = ("red ball", "blue cube", "green star", "yellow ring")
ITEM = Item(id="q", video=Path("v.mp4"), video_name="v.mp4", question="What rolls?", answer="B", options=OPTIONS)


def test_videomme_prompt_wording() -> None:
    assert videomme_prompt(ITEM) == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "What rolls?\n"
        "['A. red ball', 'B. blue cube', 'C. green star', 'D. yellow ring']\n"
        "\nAnswer the question with A, B, C, or D.")
    assert build_prompt(ITEM, "videomme") == videomme_prompt(ITEM)


def test_worldsense_prompt_wording() -> None:
    assert worldsense_prompt(ITEM) == (
        "Carefully watch this video and pay attention to every detail. Based on your observations, select the "
        "best option that accurately addresses the question.\n"
        "These are the frames of a video and the corresponding audio. Select the best answer to the following "
        "multiple-choice question based on the video. Respond with only the letter (A, B, C, or D) of the correct "
        "option.\n"
        "What rolls?\nA. red ball\nB. blue cube\nC. green star\nD. yellow ring\n")


@pytest.mark.parametrize("response, expected", [
    ("B", "B"),
    ("The best answer is C.", "C"),
    ("(D) yellow ring", "D"),
    ("Based on the video, A", "B"),  # the first capital A-D, in a word too, as lmms-eval reads it
    ("i think it is the blue one", None),  # lmms-eval: "" (wrong); here unparsed
    ("", None),
])
def test_videomme_parser(response: str, expected: str | None) -> None:
    assert videomme_choice(response, OPTIONS) == expected


@pytest.mark.parametrize("response, expected", [
    ("B.", "B"),
    ("(C)", "C"),
    ("A or (D)", "D"),  # several letters: the last bracketed one
    ("A and B", "A"),  # several, none bracketed: the first
    ("the answer is clearly the green star here", "C"),  # more than 5 words: an option's text
    ("no idea", None),  # lmms-eval: "A"; here unparsed
])
def test_worldsense_parser(response: str, expected: str | None) -> None:
    assert worldsense_choice(response, OPTIONS) == expected


def test_score_uses_the_style_and_never_defaults() -> None:
    assert score(ITEM, "no idea", "worldsense") == (None, False)
    assert score(ITEM, "B", "videomme") == ("B", True)
    assert score(ITEM, "blue cube", "omnizip") == ("B", True)  # omnizip's own rule reads option texts
    assert [prompt_style(x) for x in ("videomme", "worldsense", "manifest", "avut")] == [
        "videomme", "worldsense", "omnizip", "omnizip"]
