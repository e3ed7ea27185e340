"""The keep map's colours and the three states of an audio token.

The shared palette (ink, muted text, the Okabe-Ito colours readable by most colour-blind readers)
comes from :mod:`omnizip_cli.report.drawing`, as in the other charts; the rest is the keep map's own.
"""

from __future__ import annotations

from ..drawing import BACKGROUND, BLUE, BLUISH_GREEN, INK, MUTED, ORANGE, RGB, VERMILLION

__all__ = [
    "ANCHOR",
    "AUDIO_ANCHOR",
    "AUDIO_DROPPED",
    "AUDIO_KEPT",
    "BACKGROUND",
    "DIM_KEEP",
    "DIM_TARGET",
    "DROPPED",
    "EDGE",
    "FRAME_LINE",
    "INK",
    "KEPT",
    "LANE_BACKGROUND",
    "MUTED",
    "NOTE_FILL",
    "NOTE_INK",
    "SEPARATOR",
    "STATE_COLOURS",
    "SWATCH",
    "UNGUIDED",
    "VIDEO_DROP",
    "VIDEO_KEPT",
    "dim_colour",
]

FRAME_LINE: RGB = (200, 204, 208)
LANE_BACKGROUND: RGB = (245, 246, 248)
SEPARATOR: RGB = (214, 218, 223)
#: Okabe-Ito colours, as in the timings chart.
AUDIO_KEPT: RGB = BLUE
AUDIO_ANCHOR: RGB = ORANGE
AUDIO_DROPPED: RGB = (196, 200, 206)
VIDEO_KEPT: RGB = BLUISH_GREEN
VIDEO_DROP: RGB = VERMILLION
UNGUIDED: RGB = (150, 150, 150)
SWATCH: RGB = (120, 170, 215)  # stands for frame content in the legend
NOTE_FILL: RGB = (253, 236, 234)
NOTE_INK: RGB = (176, 40, 30)
#: A dropped patch is ``DIM_KEEP * pixel + (1 - DIM_KEEP) * DIM_TARGET``: dark, the content faintly visible.
DIM_KEEP = 0.3
DIM_TARGET: RGB = (18, 20, 24)
#: The one-pixel line drawn on the dropped side of every edge between a dropped and a kept token.
EDGE: RGB = (236, 238, 240)

#: Audio token states, in the order of the colour table below.
KEPT, ANCHOR, DROPPED = 0, 1, 2
STATE_COLOURS = (AUDIO_KEPT, AUDIO_ANCHOR, AUDIO_DROPPED)


def dim_colour(colour: RGB) -> RGB:
    """``colour`` as a dropped patch shows it (see :data:`DIM_KEEP`)."""
    red, green, blue = (int(round(DIM_KEEP * c + (1 - DIM_KEEP) * t)) for c, t in zip(colour, DIM_TARGET))
    return red, green, blue
