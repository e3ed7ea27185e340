"""Prompts and scoring: the multiple-choice prompt, the letter extraction rule, open-answer matching.

The prompt follows the OmniZip authors' evaluation scripts (WorldSense, AVUT, ShortVid-Bench)::

    <question>
    Options:
    A. <option>
    B. <option>
    Answer with the option's letter from the given choices directly.

Open questions get ``<question>`` and "Answer with a single word or phrase." and are scored by
exact match after :func:`normalise_answer`.
"""

from __future__ import annotations

import re
import string
import unicodedata

from omnizip_cli.evaluation.datasets import LETTERS, Item

__all__ = ["MC_INSTRUCTION", "OPEN_INSTRUCTION", "build_prompt", "extract_choice", "normalise_answer", "score"]

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPEN_INSTRUCTION = "Answer with a single word or phrase."
#: Bumped when the prompt text changes, so that resuming refuses to mix prompts.
PROMPT_VERSION = 1

_THINK_END = re.compile(r"</think>", re.IGNORECASE)
_MARKUP = re.compile(r"[*_`#]+")
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
    "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
    "nineteen": "19", "twenty": "20",
}
_ARTICLES = {"a", "an", "the"}
# Words after which a lone "A" is still the letter ("A and B", "A is correct").
_JOINING_WORDS = {
    "and", "or", "nor", "is", "was", "are", "seems", "would", "should", "could", "might", "must", "because",
    "since", "as", "then", "but", "if",
}


def build_prompt(item: Item, style: str = "omnizip") -> str:
    """The text the model is asked (the video goes alongside it). ``style``: ``omnizip`` (this module's
    prompt), or ``videomme`` / ``worldsense`` for their multiple-choice items, worded as lmms-eval's
    tasks word them (:mod:`omnizip_cli.evaluation.benchmark_prompts`)."""
    if item.is_multiple_choice and style in ("videomme", "worldsense"):
        from omnizip_cli.evaluation import benchmark_prompts

        return benchmark_prompts.videomme_prompt(item) if style == "videomme" else \
            benchmark_prompts.worldsense_prompt(item)
    if not item.is_multiple_choice:
        return f"{item.question}\n{OPEN_INSTRUCTION}"
    lines = [item.question, "Options:"]
    lines += [f"{LETTERS[i]}. {text}" for i, text in enumerate(item.options)]
    lines.append(MC_INSTRUCTION)
    return "\n".join(lines)


def _final_part(text: str) -> str:
    """The answer after any reasoning: the text after the last ``</think>``, markup removed."""
    parts = _THINK_END.split(text)
    tail = parts[-1] if len(parts) > 1 else text
    tail = re.sub(r"<think>.*", "", tail, flags=re.IGNORECASE | re.DOTALL) if "<think>" in tail.lower() else tail
    return _MARKUP.sub("", tail).strip()


def extract_choice(response: str, options: tuple[str, ...] | list[str]) -> str | None:
    """The option letter a free-text ``response`` picks among ``options``, or None.

    The rule, tried in this order on the text after the last ``</think>`` (reasoning is ignored),
    with Markdown emphasis removed; only letters of existing options count (A-D for 4 options):

    1. **The whole answer is a letter**, upper or lower case, bare or decorated: ``B``, ``b``,
       ``(B)``, ``[B]``, ``B.``, ``B)``, ``B:``.
    2. **It starts with a capital letter followed by ``.``, ``)`` or ``:``** (``B. The ball``,
       ``(C) two``, ``D: yes``), or by a space when the rest is that option's text
       (``A red ball`` picks A only if option A is "red ball"; otherwise "A" is an article).
    3. **An explicit marker**: the last ``answer``/``option``/``choice`` followed (after ``is``,
       ``:``, ``would be``, ...) by one letter, any case, optionally in brackets: ``The answer is B``,
       ``Answer: b) ...``, ``the correct option is (C)``.
    4. **An option's text**: the answer, normalised (:func:`normalise_answer`), equals one option's
       text, or contains exactly one option's text as whole words (the longest wins when one option's
       text contains another's).
    5. **A lone capital letter**: exactly one distinct valid letter stands alone as a word (``I
       think C is right``); ``A B`` or ``A and B`` name two and give None.

    In rules 3 and 5 a lower-case letter, or a capital ``A``/``I``, followed by a lower-case word
    is read as a word ("is a red ball", "I think"), unless that word joins ("A and B", "A is right").

    Anything else (empty, several letters, no option) is None: scored wrong and counted as
    unparsed. The authors' scripts take the first character, so "A red ball" scores A there.
    """
    if not options:
        return None
    valid = LETTERS[: len(options)]
    text = _final_part(response)
    if not text:
        return None
    # 1. the whole answer is a letter
    match = re.fullmatch(r"[\(\[]?\s*([A-Za-z])\s*[\)\]\.:]?", text)
    if match and match.group(1).upper() in valid:
        return match.group(1).upper()
    # 2. a leading letter
    match = re.match(r"[\(\[]?([A-Z])(?:[\)\]]|[\.:](?=\s|$))", text)
    if match and match.group(1) in valid:
        return match.group(1)
    match = re.match(r"([A-Z])\s+(.+)", text, flags=re.DOTALL)
    if match and match.group(1) in valid:
        rest = normalise_answer(match.group(2))
        if rest and rest == normalise_answer(options[valid.index(match.group(1))]):
            return match.group(1)
    # 3. an explicit marker
    marker = re.compile(
        r"\b(?:answer|option|choice)s?\b(?:\s+(?:is|would\s+be|should\s+be|will\s+be|=)|\s*[:=])?\s*"
        r"(?:option\s+|letter\s+)?[\(\[]?([A-Za-z])(?:[\)\]\.:,;!]|\s|$)",
        re.IGNORECASE,
    )
    found = [m.group(1).upper() for m in marker.finditer(text) if not _reads_as_word(text, m.start(1))]
    found = [letter for letter in found if letter in valid]
    if found:
        return found[-1]
    # 4. an option's text
    said = normalise_answer(text)
    if said:
        texts = [normalise_answer(o) for o in options]
        exact = [i for i, t in enumerate(texts) if t and t == said]
        if len(exact) == 1:
            return valid[exact[0]]
        inside = [i for i, t in enumerate(texts) if t and re.search(rf"(?:^| ){re.escape(t)}(?: |$)", said)]
        inside = [i for i in inside if not any(j != i and texts[i] in texts[j] for j in inside)]
        if len(inside) == 1:
            return valid[inside[0]]
    # 5. a lone capital letter
    lone = set()
    for m in re.finditer(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])", text):
        letter = m.group(1)
        if _reads_as_word(text, m.start(1)):
            continue
        if letter in valid:
            lone.add(letter)
    if len(lone) == 1:
        return lone.pop()
    return None


def _reads_as_word(text: str, at: int) -> bool:
    """Whether the single letter at ``text[at]`` is a word ("a ball", "I think") rather than an
    option letter: a lower-case letter, or a capital ``A``/``I``, followed by a lower-case word
    that is not a joining word ("A and B", "A is right" keep the letter)."""
    letter = text[at]
    if not (letter.islower() or letter in "AI"):
        return False
    follow = re.match(r"\s+([a-z]+)", text[at + 1:])
    return bool(follow) and follow.group(1) not in _JOINING_WORDS


def normalise_answer(text: str) -> str:
    """Lower case, accents and punctuation removed, articles dropped, number words as digits,
    whitespace collapsed: ``"The  Red-Ball!"`` and ``"red ball"`` both give ``"red ball"``,
    ``"Four."`` gives ``"4"``."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.translate(str.maketrans({ch: " " for ch in string.punctuation}))
    words = [_NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def score(item: Item, response: str, style: str = "omnizip") -> tuple[str | None, bool]:
    """``(extracted answer, correct)`` for ``response``: a letter for multiple choice (see
    :func:`extract_choice`; with ``style`` ``videomme`` / ``worldsense``, lmms-eval's parser of that
    task, without its default letter), the normalised text for an open question (exact match)."""
    if item.is_multiple_choice:
        if style in ("videomme", "worldsense"):
            from omnizip_cli.evaluation import benchmark_prompts

            parse = benchmark_prompts.videomme_choice if style == "videomme" else benchmark_prompts.worldsense_choice
            letter = parse(response, item.options)
        else:
            letter = extract_choice(response, item.options)
        return letter, letter is not None and letter == item.answer
    said = normalise_answer(_final_part(response))
    return (said or None), bool(said) and said == normalise_answer(item.answer)
