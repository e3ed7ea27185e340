"""The drawing primitives every chart shares: fonts, palette, tick steps, fitted text, the value axis.

Used by the timings chart (:mod:`omnizip_cli.report.chart`), the accuracy chart
(:mod:`omnizip_cli.evaluation.summary`) and the keep map (:mod:`omnizip_cli.report.keep_map`), so
that they look alike. Pillow is imported inside the functions: importing this module pulls in
nothing heavy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from PIL import ImageDraw

__all__ = [
    "BACKGROUND",
    "BLUE",
    "BLUISH_GREEN",
    "CHART_MIN_HEIGHT",
    "CHART_WIDTH",
    "GRID",
    "INK",
    "MUTED",
    "ORANGE",
    "REDDISH_PURPLE",
    "RGB",
    "SKY_BLUE",
    "VERMILLION",
    "YELLOW",
    "Fonts",
    "draw_value_grid",
    "fit_text",
    "font",
    "format_tick",
    "lighten",
    "load_fonts",
    "nice_step",
    "text_right",
]

RGB = tuple[int, int, int]

# ------------------------------------------------------------------------------------ palette

BACKGROUND: RGB = (255, 255, 255)
INK: RGB = (33, 37, 41)
MUTED: RGB = (110, 117, 125)
GRID: RGB = (225, 228, 232)

#: The Okabe-Ito colours, readable by most colour-blind readers.
ORANGE: RGB = (230, 159, 0)
SKY_BLUE: RGB = (86, 180, 233)
BLUISH_GREEN: RGB = (0, 158, 115)
YELLOW: RGB = (240, 228, 66)
BLUE: RGB = (0, 114, 178)
VERMILLION: RGB = (213, 94, 0)
REDDISH_PURPLE: RGB = (204, 121, 167)

#: The size of the charts of ``profile --out`` and ``evaluate --out`` (the keep map has its own).
CHART_WIDTH = 1000
CHART_MIN_HEIGHT = 500

#: Font sizes: the title's default, running text and small print.
TITLE_SIZE = 22
TEXT_SIZE = 15
SMALL_SIZE = 13


# ------------------------------------------------------------------------------------ fonts


def font(size: int) -> Any:
    """Pillow's default font at ``size`` pixels (the fixed bitmap font when Pillow lacks FreeType)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


class Fonts(NamedTuple):
    """The three fonts of a picture: its title, running text and small print."""

    title: Any
    text: Any
    small: Any


def load_fonts(title_size: int = TITLE_SIZE) -> Fonts:
    """The title font at ``title_size``, text at 15 px and small print at 13 px."""
    return Fonts(font(title_size), font(TEXT_SIZE), font(SMALL_SIZE))


# ------------------------------------------------------------------------------------ text


def fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> str:
    """``text`` cut with an ellipsis so that it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def text_right(draw: ImageDraw.ImageDraw, right: float, y: float, text: str, font: Any, fill: RGB) -> None:
    """Draw ``text`` so that it ends at ``x = right`` (a label left of a bar)."""
    draw.text((right - draw.textlength(text, font=font), y), text, fill=fill, font=font)


# ------------------------------------------------------------------------------------ colours


def lighten(colour: RGB, amount: float = 0.55) -> RGB:
    """``colour`` moved ``amount`` of the way to white."""
    red, green, blue = (int(round(c + (255 - c) * amount)) for c in colour)
    return red, green, blue


# ------------------------------------------------------------------------------------ ticks


def nice_step(span: float, target_ticks: int = 6, factors: Sequence[float] = (1, 2, 2.5, 5, 10)) -> float:
    """A tick step giving about ``target_ticks`` ticks over ``span``: a power of ten times one of ``factors``.

    The charts use 1-2-2.5-5 steps; the keep map's time axis passes ``factors=(1, 2, 5, 10)``. A span
    that is not positive and finite gets a step of 1.
    """
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(target_ticks, 1)
    power = 10 ** math.floor(math.log10(raw))
    for factor in factors:
        if factor * power >= raw:
            return factor * power
    return 10 * power


def format_tick(value: float, step: float, max_decimals: int | None = None) -> str:
    """``value`` with as many decimals as ``step`` needs (at most ``max_decimals`` when given)."""
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    if step < 1 and not math.isclose(round(step, decimals), step, rel_tol=1e-9):
        decimals += 1
    if max_decimals is not None:
        decimals = min(decimals, max_decimals)
    return f"{value:.{decimals}f}"


def draw_value_grid(
    draw: ImageDraw.ImageDraw,
    ticks: Sequence[tuple[float, str]],
    plot: tuple[float, float, float, float],
    font: Any,
) -> None:
    """Vertical grid lines with centred labels under the plot, then the baseline.

    ``ticks`` are ``(x, label)``; ``plot`` is ``(left, top, right, bottom)``. Each line runs from
    6 pixels above the plot to its bottom, its label 6 pixels below it.
    """
    left, top, right, bottom = plot
    for x, label in ticks:
        draw.line([(x, top - 6), (x, bottom)], fill=GRID, width=1)
        draw.text((x - draw.textlength(label, font=font) / 2, bottom + 6), label, fill=MUTED, font=font)
    draw.line([(left, bottom), (right, bottom)], fill=INK, width=1)
