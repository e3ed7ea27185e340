"""The keep map's geometry: where every part of the picture lands, in pixels (no drawing here).

:func:`compute_keep_map_layout` gives a :class:`KeepMapLayout` for a :class:`~.data.KeepMapData`
within a size bound; the renderer draws exactly where it says, and tests use it to look at the
right pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

    from .data import KeepMapData

__all__ = ["Box", "KeepMapLayout", "compute_keep_map_layout"]

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
FOOTNOTE_LINES = 3
MIN_WIDTH = 720
SHEET_HEADING = 44  # the contact sheet's heading and the rule saying which steps are shown
TIMELINE_HEADING = 26

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
    header_height, note_box = _header_geometry(data, width)
    lanes = _timeline_lanes(data)
    timeline_height = TIMELINE_HEADING + sum(h + LANE_GAP for _, h in lanes) + AXIS_HEIGHT
    footnote_height = 10 + FOOTNOTE_LINE * FOOTNOTE_LINES + 12
    sheet_top = header_height
    fixed = header_height + SHEET_HEADING + timeline_height + footnote_height
    sheet = _sheet_geometry(data, width - 2 * MARGIN, sheet_top, fixed, max_height, max_frames_shown)

    timeline_top = sheet_top + sheet.height + 6
    plot_x0, plot_x1 = MARGIN + LABEL_WIDTH, width - MARGIN
    boxes, axis_top = _lane_boxes(lanes, plot_x0, plot_x1, timeline_top + TIMELINE_HEADING)
    footnote_top = axis_top + AXIS_HEIGHT
    return KeepMapLayout(
        width=width,
        height=footnote_top + footnote_height,
        shown_steps=sheet.shown,
        step_stride=sheet.stride,
        tile_origins=sheet.origins,
        tile_size=sheet.tile_size,
        cell=sheet.cell,
        grid_hw=sheet.grid_hw,
        columns=sheet.columns,
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


def _header_geometry(data: KeepMapData, width: int) -> tuple[int, Box | None]:
    """The header's height (title, setting, tokens, [random-model note], legend) and the note's box."""
    y = 16 + 34 + 22 + 24
    note_box = None
    if data.is_random_model:
        note_box = (MARGIN, y, width - MARGIN, y + 26)
        y += 26 + 8
    y += 28  # legend
    return y + 6, note_box


def _timeline_lanes(data: KeepMapData) -> list[tuple[str, int]]:
    """(name, height) of the timeline's lanes present for ``data``, top to bottom."""
    has_groups = bool(data.groups)
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
    return lanes


def _lane_boxes(lanes: list[tuple[str, int]], plot_x0: int, plot_x1: int, top: int) -> tuple[dict[str, Box], int]:
    """Each lane's box by name, stacked from ``top`` with gaps, and the y where the time axis goes."""
    y = top
    boxes: dict[str, Box] = {}
    for name, height in lanes:
        boxes[name] = (plot_x0, y, plot_x1, y + height)
        y += height + LANE_GAP
    return boxes, y


class _Sheet(NamedTuple):
    """The contact sheet's geometry (all empty without video)."""

    shown: tuple[int, ...] = ()
    stride: int = 1
    cell: int = 0
    tile_size: tuple[int, int] = (0, 0)
    columns: int = 0
    origins: tuple[tuple[int, int], ...] = ()
    height: int = 0
    grid_hw: tuple[int, int] = (0, 0)


def _sheet_geometry(
    data: KeepMapData, content: int, sheet_top: int, fixed: int, max_height: int, max_frames_shown: int
) -> _Sheet:
    """The tiles: pixels per token, how many steps fit (every ``stride``-th) and where each tile goes.

    ``content`` is the width between the margins and ``fixed`` the height of everything but the
    rows of tiles.
    """
    if data.grid is None:
        return _Sheet()
    grid_t, grid_h, grid_w = data.grid
    max_columns = max(1, (content + TILE_GAP) // (MIN_TILE_BOX + TILE_GAP))
    columns = min(grid_t, max_columns)
    box_w = min(MAX_TILE_BOX, (content - TILE_GAP * (columns - 1)) // columns)
    box_h = min(MAX_TILE_HEIGHT, box_w)
    cell = max(1, min(box_w // grid_w, box_h // grid_h))
    tile_w, tile_h = cell * grid_w, cell * grid_h
    if tile_w > content:  # an extreme panorama: one column, cell 1, cut at the edge
        columns = 1
    row_height = tile_h + TILE_CAPTION + TILE_ROW_GAP
    rows_fit = max(1, (max_height - fixed) // row_height)
    capacity = max(1, min(int(max_frames_shown), rows_fit * columns))
    stride = max(1, math.ceil(grid_t / capacity))
    shown = tuple(range(0, grid_t, stride))
    rows = math.ceil(len(shown) / columns)
    columns = min(columns, len(shown))
    top = sheet_top + SHEET_HEADING
    box = (content - TILE_GAP * (columns - 1)) // columns if columns > 1 else content
    origins = []
    for index in range(len(shown)):
        row, col = divmod(index, columns)
        origins.append((MARGIN + col * (box + TILE_GAP), top + row * row_height))
    return _Sheet(
        shown=shown,
        stride=stride,
        cell=cell,
        tile_size=(tile_w, tile_h),
        columns=columns,
        origins=tuple(origins),
        height=SHEET_HEADING + rows * row_height,
        grid_hw=(grid_h, grid_w),
    )
