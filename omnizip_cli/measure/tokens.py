"""Tokens per modality before and after compression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModalityCount:
    """Tokens of one modality before and after compression."""

    before: int
    after: int

    @property
    def dropped(self) -> int:
        return self.before - self.after

    @property
    def retention(self) -> float:
        return self.after / self.before if self.before else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "dropped": self.dropped, "retention": self.retention}


@dataclass(frozen=True)
class TokenCounts:
    video: ModalityCount
    audio: ModalityCount
    text: ModalityCount

    @property
    def total(self) -> ModalityCount:
        return ModalityCount(
            self.video.before + self.audio.before + self.text.before,
            self.video.after + self.audio.after + self.text.after,
        )

    @property
    def audio_video(self) -> ModalityCount:
        return ModalityCount(self.video.before + self.audio.before, self.video.after + self.audio.after)

    def plus_text(self, tokens: int) -> TokenCounts:
        """The counts with ``tokens`` more text tokens, never compressed (a question, a turn)."""
        return TokenCounts(self.video, self.audio, ModalityCount(self.text.before + tokens, self.text.after + tokens))

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video.to_dict(),
            "audio": self.audio.to_dict(),
            "text": self.text.to_dict(),
            "audio_video": self.audio_video.to_dict(),
            "total": self.total.to_dict(),
        }


def count_tokens(input_ids: Any, kept: Any | None, *, audio_token_id: int, video_token_id: int) -> TokenCounts:
    """Count tokens per modality of ``input_ids [L]`` before and after the keep mask ``kept [L]`` (None: all)."""
    import torch

    ids = input_ids.reshape(-1)
    is_video = ids == video_token_id
    is_audio = ids == audio_token_id
    is_text = ~(is_video | is_audio)
    keep = kept.to(ids.device) if kept is not None else torch.ones_like(ids, dtype=torch.bool)

    def count(mask: Any) -> ModalityCount:
        return ModalityCount(int(mask.sum()), int((mask & keep).sum()))

    return TokenCounts(video=count(is_video), audio=count(is_audio), text=count(is_text))
