"""Options and results of media decoding: :class:`MediaOptions`, :class:`MediaSummary`, :class:`DecodedMedia`."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from omnizip_cli.errors import UsageError

#: Qwen2.5-Omni's own video preprocessing defaults (qwen-omni-utils ``vision_process.py``).
#: ``IMAGE_FACTOR``: the default frame-size factor (Qwen2.5-Omni's token, 28 px; a model's own is its
#: adapter's ``VisionGeometry.token_pixels``, passed to :func:`load_media` as ``token_pixels``).
IMAGE_FACTOR = 28
FRAME_FACTOR = 2
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
#: qwen-omni-utils' default pixel budget over all the frames of a video (``VIDEO_TOTAL_PIXELS``,
#: ``int(128000 * 28 * 28 * 0.9)`` = 90,316,800, when its ``VIDEO_MAX_PIXELS`` env var is unset).
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)
#: ``total_pixels`` value that turns the budget over all frames off.
NO_TOTAL_PIXELS = 0
#: Sample rate and layout the Whisper feature extractor of Qwen2.5-Omni expects.
AUDIO_SAMPLE_RATE = 16000


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class MediaOptions:
    """How to sample and size a media file. Invalid values raise :class:`UsageError` (exit code 2).

    Attributes
    ----------
    fps:
        Frames sampled per second of video (``--fps``; Qwen2.5-Omni uses 2).
    max_frames:
        Upper bound on the sampled frame count (``--max-frames``; qwen-omni-utils ``FPS_MAX_FRAMES``).
        The count is also at least 4 (``FPS_MIN_FRAMES``) when the video has that many frames, and
        always even (``FRAME_FACTOR``); an odd ``max_frames`` is rounded down to even.
    min_pixels, max_pixels:
        Bounds on the pixels of each frame (``--min-pixels`` / ``--max-pixels``).
    total_pixels:
        Pixel budget over all ``n`` frames (``--total-pixels``), as qwen-omni-utils applies it: the
        per-frame maximum becomes ``max(min(max_pixels, total_pixels / n * 2), int(1.05 * min_pixels))``,
        capped at ``max_pixels``. ``None`` (default) is qwen-omni-utils' default budget,
        :data:`VIDEO_TOTAL_PIXELS` (90,316,800: a 300-s 1280x720 clip at 2 fps gets 392x728 frames,
        like the stock path); ``0`` (:data:`NO_TOTAL_PIXELS`) turns the budget off (frames sized by
        ``max_pixels`` alone). Only videos of more than ``2 * VIDEO_TOTAL_PIXELS / max_pixels`` = 300
        frames (150 s at 2 fps) are affected at the default ``max_pixels``.
    use_audio:
        ``False`` (``--no-audio``) ignores any audio track.
    max_audio_seconds:
        ``None`` keeps all the audio. When set and exceeded, the audio is cut and the summary says so.
    """

    fps: float = FPS
    max_frames: int = FPS_MAX_FRAMES
    min_pixels: int = VIDEO_MIN_PIXELS
    max_pixels: int = VIDEO_MAX_PIXELS
    total_pixels: int | None = None
    use_audio: bool = True
    max_audio_seconds: float | None = None

    def __post_init__(self) -> None:
        if not _is_number(self.fps) or not math.isfinite(self.fps) or self.fps <= 0:
            raise UsageError(f"--fps must be a number greater than 0 (got {self.fps!r})")
        if not _is_int(self.max_frames) or self.max_frames < FRAME_FACTOR:
            raise UsageError(f"--max-frames must be an integer of at least {FRAME_FACTOR} (got {self.max_frames!r})")
        if not _is_int(self.min_pixels) or self.min_pixels < 1:
            raise UsageError(f"--min-pixels must be a positive integer (got {self.min_pixels!r})")
        patch = IMAGE_FACTOR * IMAGE_FACTOR
        if not _is_int(self.max_pixels) or self.max_pixels < patch:
            raise UsageError(
                f"--max-pixels must be an integer of at least {patch} (one 28x28 patch) (got {self.max_pixels!r})"
            )
        if self.max_pixels < self.min_pixels:
            raise UsageError(
                f"--max-pixels ({self.max_pixels}) must not be smaller than --min-pixels ({self.min_pixels})"
            )
        if self.total_pixels is not None and (
            not _is_int(self.total_pixels) or (self.total_pixels < patch and self.total_pixels != NO_TOTAL_PIXELS)
        ):
            raise UsageError(
                f"--total-pixels must be 0 (no budget) or an integer of at least {patch} (got {self.total_pixels!r})"
            )
        if not isinstance(self.use_audio, bool):
            raise UsageError(f"use_audio must be True or False (got {self.use_audio!r})")
        if self.max_audio_seconds is not None and (
            not _is_number(self.max_audio_seconds)
            or not math.isfinite(self.max_audio_seconds)
            or self.max_audio_seconds <= 0
        ):
            raise UsageError(f"--max-audio-seconds must be a number greater than 0 (got {self.max_audio_seconds!r})")

    @property
    def effective_total_pixels(self) -> int | None:
        """The budget over all frames in force: the default when unset, ``None`` when turned off."""
        if self.total_pixels is None:
            return VIDEO_TOTAL_PIXELS
        return None if self.total_pixels == NO_TOTAL_PIXELS else int(self.total_pixels)

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (for ``--json`` and saved configs)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MediaSummary:
    """What was decoded, for the report.

    ``kind`` is what :func:`load_media` returns: ``"video+audio"``, ``"video"`` or ``"audio"``
    (a video whose audio track was ignored with ``--no-audio`` is ``"video"``; ``audio_codec`` still
    names the track). ``duration_s`` is the longer of the decoded video span and the decoded audio
    (before any ``max_audio_seconds`` cut). ``fps_used`` is the effective sampling rate handed to the
    processor, ``frames_sampled / video duration`` exactly as qwen-omni-utils computes ``sample_fps``
    (0.0 without video). ``rotation`` is the display rotation applied, in degrees counter-clockwise
    as FFmpeg's display matrix states it (a portrait phone clip usually says -90).
    ``source_width``/``source_height`` are the stored (unrotated) picture size. ``audio_seconds`` is
    the length of the returned 16 kHz audio; ``frame_height``/``frame_width`` are 0 without video.
    ``audio_offset_s`` is where the audio track starts relative to the first video frame, as
    applied: positive when it starts later (that much silence was put before it), negative when it
    starts earlier (that much was cut from its start); 0 without video or when within 40 ms.
    """

    path: str
    container: str
    kind: str
    duration_s: float
    video_codec: str | None
    audio_codec: str | None
    frames_sampled: int
    frame_height: int
    frame_width: int
    fps_used: float
    rotation: int
    source_width: int | None
    source_height: int | None
    audio_seconds: float
    audio_truncated: bool
    audio_sample_rate_in: int | None
    audio_channels_in: int | None
    decode_seconds: float
    warnings: tuple[str, ...] = ()
    audio_offset_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``warnings`` as a list)."""
        data = dataclasses.asdict(self)
        data["warnings"] = list(self.warnings)
        return data


@dataclass
class DecodedMedia:
    """Decoded, model-ready media.

    Attributes
    ----------
    frames:
        ``[T, H, W, 3]`` uint8 RGB, ``T`` even, ``H`` and ``W`` multiples of the model's token size
        (``token_pixels`` of :func:`load_media`: 28 by default); ``None`` for audio only.
    frame_times:
        ``[T]`` float64 seconds: presentation time of each sampled frame, from the file's start.
    audio:
        ``[N]`` float32 mono at 16 kHz; ``None`` without an audio track or with ``use_audio=False``.
    summary:
        The :class:`MediaSummary` for the report.
    """

    frames: np.ndarray | None
    frame_times: np.ndarray | None
    audio: np.ndarray | None
    summary: MediaSummary

    @property
    def has_video(self) -> bool:
        """True when frames were decoded."""
        return self.frames is not None

    @property
    def has_audio(self) -> bool:
        """True when audio is returned."""
        return self.audio is not None


@dataclass(frozen=True)
class StreamInfo:
    """One stream as :func:`probe` sees it (no decoding)."""

    index: int
    type: str
    codec: str | None
    decodable: bool
    default: bool
    attached_pic: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    duration_s: float | None = None
    language: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MediaProbe:
    """Cheap stream information from the container header; ``video``/``audio`` are the streams
    :func:`load_media` would pick."""

    path: str
    container: str
    duration_s: float | None
    streams: tuple[StreamInfo, ...]
    video: StreamInfo | None
    audio: StreamInfo | None

    @property
    def has_video(self) -> bool:
        return self.video is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["streams"] = [s.to_dict() for s in self.streams]
        return data
