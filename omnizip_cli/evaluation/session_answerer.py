"""The evaluation protocol on a :class:`~omnizip_cli.generation.Session`: what ``omnizip evaluate`` runs.

:meth:`SessionAnswerer.open` decodes, processes and encodes a video once (with the audio saliency,
so that every setting can compress it); :meth:`SessionVideo.answer` derives one session per setting
from it (:meth:`~omnizip_cli.generation.Session.with_compression`: only the keep plan and the
prefix prefill differ) and answers each question greedily from that setting's cached prefix.

Baselines (:mod:`omnizip_cli.evaluation.baselines`): ``random@R`` is planned from the same encoded
media (OmniZip's plan at R gives the counts, a seeded random mask the rows, the adapter's own
prefill applies it). ``frames@R`` and ``pixels@R`` need other frames: the video is opened again,
uncompressed, once per distinct matched media options (shared by all questions and settings that
match to the same options), and their token counts are compared with the full run's. Time to
first token: ``random@R`` counts its plan (OmniZip's plan for the counts, then the draw) as
``omnizip@R`` counts its keep plan; ``frames@R`` / ``pixels@R`` do not count their decode and
encode, as ``full`` does not count its own.
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
        return SessionVideo(session, self.options, path=video, media=self.media, system=self.system)


class SessionVideo:
    """A video encoded once; one session per setting, each with its cached prefix (``frames@R`` and
    ``pixels@R``: one opening per distinct media options)."""

    def __init__(self, base: Session, options: Any, *, path: Path | None = None, media: Any = None,
                 system: str | None = None) -> None:
        self.base = base
        self.options = options
        self.path = path
        self.media = media
        self.system = system
        self.sessions: dict[str, Session] = {}
        self.openings: dict[str, Session] = {}  # by the matched media options
        self.matches: dict[str, dict[str, Any]] = {}  # by setting key: what frames@/pixels@ opened with

    def _session(self, setting: Setting) -> Session:
        if setting.key not in self.sessions:
            if setting.reopens:
                self.sessions[setting.key] = self._reopened(setting)
            elif setting.method == "random":
                self.sessions[setting.key] = self._random(setting)
            else:
                self.sessions[setting.key] = self.base.with_compression(setting.compression_setting())
        return self.sessions[setting.key]

    def _reopened(self, setting: Setting) -> Session:
        """The video opened again with the media options matched to ``setting`` (see :mod:`.baselines`)."""
        from omnizip_cli.errors import UsageError
        from omnizip_cli.evaluation.baselines import ClipLayout, match_media
        from omnizip_cli.generation import OpenOptions, Session
        from omnizip_cli.generation.prefix import canonical

        base = self.base
        if self.path is None or self.media is None or base.summary is None:
            raise UsageError(f"{setting.key} needs the video's path and media options")
        if base.prepared is None or base.prepared.video_grid is None:  # audio only: no frame to take away
            self.matches[setting.key] = {"frames": 0, "note": "no video track: answered as full"}
            return base
        tokens = base.tokens
        geometry = base.loaded.adapter.vision_geometry(base.loaded.model)
        layout = ClipLayout.from_summary(base.summary, tokens.audio.before, tokens.video.before,
                                         token_pixels=int(geometry.token_pixels))
        match = match_media(layout, self.media, str(setting.method), float(setting.target_retention or 1.0))
        key = canonical(match.options)
        if key not in self.openings:
            self.openings[key] = Session.open(base.loaded, self.path, OpenOptions(
                media=match.options, compression=None, system=self.system, cache=False))
        self.matches[setting.key] = match.describe()
        return self.openings[key]

    def _random(self, setting: Setting) -> Session:
        """A session whose prefix keeps OmniZip's per-modality counts at random (see :mod:`.baselines`)."""
        from omnizip_cli.evaluation.baselines import random_plan, seed_for
        from omnizip_cli.generation import Session
        from omnizip_cli.generation.prefix import keep_plan, prefix_of_plan, prompt_counts

        video = self.base.video
        if video is None:
            raise ValueError("a random@ setting needs the encoded media")
        loaded, encoded = video.loaded, video.encoded
        counts = prompt_counts(loaded, video.prepared)
        config = setting.compression(counts.audio, counts.video)
        if config is None:  # nothing to drop at this retention
            return self.base.with_compression(None)
        ids = loaded.adapter.token_ids(loaded.model)
        reference = keep_plan(loaded, encoded, config)
        name = self.path.name if self.path is not None else ""
        plan = random_plan(encoded.input_ids[0], reference, audio_token_id=ids.audio, video_token_id=ids.video,
                           seed=seed_for(name, setting.key), hidden_size=int(encoded.embeds.shape[-1]),
                           dtype=encoded.embeds.dtype)
        prefix = prefix_of_plan(loaded, video.prepared, encoded, config, plan, counts=counts,
                                summary=self.base.summary)
        return Session(loaded, prefix, video=video, decoder=self.base.decoder)

    def answer(self, prompt: str, setting: Setting) -> Prediction:
        from omnizip_cli.measure import MemoryProbe

        if setting.reopens:  # its own decode and encode, like full's, are not part of an answer's time
            self._session(setting)
        memory = MemoryProbe(self.base.loaded.device)
        memory.reset()
        started = time.perf_counter()
        session = self._session(setting)
        stats = session.answer(prompt, self.options, origin=started)  # the plan counts: it is per setting
        tokens = session.tokens.audio_video
        before = self.base.tokens.audio_video.before  # frames@/pixels@: against the full run's tokens
        end_tokens = set(session.text.generation_config.eos_token_id or [])
        ids = tuple(t for t in stats.token_ids if t not in end_tokens)
        rate = stats.decode_tokens_per_second if len(stats.token_ids) > 1 else None
        return Prediction(
            text=stats.text,
            token_ids=ids,
            tokens_before=before,
            tokens_after=tokens.after,
            prompt_tokens=stats.prompt_tokens,
            ttft_seconds=stats.time_to_first_token_seconds,
            decode_tokens_per_second=rate,
            peak_memory_bytes=memory.peak(),
            media=self.matches.get(setting.key),
        )

    def close(self) -> None:
        self.sessions.clear()
        self.openings.clear()
