"""Write small, real media files with PyAV for the media tests (no ffmpeg binary needed).

Every file is deterministic: frames are a fixed drawing (a white marker stripe down the left
quarter of the stored picture, plus a square that moves with the frame index) and audio is a sine
tone. The marker makes orientation checks possible after rotation handling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Codec names that the tests need to *encode*; a missing one skips the tests that use it.
_ENCODER_CACHE: dict[str, bool] = {}


def has_encoder(name: str) -> bool:
    """True when PyAV's FFmpeg build can encode with the codec ``name``."""
    if name not in _ENCODER_CACHE:
        try:
            av.Codec(name, "w")
            _ENCODER_CACHE[name] = True
        except Exception:  # noqa: BLE001 - any failure means "not available"
            _ENCODER_CACHE[name] = False
    return _ENCODER_CACHE[name]


@dataclass(frozen=True)
class AudioTrack:
    """One audio track to write: a sine tone of ``seconds`` at ``sample_rate`` Hz."""

    codec: str = "aac"
    sample_rate: int = 16000
    channels: int = 1
    seconds: float = 2.0
    freq: float = 440.0
    amplitude: float = 0.5
    default: bool | None = None  # None: leave the muxer's choice; True/False: set the disposition
    start_s: float = 0.0  # presentation time of the first sample (a track that starts late)

    @property
    def layout(self) -> str:
        return {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels}c")

    def samples(self) -> np.ndarray:
        """The tone as float32 planar samples, shape ``[channels, n]``; channel c is scaled by 1/(c+1)."""
        n = int(round(self.seconds * self.sample_rate))
        t = np.arange(n, dtype=np.float64) / self.sample_rate
        tone = self.amplitude * np.sin(2 * np.pi * self.freq * t)
        return np.stack([tone / (c + 1) for c in range(self.channels)]).astype(np.float32)


@dataclass(frozen=True)
class VideoSpec:
    """A video track to write.

    ``pts_s`` (optional) gives each frame's presentation time in seconds, for variable frame rate;
    otherwise frames are ``fps`` per second for ``seconds``.
    """

    width: int = 160
    height: int = 96
    fps: float = 10.0
    seconds: float = 3.0
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    rotation: int | None = None  # display rotation, counter-clockwise degrees (PyAV convention)
    pts_s: Sequence[float] | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.pts_s) if self.pts_s is not None else int(round(self.seconds * self.fps))


def draw_frame(index: int, width: int, height: int) -> np.ndarray:
    """A deterministic RGB picture: white left-quarter stripe and a moving red square."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[:, :] = (20, 40, 90)
    img[:, : max(1, width // 4)] = 255
    side = max(4, min(width, height) // 4)
    x = (width // 4) + (index * 3) % max(1, width - width // 4 - side)
    y = (index * 2) % max(1, height - side)
    img[y : y + side, x : x + side] = (220, 30, 30)
    return img


def _encoder_options(codec: str) -> dict[str, str]:
    """Fast settings so the tests stay quick."""
    if codec == "libx264":
        return {"preset": "veryfast"}  # has B-frames, so the decoder's non-reference skipping is exercised
    if codec == "libvpx-vp9":
        return {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    return {}


def _add_video_stream(container: av.container.OutputContainer, spec: VideoSpec) -> av.video.stream.VideoStream:
    if spec.pts_s is not None:
        stream = container.add_stream(spec.codec, rate=int(round(spec.fps)))
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
    else:
        stream = container.add_stream(spec.codec, rate=Fraction(spec.fps).limit_denominator(1001))
    stream.width = spec.width
    stream.height = spec.height
    stream.pix_fmt = spec.pix_fmt
    stream.options = {**_encoder_options(spec.codec), **spec.options}
    if spec.rotation:
        stream.set_display_rotation(spec.rotation)
    return stream


def _add_audio_stream(container: av.container.OutputContainer, track: AudioTrack) -> av.audio.stream.AudioStream:
    stream = container.add_stream(track.codec, rate=track.sample_rate)
    stream.layout = track.layout
    if track.codec == "vorbis":
        stream.codec_context.options = {"strict": "experimental"}
    if track.default is not None:
        stream.disposition = av.stream.Disposition.default if track.default else 0
    return stream


def _encode_audio(container: av.container.OutputContainer, stream, track: AudioTrack) -> None:
    data = track.samples()
    chunk = 4096
    first = int(round(track.start_s * track.sample_rate))
    # PyAV's from_ndarray cannot fill a planar frame of 8 or more channels (it has 8 data pointers):
    # such tracks are written from packed (interleaved) samples, which the encoder converts exactly.
    packed = track.channels >= 8
    for start in range(0, data.shape[1], chunk):
        block = data[:, start : start + chunk]
        if packed:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(block.T.reshape(1, -1)), format="flt", layout=track.layout
            )
        else:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=track.layout)
        frame.sample_rate = track.sample_rate
        frame.pts = first + start
        frame.time_base = Fraction(1, track.sample_rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _encode_video(container: av.container.OutputContainer, stream, spec: VideoSpec) -> None:
    for i in range(spec.n_frames):
        frame = av.VideoFrame.from_ndarray(draw_frame(i, spec.width, spec.height), format="rgb24")
        if spec.pts_s is not None:
            frame.pts = int(round(spec.pts_s[i] * 1000))
            frame.time_base = Fraction(1, 1000)
        else:
            frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_media(
    path: str | os.PathLike,
    video: VideoSpec | None = None,
    audio: Sequence[AudioTrack] = (),
    format: str | None = None,
) -> Path:
    """Write ``path`` with an optional video track and any number of audio tracks.

    Audio is encoded after video (the muxer interleaves packets by timestamp).
    """
    path = Path(path)
    with av.open(str(path), "w", format=format) as container:
        vstream = _add_video_stream(container, video) if video is not None else None
        astreams = [_add_audio_stream(container, t) for t in audio]
        container.start_encoding()  # writes the header even when no packet follows (empty streams)
        if vstream is not None:
            _encode_video(container, vstream, video)
        for stream, track in zip(astreams, audio, strict=True):
            _encode_audio(container, stream, track)
    return path


def truncate(src: Path, dst: Path, fraction: float) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst``."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def patch_fourcc(src: Path, dst: Path, old: bytes, new: bytes, after: bytes = b"stsd") -> Path:
    """Copy ``src`` to ``dst`` replacing the first ``old`` that follows ``after`` with ``new``.

    Used to make an MP4 whose sample entry names a codec FFmpeg does not know.
    """
    data = bytearray(src.read_bytes())
    start = data.index(after)
    pos = data.index(old, start)
    data[pos : pos + len(new)] = new
    dst.write_bytes(bytes(data))
    return dst


def corrupt_middle(src: Path, dst: Path, start: float = 0.4, end: float = 0.6, seed: int = 0) -> Path:
    """Copy ``src`` to ``dst`` with the bytes between the two fractions overwritten by noise."""
    data = bytearray(src.read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst
