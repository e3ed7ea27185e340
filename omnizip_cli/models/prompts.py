"""Cut a chat template into the parts around the user's question, with sentinels.

The media prefix (system prompt, user-turn header, media placeholder) must not depend on the
question, so that it is processed, encoded, compressed and prefilled once per video. The family's
own chat template is rendered with sentinel strings in place of the question and of an assistant
answer, and cut there: the text before the first question is the prefix, the text after it is the
question suffix, and the text between an answer and the next question is the turn separator.
Special tokens split the tokenizer's input, so tokenizing the parts separately gives the same ids as
tokenizing the whole prompt (the exactness tests compare against the stock processor's ids).
"""

from __future__ import annotations

from typing import Any

from .base import PromptTemplates

QUESTION = "\ue000OMNIZIP-QUESTION\ue000"
ANSWER = "\ue000OMNIZIP-ANSWER\ue000"
FOLLOW_UP = "\ue000OMNIZIP-FOLLOW-UP\ue000"


def media_messages(kind: str, question: str, system: str | None) -> list[dict[str, Any]]:
    """A chat with one user turn: the media placeholder first, then the question."""
    content: list[dict[str, Any]] = []
    if kind.startswith("video"):
        content.append({"type": "video", "video": "input"})
    else:
        content.append({"type": "audio", "audio": "input"})
    content.append({"type": "text", "text": question})
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    return messages


def render(processor: Any, messages: list[dict[str, Any]]) -> str:
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def cut_templates(processor: Any, kind: str, system: str | None) -> tuple[str, PromptTemplates]:
    """``(prefix_text, templates)`` for a media prompt of ``kind``.

    ``prefix_text`` still holds the media placeholder for the processor to expand.
    """
    first = media_messages(kind, QUESTION, system)
    text = render(processor, first)
    if text.count(QUESTION) != 1:
        raise ValueError("the chat template does not place the question exactly once")
    prefix_text, question_suffix = text.split(QUESTION)
    conversation = [*first, {"role": "assistant", "content": ANSWER}, {"role": "user", "content": FOLLOW_UP}]
    text = render(processor, conversation)
    if text.count(ANSWER) != 1 or text.count(FOLLOW_UP) != 1:
        raise ValueError("the chat template does not render a two-turn conversation")
    next_turn = text.split(ANSWER, 1)[1].split(FOLLOW_UP, 1)[0]
    return prefix_text, PromptTemplates(question_suffix=question_suffix, next_turn=next_turn)
