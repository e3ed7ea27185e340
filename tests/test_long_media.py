"""Long videos: the default pixel budget over all frames (as qwen-omni-utils), and long-audio options."""

from __future__ import annotations

import pytest

from omnizip_cli.errors import UsageError
from omnizip_cli.media import NO_TOTAL_PIXELS, VIDEO_TOTAL_PIXELS, MediaOptions
from omnizip_cli.media import sizing


def _layout(seconds: float, height: int, width: int, options: MediaOptions) -> tuple[int, int, int, int]:
    """(frames, frame height, frame width, video tokens) for a clip with 30-fps source frames."""
    frames = sizing.count_frames(seconds, options.fps, int(seconds * 30), options.max_frames)
    budget = sizing.frame_pixel_budget(frames, options.min_pixels, options.max_pixels, options.effective_total_pixels)
    h, w = sizing.output_size(height, width, 0, options.min_pixels, budget)
    return frames, h, w, sizing.video_tokens(frames, h, w)


def test_default_total_pixels_is_qwen_omni_utils_budget() -> None:
    assert VIDEO_TOTAL_PIXELS == 90_316_800
    assert MediaOptions().total_pixels is None
    assert MediaOptions().effective_total_pixels == VIDEO_TOTAL_PIXELS
    assert MediaOptions(total_pixels=NO_TOTAL_PIXELS).effective_total_pixels is None
    assert MediaOptions(total_pixels=5_000_000).effective_total_pixels == 5_000_000


def test_a_300_s_720p_clip_gets_the_stock_frame_size_and_token_count() -> None:
    assert _layout(300, 720, 1280, MediaOptions()) == (600, 392, 728, 109_200)
    # Without the budget (omnizip before): twice the tokens.
    assert _layout(300, 720, 1280, MediaOptions(total_pixels=NO_TOTAL_PIXELS)) == (600, 560, 1008, 216_000)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (60, (120, 560, 1008, 43_200)),  # under the budget: untouched
        (150, (300, 560, 1008, 108_000)),  # 300 frames: the budget is exactly max_pixels
        (400, (768, 336, 644, 105_984)),  # max_frames 768: 235,200 pixels per frame
        (1800, (768, 336, 644, 105_984)),
    ],
)
def test_long_720p_layouts(seconds: float, expected: tuple[int, int, int, int]) -> None:
    assert _layout(seconds, 720, 1280, MediaOptions()) == expected


def test_budget_is_the_stock_formula_unrounded() -> None:
    # fetch_video: max(min(VIDEO_MAX_PIXELS, total / n * 2), int(min_pixels * 1.05)), then min with max_pixels.
    options = MediaOptions()
    budget = sizing.frame_pixel_budget(700, options.min_pixels, options.max_pixels, VIDEO_TOTAL_PIXELS)
    assert budget == VIDEO_TOTAL_PIXELS / 700 * 2
    assert sizing.frame_pixel_budget(768, 100_352, 602_112, 10_000) == int(100_352 * 1.05)


@pytest.mark.parametrize("value", [1, 783, -1, 2.5])
def test_total_pixels_rejects_bad_values(value: object) -> None:
    with pytest.raises(UsageError, match="--total-pixels must be 0"):
        MediaOptions(total_pixels=value)
