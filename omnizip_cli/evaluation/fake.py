"""A deterministic fake answerer for plumbing tests and overhead benchmarks (no model, no torch).

Like simonw/llm's mock model: it lets the evaluation loop, the results folder, resuming and Ray be
tested without weights. Its answers are a pure function of (video file name, prompt, setting), so
any number of processes give the same predictions. It does read the video file: an empty or
missing file raises :class:`MediaError` from :meth:`FakeAnswerer.open`, like a real decoder would.

Answers: for a multiple-choice prompt it picks an option by hashing the video name and prompt; a
compressed setting keeps full's pick except for about ``flip_rate`` (35 %) of the questions. The reply's
wording varies ("B", "The answer is B.", "(B) <option text>") so that scoring is exercised. Figures:
``tokens_before`` grows with the file size, ``tokens_after`` is the setting's target share of it,
TTFT is proportional to the tokens kept. Not measurements: test data.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from omnizip_cli.errors import MediaError
from omnizip_cli.evaluation.protocol import Prediction, Setting

__all__ = ["FakeAnswerer", "FakeAnswererFactory", "FakeVideo"]

_OPTION_LINE = re.compile(r"^([A-J])\. (.*)$", re.MULTILINE)


def _unit(*parts: str) -> float:
    """A number in [0, 1) from a hash of ``parts``."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class FakeVideo:
    """An opened fake video: answers deterministically, counts its calls."""

    name: str
    size: int
    answer_delay: float = 0.0
    flip_rate: float = 0.35
    answered: int = 0
    closed: bool = False

    def answer(self, prompt: str, setting: Setting) -> Prediction:
        if self.closed:
            raise RuntimeError("answer() after close()")
        if self.answer_delay:
            time.sleep(self.answer_delay)
        self.answered += 1
        options = _OPTION_LINE.findall(prompt)
        before = 200 + self.size % 997
        keep = 1.0 if setting.is_full else (setting.target_retention or 0.45)
        after = max(1, round(before * keep))
        if options:
            index = int(_unit(self.name, prompt) * len(options))
            if not setting.is_full and _unit(self.name, prompt, setting.key) < self.flip_rate:
                index = (index + 1) % len(options)
            letter, text = options[index]
            style = int(_unit(self.name, prompt, "style") * 3)
            reply = (letter, f"The answer is {letter}.", f"({letter}) {text}")[style]
        else:
            reply = "four" if _unit(self.name, prompt) < 0.5 else "three"
        token_ids = tuple(ord(ch) % 97 for ch in reply)
        return Prediction(
            text=reply, token_ids=token_ids, tokens_before=before, tokens_after=after,
            prompt_tokens=after + 40, ttft_seconds=round(1e-4 * after, 6), decode_tokens_per_second=50.0,
            peak_memory_bytes=1_000_000 + 4096 * after,
        )

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeAnswerer:
    """Opens videos as :class:`FakeVideo`; ``opened`` lists the paths in order (for tests)."""

    open_delay: float = 0.0
    answer_delay: float = 0.0
    flip_rate: float = 0.35
    opened: list[Path] = field(default_factory=list)

    def open(self, video: Path) -> FakeVideo:
        try:
            size = video.stat().st_size
        except OSError as exc:
            raise MediaError(f"cannot read {video}: {exc.strerror}") from None
        if size == 0:
            raise MediaError(f"{video.name} is empty: no audio or video stream")
        if self.open_delay:
            time.sleep(self.open_delay)
        self.opened.append(video)
        return FakeVideo(name=video.name, size=size, answer_delay=self.answer_delay, flip_rate=self.flip_rate)


@dataclass(frozen=True)
class FakeAnswererFactory:
    """Picklable factory of :class:`FakeAnswerer` (what Ray workers receive)."""

    open_delay: float = 0.0
    answer_delay: float = 0.0
    flip_rate: float = 0.35

    def __call__(self) -> FakeAnswerer:
        return FakeAnswerer(open_delay=self.open_delay, answer_delay=self.answer_delay, flip_rate=self.flip_rate)
