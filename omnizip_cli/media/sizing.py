"""Frame counts, sampling times and frame sizes, following Qwen2.5-Omni's qwen-omni-utils.

Frame sides are multiples of a size ``factor``: the pixels one LLM video token covers, the model's
``VisionGeometry.token_pixels`` (28 for Qwen2.5-Omni, the default :data:`IMAGE_FACTOR`; 32 for
Qwen3-Omni). Pure functions, no I/O.
"""

from __future__ import annotations

import math

import numpy as np

from omnizip_cli.media.datatypes import (
    FPS_MIN_FRAMES,
    FRAME_FACTOR,
    IMAGE_FACTOR,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
)

#: smart_resize refuses pictures more elongated than this (as qwen-omni-utils does).
MAX_RATIO = 200
#: Rounding slack so that e.g. 5.999999 s * 2 fps still counts as 12 frames.
_EPS = 1e-6


def round_by_factor(number: float, factor: int) -> int:
    """The multiple of ``factor`` closest to ``number``."""
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    """The smallest multiple of ``factor`` that is >= ``number``."""
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    """The largest multiple of ``factor`` that is <= ``number``."""
    return math.floor(number / factor) * factor


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: float = VIDEO_MAX_PIXELS,
) -> tuple[int, int]:
    """Return ``(height, width)`` rescaled so both are multiples of ``factor``, the pixel count lies
    in ``[min_pixels, max_pixels]`` and the aspect ratio is kept as closely as possible.

    Same algorithm as qwen-omni-utils, plus a guard that no side drops below ``factor``.

    Raises
    ------
    ValueError
        For a non-positive size or an aspect ratio above 200:1.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {max(height, width) / min(height, width):.1f}"
        )
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, floor_by_factor(height / beta, factor))
        w_bar = max(factor, floor_by_factor(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


def count_frames(duration_s: float, fps: float, available: int, max_frames: int) -> int:
    """How many frames to sample (qwen-omni-utils ``smart_nframes`` with ``fps``).

    ``duration_s * fps`` clamped to ``[4, max_frames]`` and to the ``available`` frames, rounded
    down to an even number. Never below 2: a one-frame video yields its frame twice.
    """
    min_frames = ceil_by_factor(FPS_MIN_FRAMES, FRAME_FACTOR)
    upper = floor_by_factor(max_frames, FRAME_FACTOR)
    wanted = min(max(duration_s * fps, min_frames), upper, available)
    return max(FRAME_FACTOR, floor_by_factor(wanted + _EPS, FRAME_FACTOR))


def target_times(first_s: float, last_s: float, n: int) -> np.ndarray:
    """``n`` evenly spaced times from the first to the last frame, inclusive (``[n]`` float64).

    The time-based form of qwen-omni-utils' ``linspace(0, total_frames - 1, n)`` frame indices, so
    variable frame rate is sampled by presentation time rather than by frame index.
    """
    return np.linspace(first_s, last_s, n, dtype=np.float64)


def nearest_indices(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target, the index of the closest of the sorted ``times`` (the earlier one on ties)."""
    right = np.clip(np.searchsorted(times, targets, side="left"), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    take_left = np.abs(targets - times[left]) <= np.abs(times[right] - targets)
    return np.where(take_left, left, right)


def frame_pixel_budget(n_frames: int, min_pixels: int, max_pixels: int, total_pixels: int | None) -> float:
    """Per-frame pixel maximum, with the optional total budget as qwen-omni-utils' ``fetch_video``
    applies it: ``min(max_pixels, max(min(max_pixels, total / n * 2), int(1.05 * min_pixels)))``.

    ``total_pixels`` None: no budget (``max_pixels``). The value is not rounded (a float, as the
    stock path hands it to ``smart_resize``), so the frame size matches the stock one exactly.
    """
    if total_pixels is None:
        return max_pixels
    budget = max(min(max_pixels, total_pixels / n_frames * FRAME_FACTOR), int(min_pixels * 1.05))
    return min(max_pixels, budget)


def video_tokens(
    n_frames: int, height: int, width: int, *, patch: int = 14, merge: int = 2, temporal_patch: int = 2
) -> int:
    """LLM video tokens of ``n_frames`` frames of ``height x width`` (multiples of ``patch * merge``):
    ``(n / temporal_patch) * (height / patch / merge) * (width / patch / merge)``."""
    return (n_frames // temporal_patch) * (height // (patch * merge)) * (width // (patch * merge))


def output_size(
    stored_height: int,
    stored_width: int,
    quarter_turns: int,
    min_pixels: int,
    max_pixels: float,
    factor: int = IMAGE_FACTOR,
) -> tuple[int, int]:
    """Final ``(height, width)`` of a frame shown after ``quarter_turns`` 90-degree rotations, both
    multiples of ``factor``."""
    if quarter_turns % 2:
        stored_height, stored_width = stored_width, stored_height
    return smart_resize(stored_height, stored_width, factor, min_pixels, max_pixels)
