"""Hardware decoding (issue 28): opt-in, and every way it cannot run ends on the CPU with a note.

NVDEC itself needs a GPU (the GPU suite); here the fallbacks are tested on real files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from omnizip_cli.errors import UsageError
from omnizip_cli.media import MediaOptions, hwdecode, load_media
from tests.helpers.media_factory import VideoSpec, has_encoder, write_media


def test_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hwdecode.ENV_VAR, raising=False)
    assert hwdecode.hardware_accel() == (None, None)
    assert hwdecode.hardware_accel("off") == (None, None)


def test_a_bad_value_is_a_one_line_error() -> None:
    with pytest.raises(UsageError) as info:
        hwdecode.hardware_accel("vulkan-please")
    assert "\n" not in str(info.value) and hwdecode.ENV_VAR in str(info.value)


def test_no_driver_means_the_cpu_with_a_note() -> None:
    accel, note = hwdecode.hardware_accel("cuda", driver=False)
    assert accel is None and "decoding on the CPU" in note


def test_without_hwaccel_support_in_pyav_the_cpu_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    import av.codec.hwaccel

    monkeypatch.setattr(av.codec.hwaccel, "hwdevices_available", lambda: ["vaapi"])
    accel, note = hwdecode.hardware_accel("cuda", driver=True)
    assert accel is None and "no CUDA decoder" in note


def test_a_failing_hardware_decoder_falls_back_to_the_cpu_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Asked for (and said to be there) on a machine with no GPU: opening fails, the CPU decodes the
    same frames, and one warning says so."""
    if not has_encoder("libx264"):
        pytest.skip("no H.264 encoder in this FFmpeg build")
    from av.codec.hwaccel import HWAccel, hwdevices_available

    if "cuda" not in hwdevices_available():
        pytest.skip("this PyAV has no CUDA device type")
    clip = write_media(tmp_path / "clip.mp4", video=VideoSpec(width=160, height=96, fps=10, seconds=2.0))
    cpu = load_media(clip, MediaOptions())
    monkeypatch.setattr(hwdecode, "hardware_accel",
                        lambda setting=None, driver=None: (HWAccel(device_type="cuda"), None))
    monkeypatch.setattr(hwdecode, "_NOTED", set())
    with caplog.at_level(logging.WARNING, logger="omnizip_cli.media.hwdecode"):
        ours = load_media(clip, MediaOptions())
    assert np.array_equal(ours.frames, cpu.frames) and np.array_equal(ours.frame_times, cpu.frame_times)
    if not hwdecode.cuda_driver_present():
        assert [r.message for r in caplog.records if "decoding on the CPU" in r.message]


def test_the_note_is_logged_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(hwdecode, "_NOTED", set())
    with caplog.at_level(logging.WARNING, logger="omnizip_cli.media.hwdecode"):
        hwdecode.note_once("no NVIDIA driver")
        hwdecode.note_once("no NVIDIA driver")
    assert len(caplog.records) == 1
