"""Drawing the keep map's timeline: waveform, audio tokens, video kept per step, group lanes, time axis.

Every lane shares one time axis (:meth:`~.layout.KeepMapLayout.column_span` maps seconds to pixel
columns). NumPy and Pillow are imported inside the functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..drawing import Fonts, fit_text, format_tick, lighten, nice_step
from .layout import LABEL_WIDTH, MARGIN, Box, KeepMapLayout
from .style import (
    ANCHOR,
    AUDIO_KEPT,
    DROPPED,
    INK,
    KEPT,
    LANE_BACKGROUND,
    MUTED,
    SEPARATOR,
    STATE_COLOURS,
    UNGUIDED,
    VIDEO_DROP,
    VIDEO_KEPT,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image, ImageDraw

    from .data import KeepMapData

__all__ = ["draw_timeline"]


def _lane_label(draw: ImageDraw.ImageDraw, box: Box, text: str, font: Any, sub: str | None = None) -> None:
    """A lane's name in the left column, level with its box (with a muted second line ``sub``)."""
    _, y0, _, y1 = box
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


def draw_timeline(
    image: Image.Image, draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, fonts: Fonts
) -> None:
    """Draw the timeline's heading, its lanes (those the layout has boxes for) and the time axis."""
    draw.text((MARGIN, layout.timeline_top + 2), "Timeline (seconds from the start of the file)", fill=INK,
              font=fonts.text)
    counts = _audio_column_counts(data, layout) if data.num_audio_tokens else None
    cells = _group_cells(data, layout)
    _draw_group_separators(draw, layout, cells)  # first, so that the lanes are drawn over them
    if layout.waveform_box is not None and data.audio is not None:
        _draw_waveform_lane(image, draw, data, layout, counts, fonts.small)
    if layout.token_lane_box is not None and counts is not None:
        _draw_token_lane(image, draw, layout, counts, fonts.small)
    if layout.video_lane_box is not None and data.grid is not None:
        _draw_video_lane(draw, data, layout, fonts.small)
    _draw_group_lanes(draw, data, layout, cells, fonts.small)
    _draw_axis(draw, layout, fonts.small)


def _draw_group_separators(draw: ImageDraw.ImageDraw, layout: KeepMapLayout, cells: list[tuple[int, int]]) -> None:
    """A thin line across every lane where a group starts (not for a comb of narrow groups)."""
    lane_boxes = [
        b for b in (layout.waveform_box, layout.token_lane_box, layout.video_lane_box, layout.group_audio_box,
                    layout.group_video_box) if b is not None
    ]
    widths = sorted(c1 - c0 for c0, c1 in cells)
    if lane_boxes and widths and widths[len(widths) // 2] >= 12:
        top, bottom = lane_boxes[0][1], lane_boxes[-1][3]
        for c0, _ in cells[1:]:
            draw.line([(c0, top - 4), (c0, bottom + 3)], fill=SEPARATOR, width=1)


def _draw_waveform_lane(
    image: Image.Image,
    draw: ImageDraw.ImageDraw,
    data: KeepMapData,
    layout: KeepMapLayout,
    counts: np.ndarray | None,
    font: Any,
) -> None:
    """The peak-normalised waveform, each column in the colour of most audio tokens under it."""
    import numpy as np
    from PIL import Image

    assert layout.waveform_box is not None and data.audio is not None
    box = layout.waveform_box
    width = layout.plot_x1 - layout.plot_x0
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
    _lane_label(draw, box, "audio waveform", font, "peak-normalised")


def _draw_token_lane(
    image: Image.Image, draw: ImageDraw.ImageDraw, layout: KeepMapLayout, counts: np.ndarray, font: Any
) -> None:
    """Per column, the shares of kept, anchor and dropped audio tokens, stacked from the bottom."""
    import numpy as np
    from PIL import Image

    assert layout.token_lane_box is not None
    box = layout.token_lane_box
    width = layout.plot_x1 - layout.plot_x0
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
    _lane_label(draw, box, "audio tokens", font)


def _draw_video_lane(draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, font: Any) -> None:
    """The kept fraction of every grid step as a bar, with ticks under the steps the sheet shows."""
    assert layout.video_lane_box is not None and data.grid is not None
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
        if draw.textlength(label, font=font) + 8 <= c1 - c0:
            draw.text((c0 + 4, box[1] + 2), label, fill=INK, font=font)
    for step in layout.shown_steps:  # ticks under the steps shown in the sheet
        c0, c1 = layout.column_span(float(spans[step, 0]), float(spans[step, 1]))
        xm = (c0 + c1 - 1) / 2
        draw.polygon([(xm - 3, box[3] + 6), (xm + 3, box[3] + 6), (xm, box[3] + 1)], fill=INK)
    _lane_label(draw, box, "video kept per step", font, "ticks: tiles above")


def _draw_group_lanes(
    draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, cells: list[tuple[int, int]], font: Any
) -> None:
    """Per group, the share of its audio tokens kept and the video drop ratio used (grey when unguided)."""
    if layout.group_audio_box is not None:
        values = [
            (g.audio_retention, AUDIO_KEPT, f"{100 * g.audio_retention:.0f} %" if g.audio_retention is not None else "")
            for g in data.groups
        ]
        _draw_group_lane(draw, layout.group_audio_box, cells, values, font)
        _lane_label(draw, layout.group_audio_box, "group: audio kept", font)
    if layout.group_video_box is not None:
        values = []
        for g in data.groups:
            if not g.video_tokens:
                values.append((None, VIDEO_DROP, ""))
                continue
            label = f"{100 * g.video_drop_ratio:.0f} %" + ("" if g.guided else " fixed")
            values.append((g.video_drop_ratio, VIDEO_DROP if g.guided else UNGUIDED, label))
        _draw_group_lane(draw, layout.group_video_box, cells, values, font)
        _lane_label(draw, layout.group_video_box, "group: video dropped", font)


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
            draw.rectangle([inner0, y1 - bar, inner1 - 1, y1 - 1], fill=lighten(colour))
            draw.line([(inner0, y1 - bar), (inner1 - 1, y1 - bar)], fill=colour, width=2)
        if label and draw.textlength(label, font=font) + 6 <= c1 - c0:
            text_width = draw.textlength(label, font=font)
            draw.text(((c0 + c1) / 2 - text_width / 2, y0 + height / 2 - 8), label, fill=INK, font=font)


def _draw_axis(draw: ImageDraw.ImageDraw, layout: KeepMapLayout, font: Any) -> None:
    """The time axis under the lanes: a line, ticks every 1-2-5 seconds and their labels."""
    y = layout.axis_top
    draw.line([(layout.plot_x0, y), (layout.plot_x1 - 1, y)], fill=INK)
    width = layout.plot_x1 - layout.plot_x0
    # 1-2-5 steps, about one tick per 90 px; the clamp only matters for spans under a nanosecond
    step = nice_step(max(layout.duration_s, 1e-9), max(2, width // 90), factors=(1, 2, 5, 10))
    count = int(math.floor(layout.duration_s / step + 1e-9))
    for index in range(count + 1):
        value = index * step
        x = layout.x_of(value)
        draw.line([(x, y), (x, y + 5)], fill=INK)
        label = format_tick(value, step, max_decimals=3)
        text_width = draw.textlength(label, font=font)
        draw.text((min(x - text_width / 2, layout.plot_x1 - text_width), y + 8), label, fill=MUTED, font=font)
    draw.text((MARGIN, y + 8), "time (s)", fill=INK, font=font)
