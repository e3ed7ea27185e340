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


# -- audio that starts late, and max_audio_seconds ----------------------------------------------------


def _late_audio_file(tmp_path, start_s: float, container: str = "mp4"):
    from tests.helpers.media_factory import AudioTrack, VideoSpec, write_media

    return write_media(
        tmp_path / f"late_{start_s:g}.{container}",
        video=VideoSpec(seconds=10.0, fps=10.0),
        audio=[AudioTrack(seconds=5.0, start_s=start_s, amplitude=0.5)],
    )


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_audio_that_starts_late_is_aligned_with_silence(tmp_path, container: str) -> None:
    import numpy as np

    from omnizip_cli.media import load_media

    media = load_media(_late_audio_file(tmp_path, 5.0, container))
    summary = media.summary
    assert summary.kind == "video+audio"
    assert summary.audio_offset_s == pytest.approx(5.0, abs=0.07)  # AAC priming: 1024 samples
    assert len(media.audio) / 16000 == pytest.approx(10.0, abs=0.1)
    lead = int(4.9 * 16000)
    assert np.abs(media.audio[:lead]).max() < 1e-3  # silence before the track starts
    assert np.abs(media.audio[int(5.2 * 16000) : int(9.8 * 16000)]).max() > 0.3  # then the tone
    assert any(f"starts {summary.audio_offset_s:.2f} s after the video" in w for w in summary.warnings)


def test_audio_that_starts_with_the_video_is_untouched(tmp_path) -> None:
    from omnizip_cli.media import load_media

    media = load_media(_late_audio_file(tmp_path, 0.0))
    assert media.summary.audio_offset_s == 0.0
    assert len(media.audio) / 16000 == pytest.approx(5.0, abs=0.1)
    assert not any("starts" in w for w in media.summary.warnings)


def test_max_audio_seconds_cuts_the_aligned_audio(tmp_path) -> None:
    from omnizip_cli.media import load_media

    media = load_media(_late_audio_file(tmp_path, 5.0), MediaOptions(max_audio_seconds=7.0))
    assert len(media.audio) == 7 * 16000 and media.summary.audio_seconds == 7.0
    assert media.summary.audio_truncated is True
    assert any("--max-audio-seconds 7" in w and "leading silence" in w for w in media.summary.warnings)


def test_align_audio() -> None:
    import numpy as np

    from omnizip_cli.media.audio import align_audio

    audio = np.ones(16000, dtype=np.float32)
    same, offset = align_audio(audio, 0.03)
    assert same is audio and offset == 0.0
    late, offset = align_audio(audio, 0.5)
    assert offset == 0.5 and len(late) == 24000 and not late[:8000].any() and late[8000:].all()
    early, offset = align_audio(audio, -0.25)
    assert offset == -0.25 and len(early) == 12000
