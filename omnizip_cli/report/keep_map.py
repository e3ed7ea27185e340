"""The keep map: one PNG of what OmniZip kept, drawn with Pillow from plain data.

The picture has four parts, top to bottom:

1. **Title**: the file, the setting, tokens before -> after per modality, and (for the tiny random
   model) a note that what is kept follows random weights.
2. **Contact sheet** of the sampled frames, one tile per temporal grid step (a grid step covers
   ``temporal_patch`` = 2 raw frames for Qwen2.5-Omni; the tile shows the first of them). Each
   tile is the frame resized to an integer number of pixels per token (``cell``), so token
   ``(row, col)`` of the step covers exactly ``cell x cell`` pixels at ``(col * cell, row * cell)``
   from the tile's origin: the real patch geometry, where one token is ``token_pixels`` pixels
   square in the model's input (``spatial_merge_size x patch_size`` = 2 x 14 = 28 for
   Qwen2.5-Omni, 2 x 16 = 32 for Qwen3-Omni). Dropped tokens are dimmed; kept ones are the frame's
   own pixels. Under each tile: the step number, its time and the kept count. For many grid steps
   only every ``k``-th step from the first is drawn, and the picture says so.
3. **Timeline** on one time axis (seconds from the start of the file): the audio waveform (peak
   normalised) coloured by the state of the audio token under each pixel column; a token lane
   where each column shows the shares of kept, anchor and dropped audio tokens under it (one colour
   per column as long as a token is at least one pixel wide); the kept fraction of every video grid
   step (with ticks at the steps shown in the contact sheet); per time group, the share of its audio
   tokens kept and the video drop ratio OmniZip used.
4. **Footnotes** stating the geometry and what the colours mean.

Everything is computed from :class:`KeepMapData`, which holds plain NumPy arrays and numbers and
names no model family; :func:`keep_map_data_from_plan` builds it from a keep plan (``input_ids``,
the keep mask, the anchors, the grid, the media). :func:`compute_keep_map_layout` says where
everything lands (tests use it to look at the right pixels), :func:`render_keep_map` draws and
:func:`save_keep_map` writes the PNG.

NumPy and Pillow are imported inside the functions, so importing this module stays instant and
pulls in neither (nor torch: tensors are accepted by duck typing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnizip_cli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image, ImageDraw

__all__ = [
    "GroupRow",
    "KeepMapData",
    "KeepMapLayout",
    "audio_token_spans",
    "compute_keep_map_layout",
    "grid_step_spans",
    "keep_map_data_from_plan",
    "render_keep_map",
    "save_keep_map",
]

# ------------------------------------------------------------------------------------ style

BACKGROUND = (255, 255, 255)
INK = (33, 37, 41)
MUTED = (110, 117, 125)
FRAME_LINE = (200, 204, 208)
LANE_BACKGROUND = (245, 246, 248)
SEPARATOR = (214, 218, 223)
#: Okabe-Ito colours (readable by most colour-blind readers), as in the timings chart.
AUDIO_KEPT = (0, 114, 178)
AUDIO_ANCHOR = (230, 159, 0)
AUDIO_DROPPED = (196, 200, 206)
VIDEO_KEPT = (0, 158, 115)
VIDEO_DROP = (213, 94, 0)
UNGUIDED = (150, 150, 150)
SWATCH = (120, 170, 215)  # stands for frame content in the legend
NOTE_FILL = (253, 236, 234)
NOTE_INK = (176, 40, 30)
#: A dropped patch is ``DIM_KEEP * pixel + (1 - DIM_KEEP) * DIM_TARGET``: dark, the content faintly visible.
DIM_KEEP = 0.3
DIM_TARGET = (18, 20, 24)
#: The one-pixel line drawn on the dropped side of every edge between a dropped and a kept token.
EDGE = (236, 238, 240)

MARGIN = 24
LABEL_WIDTH = 172  # the timeline's left column (lane names)
TILE_GAP = 14
TILE_CAPTION = 20
TILE_ROW_GAP = 10
MIN_TILE_BOX = 180
MAX_TILE_BOX = 360
MAX_TILE_HEIGHT = 300
WAVEFORM_HEIGHT = 84
TOKEN_LANE_HEIGHT = 16
VIDEO_LANE_HEIGHT = 40
GROUP_LANE_HEIGHT = 30
LANE_GAP = 8
AXIS_HEIGHT = 34
FOOTNOTE_LINE = 17
MIN_WIDTH = 720

#: Audio token states, in the order of the colour table below.
KEPT, ANCHOR, DROPPED = 0, 1, 2
STATE_COLOURS = (AUDIO_KEPT, AUDIO_ANCHOR, AUDIO_DROPPED)


# ------------------------------------------------------------------------------------ data


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
        import numpy as np

        if self.temporal_patch < 1 or self.token_pixels < 1 or self.sample_rate < 1:
            raise ValueError("temporal_patch, token_pixels and sample_rate must be positive")
        self.groups = tuple(self.groups)
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


def _numpy(value: Any) -> np.ndarray:
    """A NumPy array from a NumPy array, a list or a (CPU or device) torch tensor."""
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def keep_map_data_from_plan(
    input_ids: Any,
    keep: Any,
    *,
    audio_token_id: int,
    video_token_id: int,
    merged_positions: Any = None,
    video_grid_thw: Any = None,
    spatial_merge_size: int = 2,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    frames: Any = None,
    frame_times: Any = None,
    audio: Any = None,
    sample_rate: int = 16000,
    audio_tokens_per_second: float = 25.0,
    audio_token_times: Any = None,
    group_rows: Sequence[Mapping[str, Any]] | None = None,
    title: str = "",
    setting: str = "",
    model: str = "",
    is_random_model: bool = False,
) -> KeepMapData:
    """Build :class:`KeepMapData` from a keep plan and the media (tensors or arrays, batch size 1).

    Parameters
    ----------
    input_ids:
        ``[L]`` (or ``[1, L]``) token ids of the uncompressed prompt.
    keep:
        ``[L]`` bool keep mask over the same positions (``KeepPlan.keep``; all True for no compression).
    audio_token_id, video_token_id:
        The placeholder ids (``model.config.audio_token_id`` / ``video_token_id``).
    merged_positions:
        ``[M]`` sequence positions of the audio anchors (``KeepPlan.merged_positions``), or None.
    video_grid_thw:
        ``(T, H, W)`` of the single video **in patches**, as the processor gives it (a tensor of 3
        values or ``[[T, H, W]]`` is fine); None without video. The token grid is
        ``(T, H // spatial_merge_size, W // spatial_merge_size)``.
    spatial_merge_size, patch_size, temporal_patch_size:
        The vision encoder's (2, 14, 2 for Qwen2.5-Omni; Qwen3-Omni has patch 16): one token covers
        ``spatial_merge_size * patch_size`` input pixels square and ``temporal_patch_size`` frames.
    frames, frame_times:
        ``[T, H, W, 3]`` uint8 sampled frames and their ``[T]`` times in seconds
        (``DecodedMedia.frames`` / ``frame_times``), or None.
    audio, sample_rate:
        The waveform the audio tokens were computed from (``DecodedMedia.audio``, 16 kHz), or None.
    audio_tokens_per_second:
        Used for the audio token spans when ``audio_token_times`` is not given (25 for Qwen2.5-Omni).
    audio_token_times:
        ``[N_a, 2]`` start/end seconds of each audio token, to override the even spacing.
    group_rows:
        ``GroupStats.to_rows()``: one dict per time group with ``audio_tokens, audio_kept,
        video_tokens, video_kept, video_drop_ratio, guided``; None or empty leaves the group lanes out.
    title, setting, model, is_random_model:
        For the title (``title`` is usually the file name).

    Assumptions about the input order (true for the Qwen2.5-Omni processor, interleaved or not):
    the video tokens of ``input_ids``, taken in order, are the merged tokens of grid step 0 row by
    row, then step 1, and so on (the audio tokens interleaved between 2-s chunks do not change that
    relative order); the audio tokens, taken in order, are chronological from the start of the
    audio, which starts with the file; the groups come in sequence order and each group's audio and
    video tokens are the next ``audio_tokens`` / ``video_tokens`` of their kind (whole grid steps).

    Raises ``ValueError`` when the pieces disagree (lengths, token counts against the grid or the groups).
    """
    import numpy as np

    ids = _numpy(input_ids).reshape(-1)
    keep_mask = _numpy(keep).astype(bool).reshape(-1)
    if keep_mask.size != ids.size:
        raise ValueError(f"keep has {keep_mask.size} entries but input_ids has {ids.size}")
    video_positions = np.flatnonzero(ids == video_token_id)
    audio_positions = np.flatnonzero(ids == audio_token_id)

    grid: tuple[int, int, int] | None = None
    video_keep = None
    if video_positions.size:
        if video_grid_thw is None:
            raise ValueError(f"input_ids has {video_positions.size} video tokens but video_grid_thw is None")
        values = [int(v) for v in _numpy(video_grid_thw).reshape(-1).tolist()]
        if len(values) != 3:
            raise ValueError(f"video_grid_thw must hold (T, H, W) of one video, got {values}")
        grid = (values[0], values[1] // spatial_merge_size, values[2] // spatial_merge_size)
        if grid[0] * grid[1] * grid[2] != video_positions.size:
            raise ValueError(
                f"video_grid_thw {tuple(values)} gives {grid[0] * grid[1] * grid[2]} tokens, "
                f"but input_ids has {video_positions.size}"
            )
        video_keep = keep_mask[video_positions]

    audio_kept = keep_mask[audio_positions]
    merged = np.zeros(0, dtype=np.int64) if merged_positions is None else _numpy(merged_positions).reshape(-1)
    audio_anchor = np.isin(audio_positions, merged)
    if audio_token_times is None:
        token_times = audio_token_spans(audio_positions.size, audio_tokens_per_second)
    else:
        token_times = _numpy(audio_token_times).astype(np.float64).reshape(-1, 2)

    frames_array = None if frames is None or grid is None else _numpy(frames)
    times_array = None if frame_times is None or grid is None else _numpy(frame_times).astype(np.float64)
    step_spans = grid_step_spans(times_array, grid[0], temporal_patch_size) if grid else None
    groups = _group_rows(group_rows or (), token_times, step_spans, grid[1] * grid[2] if grid else 0)
    if groups:
        video_sum = sum(g.video_tokens for g in groups)
        audio_sum = sum(g.audio_tokens for g in groups)
        if video_sum != video_positions.size or audio_sum != audio_positions.size:
            raise ValueError(
                f"the groups hold {video_sum} video and {audio_sum} audio tokens, input_ids "
                f"{video_positions.size} and {audio_positions.size}"
            )
    return KeepMapData(
        title=title,
        setting=setting,
        frames=frames_array,
        frame_times=times_array,
        grid=grid,
        temporal_patch=temporal_patch_size,
        token_pixels=spatial_merge_size * patch_size,
        video_keep=video_keep,
        audio=None if audio is None else _numpy(audio),
        sample_rate=sample_rate,
        audio_kept=audio_kept,
        audio_anchor=audio_anchor,
        audio_token_times=token_times,
        groups=groups,
        model=model,
        is_random_model=is_random_model,
        text_tokens=int(ids.size - video_positions.size - audio_positions.size),
    )


def _group_rows(
    rows: Sequence[Mapping[str, Any]],
    audio_token_times: np.ndarray,
    step_spans: np.ndarray | None,
    tokens_per_step: int,
) -> tuple[GroupRow, ...]:
    """Attach time spans to ``GroupStats.to_rows()`` rows (tokens taken in order, see the builder)."""
    out: list[GroupRow] = []
    audio_at = video_at = 0
    for index, row in enumerate(rows):
        audio_tokens, video_tokens = int(row["audio_tokens"]), int(row["video_tokens"])
        spans: list[tuple[float, float]] = []
        if audio_tokens:
            if audio_at + audio_tokens > audio_token_times.shape[0]:
                raise ValueError(f"group {index} runs past the last audio token")
            part = audio_token_times[audio_at : audio_at + audio_tokens]
            spans.append((float(part[:, 0].min()), float(part[:, 1].max())))
        if video_tokens:
            if step_spans is None or not tokens_per_step or video_tokens % tokens_per_step:
                raise ValueError(f"group {index} has {video_tokens} video tokens, not whole grid steps")
            first, last = video_at // tokens_per_step, (video_at + video_tokens) // tokens_per_step
            if last > step_spans.shape[0]:
                raise ValueError(f"group {index} runs past the last grid step")
            spans.append((float(step_spans[first, 0]), float(step_spans[last - 1, 1])))
        audio_at += audio_tokens
        video_at += video_tokens
        start = min((s for s, _ in spans), default=0.0)
        end = max((e for _, e in spans), default=start)
        out.append(
            GroupRow(
                start_s=start,
                end_s=end,
                audio_tokens=audio_tokens,
                audio_kept=int(row["audio_kept"]),
                video_tokens=video_tokens,
                video_kept=int(row["video_kept"]),
                video_drop_ratio=float(row["video_drop_ratio"]),
                guided=bool(row["guided"]),
            )
        )
    return tuple(out)


# ------------------------------------------------------------------------------------ layout

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


@dataclass(frozen=True)
class KeepMapLayout:
    """Where everything of a keep map lands, in pixels of the rendered image.

    Tiles: tile ``i`` shows grid step ``shown_steps[i]``; its top-left pixel is ``tile_origins[i]``
    and it is ``tile_size`` = ``(grid_w * cell, grid_h * cell)`` pixels. Token ``j`` of the step
    (``row = j // grid_w``, ``col = j % grid_w``) covers :meth:`token_box`.

    Timeline: second ``t`` is at ``x = plot_x0 + (plot_x1 - plot_x0) * t / duration_s``; an interval
    covers the pixel columns :meth:`column_span` returns. The lanes' boxes are None when absent.
    """

    width: int
    height: int
    shown_steps: tuple[int, ...]
    step_stride: int
    tile_origins: tuple[tuple[int, int], ...]
    tile_size: tuple[int, int]
    cell: int
    grid_hw: tuple[int, int]
    columns: int
    header_height: int
    note_box: Box | None
    sheet_top: int
    timeline_top: int
    plot_x0: int
    plot_x1: int
    duration_s: float
    waveform_box: Box | None
    token_lane_box: Box | None
    video_lane_box: Box | None
    group_audio_box: Box | None
    group_video_box: Box | None
    axis_top: int
    footnote_top: int

    def token_box(self, tile_index: int, token: int) -> Box:
        """Pixels covered by token ``token`` (raster index within the step) of tile ``tile_index``."""
        x, y = self.tile_origins[tile_index]
        row, col = divmod(token, self.grid_hw[1])
        return (x + col * self.cell, y + row * self.cell, x + (col + 1) * self.cell, y + (row + 1) * self.cell)

    def x_of(self, seconds: float) -> float:
        """The x coordinate of a time on the timeline."""
        return self.plot_x0 + (self.plot_x1 - self.plot_x0) * seconds / self.duration_s

    def column_span(self, start_s: float, end_s: float) -> tuple[int, int]:
        """Pixel columns ``[c0, c1)`` drawn for the interval ``[start_s, end_s)``, at least one wide.

        Column ``c`` belongs to the interval when ``floor(x_of(start)) <= c < floor(x_of(end))``, so
        adjacent intervals do not share columns unless one is under a pixel wide.
        """
        return self._columns(float(start_s), float(end_s))

    def _columns(self, start_s: float, end_s: float) -> tuple[int, int]:
        scale = (self.plot_x1 - self.plot_x0) / self.duration_s
        c0 = min(max(math.floor(self.plot_x0 + start_s * scale), self.plot_x0), self.plot_x1 - 1)
        c1 = min(max(math.floor(self.plot_x0 + end_s * scale), c0 + 1), self.plot_x1)
        return c0, c1

    def column_spans(self, spans: np.ndarray) -> np.ndarray:
        """:meth:`column_span` of each row of ``spans [N, 2]`` (seconds), as ``[N, 2]`` int64 (same arithmetic)."""
        import numpy as np

        scale = (self.plot_x1 - self.plot_x0) / self.duration_s
        spans = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
        c0 = np.clip(np.floor(self.plot_x0 + spans[:, 0] * scale), self.plot_x0, self.plot_x1 - 1).astype(np.int64)
        c1 = np.minimum(np.maximum(np.floor(self.plot_x0 + spans[:, 1] * scale).astype(np.int64), c0 + 1), self.plot_x1)
        return np.stack([c0, c1], axis=1)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _header_lines(data: KeepMapData) -> tuple[str, str, str]:
    """Title, setting line and token line."""
    title = f"What OmniZip kept: {data.title}" if data.title else "What OmniZip kept"
    setting = data.setting or "setting not given"
    if data.model:
        setting = f"{setting}   ·   model {data.model}"
    parts: list[str] = []
    av_before = av_after = 0
    if data.grid is not None:
        before, after = int(data.video_keep.size), int(data.video_keep.sum())  # type: ignore[union-attr]
        parts.append(f"video: {after:,} of {before:,} tokens kept ({_percent(after, before)})")
        av_before, av_after = av_before + before, av_after + after
    if data.num_audio_tokens:
        before, after = data.num_audio_tokens, int(data.audio_kept.sum())  # type: ignore[union-attr]
        anchors = int(data.audio_anchor.sum())  # type: ignore[union-attr]
        parts.append(f"audio: {after:,} of {before:,} ({_percent(after, before)}, {anchors} anchors)")
        av_before, av_after = av_before + before, av_after + after
    if data.grid is not None and data.num_audio_tokens:
        parts.append(f"audio+video: {av_after:,} of {av_before:,} ({_percent(av_after, av_before)})")
    if data.text_tokens is not None:
        parts.append(f"text: {data.text_tokens:,} (all kept)")
    return title, setting, "   ·   ".join(parts) if parts else "no audio or video tokens"


RANDOM_MODEL_NOTE = (
    "Tiny random model: its weights are random, so what was kept here shows how OmniZip works, "
    "not what a trained model finds salient."
)


def _percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "n/a"


def compute_keep_map_layout(
    data: KeepMapData,
    *,
    max_width: int = 1400,
    max_height: int = 3000,
    max_frames_shown: int = 48,
) -> KeepMapLayout:
    """Where everything goes, within ``max_width x max_height`` pixels.

    The image is ``max_width`` wide (at least 720). Tiles sit in up to ``(width - 48 + 14) // 194``
    columns; a tile box is at most 360 px wide and 300 px high, and the tile inside it has an
    integer ``cell`` of pixels per token (at least 1). At most ``max_frames_shown`` grid steps are
    drawn, fewer when their rows would not fit in ``max_height``: every ``step_stride``-th step from
    step 0.
    """
    width = max(int(max_width), MIN_WIDTH)
    content = width - 2 * MARGIN
    # Header: title, setting, tokens, [note], legend.
    y = 16 + 34 + 22 + 24
    note_box = None
    if data.is_random_model:
        note_box = (MARGIN, y, width - MARGIN, y + 26)
        y += 26 + 8
    y += 28  # legend
    header_height = y + 6

    # Timeline lanes.
    has_groups = bool(data.groups)
    timeline_height = 26  # heading
    lanes: list[tuple[str, int]] = []
    if data.audio is not None:
        lanes.append(("waveform", WAVEFORM_HEIGHT))
    if data.num_audio_tokens:
        lanes.append(("tokens", TOKEN_LANE_HEIGHT))
    if data.has_video:
        lanes.append(("video", VIDEO_LANE_HEIGHT))
    if has_groups and any(g.audio_tokens for g in data.groups):
        lanes.append(("group_audio", GROUP_LANE_HEIGHT))
    if has_groups and any(g.video_tokens for g in data.groups):
        lanes.append(("group_video", GROUP_LANE_HEIGHT))
    timeline_height += sum(h + LANE_GAP for _, h in lanes) + AXIS_HEIGHT
    footnote_lines = 3
    footnote_height = 10 + FOOTNOTE_LINE * footnote_lines + 12

    # Contact sheet geometry.
    shown: tuple[int, ...] = ()
    stride = 1
    cell = 0
    tile_w = tile_h = 0
    columns = 0
    origins: list[tuple[int, int]] = []
    sheet_top = header_height
    sheet_height = 0
    grid_hw = (0, 0)
    if data.grid is not None:
        grid_t, grid_h, grid_w = data.grid
        grid_hw = (grid_h, grid_w)
        max_columns = max(1, (content + TILE_GAP) // (MIN_TILE_BOX + TILE_GAP))
        columns = min(grid_t, max_columns)
        box_w = min(MAX_TILE_BOX, (content - TILE_GAP * (columns - 1)) // columns)
        box_h = min(MAX_TILE_HEIGHT, box_w)
        cell = max(1, min(box_w // grid_w, box_h // grid_h))
        tile_w, tile_h = cell * grid_w, cell * grid_h
        if tile_w > content:  # an extreme panorama: one column, cell 1, cut at the edge
            columns = 1
        row_height = tile_h + TILE_CAPTION + TILE_ROW_GAP
        heading = 44
        fixed = header_height + heading + timeline_height + footnote_height
        rows_fit = max(1, (max_height - fixed) // row_height)
        capacity = max(1, min(int(max_frames_shown), rows_fit * columns))
        stride = max(1, math.ceil(grid_t / capacity))
        shown = tuple(range(0, grid_t, stride))
        rows = math.ceil(len(shown) / columns)
        columns = min(columns, len(shown))
        top = sheet_top + heading
        box = (content - TILE_GAP * (columns - 1)) // columns if columns > 1 else content
        for index in range(len(shown)):
            row, col = divmod(index, columns)
            origins.append((MARGIN + col * (box + TILE_GAP), top + row * row_height))
        sheet_height = heading + rows * row_height

    timeline_top = sheet_top + sheet_height + 6
    plot_x0, plot_x1 = MARGIN + LABEL_WIDTH, width - MARGIN
    y = timeline_top + 26
    boxes: dict[str, Box] = {}
    for name, height in lanes:
        boxes[name] = (plot_x0, y, plot_x1, y + height)
        y += height + LANE_GAP
    axis_top = y
    footnote_top = axis_top + AXIS_HEIGHT
    height = footnote_top + footnote_height
    return KeepMapLayout(
        width=width,
        height=height,
        shown_steps=shown,
        step_stride=stride,
        tile_origins=tuple(origins),
        tile_size=(tile_w, tile_h),
        cell=cell,
        grid_hw=grid_hw,
        columns=columns,
        header_height=header_height,
        note_box=note_box,
        sheet_top=sheet_top,
        timeline_top=timeline_top,
        plot_x0=plot_x0,
        plot_x1=plot_x1,
        duration_s=data.duration_s,
        waveform_box=boxes.get("waveform"),
        token_lane_box=boxes.get("tokens"),
        video_lane_box=boxes.get("video"),
        group_audio_box=boxes.get("group_audio"),
        group_video_box=boxes.get("group_video"),
        axis_top=axis_top,
        footnote_top=footnote_top,
    )


# ------------------------------------------------------------------------------------ drawing


def render_keep_map(
    data: KeepMapData,
    *,
    max_width: int = 1400,
    max_height: int = 3000,
    max_frames_shown: int = 48,
    layout: KeepMapLayout | None = None,
) -> Image.Image:
    """Draw the keep map of ``data`` (see the module docstring) and return an RGB image.

    The size is bounded by ``max_width x max_height`` (the height only exceeds it when even one row
    of tiles does not fit). ``layout`` defaults to :func:`compute_keep_map_layout` with the same
    bounds; pass one to draw exactly where it says.
    """
    from PIL import Image, ImageDraw

    if layout is None:
        layout = compute_keep_map_layout(
            data, max_width=max_width, max_height=max_height, max_frames_shown=max_frames_shown
        )
    image = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    fonts = {"title": _font(24), "text": _font(15), "small": _font(13)}
    _draw_header(draw, data, layout, fonts)
    if data.grid is not None:
        _draw_sheet(image, draw, data, layout, fonts)
    _draw_timeline(image, draw, data, layout, fonts)
    _draw_footnotes(draw, data, layout, fonts)
    return image


def save_keep_map(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` as a PNG at ``path`` (whatever its suffix) and return the path.

    Raises :class:`~omnizip_cli.errors.UsageError` with a one-line message when the file cannot be
    written (missing folder, no permission, a folder at that path).
    """
    target = Path(path)
    try:
        if target.is_dir():
            raise UsageError(
                f"cannot write the keep map to {target}: it is a folder", hint="give a file name like map.png"
            )
        if not target.parent.is_dir():
            raise UsageError(
                f"cannot write the keep map to {target}: the folder {target.parent} does not exist",
                hint="create it first or choose another path",
            )
        image.save(target, format="PNG")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot write the keep map to {target}: {reason}") from exc
    return target


def fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> str:
    """:func:`omnizip_cli.report.chart.fit_text`, imported when first drawn (this module stays light)."""
    from .chart import fit_text as fit

    return fit(draw, text, font, width)


def _draw_header(draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, fonts: dict[str, Any]) -> None:
    title, setting, tokens = _header_lines(data)
    room = layout.width - 2 * MARGIN
    draw.text((MARGIN, 16), fit_text(draw, title, fonts["title"], room), fill=INK, font=fonts["title"])
    draw.text((MARGIN, 50), fit_text(draw, setting, fonts["text"], room), fill=MUTED, font=fonts["text"])
    draw.text((MARGIN, 72), fit_text(draw, tokens, fonts["text"], room), fill=INK, font=fonts["text"])
    y = 96
    if layout.note_box is not None:
        x0, y0, x1, y1 = layout.note_box
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=NOTE_FILL, outline=NOTE_INK)
        draw.text((x0 + 8, y0 + 5), fit_text(draw, RANDOM_MODEL_NOTE, fonts["small"], x1 - x0 - 16), fill=NOTE_INK,
                  font=fonts["small"])
        y = y1 + 8
    entries: list[tuple[str, tuple[int, int, int], str]] = []
    if data.grid is not None:
        entries += [("kept video token (patch)", SWATCH, "clear"), ("dropped video token (dimmed)", DIM_TARGET, "dim")]
    if data.num_audio_tokens:
        entries += [
            ("kept audio token", AUDIO_KEPT, "box"),
            ("anchor (dropped tokens merged in)", AUDIO_ANCHOR, "box"),
            ("dropped audio token", AUDIO_DROPPED, "box"),
        ]
    video_groups = [g for g in data.groups if g.video_tokens]
    if any(g.guided for g in video_groups):
        entries.append(("video drop ratio of a group", VIDEO_DROP, "box"))
    if not all(g.guided for g in video_groups):
        entries.append(("unguided group (fixed ratio)", UNGUIDED, "box"))
    x = float(MARGIN)
    for label, colour, kind in entries:
        size = 22 + draw.textlength(label, font=fonts["small"]) + 22
        if x + size > layout.width - MARGIN:
            break
        if kind == "clear":  # a kept patch on dimmed ground, outlined as in the tiles
            draw.rectangle([x - 3, y, x + 18, y + 21], fill=_dim_colour(SWATCH))
            draw.rectangle([x - 1, y + 2, x + 16, y + 19], outline=EDGE)
            draw.rectangle([x, y + 3, x + 15, y + 18], fill=SWATCH)
        elif kind == "dim":
            draw.rectangle([x, y + 3, x + 15, y + 18], fill=_dim_colour(SWATCH))
        else:
            draw.rectangle([x, y + 3, x + 15, y + 18], fill=colour, outline=INK)
        draw.text((x + 21, y + 4), label, fill=INK, font=fonts["small"])
        x += size


def _dim_colour(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = (int(round(DIM_KEEP * c + (1 - DIM_KEEP) * t)) for c, t in zip(colour, DIM_TARGET))
    return red, green, blue


def _dimmed_tile(tile: np.ndarray, keep: np.ndarray, cell: int) -> np.ndarray:
    """``tile`` ``[h, w, 3]`` with the cells of dropped tokens (``keep [gh, gw]`` False) dimmed.

    Kept cells keep their pixels exactly. Dropped cells are darkened, and their pixels that touch a
    kept cell (4-neighbourhood) are drawn in :data:`EDGE`, outlining the kept regions from outside
    (only when a cell is at least 4 pixels, so that small cells stay readable).
    """
    import numpy as np

    dropped = np.repeat(np.repeat(~keep, cell, axis=0), cell, axis=1)[: tile.shape[0], : tile.shape[1]]
    target = np.asarray(DIM_TARGET, dtype=np.float32)
    dim = (tile.astype(np.float32) * DIM_KEEP + target * (1 - DIM_KEEP)).round().astype(np.uint8)
    out = np.where(dropped[..., None], dim, tile)
    if cell >= 4:
        kept = ~dropped
        touches = np.zeros_like(dropped)
        touches[1:, :] |= kept[:-1, :]
        touches[:-1, :] |= kept[1:, :]
        touches[:, 1:] |= kept[:, :-1]
        touches[:, :-1] |= kept[:, 1:]
        out[dropped & touches] = EDGE
    return out


def _draw_sheet(
    image: Image.Image, draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, fonts: dict[str, Any]
) -> None:
    import numpy as np
    from PIL import Image

    assert data.grid is not None
    grid_t, grid_h, grid_w = data.grid
    frame_count = 0 if data.frames is None else int(data.frames.shape[0])
    heading = (
        f"Video: {grid_t} grid steps of {grid_h} x {grid_w} tokens (each {data.token_pixels} x "
        f"{data.token_pixels} px, {data.temporal_patch} frames); a tile is the first frame of its step"
    )
    draw.text((MARGIN, layout.sheet_top + 2), fit_text(draw, heading, fonts["text"], layout.width - 2 * MARGIN),
              fill=INK, font=fonts["text"])
    frames_note = f"{frame_count} frames" if frame_count else "no frames given"
    if layout.step_stride == 1:
        rule = f"All {grid_t} grid steps shown ({frames_note})."
    else:
        rule = (
            f"Every {_ordinal(layout.step_stride)} grid step shown, from the first: {len(layout.shown_steps)} of "
            f"{grid_t} grid steps ({frames_note})."
        )
    draw.text((MARGIN, layout.sheet_top + 22), rule, fill=MUTED, font=fonts["small"])

    keep = data.step_keep()
    spans = data.step_spans()
    tile_w, tile_h = layout.tile_size
    for index, step in enumerate(layout.shown_steps):
        x, y = layout.tile_origins[index]
        if data.frames is not None and frame_count:
            frame = data.frames[min(step * data.temporal_patch, frame_count - 1)]
            tile = Image.fromarray(np.ascontiguousarray(frame)).resize((tile_w, tile_h), Image.Resampling.BICUBIC)
            pixels = np.asarray(tile)
        else:
            pixels = np.full((tile_h, tile_w, 3), 170, dtype=np.uint8)
        image.paste(Image.fromarray(_dimmed_tile(pixels, keep[step], layout.cell)), (x, y))
        draw.rectangle([x - 1, y - 1, x + tile_w, y + tile_h], outline=FRAME_LINE)
        kept = int(keep[step].sum())
        left = f"step {step} · {spans[step, 0]:.2f} s"
        right = f"{kept}/{grid_h * grid_w} kept"
        font = fonts["small"]
        right_width = draw.textlength(right, font=font)
        if draw.textlength(left, font=font) + right_width + 10 > tile_w:
            left = f"#{step}  {spans[step, 0]:.2f} s"
        if draw.textlength(left, font=font) + right_width + 10 > tile_w:
            right = f"{kept}/{grid_h * grid_w}"
            right_width = draw.textlength(right, font=font)
        draw.text((x, y + tile_h + 3), fit_text(draw, left, font, max(tile_w - right_width - 6, 10)), fill=MUTED,
                  font=font)
        draw.text((x + tile_w - right_width, y + tile_h + 3), right, fill=INK, font=font)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _lane_label(draw: ImageDraw.ImageDraw, box: Box, text: str, font: Any, sub: str | None = None) -> None:
    x0, y0, _, y1 = box
    middle = (y0 + y1) / 2
    if sub is None:
        draw.text((MARGIN, middle - 8), fit_text(draw, text, font, LABEL_WIDTH - 10), fill=INK, font=font)
    else:
        draw.text((MARGIN, middle - 16), fit_text(draw, text, font, LABEL_WIDTH - 10), fill=INK, font=font)
        draw.text((MARGIN, middle + 1), fit_text(draw, sub, font, LABEL_WIDTH - 10), fill=MUTED, font=font)


def _audio_column_counts(data: KeepMapData, layout: KeepMapLayout) -> np.ndarray:
    """``[plot width, 3]`` how many kept-only, anchor and dropped audio tokens cover each column."""
    import numpy as np

    width = layout.plot_x1 - layout.plot_x0
    counts = np.zeros((width + 1, 3), dtype=np.int64)
    kept, anchor = data.audio_kept, data.audio_anchor
    state = np.where(anchor, ANCHOR, np.where(kept, KEPT, DROPPED))  # type: ignore[call-overload]
    columns = layout.column_spans(data.audio_token_times) - layout.plot_x0
    np.add.at(counts, (columns[:, 0], state), 1)
    np.add.at(counts, (columns[:, 1], state), -1)
    return np.cumsum(counts, axis=0)[:width]


def _draw_timeline(
    image: Image.Image, draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, fonts: dict[str, Any]
) -> None:
    import numpy as np
    from PIL import Image

    small = fonts["small"]
    draw.text((MARGIN, layout.timeline_top + 2), "Timeline (seconds from the start of the file)", fill=INK,
              font=fonts["text"])
    width = layout.plot_x1 - layout.plot_x0
    counts = _audio_column_counts(data, layout) if data.num_audio_tokens else None

    # Group separators first, so that the lanes are drawn over them.
    lane_boxes = [
        b for b in (layout.waveform_box, layout.token_lane_box, layout.video_lane_box, layout.group_audio_box,
                    layout.group_video_box) if b is not None
    ]
    cells = _group_cells(data, layout)
    widths = sorted(c1 - c0 for c0, c1 in cells)
    if lane_boxes and widths and widths[len(widths) // 2] >= 12:  # not for a comb of narrow groups
        top, bottom = lane_boxes[0][1], lane_boxes[-1][3]
        for c0, _ in cells[1:]:
            draw.line([(c0, top - 4), (c0, bottom + 3)], fill=SEPARATOR, width=1)

    if layout.waveform_box is not None and data.audio is not None:
        box = layout.waveform_box
        height = box[3] - box[1]
        lane = np.empty((height, width, 3), dtype=np.uint8)
        lane[:] = LANE_BACKGROUND
        low, high = _waveform_envelope(data.audio, data.sample_rate, layout)
        colours = np.empty((width, 3), dtype=np.uint8)
        colours[:] = MUTED
        if counts is not None:
            covered = counts.sum(axis=1) > 0
            colours[covered] = np.asarray(STATE_COLOURS, dtype=np.uint8)[counts.argmax(axis=1)][covered]
        middle = (height - 1) / 2
        rows = np.arange(height)[:, None]
        top_row = np.floor(middle - high * middle)
        bottom_row = np.ceil(middle - low * middle)
        has_audio = ~np.isnan(high)
        mask = has_audio[None, :] & (rows >= top_row[None, :]) & (rows <= bottom_row[None, :])
        lane[mask] = np.broadcast_to(colours[None, :, :], lane.shape)[mask]
        image.paste(Image.fromarray(lane), (box[0], box[1]))
        draw.line([(box[0], box[1] + middle), (box[2] - 1, box[1] + middle)], fill=SEPARATOR)
        _lane_label(draw, box, "audio waveform", small, "peak-normalised")

    if layout.token_lane_box is not None and counts is not None:
        box = layout.token_lane_box
        height = box[3] - box[1]
        lane = np.empty((height, width, 3), dtype=np.uint8)
        lane[:] = LANE_BACKGROUND
        total = counts.sum(axis=1)
        shares = np.divide(counts, total[:, None], out=np.zeros(counts.shape), where=total[:, None] > 0)
        # Stacked from the bottom: kept, anchor, dropped.
        bounds = np.round(np.cumsum(shares, axis=1) * height)  # [w, 3]
        from_bottom = (height - 1 - np.arange(height))[:, None]  # row index counted from the bottom
        for state in (DROPPED, ANCHOR, KEPT):
            below = bounds[:, state - 1] if state > 0 else np.zeros(width)
            mask = (from_bottom >= below[None, :]) & (from_bottom < bounds[:, state][None, :])
            lane[mask] = STATE_COLOURS[state]
        image.paste(Image.fromarray(lane), (box[0], box[1]))
        _lane_label(draw, box, "audio tokens", small)

    if layout.video_lane_box is not None and data.grid is not None:
        box = layout.video_lane_box
        height = box[3] - box[1]
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=LANE_BACKGROUND)
        keep = data.step_keep().reshape(data.grid[0], -1)
        fractions = keep.mean(axis=1)
        spans = data.step_spans()
        for step in range(data.grid[0]):
            c0, c1 = layout.column_span(float(spans[step, 0]), float(spans[step, 1]))
            bar = int(round(fractions[step] * height))
            if bar > 0:
                draw.rectangle([c0, box[3] - bar, c1 - 1, box[3] - 1], fill=VIDEO_KEPT)
            label = f"{100 * fractions[step]:.0f} %"
            if draw.textlength(label, font=small) + 8 <= c1 - c0:
                draw.text((c0 + 4, box[1] + 2), label, fill=INK, font=small)
        for step in layout.shown_steps:  # ticks under the steps shown in the sheet
            c0, c1 = layout.column_span(float(spans[step, 0]), float(spans[step, 1]))
            xm = (c0 + c1 - 1) / 2
            draw.polygon([(xm - 3, box[3] + 6), (xm + 3, box[3] + 6), (xm, box[3] + 1)], fill=INK)
        _lane_label(draw, box, "video kept per step", small, "ticks: tiles above")

    if layout.group_audio_box is not None:
        values = [
            (g.audio_retention, AUDIO_KEPT, f"{100 * g.audio_retention:.0f} %" if g.audio_retention is not None else "")
            for g in data.groups
        ]
        _draw_group_lane(draw, layout.group_audio_box, cells, values, small)
        _lane_label(draw, layout.group_audio_box, "group: audio kept", small)
    if layout.group_video_box is not None:
        values = []
        for g in data.groups:
            if not g.video_tokens:
                values.append((None, VIDEO_DROP, ""))
                continue
            label = f"{100 * g.video_drop_ratio:.0f} %" + ("" if g.guided else " fixed")
            values.append((g.video_drop_ratio, VIDEO_DROP if g.guided else UNGUIDED, label))
        _draw_group_lane(draw, layout.group_video_box, cells, values, small)
        _lane_label(draw, layout.group_video_box, "group: video dropped", small)

    _draw_axis(draw, layout, small)


def _waveform_envelope(audio: np.ndarray, sample_rate: int, layout: KeepMapLayout) -> tuple[np.ndarray, np.ndarray]:
    """Per plot column, the min and max of the peak-normalised audio (NaN past the end)."""
    import numpy as np

    width = layout.plot_x1 - layout.plot_x0
    low = np.full(width, np.nan)
    high = np.full(width, np.nan)
    if audio.size == 0:
        return low, high
    peak = float(np.abs(audio).max())
    scale = 1.0 / peak if peak > 1e-9 else 1.0
    edges = np.floor(np.arange(width + 1) * (layout.duration_s / width) * sample_rate).astype(np.int64)
    starts = edges[:-1]
    valid = starts < audio.size
    if not valid.any():
        return low, high
    idx = starts[valid]
    ends = np.minimum(np.maximum(edges[1:][valid], idx + 1), audio.size)
    # reduceat over the column starts; each column ends where the next valid one starts (the last at its own end).
    high_v = np.maximum.reduceat(audio, idx)
    low_v = np.minimum.reduceat(audio, idx)
    last = idx.size - 1
    high_v[last] = audio[idx[last] : ends[last]].max()
    low_v[last] = audio[idx[last] : ends[last]].min()
    high[valid] = np.clip(high_v * scale, -1, 1)
    low[valid] = np.clip(low_v * scale, -1, 1)
    return low, high


def _group_cells(data: KeepMapData, layout: KeepMapLayout) -> list[tuple[int, int]]:
    """Pixel columns of each group: from its start to the next group's start (the last to its end)."""
    cells = []
    groups = data.groups
    for index, group in enumerate(groups):
        end = group.end_s
        if index + 1 < len(groups):
            end = max(group.start_s, min(end, groups[index + 1].start_s))
        cells.append(layout.column_span(group.start_s, end))
    return cells


def _draw_group_lane(
    draw: ImageDraw.ImageDraw,
    box: Box,
    cells: list[tuple[int, int]],
    values: list[tuple[float | None, tuple[int, int, int], str]],
    font: Any,
) -> None:
    """One bar per group, height = value (0-1), with the value written in when it fits."""
    x0, y0, x1, y1 = box
    height = y1 - y0
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=LANE_BACKGROUND)
    for (c0, c1), (value, colour, label) in zip(cells, values):
        if value is None:
            continue
        inner0, inner1 = c0 + (1 if c1 - c0 > 3 else 0), c1 - (1 if c1 - c0 > 3 else 0)
        bar = int(round(max(0.0, min(1.0, value)) * height))
        if bar > 0:
            draw.rectangle([inner0, y1 - bar, inner1 - 1, y1 - 1], fill=_light(colour))
            draw.line([(inner0, y1 - bar), (inner1 - 1, y1 - bar)], fill=colour, width=2)
        if label and draw.textlength(label, font=font) + 6 <= c1 - c0:
            text_width = draw.textlength(label, font=font)
            draw.text(((c0 + c1) / 2 - text_width / 2, y0 + height / 2 - 8), label, fill=INK, font=font)


def _light(colour: tuple[int, int, int], amount: float = 0.55) -> tuple[int, int, int]:
    red, green, blue = (int(round(c + (255 - c) * amount)) for c in colour)
    return red, green, blue


def _nice_step(span: float, target: int) -> float:
    """A 1-2-5 step giving about ``target`` ticks over ``span``."""
    raw = max(span, 1e-9) / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if factor * power >= raw:
            return factor * power
    return 10.0 * power


def _draw_axis(draw: ImageDraw.ImageDraw, layout: KeepMapLayout, font: Any) -> None:
    y = layout.axis_top
    draw.line([(layout.plot_x0, y), (layout.plot_x1 - 1, y)], fill=INK)
    width = layout.plot_x1 - layout.plot_x0
    step = _nice_step(layout.duration_s, max(2, width // 90))
    decimals = 0 if step >= 1 else min(3, -math.floor(math.log10(step)))
    count = int(math.floor(layout.duration_s / step + 1e-9))
    for index in range(count + 1):
        value = index * step
        x = layout.x_of(value)
        draw.line([(x, y), (x, y + 5)], fill=INK)
        label = f"{value:.{decimals}f}"
        text_width = draw.textlength(label, font=font)
        draw.text((min(x - text_width / 2, layout.plot_x1 - text_width), y + 8), label, fill=MUTED, font=font)
    draw.text((MARGIN, y + 8), "time (s)", fill=INK, font=font)


def _draw_footnotes(draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, fonts: dict[str, Any]) -> None:
    lines = []
    if data.grid is not None:
        lines.append(
            f"Video: one token covers {data.token_pixels} x {data.token_pixels} px of the model's input frame and "
            f"{data.temporal_patch} frames; drawn at {layout.cell} x {layout.cell} px. Dropped tokens are dimmed."
        )
    if data.num_audio_tokens:
        times = data.audio_token_times
        seconds = float((times[:, 1] - times[:, 0]).mean()) if times is not None and times.size else 0.0
        lines.append(
            f"Audio: one token per {1000 * seconds:.0f} ms. Anchors: evenly spaced context tokens kept beside the "
            f"salient ones, each with up to G dropped tokens merged in. Waveform colour: most tokens under the pixel."
        )
    has_audio_groups = any(g.audio_tokens for g in data.groups)
    has_video_groups = any(g.video_tokens for g in data.groups)
    if has_audio_groups and has_video_groups:
        lines.append(
            "Groups: audio kept = share of the group's audio tokens kept; video dropped = the drop ratio OmniZip "
            "used (audio-guided, or the fixed ratio where a group has no audio)."
        )
    elif has_video_groups:
        lines.append("Groups: video dropped = the fixed drop ratio OmniZip used (no audio to guide it).")
    elif has_audio_groups:
        lines.append("Groups: audio kept = share of the group's audio tokens kept (no video to prune).")
    y = layout.footnote_top + 10
    for line in lines[:3]:
        draw.text((MARGIN, y), fit_text(draw, line, fonts["small"], layout.width - 2 * MARGIN), fill=MUTED,
                  font=fonts["small"])
        y += FOOTNOTE_LINE


def keep_map_for_session(session: Any, *, title: str | None = None) -> KeepMapData:
    """:class:`KeepMapData` of what a :class:`~omnizip_cli.generation.Session` gives the model.

    Needs the decoded media (a session opened on a file or on decoded media). Without compression
    every token is drawn as kept.
    """
    from .payload import compression_label

    if session.media is None:
        raise UsageError("a keep map needs the decoded media: open the session on a file")
    loaded = session.loaded
    adapter = loaded.adapter
    ids = adapter.token_ids(loaded.model)
    geometry = adapter.vision_geometry(loaded.model)
    encoded = session.encoded
    plan = session.plan
    media = session.media
    keep = plan.keep if plan is not None else None
    if keep is None:
        import torch

        keep = torch.ones(encoded.length, dtype=torch.bool)
    summary = media.summary
    return keep_map_data_from_plan(
        encoded.input_ids[0],
        keep,
        audio_token_id=ids.audio,
        video_token_id=ids.video,
        merged_positions=plan.merged_positions if plan is not None else None,
        video_grid_thw=encoded.video_grid_thw,
        spatial_merge_size=geometry.spatial_merge,
        patch_size=geometry.patch_size,
        temporal_patch_size=geometry.temporal_patch,
        frames=media.frames,
        frame_times=media.frame_times,
        audio=media.audio,
        audio_tokens_per_second=adapter.audio_tokens_per_second,
        group_rows=session.group_rows or None,
        title=title if title is not None else Path(summary.path).name,
        setting=compression_label(session.config.to_dict() if session.config is not None else None),
        model=loaded.name,
        is_random_model=loaded.is_tiny,
    )
