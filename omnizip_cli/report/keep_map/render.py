"""Drawing the keep map with Pillow: the header, the contact sheet of frames and the footnotes.

:func:`render_keep_map` draws a :class:`~.data.KeepMapData` where :func:`~.layout.compute_keep_map_layout`
says (the timeline is :mod:`.timeline`'s) and :func:`save_keep_map` writes the PNG. NumPy and
Pillow are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnizip_cli.errors import UsageError

from ..drawing import Fonts, fit_text, load_fonts
from .layout import FOOTNOTE_LINE, MARGIN, KeepMapLayout, compute_keep_map_layout
from .style import (
    AUDIO_ANCHOR,
    AUDIO_DROPPED,
    AUDIO_KEPT,
    BACKGROUND,
    DIM_KEEP,
    DIM_TARGET,
    EDGE,
    FRAME_LINE,
    INK,
    MUTED,
    NOTE_FILL,
    NOTE_INK,
    SWATCH,
    UNGUIDED,
    VIDEO_DROP,
    dim_colour,
)
from .timeline import draw_timeline

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image, ImageDraw

    from .data import KeepMapData

__all__ = ["RANDOM_MODEL_NOTE", "render_keep_map", "save_keep_map"]


RANDOM_MODEL_NOTE = (
    "Tiny random model: its weights are random, so what was kept here shows how OmniZip works, "
    "not what a trained model finds salient."
)


def render_keep_map(
    data: KeepMapData,
    *,
    max_width: int = 1400,
    max_height: int = 3000,
    max_frames_shown: int = 48,
    layout: KeepMapLayout | None = None,
) -> Image.Image:
    """Draw the keep map of ``data`` (see :mod:`omnizip_cli.report.keep_map`) and return an RGB image.

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
    fonts = load_fonts(title_size=24)
    _draw_header(draw, data, layout, fonts)
    if data.grid is not None:
        _draw_sheet(image, draw, data, layout, fonts)
    draw_timeline(image, draw, data, layout, fonts)
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


def _draw_header(draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, fonts: Fonts) -> None:
    """The title, the setting and token lines, the random-model note (when it applies) and the legend."""
    title, setting, tokens = _header_lines(data)
    room = layout.width - 2 * MARGIN
    draw.text((MARGIN, 16), fit_text(draw, title, fonts.title, room), fill=INK, font=fonts.title)
    draw.text((MARGIN, 50), fit_text(draw, setting, fonts.text, room), fill=MUTED, font=fonts.text)
    draw.text((MARGIN, 72), fit_text(draw, tokens, fonts.text, room), fill=INK, font=fonts.text)
    y = 96
    if layout.note_box is not None:
        x0, y0, x1, y1 = layout.note_box
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=NOTE_FILL, outline=NOTE_INK)
        draw.text((x0 + 8, y0 + 5), fit_text(draw, RANDOM_MODEL_NOTE, fonts.small, x1 - x0 - 16), fill=NOTE_INK,
                  font=fonts.small)
        y = y1 + 8
    _draw_legend(draw, data, layout, y, fonts)


def _draw_legend(draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, y: int, fonts: Fonts) -> None:
    """One row of swatches for what the picture holds, cut at the right margin."""
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
        size = 22 + draw.textlength(label, font=fonts.small) + 22
        if x + size > layout.width - MARGIN:
            break
        if kind == "clear":  # a kept patch on dimmed ground, outlined as in the tiles
            draw.rectangle([x - 3, y, x + 18, y + 21], fill=dim_colour(SWATCH))
            draw.rectangle([x - 1, y + 2, x + 16, y + 19], outline=EDGE)
            draw.rectangle([x, y + 3, x + 15, y + 18], fill=SWATCH)
        elif kind == "dim":
            draw.rectangle([x, y + 3, x + 15, y + 18], fill=dim_colour(SWATCH))
        else:
            draw.rectangle([x, y + 3, x + 15, y + 18], fill=colour, outline=INK)
        draw.text((x + 21, y + 4), label, fill=INK, font=fonts.small)
        x += size


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


def _percent(part: float, whole: float) -> str:
    """``part`` of ``whole`` as ``"58.3 %"`` (``"n/a"`` for nothing)."""
    return f"{100.0 * part / whole:.1f} %" if whole else "n/a"


def _draw_sheet(
    image: Image.Image, draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, fonts: Fonts
) -> None:
    """The contact sheet: its heading, then one dimmed tile per shown grid step with its caption."""
    import numpy as np
    from PIL import Image

    assert data.grid is not None
    _draw_sheet_heading(draw, data, layout, fonts)
    keep = data.step_keep()
    spans = data.step_spans()
    frame_count = 0 if data.frames is None else int(data.frames.shape[0])
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
        _draw_tile_caption(draw, (x, y + tile_h + 3), tile_w, step, float(spans[step, 0]), int(keep[step].sum()),
                           data.tokens_per_step, fonts.small)


def _draw_sheet_heading(draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, fonts: Fonts) -> None:
    """What a tile is, and which grid steps are shown (all, or every k-th from the first)."""
    assert data.grid is not None
    grid_t, grid_h, grid_w = data.grid
    frame_count = 0 if data.frames is None else int(data.frames.shape[0])
    heading = (
        f"Video: {grid_t} grid steps of {grid_h} x {grid_w} tokens (each {data.token_pixels} x "
        f"{data.token_pixels} px, {data.temporal_patch} frames); a tile is the first frame of its step"
    )
    draw.text((MARGIN, layout.sheet_top + 2), fit_text(draw, heading, fonts.text, layout.width - 2 * MARGIN),
              fill=INK, font=fonts.text)
    frames_note = f"{frame_count} frames" if frame_count else "no frames given"
    if layout.step_stride == 1:
        rule = f"All {grid_t} grid steps shown ({frames_note})."
    else:
        rule = (
            f"Every {_ordinal(layout.step_stride)} grid step shown, from the first: {len(layout.shown_steps)} of "
            f"{grid_t} grid steps ({frames_note})."
        )
    draw.text((MARGIN, layout.sheet_top + 22), rule, fill=MUTED, font=fonts.small)


def _draw_tile_caption(
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    tile_w: int,
    step: int,
    start_s: float,
    kept: int,
    tokens: int,
    font: Any,
) -> None:
    """Under a tile: the step and its time on the left, the kept count on the right, shortened to fit."""
    x, y = at
    left = f"step {step} · {start_s:.2f} s"
    right = f"{kept}/{tokens} kept"
    right_width = draw.textlength(right, font=font)
    if draw.textlength(left, font=font) + right_width + 10 > tile_w:
        left = f"#{step}  {start_s:.2f} s"
    if draw.textlength(left, font=font) + right_width + 10 > tile_w:
        right = f"{kept}/{tokens}"
        right_width = draw.textlength(right, font=font)
    draw.text((x, y), fit_text(draw, left, font, max(tile_w - right_width - 6, 10)), fill=MUTED, font=font)
    draw.text((x + tile_w - right_width, y), right, fill=INK, font=font)


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


def _ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ..., ``11th``, ``21st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _draw_footnotes(draw: ImageDraw.ImageDraw, data: KeepMapData, layout: KeepMapLayout, fonts: Fonts) -> None:
    """Up to three lines under the timeline: the video geometry, the audio token length, the group lanes."""
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
        draw.text((MARGIN, y), fit_text(draw, line, fonts.small, layout.width - 2 * MARGIN), fill=MUTED,
                  font=fonts.small)
        y += FOOTNOTE_LINE
