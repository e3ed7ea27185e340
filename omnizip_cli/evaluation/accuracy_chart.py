"""``accuracy.png``: accuracy against the realized retention, one line per method, from ``metrics.json``.

x: the audio+video tokens kept (``retention_realized``, the mean over the answered items, each item's
tokens over the full run's); y: accuracy over the answered items. One line per method (OmniZip:
presets, retentions and ``omnizip@R``; ``frames@R``; ``pixels@R``; ``random@R``), each point a
setting, labelled (the baselines' points are drawn a few pixels beside OmniZip's so that bars at the
same retention stay apart). The error bar of a point is the 95 % paired bootstrap interval of its accuracy
delta against full (:mod:`omnizip_cli.evaluation.paired`), drawn around the point's accuracy: where
it crosses the dashed line of ``full``'s accuracy, the difference is within the noise. The footer
counts the unparsed answers (scored wrong) and the failed ones (left out of both arms).
Pillow is imported inside the function; style from :mod:`omnizip_cli.report.drawing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["METHOD_NAMES", "render_accuracy_chart"]

#: The legend's name of each method, in the legend's order.
METHOD_NAMES = {"omnizip": "OmniZip", "frames": "fewer frames", "pixels": "smaller frames", "random": "random drop"}


def _y_interval(m: Mapping[str, Any]) -> tuple[float, float] | None:
    """The error bar of a point: the delta's interval moved onto its accuracy (clamped to [0, 1])."""
    interval, delta, accuracy = m.get("delta_ci95"), m.get("delta_vs_full"), m.get("accuracy")
    if interval is None or delta is None or accuracy is None:
        return None
    return max(0.0, accuracy + interval[0] - delta), min(1.0, accuracy + interval[1] - delta)


def render_accuracy_chart(metrics: Mapping[str, Any], model: str = "?") -> Any:
    """The chart as a ``PIL.Image.Image`` (see the module docstring)."""
    from PIL import Image, ImageDraw

    from omnizip_cli.report.drawing import (
        BACKGROUND,
        BLUE,
        BLUISH_GREEN,
        CHART_MIN_HEIGHT,
        CHART_WIDTH,
        GRID,
        INK,
        MUTED,
        ORANGE,
        VERMILLION,
        fit_text,
        load_fonts,
        text_right,
    )

    colours = {"omnizip": BLUISH_GREEN, "frames": ORANGE, "pixels": BLUE, "random": VERMILLION}
    nudge = {"omnizip": 0, "frames": -8, "pixels": 8, "random": 16}  # pixels apart: bars at one x stay legible
    fonts = load_fonts()
    width, height = CHART_WIDTH, max(CHART_MIN_HEIGHT, 560)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    data = metrics["dataset"]
    settings = metrics["settings"]
    draw.text((24, 18), "Accuracy against audio+video tokens kept", fill=INK, font=fonts.title)
    subtitle = (f"{model} on {data['name']}: {data['items']} questions, {data['videos']} videos. Bars: 95 % paired "
                "bootstrap interval of the difference to full, around each accuracy; dashed: full.")
    draw.text((24, 52), fit_text(draw, subtitle, fonts.small, width - 48), fill=MUTED, font=fonts.small)
    left, top, right, bottom = 90, 100, width - 210, height - 90

    def x_of(value: float) -> float:
        return left + (right - left) * value

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * value

    for tick in range(0, 101, 20):
        x, y = x_of(tick / 100), y_of(tick / 100)
        draw.line([(x, top), (x, bottom)], fill=GRID, width=1)
        draw.line([(left, y), (right, y)], fill=GRID, width=1)
        label = f"{tick} %"
        draw.text((x - draw.textlength(label, font=fonts.small) / 2, bottom + 6), label, fill=MUTED, font=fonts.small)
        text_right(draw, left - 8, y - 8, label, fonts.small, MUTED)
    draw.line([(left, bottom), (right, bottom)], fill=INK, width=1)
    draw.line([(left, top), (left, bottom)], fill=INK, width=1)
    axis = "audio+video tokens kept (realized retention, mean over items)"
    draw.text(((left + right - draw.textlength(axis, font=fonts.small)) / 2, bottom + 26), axis, fill=MUTED,
              font=fonts.small)
    draw.text((24, top - 24), "accuracy", fill=MUTED, font=fonts.small)

    full = settings.get(metrics.get("full_setting") or "", {})
    if full.get("accuracy") is not None:
        y = y_of(full["accuracy"])
        for x in range(int(left), int(right), 12):
            draw.line([(x, y), (min(x + 6, right), y)], fill=MUTED, width=2)
        draw.text((right + 8, y - 8), f"full {full['accuracy'] * 100:.1f}%", fill=MUTED, font=fonts.small)

    placed: list[tuple[float, float, float, float]] = []  # label boxes drawn so far

    def label_at(cx: float, cy: float, text: str) -> tuple[float, float]:
        """Where a point's label goes: right of it, moved up or down until it overlaps no other label."""
        w = draw.textlength(text, font=fonts.small)
        for dy in (-18, -34, 6, -50, 22, -66, 38, -82, 54):
            box = (cx + 8, cy + dy, cx + 8 + w, cy + dy + 15)
            if box[1] < top or box[3] > bottom - 1:  # inside the plot
                continue
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        return box[0], box[1]

    legend_y = top + 30
    for method, name in METHOD_NAMES.items():
        points = sorted(((m["retention_realized"], m["accuracy"], m) for m in settings.values()
                         if m.get("method") == method and m.get("retention_realized") is not None
                         and m.get("accuracy") is not None), key=lambda p: (p[0], p[1]))
        if not points:
            continue
        colour = colours[method]
        if len(points) > 1:
            draw.line([(x_of(x) + nudge[method], y_of(y)) for x, y, _ in points], fill=colour, width=2)
        for x, y, m in points:
            cx, cy = x_of(x) + nudge[method], y_of(y)
            bar = _y_interval(m)
            if bar is not None:
                draw.line([(cx, y_of(bar[0])), (cx, y_of(bar[1]))], fill=colour, width=2)
                for end in bar:
                    draw.line([(cx - 5, y_of(end)), (cx + 5, y_of(end))], fill=colour, width=2)
            draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=colour, outline=INK)
            draw.text(label_at(cx, cy, str(m.get("label", ""))), str(m.get("label", "")), fill=INK, font=fonts.small)
        draw.rectangle([right + 8, legend_y + 3, right + 22, legend_y + 17], fill=colour)
        draw.text((right + 28, legend_y), f"{name} ({len(points)})", fill=INK, font=fonts.text)
        legend_y += 26

    unparsed = sum(int(m.get("unparsed") or 0) for m in settings.values())
    failed = sum(int(m.get("errors") or 0) for m in settings.values())
    footer = (f"{unparsed} unparsed answers (scored wrong); {failed} failed answers (left out of both arms of "
              "every comparison)")
    draw.text((24, height - 26), fit_text(draw, footer, fonts.small, width - 48), fill=MUTED, font=fonts.small)
    return image
