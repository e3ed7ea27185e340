"""Media input for omnizip: decode a video or audio file into what Qwen2.5-Omni consumes.

Public API::

    from omnizip_cli.media import MediaOptions, load_media, probe, smart_resize

    media = load_media("clip.mp4", MediaOptions(fps=2.0))
    media.frames        # [T, H, W, 3] uint8 RGB (T even, H and W multiples of 28) or None
    # frames sized for a model whose video token covers 32 x 32 px (Qwen3-Omni) instead of 28:
    media = load_media("clip.mp4", token_pixels=32)
    media.frame_times   # [T] seconds
    media.audio         # [N] float32, 16 kHz mono, or None
    media.summary       # MediaSummary (to_dict() for --json)

Everything is decoded with PyAV (no ffmpeg binary, no librosa on the common path). Bad input raises
:class:`omnizip_cli.errors.MediaError` with a one-line message; bad option values raise
:class:`omnizip_cli.errors.UsageError`.
"""

from omnizip_cli.media.container import probe
from omnizip_cli.media.datatypes import (
    AUDIO_SAMPLE_RATE,
    FPS,
    FPS_MAX_FRAMES,
    FPS_MIN_FRAMES,
    FRAME_FACTOR,
    IMAGE_FACTOR,
    NO_TOTAL_PIXELS,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    VIDEO_TOTAL_PIXELS,
    DecodedMedia,
    MediaOptions,
    MediaProbe,
    MediaSummary,
    StreamInfo,
)
from omnizip_cli.media.loader import MediaPlan, decode_media, load_media, plan_media
from omnizip_cli.media.sizing import smart_resize

__all__ = [
    "AUDIO_SAMPLE_RATE",
    "FPS",
    "FPS_MAX_FRAMES",
    "FPS_MIN_FRAMES",
    "FRAME_FACTOR",
    "IMAGE_FACTOR",
    "NO_TOTAL_PIXELS",
    "VIDEO_MAX_PIXELS",
    "VIDEO_MIN_PIXELS",
    "VIDEO_TOTAL_PIXELS",
    "DecodedMedia",
    "MediaOptions",
    "MediaProbe",
    "MediaSummary",
    "StreamInfo",
    "MediaPlan",
    "decode_media",
    "load_media",
    "plan_media",
    "probe",
    "smart_resize",
]
