"""Synthetic decoded media (random frames and audio), shaped like what omnizip_cli.media returns."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def synthetic_media(
    video_seconds: float | None = 6.0,
    audio_seconds: float | None = 6.0,
    *,
    fps: float = 2.0,
    height: int = 168,
    width: int = 252,
    seed: int = 0,
) -> SimpleNamespace:
    """Frames [T, H, W, 3] uint8 (T even) and/or 16 kHz mono float32 audio with a few tones."""
    rng = np.random.default_rng(seed)
    frames = None
    if video_seconds is not None:
        count = max(2, int(round(video_seconds * fps / 2)) * 2)
        frames = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    audio = None
    if audio_seconds is not None:
        t = np.arange(int(audio_seconds * 16000)) / 16000.0
        audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    return SimpleNamespace(frames=frames, audio=audio, summary=SimpleNamespace(fps_used=fps))
