"""A conversation on one video: completed turns, each question continuing the previous ones.

>>> chat = session.conversation()              # doctest: +SKIP
>>> chat.answer("What is said?").text          # doctest: +SKIP
>>> chat.answer("And then?").text              # continues the first turn  # doctest: +SKIP

Turns are kept as token ids (the model's own answer ids, closed by the template's end-of-turn
text), never re-tokenised text; only complete turns are kept: an answer stopped before its end
(an interrupt, a closed stream) leaves the conversation as it was before the question. The
Session's KV cache reuses what it already holds of the turns (:mod:`.kv`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .stream import AnswerStats, GenerationChunk, collect

if TYPE_CHECKING:
    from .sampling import GenerationOptions
    from .session import Session


class Conversation:
    """Completed turns on a :class:`~.session.Session`'s prefix (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.turn_ids: list[int] = []  # ids after the prefix of the completed turns
        self.turns = 0

    def question_ids(self, question: str) -> list[int]:
        """The ids this question adds after the completed turns."""
        return self.session.question_ids(question, after=self.turn_ids)

    def ids(self) -> list[int]:
        """The uncompressed ids of the whole conversation so far (prefix included)."""
        return self.session.prefix.input_ids[0].tolist() + self.turn_ids

    def ask(self, question: str, options: GenerationOptions | None = None, *, origin: float | None = None
            ) -> Iterator[GenerationChunk]:
        """Stream the answer to ``question`` after the completed turns (the first one: from the prefix)."""
        turn = self.turn_ids + self.question_ids(question)
        return self.session.answer_turn(turn, options, origin=origin, on_complete=self._completed)

    def answer(self, question: str, options: GenerationOptions | None = None, *, origin: float | None = None
               ) -> AnswerStats:
        """The blocking form of :meth:`ask`."""
        return collect(self.ask(question, options, origin=origin))

    def reset(self) -> None:
        """Forget the turns; the video and its cached prefix stay."""
        self.turn_ids = []
        self.turns = 0

    def _completed(self, closed: list[int]) -> None:
        self.turn_ids = closed
        self.turns += 1
