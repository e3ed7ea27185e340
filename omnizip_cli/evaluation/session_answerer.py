"""The evaluation protocol on a :class:`~omnizip_cli.generation.Session`: what ``omnizip evaluate`` runs.

:meth:`SessionAnswerer.open` decodes, processes and encodes a video once (with the audio saliency,
so that every setting can compress it); :meth:`SessionVideo.answer` derives one session per setting
from it (:meth:`~omnizip_cli.generation.Session.with_compression`: only the keep plan and the
prefix prefill differ) and answers each question greedily from that setting's cached prefix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnizip_cli.evaluation.protocol import Prediction, Setting

if TYPE_CHECKING:
    from omnizip_cli.generation import Session

__all__ = ["SessionAnswerer", "SessionAnswererFactory", "SessionVideo"]


@dataclass(frozen=True)
class SessionAnswererFactory:
    """Picklable: ``model`` holds :class:`~omnizip_cli.models.ModelSpec` fields, ``media`` the
    :class:`~omnizip_cli.media.MediaOptions` fields; each worker loads its own model."""

    model: dict[str, Any]
    media: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int = 100
    system: str | None = None

    def __call__(self) -> SessionAnswerer:
        from omnizip_cli.media import MediaOptions
        from omnizip_cli.models import ModelSpec, load_model
        from omnizip_cli.models.registry import apply_offline_mode
        from omnizip_cli.quiet import quiet_libraries

        apply_offline_mode(bool(self.model.get("offline")))
        quiet_libraries()
        loaded = load_model(ModelSpec(**self.model))
        return SessionAnswerer(loaded, MediaOptions(**self.media), self.max_new_tokens, self.system)


class SessionAnswerer:
    """One loaded model; opens videos as Sessions."""

    def __init__(self, loaded: Any, media: Any, max_new_tokens: int = 100, system: str | None = None) -> None:
        from omnizip_cli.generation import GenerationOptions

        self.loaded = loaded
        self.media = media
        self.options = GenerationOptions(max_new_tokens=max_new_tokens)
        self.system = system

    def open(self, video: Path) -> SessionVideo:
        """Open ``video`` through the library's one path, uncompressed with the saliency recorded, so that
        every setting re-plans from its encoded media (never from the disk cache: that holds no encoder output)."""
        from omnizip_cli.generation import OpenOptions, Session

        session = Session.open(self.loaded, video, OpenOptions(media=self.media, compression=None, system=self.system,
                                                               record_saliency=True, cache=False))
        return SessionVideo(session, self.options)


class SessionVideo:
    """A video encoded once; one session per setting, each with its cached prefix."""

    def __init__(self, base: Session, options: Any) -> None:
        self.base = base
        self.options = options
        self.sessions: dict[str, Session] = {}

    def _session(self, setting: Setting) -> Session:
        if setting.key not in self.sessions:
            self.sessions[setting.key] = self.base.with_compression(setting.compression_setting())
        return self.sessions[setting.key]

    def answer(self, prompt: str, setting: Setting) -> Prediction:
        from omnizip_cli.measure import MemoryProbe

        memory = MemoryProbe(self.base.loaded.device)
        memory.reset()
        started = time.perf_counter()
        session = self._session(setting)
        stats = session.answer(prompt, self.options, origin=started)  # the plan counts: it is per setting
        tokens = session.tokens.audio_video
        end_tokens = set(session.text.generation_config.eos_token_id or [])
        ids = tuple(t for t in stats.token_ids if t not in end_tokens)
        rate = stats.decode_tokens_per_second if len(stats.token_ids) > 1 else None
        return Prediction(
            text=stats.text,
            token_ids=ids,
            tokens_before=tokens.before,
            tokens_after=tokens.after,
            prompt_tokens=stats.prompt_tokens,
            ttft_seconds=stats.time_to_first_token_seconds,
            decode_tokens_per_second=rate,
            peak_memory_bytes=memory.peak(),
        )

    def close(self) -> None:
        self.sessions.clear()
