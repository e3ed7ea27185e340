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
names no model family. The package is split by job:

* :mod:`.data`: :class:`KeepMapData` and :class:`GroupRow` (what was kept), the time spans of
  audio tokens and grid steps;
* :mod:`.build`: :func:`keep_map_data_from_plan` builds the data from a keep plan (``input_ids``,
  the keep mask, the anchors, the grid, the media), :func:`keep_map_for_session` from a session;
* :mod:`.layout`: :func:`compute_keep_map_layout` says where everything lands (tests use it to
  look at the right pixels);
* :mod:`.render` (header, contact sheet, footnotes) and :mod:`.timeline` (the lanes):
  :func:`render_keep_map` draws with Pillow and :func:`save_keep_map` writes the PNG;
* :mod:`.style`: the colours and the audio token states.

NumPy and Pillow are imported inside the functions, so importing this package stays instant and
pulls in neither (nor torch: tensors are accepted by duck typing).
"""

from __future__ import annotations

from .build import keep_map_data_from_plan, keep_map_for_session
from .data import GroupRow, KeepMapData, audio_token_spans, grid_step_spans
from .layout import Box, KeepMapLayout, compute_keep_map_layout
from .render import RANDOM_MODEL_NOTE, render_keep_map, save_keep_map
from .style import (
    ANCHOR,
    AUDIO_ANCHOR,
    AUDIO_DROPPED,
    AUDIO_KEPT,
    BACKGROUND,
    DIM_KEEP,
    DIM_TARGET,
    DROPPED,
    EDGE,
    FRAME_LINE,
    INK,
    KEPT,
    LANE_BACKGROUND,
    MUTED,
    NOTE_FILL,
    NOTE_INK,
    SEPARATOR,
    STATE_COLOURS,
    SWATCH,
    UNGUIDED,
    VIDEO_DROP,
    VIDEO_KEPT,
)

__all__ = [
    "GroupRow",
    "KeepMapData",
    "KeepMapLayout",
    "audio_token_spans",
    "compute_keep_map_layout",
    "grid_step_spans",
    "keep_map_data_from_plan",
    "keep_map_for_session",
    "render_keep_map",
    "save_keep_map",
]
