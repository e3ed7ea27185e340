"""The ``timings.png`` chart of ``omnizip profile --out``: stacked stage timings, one bar per setting.

Drawn with Pillow only (``PIL.ImageDraw``). Each horizontal bar is one setting (full first). Its
segments are the median seconds of the per-answer stages: audio encoder, vision encoder, saliency,
keep plan, prefill, then "other" for the glue between them up to the median time to first token,
then decode up to the median end-to-end time. A black tick marks the median time to first token.
Media decoding and the processor run once for all settings: the subtitle gives their times
instead of drawing the same segment in every bar.
"""

from __future__ import annotations

import math
from typing import Any

from PIL import Image, ImageDraw, ImageFont

WIDTH = 1000
MIN_HEIGHT = 500
BACKGROUND = (255, 255, 255)
INK = (33, 37, 41)
MUTED = (110, 117, 125)
GRID = (225, 228, 232)

#: Segment order and colours (Okabe-Ito palette: readable by most colour-blind readers).
SEGMENTS: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("audio_encoder", "audio encoder", (230, 159, 0)),
    ("vision_encoder", "vision encoder", (86, 180, 233)),
    ("saliency", "saliency", (204, 121, 167)),
    ("keep_plan", "keep plan", (240, 228, 66)),
    ("prefill", "prefill", (0, 158, 115)),
    ("decode", "decode", (0, 114, 178)),
    ("other", "other", (190, 190, 190)),
)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def nice_step(span: float, target_ticks: int = 6) -> float:
    """A 1-2-5 tick step giving about ``target_ticks`` ticks over ``span``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target_ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power


def format_tick(value: float, step: float) -> str:
    """Seconds with as many decimals as the step needs."""
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    if step < 1 and not math.isclose(round(step, decimals), step, rel_tol=1e-9):
        decimals += 1
    return f"{value:.{decimals}f}"


def _human_seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


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


def render_timings_chart(payload: dict[str, Any]) -> Image.Image:
    """Draw the chart for a ``profile`` payload (the ``--json`` object) and return the image."""
    columns = payload["settings"]
    title_font, text_font, small_font = _font(22), _font(15), _font(13)

    bar_height, bar_gap = 44, 26
    top, left, right = 104, 120, 200
    axis_height = 46
    bars = [bar_segments(c) for c in columns]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    entries: list[tuple[str, tuple[int, int, int] | None]] = [
        (label, colour) for name, label, colour in SEGMENTS if any(n == name for segs in bars for n, _ in segs)
    ]
    entries.append(("time to first token", None))
    legend = _legend_layout(measure, entries, text_font, WIDTH - 48)
    legend_rows = 1 + max((row for row, _, _, _ in legend), default=0)
    fixed = top + 10 + axis_height + 8 + 30 * legend_rows + 20
    room = (MIN_HEIGHT - fixed) / max(len(columns), 1)
    if room > bar_height + bar_gap:  # few settings: thicker bars fill the minimum height
        unit = min(room, 110.0)
        bar_height, bar_gap = int(unit * 0.6), int(unit * 0.4)
    body = len(columns) * (bar_height + bar_gap)
    height = max(MIN_HEIGHT, fixed + body)

    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    # Title and subtitle.
    model = payload.get("model", {})
    draw.text((24, 18), "Time per answer, by stage: full vs OmniZip", fill=INK, font=title_font)
    runs = payload.get("repeats", 1)
    shared = payload.get("shared", {})
    subtitle = (
        f"{model.get('model', '?')} on {model.get('device', '?')} ({model.get('dtype', '?')}), "
        f"median of {runs} run{'s' if runs != 1 else ''}. Once for all settings, not drawn: media decode "
        f"{_human_seconds(float(shared.get('media_decode_seconds', 0.0)))}, processor "
        f"{_human_seconds(float(shared.get('preprocess_seconds', 0.0)))}."
    )
    draw.text((24, 50), fit_text(draw, subtitle, small_font, WIDTH - 48), fill=MUTED, font=small_font)
    prefix = "Not representative: "
    indent = 24 + draw.textlength(prefix, font=small_font)
    for line_index, note in enumerate(payload.get("notes", [])[:2]):
        x, text = (24.0, prefix + note) if line_index == 0 else (indent, note)
        draw.text((x, 68 + 17 * line_index), fit_text(draw, text, small_font, WIDTH - 24 - x), fill=(176, 58, 46),
                  font=small_font)

    # Scale.
    longest = max([sum(s for _, s in segs) for segs in bars] + [0.0])
    step = nice_step(longest if longest > 0 else 1.0)
    axis_max = step * max(1, math.ceil(longest / step - 1e-9)) if longest > 0 else step * 5
    plot_left, plot_right = left, WIDTH - right
    plot_width = plot_right - plot_left
    plot_top, plot_bottom = top + 10, top + 10 + body

    def x_of(seconds: float) -> float:
        return plot_left + plot_width * seconds / axis_max

    # Grid and axis.
    ticks = int(round(axis_max / step))
    for i in range(ticks + 1):
        value = i * step
        x = x_of(value)
        draw.line([(x, plot_top - 6), (x, plot_bottom)], fill=GRID, width=1)
        label = format_tick(value, step)
        width = draw.textlength(label, font=small_font)
        draw.text((x - width / 2, plot_bottom + 6), label, fill=MUTED, font=small_font)
    draw.line([(plot_left, plot_bottom), (plot_right, plot_bottom)], fill=INK, width=1)
    axis_label = "seconds (median)"
    draw.text(
        (plot_left + plot_width / 2 - draw.textlength(axis_label, font=text_font) / 2, plot_bottom + 24),
        axis_label,
        fill=INK,
        font=text_font,
    )

    colours = {name: colour for name, _, colour in SEGMENTS}
    for index, (column, segments) in enumerate(zip(columns, bars)):
        y0 = plot_top + index * (bar_height + bar_gap) + bar_gap / 2
        y1 = y0 + bar_height
        label = column["label"]
        label_width = draw.textlength(label, font=text_font)
        draw.text((plot_left - 12 - label_width, y0 + bar_height / 2 - 9), label, fill=INK, font=text_font)
        x = float(plot_left)
        for name, seconds in segments:
            x_end = x + plot_width * seconds / axis_max
            if x_end - x >= 0.5:
                draw.rectangle([x, y0, x_end, y1], fill=colours[name])
            x = x_end
        draw.rectangle([plot_left, y0, max(x, plot_left + 1), y1], outline=INK, width=1)
        ttft = column["figures"]["ttft_seconds"]["median"]
        if ttft:
            tx = x_of(float(ttft))
            draw.line([(tx, y0 - 5), (tx, y1 + 5)], fill=INK, width=3)
        e2e = float(column["figures"]["e2e_seconds"]["median"] or 0.0)
        caption = _human_seconds(e2e)
        vs = column.get("vs_full")
        if vs and vs.get("speedup_e2e"):
            caption += f"  ({vs['speedup_e2e']:.2f}x)"
        draw.text((x + 8, y0 + 4), caption, fill=INK, font=text_font)
        retention = column.get("retention", {}).get("audio_video")
        if retention is not None:
            draw.text((x + 8, y0 + 24), f"{retention * 100:.0f} % of A/V tokens", fill=MUTED, font=small_font)

    # Legend.
    legend_top = plot_bottom + axis_height + 8
    for row, lx, label, colour in legend:
        ly = legend_top + 30 * row
        if colour is None:  # the time-to-first-token tick
            draw.line([(lx + 8, ly), (lx + 8, ly + 20)], fill=INK, width=3)
        else:
            draw.rectangle([lx, ly + 2, lx + 16, ly + 18], fill=colour, outline=INK)
        draw.text((lx + 22, ly + 1), label, fill=INK, font=text_font)
    return image


def fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> str:
    """``text`` cut with an ellipsis so that it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"


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
