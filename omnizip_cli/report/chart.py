"""The ``timings.png`` chart of ``omnizip profile --out``: stacked stage timings, one bar per setting.

Drawn with Pillow only (``PIL.ImageDraw``), with the shared primitives of
:mod:`omnizip_cli.report.drawing`. Each horizontal bar is one setting (full first). Its segments
are the median seconds of the per-answer stages: audio encoder, vision encoder, saliency, keep plan,
prefill, then "other" for the glue between them up to the median time to first token, then decode
up to the median end-to-end time. A black tick marks the median time to first token. Media decoding
and the processor run once for all settings: the subtitle gives their times instead of drawing the
same segment in every bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from .drawing import (
    BACKGROUND,
    BLUE,
    BLUISH_GREEN,
    CHART_MIN_HEIGHT,
    CHART_WIDTH,
    INK,
    MUTED,
    ORANGE,
    REDDISH_PURPLE,
    SKY_BLUE,
    YELLOW,
    Fonts,
    draw_value_grid,
    fit_text,
    format_tick,
    load_fonts,
    nice_step,
    text_right,
)
from .units import format_seconds

__all__ = ["SEGMENTS", "bar_segments", "render_timings_chart"]

#: Segment order and colours (Okabe-Ito palette: readable by most colour-blind readers).
SEGMENTS: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("audio_encoder", "audio encoder", ORANGE),
    ("vision_encoder", "vision encoder", SKY_BLUE),
    ("saliency", "saliency", REDDISH_PURPLE),
    ("keep_plan", "keep plan", YELLOW),
    ("prefill", "prefill", BLUISH_GREEN),
    ("decode", "decode", BLUE),
    ("other", "other", (190, 190, 190)),
)
#: The colour of the "not representative" notes under the subtitle.
NOTE_INK = (176, 58, 46)

TOP, LEFT, RIGHT = 104, 120, 200  # the plot's top, its left edge and the room right of it
AXIS_HEIGHT = 46


def bar_segments(column: dict[str, Any]) -> list[tuple[str, float]]:
    """(segment, median seconds) for one setting, in the order the stages run.

    The stages before the first token are drawn with their medians, and "other" fills the gap up to
    the median time to first token (the glue between stages, which is no stage). The decode
    segment is what follows, up to the median end-to-end time. That way, the tick of the first
    token falls where the decode begins, and the bar ends at the median end-to-end time.
    (Every run has e2e >= TTFT, so their medians keep that order.)
    """
    stages = column.get("stages", {})
    figures = column["figures"]
    segments = [
        (name, float(stages[name]["median"] or 0.0)) for name, _, _ in SEGMENTS if name in stages and name != "decode"
    ]
    ttft = float(figures["ttft_seconds"]["median"] or 0.0)
    e2e = float(figures["e2e_seconds"]["median"] or 0.0)
    glue = ttft - sum(seconds for _, seconds in segments)
    if glue > 0:
        segments.append(("other", glue))
    after_first = e2e - max(ttft, sum(seconds for _, seconds in segments))
    if after_first > 0:
        segments.append(("decode", after_first))
    return segments


@dataclass(frozen=True)
class _Frame:
    """Where the chart's parts land: image height, bar size, the plot and its time scale."""

    height: int
    bar_height: int
    bar_gap: int
    plot_top: int
    plot_bottom: int
    step: float
    axis_max: float

    @property
    def plot_width(self) -> int:
        return CHART_WIDTH - RIGHT - LEFT

    def x_of(self, seconds: float) -> float:
        """The x coordinate of ``seconds`` on the plot."""
        return LEFT + self.plot_width * seconds / self.axis_max


def render_timings_chart(payload: dict[str, Any]) -> Image.Image:
    """Draw the chart for a ``profile`` payload (the ``--json`` object) and return the image."""
    columns = payload["settings"]
    fonts = load_fonts()
    bars = [bar_segments(c) for c in columns]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    entries: list[tuple[str, tuple[int, int, int] | None]] = [
        (label, colour) for name, label, colour in SEGMENTS if any(n == name for segs in bars for n, _ in segs)
    ]
    entries.append(("time to first token", None))
    legend = _legend_layout(measure, entries, fonts.text, CHART_WIDTH - 48)
    frame = _frame(len(columns), bars, 1 + max((row for row, _, _, _ in legend), default=0))

    image = Image.new("RGB", (CHART_WIDTH, frame.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    _draw_titles(draw, payload, fonts)
    _draw_axis(draw, frame, fonts)
    for index, (column, segments) in enumerate(zip(columns, bars)):
        _draw_bar(draw, frame, index, column, segments, fonts)
    _draw_legend(draw, legend, frame.plot_bottom + AXIS_HEIGHT + 8, fonts)
    return image


def _frame(count: int, bars: list[list[tuple[str, float]]], legend_rows: int) -> _Frame:
    """The chart's geometry for ``count`` bars: at least 500 px high, thicker bars when they are few."""
    bar_height, bar_gap = 44, 26
    fixed = TOP + 10 + AXIS_HEIGHT + 8 + 30 * legend_rows + 20
    room = (CHART_MIN_HEIGHT - fixed) / max(count, 1)
    if room > bar_height + bar_gap:  # few settings: thicker bars fill the minimum height
        unit = min(room, 110.0)
        bar_height, bar_gap = int(unit * 0.6), int(unit * 0.4)
    body = count * (bar_height + bar_gap)
    longest = max([sum(s for _, s in segs) for segs in bars] + [0.0])
    step = nice_step(longest if longest > 0 else 1.0)
    axis_max = step * max(1, math.ceil(longest / step - 1e-9)) if longest > 0 else step * 5
    return _Frame(
        height=max(CHART_MIN_HEIGHT, fixed + body),
        bar_height=bar_height,
        bar_gap=bar_gap,
        plot_top=TOP + 10,
        plot_bottom=TOP + 10 + body,
        step=step,
        axis_max=axis_max,
    )


def _draw_titles(draw: ImageDraw.ImageDraw, payload: dict[str, Any], fonts: Fonts) -> None:
    """The title, the subtitle (model, runs, the shared stages) and up to two "not representative" notes."""
    model = payload.get("model", {})
    draw.text((24, 18), "Time per answer, by stage: full vs OmniZip", fill=INK, font=fonts.title)
    runs = payload.get("repeats", 1)
    shared = payload.get("shared", {})
    subtitle = (
        f"{model.get('model', '?')} on {model.get('device', '?')} ({model.get('dtype', '?')}), "
        f"median of {runs} run{'s' if runs != 1 else ''}. Once for all settings, not drawn: media decode "
        f"{format_seconds(float(shared.get('media_decode_seconds', 0.0)))}, processor "
        f"{format_seconds(float(shared.get('preprocess_seconds', 0.0)))}."
    )
    draw.text((24, 50), fit_text(draw, subtitle, fonts.small, CHART_WIDTH - 48), fill=MUTED, font=fonts.small)
    prefix = "Not representative: "
    indent = 24 + draw.textlength(prefix, font=fonts.small)
    for line_index, note in enumerate(payload.get("notes", [])[:2]):
        x, text = (24.0, prefix + note) if line_index == 0 else (indent, note)
        draw.text((x, 68 + 17 * line_index), fit_text(draw, text, fonts.small, CHART_WIDTH - 24 - x), fill=NOTE_INK,
                  font=fonts.small)


def _draw_axis(draw: ImageDraw.ImageDraw, frame: _Frame, fonts: Fonts) -> None:
    """The vertical grid with the seconds under it, the baseline and the axis title."""
    ticks = int(round(frame.axis_max / frame.step))
    values = [i * frame.step for i in range(ticks + 1)]
    draw_value_grid(
        draw,
        [(frame.x_of(value), format_tick(value, frame.step)) for value in values],
        (LEFT, frame.plot_top, CHART_WIDTH - RIGHT, frame.plot_bottom),
        fonts.small,
    )
    axis_label = "seconds (median)"
    draw.text(
        (LEFT + frame.plot_width / 2 - draw.textlength(axis_label, font=fonts.text) / 2, frame.plot_bottom + 24),
        axis_label,
        fill=INK,
        font=fonts.text,
    )


def _draw_bar(
    draw: ImageDraw.ImageDraw,
    frame: _Frame,
    index: int,
    column: dict[str, Any],
    segments: list[tuple[str, float]],
    fonts: Fonts,
) -> None:
    """One setting: its label, stacked segments, time-to-first-token tick and caption."""
    colours = {name: colour for name, _, colour in SEGMENTS}
    y0 = frame.plot_top + index * (frame.bar_height + frame.bar_gap) + frame.bar_gap / 2
    y1 = y0 + frame.bar_height
    text_right(draw, LEFT - 12, y0 + frame.bar_height / 2 - 9, column["label"], fonts.text, INK)
    x = float(LEFT)
    for name, seconds in segments:
        x_end = x + frame.plot_width * seconds / frame.axis_max
        if x_end - x >= 0.5:
            draw.rectangle([x, y0, x_end, y1], fill=colours[name])
        x = x_end
    draw.rectangle([LEFT, y0, max(x, LEFT + 1), y1], outline=INK, width=1)
    ttft = column["figures"]["ttft_seconds"]["median"]
    if ttft:
        tx = frame.x_of(float(ttft))
        draw.line([(tx, y0 - 5), (tx, y1 + 5)], fill=INK, width=3)
    e2e = float(column["figures"]["e2e_seconds"]["median"] or 0.0)
    caption = format_seconds(e2e)
    vs = column.get("vs_full")
    if vs and vs.get("speedup_e2e"):
        caption += f"  ({vs['speedup_e2e']:.2f}x)"
    draw.text((x + 8, y0 + 4), caption, fill=INK, font=fonts.text)
    retention = column.get("retention", {}).get("audio_video")
    if retention is not None:
        draw.text((x + 8, y0 + 24), f"{retention * 100:.0f} % of A/V tokens", fill=MUTED, font=fonts.small)


def _legend_layout(
    draw: ImageDraw.ImageDraw, entries: list[tuple[str, Any]], font: Any, width: float
) -> list[tuple[int, float, str, Any]]:
    """(row, x, label, colour) of each legend entry, wrapped to ``width``."""
    placed: list[tuple[int, float, str, Any]] = []
    row, x = 0, 24.0
    for label, colour in entries:
        size = 22 + draw.textlength(label, font=font) + 26
        if x + size > 24 + width and x > 24:
            row, x = row + 1, 24.0
        placed.append((row, x, label, colour))
        x += size
    return placed


def _draw_legend(
    draw: ImageDraw.ImageDraw, legend: list[tuple[int, float, str, Any]], top: float, fonts: Fonts
) -> None:
    """The legend rows from ``top``: a swatch per segment, a tick for the time to first token."""
    for row, lx, label, colour in legend:
        ly = top + 30 * row
        if colour is None:  # the time-to-first-token tick
            draw.line([(lx + 8, ly), (lx + 8, ly + 20)], fill=INK, width=3)
        else:
            draw.rectangle([lx, ly + 2, lx + 16, ly + 18], fill=colour, outline=INK)
        draw.text((lx + 22, ly + 1), label, fill=INK, font=fonts.text)
