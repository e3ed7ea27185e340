"""A fake model and session (like llm's MockModel) for report and CLI plumbing tests: no model load.

They have the attributes the CLI and the report read, with hand-made figures; the real Session is
exercised by tests/model and by a few real end-to-end CLI runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from omnizip_cli.compression import PRESETS, OmniZipConfig
from omnizip_cli.generation import AnswerStats, GenerationChunk, GenerationOptions, PrefixOrigin
from omnizip_cli.measure import ModalityCount, StageRecord, StageTimer, TokenCounts
from omnizip_cli.media import MediaSummary

MB = 1_000_000
SETUP_FIGURES = {  # name: (seconds, peak RSS bytes)
    "load_model": (2.5, 900 * MB),
    "media_decode": (0.25, 600 * MB),
    "preprocess": (0.5, 1000 * MB),
    "audio_encoder": (0.75, 1100 * MB),
    "vision_encoder": (1.25, 1200 * MB),
    "saliency": (0.0625, 1200 * MB),
    "keep_plan": (0.125, 1250 * MB),
}
ANSWER_FIGURES = {"prefill": (0.5, 1300 * MB), "decode": (1.5, 1400 * MB)}
QUESTION_TOKENS = 7  # text tokens a question adds after the media prefix


def make_media(**changes: Any) -> MediaSummary:
    fields = dict(
        path="samples/talking.mp4", container="mov,mp4", kind="video+audio", duration_s=6.4, video_codec="h264",
        audio_codec="aac", frames_sampled=8, frame_height=196, frame_width=364, fps_used=1.25, rotation=0,
        source_width=640, source_height=360, audio_seconds=6.4, audio_truncated=False, audio_sample_rate_in=44100,
        audio_channels_in=1, decode_seconds=0.25,
    )
    fields.update(changes)
    return MediaSummary(**fields)


@dataclass
class FakeLoaded:
    """What the CLI and the report read of a loaded model."""

    is_tiny: bool = True
    device: str = "cpu"
    name: str = "tiny"
    load_seconds: float = 2.5
    context_length: int = 32768
    warnings: tuple[str, ...] = ("--model tiny: the weights are random, so the answer is meaningless",)
    model: Any = None
    adapter: Any = field(default_factory=lambda: SimpleNamespace(
        vision_geometry=lambda model: SimpleNamespace(token_pixels=28)))

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "family": "Qwen2.5-Omni",
            "path": "/cache/tiny-qwen2.5-omni-v1" if self.is_tiny else self.name,
            "random_weights": self.is_tiny,
            "device": self.device,
            "dtype": "float32",
            "attn_implementation": "sdpa",
            "fast_encoder_attention": False,
            "encoder_attention_note": "",
        }


def _timer(figures: dict[str, tuple[float, int]], skip: tuple[str, ...], memory_kind: str) -> StageTimer:
    timer = StageTimer()
    for name, (seconds, peak) in figures.items():
        if name not in skip:
            timer.stages[name] = StageRecord(seconds=seconds, peak_memory_bytes=peak, memory_kind=memory_kind)
    return timer


@dataclass
class FakeSession:
    """A session with hand-made figures; ``ask`` streams ``answer_for(question)`` a word at a time."""

    compressed: bool = True
    skip: tuple[str, ...] = ()
    memory_kind: str = "cpu_rss"
    loaded: Any = field(default_factory=FakeLoaded)
    media_summary: MediaSummary = field(default_factory=make_media)
    warnings: list[str] = field(default_factory=list)
    asked: list[tuple[str, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.timer = _timer({k: v for k, v in SETUP_FIGURES.items() if k != "load_model"}, self.skip, self.memory_kind)
        video, audio, text = (378, 120, 30) if self.compressed else (864, 160, 30)
        self.tokens = TokenCounts(video=ModalityCount(864, video), audio=ModalityCount(160, audio),
                                  text=ModalityCount(30, text))
        self.config: OmniZipConfig | None = PRESETS["45"] if self.compressed else None
        self.prefill = SimpleNamespace(length=self.tokens.total.after)
        self.prefix_length = self.tokens.total.before
        self.group_rows: list[dict[str, Any]] = []
        self._asked = 0

    @property
    def summary(self) -> MediaSummary:
        return self.media_summary

    @staticmethod
    def answer_for(question: str) -> str:
        return f"An answer to {question}"

    context_fit: Any = None
    prefix_cache: Any = None
    origin: PrefixOrigin = field(default_factory=PrefixOrigin)
    opened_at: float | None = None

    def conversation(self) -> FakeConversation:
        return FakeConversation(self)

    def ask(self, question: str, options: GenerationOptions | None = None, *, origin: float | None = None,
            follow_up: bool = False) -> Iterator[GenerationChunk]:
        self.asked.append((question, follow_up))
        words = self.answer_for(question).split(" ")
        for index, word in enumerate(words):
            yield GenerationChunk(text=word if index == 0 else " " + word, token=index)
        timer = _timer(ANSWER_FIGURES, self.skip, self.memory_kind)
        first = self._asked == 0
        self._asked += 1
        yield GenerationChunk(text="", token=None, stats=AnswerStats(
            token_ids=list(range(11)), text=self.answer_for(question), stop_reason="max_new_tokens",
            prefilled_tokens=self.prefill.length + QUESTION_TOKENS if first else QUESTION_TOKENS,
            prompt_tokens=self.prefill.length + QUESTION_TOKENS, prefill_seconds=0.5, first_token_seconds=0.5,
            decode_seconds=1.5, decoder="eager", prefix_source="fresh" if first else "memory", timer=timer,
            time_to_first_token_seconds=3.5, total_seconds=5.0,
        ))

    def reset(self) -> None:
        """Called when a conversation on it is reset."""


@dataclass
class FakeConversation:
    """A conversation on a :class:`FakeSession`: each question after the first is a follow-up."""

    session: FakeSession
    turns: int = 0

    def ask(self, question: str, options: GenerationOptions | None = None, *, origin: float | None = None
            ) -> Iterator[GenerationChunk]:
        for chunk in self.session.ask(question, options, follow_up=self.turns > 0):
            if chunk.stats is not None:
                self.turns += 1
            yield chunk

    def reset(self) -> None:
        self.turns = 0
        self.session.reset()


def install_fake_opening(monkeypatch: Any, session: Any, loaded: Any = None, media: Any = None) -> dict[str, Any]:
    """Replace the library opening's plumbing seams (model load, file check and decode, the fresh
    session) so that a command opens ``session`` without a model; returns the fresh session's arguments."""
    import omnizip_cli.generation.opening as opening

    loaded = loaded if loaded is not None else FakeLoaded()
    decoded = media if media is not None else type("M", (), {"summary": make_media()})()
    seen: dict[str, Any] = {}

    def fresh_session(loaded_model: Any, decoded_media: Any, options: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, options=options, media=decoded_media)
        return session

    monkeypatch.setattr(opening, "start_media", lambda path, options, token_pixels: lambda **kwargs: decoded)
    monkeypatch.setattr(opening, "load_model", lambda spec: loaded)
    monkeypatch.setattr(opening, "fresh_session", fresh_session)
    return seen
