"""The keep map's data: what was kept, as plain arrays and numbers (no model family named).

:class:`KeepMapData` holds everything the picture shows; :class:`GroupRow` is one OmniZip time
group. :func:`audio_token_spans` and :func:`grid_step_spans` give the seconds each audio token and
each temporal grid step covers. Building the data from a keep plan or a session is in
:mod:`.build`.

NumPy is imported inside the functions (and torch never: tensors are accepted by duck typing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["GroupRow", "KeepMapData", "audio_token_spans", "grid_step_spans"]


@dataclass(frozen=True)
class GroupRow:
    """One OmniZip time group: its span, its tokens and the video drop ratio it used.

    ``start_s``/``end_s`` cover the group's audio tokens and video grid steps (seconds from the
    file's start; neighbouring groups may overlap slightly when frame times and the 2-s audio chunks
    do not line up; the picture cuts each group at the next one's start). ``video_drop_ratio`` is the
    ratio the plan used for the group's frames (0 without video); ``guided`` marks groups that hold
    both audio and video tokens and so use the audio-guided dynamic ratio.
    """

    start_s: float
    end_s: float
    audio_tokens: int
    audio_kept: int
    video_tokens: int
    video_kept: int
    video_drop_ratio: float
    guided: bool

    @property
    def audio_retention(self) -> float | None:
        """Share of the group's audio tokens kept (anchors count as kept); None without audio."""
        return self.audio_kept / self.audio_tokens if self.audio_tokens else None


@dataclass
class KeepMapData:
    """Everything the keep map shows, as plain arrays and numbers (no model family named).

    Attributes
    ----------
    title:
        What the picture is of, usually the file name.
    setting:
        The compression setting in one line (e.g. ``OmniZip preset 45: rho_audio 0.3, ...``).
    frames:
        ``[T, H, W, 3]`` uint8 RGB sampled frames as the model saw them, or None (audio only, or
        frames unavailable: the tiles are then drawn on grey). A view (e.g. ``np.broadcast_to``) is
        fine: only the frames shown are read.
    frame_times:
        ``[T]`` seconds of each frame from the file's start (None: 2 frames per second from 0).
    grid:
        ``(grid_t, grid_h, grid_w)`` of the video in **merged tokens** (temporal grid steps, token
        rows, token columns), or None without video.
    temporal_patch:
        Raw frames per temporal grid step (2 for Qwen2.5-Omni and Qwen3-Omni). Step ``t`` covers
        frames ``t * temporal_patch`` to ``(t + 1) * temporal_patch - 1``.
    token_pixels:
        Side in input pixels of the square one video token covers (spatial merge x patch size: 28
        for Qwen2.5-Omni, 32 for Qwen3-Omni). Only stated on the picture: the frames are resized so
        that the ``grid_h x grid_w`` tokens tile the whole frame.
    video_keep:
        ``[grid_t * grid_h * grid_w]`` bool, True for kept video tokens, in input order: grid step,
        then token row, then token column (frame-major raster).
    audio:
        ``[N]`` float32 mono waveform, or None (the token lane is still drawn when there are audio
        tokens).
    sample_rate:
        Of ``audio`` (16 kHz for the Whisper-style encoders).
    audio_kept:
        ``[N_a]`` bool per audio token in input order, True when kept (anchors included).
    audio_anchor:
        ``[N_a]`` bool, True for the contextual anchors (kept tokens that dropped neighbours were
        merged into); a subset of ``audio_kept``.
    audio_token_times:
        ``[N_a, 2]`` float start and end second of each audio token (25 tokens/s for
        Qwen2.5-Omni: token ``i`` spans ``[i / 25, (i + 1) / 25)``).
    groups:
        The plan's time groups in order (empty: the group lanes are left out).
    model:
        The model's name, for the title (optional).
    is_random_model:
        True for a tiny random test model: the picture says that what is kept is meaningless.
    text_tokens:
        Text and special tokens of the prompt (always kept), for the title; None to leave out.
    """

    title: str
    setting: str = ""
    frames: np.ndarray | None = None
    frame_times: np.ndarray | None = None
    grid: tuple[int, int, int] | None = None
    temporal_patch: int = 2
    token_pixels: int = 28
    video_keep: np.ndarray | None = None
    audio: np.ndarray | None = None
    sample_rate: int = 16000
    audio_kept: np.ndarray | None = None
    audio_anchor: np.ndarray | None = None
    audio_token_times: np.ndarray | None = None
    groups: Sequence[GroupRow] = ()
    model: str = ""
    is_random_model: bool = False
    text_tokens: int | None = None

    def __post_init__(self) -> None:
        """Check the pieces against each other and turn them into arrays of the documented shapes.

        Raises ``ValueError`` naming the first piece that disagrees.
        """
        if self.temporal_patch < 1 or self.token_pixels < 1 or self.sample_rate < 1:
            raise ValueError("temporal_patch, token_pixels and sample_rate must be positive")
        self.groups = tuple(self.groups)
        self._check_video()
        self._check_frames()
        self._check_audio()

    def _check_video(self) -> None:
        """``grid`` as three positive ints and ``video_keep`` as a flat bool array of that many tokens."""
        import numpy as np

        if self.grid is not None:
            self.grid = tuple(int(v) for v in self.grid)  # type: ignore[assignment]
            if len(self.grid) != 3 or min(self.grid) < 1:
                raise ValueError(f"grid must be (grid_t, grid_h, grid_w) with positive values, got {self.grid}")
            if self.video_keep is None:
                raise ValueError("a video grid needs video_keep")
            self.video_keep = np.asarray(self.video_keep, dtype=bool).reshape(-1)
            expected = self.grid[0] * self.grid[1] * self.grid[2]
            if self.video_keep.size != expected:
                raise ValueError(
                    f"video_keep has {self.video_keep.size} entries but the grid {self.grid} has {expected} tokens"
                )
        elif self.video_keep is not None and np.asarray(self.video_keep).size:
            raise ValueError("video_keep needs a grid")
        else:
            self.video_keep = None

    def _check_frames(self) -> None:
        """``frames`` as ``[T, H, W, 3]`` uint8 (only with a grid) and ``frame_times`` as ``[T]`` float64."""
        import numpy as np

        if self.frames is not None:
            self.frames = np.asarray(self.frames)
            if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
                raise ValueError(f"frames must be [T, H, W, 3] uint8, got {self.frames.shape} {self.frames.dtype}")
            if self.grid is None:
                raise ValueError("frames need a video grid")
        if self.frame_times is not None:
            self.frame_times = np.asarray(self.frame_times, dtype=np.float64).reshape(-1)
            if self.frames is not None and self.frame_times.size != self.frames.shape[0]:
                raise ValueError(
                    f"frame_times has {self.frame_times.size} entries for {self.frames.shape[0]} frames"
                )

    def _check_audio(self) -> None:
        """The waveform as float32, the token states as bool arrays (anchors kept) and the token spans."""
        import numpy as np

        if self.audio is not None:
            self.audio = np.asarray(self.audio, dtype=np.float32).reshape(-1)
        count = 0 if self.audio_kept is None else int(np.asarray(self.audio_kept).size)
        self.audio_kept = np.asarray(self.audio_kept if count else np.zeros(0), dtype=bool).reshape(-1)
        anchor = np.zeros(count, dtype=bool) if self.audio_anchor is None else self.audio_anchor
        self.audio_anchor = np.asarray(anchor, dtype=bool).reshape(-1)
        if self.audio_anchor.size != count:
            raise ValueError(f"audio_anchor has {self.audio_anchor.size} entries for {count} audio tokens")
        if (self.audio_anchor & ~self.audio_kept).any():
            raise ValueError("every audio anchor must be kept")
        if self.audio_token_times is None:
            self.audio_token_times = audio_token_spans(count)
        self.audio_token_times = np.asarray(self.audio_token_times, dtype=np.float64).reshape(-1, 2)
        if self.audio_token_times.shape[0] != count:
            raise ValueError(f"audio_token_times has {self.audio_token_times.shape[0]} rows for {count} audio tokens")

    # -- derived figures

    @property
    def has_video(self) -> bool:
        """True when there are video tokens."""
        return self.grid is not None

    @property
    def num_audio_tokens(self) -> int:
        """How many audio tokens the prompt has."""
        return int(self.audio_kept.size)  # type: ignore[union-attr]

    @property
    def tokens_per_step(self) -> int:
        """Video tokens per temporal grid step (``grid_h * grid_w``; 0 without video)."""
        return self.grid[1] * self.grid[2] if self.grid else 0

    def step_keep(self) -> np.ndarray:
        """``[grid_t, grid_h, grid_w]`` bool: the video keep mask as a grid."""
        assert self.grid is not None and self.video_keep is not None
        return self.video_keep.reshape(self.grid)

    def step_spans(self) -> np.ndarray:
        """``[grid_t, 2]`` start and end second of each temporal grid step (see :func:`grid_step_spans`)."""
        assert self.grid is not None
        return grid_step_spans(self.frame_times, self.grid[0], self.temporal_patch)

    @property
    def duration_s(self) -> float:
        """The timeline's length: the end of the last frame step, audio token or audio sample."""
        ends = [0.0]
        if self.grid is not None:
            ends.append(float(self.step_spans()[-1, 1]))
        if self.num_audio_tokens:
            ends.append(float(self.audio_token_times[:, 1].max()))  # type: ignore[index]
        if self.audio is not None:
            ends.append(self.audio.size / self.sample_rate)
        ends.extend(g.end_s for g in self.groups)
        duration = max(ends)
        return duration if duration > 0 else 1.0


def audio_token_spans(count: int, tokens_per_second: float = 25.0, start_s: float = 0.0) -> np.ndarray:
    """``[count, 2]`` evenly spaced token spans: token ``i`` covers ``start + [i, i + 1) / rate``."""
    import numpy as np

    if tokens_per_second <= 0:
        raise ValueError(f"tokens_per_second must be positive, got {tokens_per_second}")
    index = np.arange(count, dtype=np.float64)
    return start_s + np.stack([index, index + 1.0], axis=1) / tokens_per_second


def grid_step_spans(frame_times: np.ndarray | None, grid_t: int, temporal_patch: int = 2) -> np.ndarray:
    """``[grid_t, 2]`` seconds covered by each temporal grid step.

    Step ``t`` starts at the time of its first frame, ``frame_times[t * temporal_patch]``, and ends
    where the next step starts; the last step ends one step length (``temporal_patch`` times the
    median frame interval) after it starts. Steps beyond the frames given (the processor pads an odd
    frame count by repeating the last frame) continue at that pace. Without frame times, 2 frames per
    second from 0 are assumed.
    """
    import numpy as np

    times = np.asarray(frame_times, dtype=np.float64).reshape(-1) if frame_times is not None else None
    if times is None or times.size == 0:
        times = np.arange(grid_t * temporal_patch, dtype=np.float64) / 2.0
    interval = float(np.median(np.diff(times))) if times.size > 1 else 0.5
    interval = interval if interval > 0 else 0.5
    first = np.arange(grid_t) * temporal_patch
    beyond = np.maximum(first - (times.size - 1), 0)
    starts = times[np.minimum(first, times.size - 1)] + beyond * interval
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = starts[-1] + temporal_patch * interval
    return np.stack([starts, np.maximum(ends, starts)], axis=1)
