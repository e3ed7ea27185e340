"""Video-MME and WorldSense as lmms-eval's tasks ask and parse them, so a ``full`` number sits beside a
published one.

lmms-eval (EvolvingLMMs-Lab/lmms-eval; read at ``tasks/videomme/utils.py`` 86a293d and
``tasks/worldsense/utils.py`` 0cf4ecc) builds these prompts; omnizip writes the same text from an
:class:`~omnizip_cli.evaluation.datasets.Item` (its options carry no letter: ``"A. "`` is put back).

**Video-MME** (task ``videomme``, the default model prompt kwargs)::

    Select the best answer to the following multiple-choice question based on the video and the
    subtitles. Respond with only the letter (A, B, C, or D) of the correct option.
    <question>
    ['A. <option>', 'B. <option>', 'C. <option>', 'D. <option>']

    Answer the question with A, B, C, or D.

(the options as Python prints a list of strings, and the subtitles sentence although none are
given, both as lmms-eval sends them). Parsing: the phrases "The best answer is", "The correct answer
is", "The answer is", "The answer" are removed; an answer of more than 10 words with no capital A-D
is unparsed (so is any answer with none); otherwise the first capital A-D anywhere in it (in a word
too: "Based on ..." reads B) is the choice.

**WorldSense** (task ``worldsense``, video with audio)::

    Carefully watch this video and pay attention to every detail. Based on your observations, select
    the best option that accurately addresses the question.
    These are the frames of a video and the corresponding audio. Select the best answer to the
    following multiple-choice question based on the video. Respond with only the letter (A, B, C, or
    D) of the correct option.
    <question>
    A. <option>
    ...

Parsing: the answer stripped of ``, . ! ? ; : '`` at its ends; every option letter found in it (as
a substring: "(B)" or "B"); if none, each letter standing alone between spaces; if none and the
answer has more than 5 words, each option whose text it contains; of several, the one found last.

**Where omnizip differs, and why**: when nothing parses, lmms-eval's WorldSense takes ``"A"`` and its
Video-MME scores ``""``; omnizip returns None for both: the answer is counted as ``unparsed`` and
scored wrong, never guessed (a default letter adds a quarter of the unparsed answers to the
accuracy of the letter A's questions). Generation is greedy with ``--max-new-tokens`` (lmms-eval: 16
for Video-MME, 1024 for WorldSense). Other layouts keep omnizip's own prompt
(:mod:`omnizip_cli.evaluation.scoring`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from omnizip_cli.evaluation.datasets import LETTERS, Item

__all__ = ["PROMPT_STYLES", "prompt_style", "videomme_choice", "videomme_prompt", "worldsense_choice",
           "worldsense_prompt"]

#: The prompt styles: omnizip's own, and the two benchmarks' as lmms-eval asks them.
PROMPT_STYLES = ("omnizip", "videomme", "worldsense")

_VIDEOMME_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video and "
                         "the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
_VIDEOMME_AFTER = "\nAnswer the question with A, B, C, or D."
_VIDEOMME_PHRASES = ("The best answer is", "The correct answer is", "The answer is", "The answer")
_WORLDSENSE_SYSTEM = ("Carefully watch this video and pay attention to every detail. Based on your observations, "
                      "select the best option that accurately addresses the question.")
_WORLDSENSE_FRAMES = ("These are the frames of a video and the corresponding audio. Select the best answer to the "
                      "following multiple-choice question based on the video. Respond with only the letter "
                      "(A, B, C, or D) of the correct option.")


def prompt_style(layout: str) -> str:
    """The prompt style of a dataset layout: ``videomme``, ``worldsense``, else ``omnizip``."""
    return layout if layout in ("videomme", "worldsense") else "omnizip"


def _lettered(options: Sequence[str]) -> list[str]:
    return [f"{LETTERS[i]}. {text}" for i, text in enumerate(options)]


def videomme_prompt(item: Item) -> str:
    """Video-MME's question as lmms-eval's ``videomme`` task words it (see the module docstring)."""
    return f"{_VIDEOMME_INSTRUCTION}\n{item.question}\n{_lettered(item.options)!s}\n{_VIDEOMME_AFTER}"


def worldsense_prompt(item: Item) -> str:
    """WorldSense's question as lmms-eval's ``worldsense`` task words it (see the module docstring)."""
    lines = "".join(f"{option}\n" for option in _lettered(item.options))
    return f"{_WORLDSENSE_SYSTEM}\n{_WORLDSENSE_FRAMES}\n{item.question}\n{lines}"


def videomme_choice(response: str, options: Sequence[str]) -> str | None:
    """The letter Video-MME's parser reads in ``response`` (None where it reads nothing; see the module
    docstring). Only letters A-D are read, as there."""
    text = response.strip()
    for phrase in _VIDEOMME_PHRASES:
        text = text.replace(phrase, "")
    found = re.search(r"[ABCD]", text)
    if found is None:
        return None
    letter = found.group(0)
    return letter if letter in LETTERS[: len(options)] else None


def worldsense_choice(response: str, options: Sequence[str]) -> str | None:
    """The letter WorldSense's parser reads in ``response`` (None instead of its default "A").

    Of several letters found as substrings, the one whose ``(X)`` comes last (the first when none is
    bracketed); of several found between spaces, the one that comes last; of several option texts,
    the one that comes last.
    """
    letters = list(LETTERS[: len(options)])
    text = response
    for mark in ",.!?;:'":
        text = text.strip(mark)
    padded = f" {text} "
    candidates = [letter for letter in letters if letter in padded]
    mark = "({})"
    if not candidates:
        candidates = [letter for letter in letters if f" {letter} " in padded]
        mark = " {} "
    if not candidates and len(padded.split()) > 5:
        candidates = [letter for letter, option in zip(letters, options) if option.lower() in padded.lower()]
        if len(candidates) > 1:
            places = [padded.lower().rfind(options[letters.index(c)].lower()) for c in candidates]
            return candidates[places.index(max(places))]
    if not candidates:
        return None
    places = [padded.rfind(mark.format(c)) for c in candidates]
    return candidates[places.index(max(places))]
