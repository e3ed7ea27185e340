"""Audio: decode with PyAV, resample to 16 kHz, average the channels to mono (as librosa does).

Any channel count works (8, 16... channels: the resampler writes one packed plane, see :class:`Resampler`).

librosa is only a fallback for standalone audio files PyAV cannot read, and is imported lazily (its
first resample costs seconds of numba compilation, so even then it only reads the samples and PyAV
resamples them).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np

from omnizip_cli.errors import MediaError
from omnizip_cli.media.container import ffmpeg_reason, one_line
from omnizip_cli.media.datatypes import AUDIO_SAMPLE_RATE

logger = logging.getLogger(__name__)

#: Less decoded audio than this is "no usable audio" (it would give the model no audio tokens).
MIN_AUDIO_SECONDS = 0.1
#: Audio starting within this of the first video frame is taken as starting with it (one LLM audio
#: token is 40 ms; codec priming and muxer rounding give offsets of a few tens of ms).
ALIGN_TOLERANCE_S = 0.04


@dataclass
class AudioResult:
    """What :class:`AudioSink` produced: ``audio`` holds at most ``max_samples`` samples."""

    audio: np.ndarray  # [N] float32, 16 kHz mono
    total_samples: int  # decoded length before any max_audio_seconds cut
    errors: int
    first_error: str | None
    start_s: float | None = None  # time of the first decoded sample from the file's start (None: unknown)

    @property
    def seconds(self) -> float:
        return len(self.audio) / AUDIO_SAMPLE_RATE

    @property
    def total_seconds(self) -> float:
        return self.total_samples / AUDIO_SAMPLE_RATE

    @property
    def truncated(self) -> bool:
        return self.total_samples > len(self.audio)


class Resampler:
    """Packed float32 at 16 kHz, channels kept, then averaged to mono.

    The resampler's output is *packed* (``flt``: one plane, channels interleaved) rather than
    planar: PyAV's ``to_ndarray()`` reads past the end of an ``AVFrame``'s 8 built-in data pointers,
    so a planar frame of 8 or more channels crashed the process (a segfault, issue 29). One plane
    works for any channel count (FFmpeg's resampler takes up to 64). The average is the same as
    before: for 1 and 2 channels bit for bit (the same float32 sum, divided by the count).

    A new ``av.AudioResampler`` is set up when the input layout, format or rate changes mid-stream.
    """

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._key: tuple | None = None

    def _setup(self, frame: av.AudioFrame) -> list[np.ndarray]:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        drained: list[np.ndarray] = []
        if self._resampler is not None and key != self._key:
            drained = self.drain()
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout=frame.layout, rate=AUDIO_SAMPLE_RATE)
            self._key = key
        return drained

    @staticmethod
    def _mono(frames: list[av.AudioFrame]) -> list[np.ndarray]:
        out = []
        for frame in frames:
            channels = frame.layout.nb_channels
            packed = frame.to_ndarray()  # [1, samples * channels] float32, interleaved
            if channels <= 1:
                out.append(packed[0])
            else:
                out.append(packed.reshape(-1, channels).mean(axis=1, dtype=np.float32))
        return out

    def resample(self, frame: av.AudioFrame) -> list[np.ndarray]:
        """Mono 16 kHz chunks for one decoded frame."""
        chunks = self._setup(frame)
        return chunks + self._mono(self._resampler.resample(frame))

    def drain(self) -> list[np.ndarray]:
        """Flush the samples the resampler still holds."""
        if self._resampler is None:
            return []
        chunks = self._mono(self._resampler.resample(None))
        self._resampler, self._key = None, None
        return chunks


#: Decoded audio is resampled in blocks of about this many seconds (one resampler call per block
#: instead of one per codec frame, which saves about a third of the audio time).
_BLOCK_SECONDS = 4.0


class AudioSink:
    """Decodes the packets of one audio stream into 16 kHz mono float32, keeping at most
    ``max_samples`` samples but counting all of them.

    Decoded frames are gathered in an ``av.AudioFifo`` and resampled block by block.
    """

    def __init__(self, stream: av.audio.stream.AudioStream, max_samples: int | None, file_start_s: float = 0.0) -> None:
        self._stream = stream
        self._file_start = file_start_s
        self._start_s: float | None = None
        self._max = max_samples
        self._resampler = Resampler()
        self._fifo: av.AudioFifo | None = None
        self._fifo_key: tuple | None = None
        self._block = 0
        self._chunks: list[np.ndarray] = []
        self._stored = 0
        self._total = 0
        self._errors = 0
        self._first_error: str | None = None
        self._flushed = False

    def feed(self, packet: av.Packet) -> None:
        """Decode one packet (a zero-size packet flushes the decoder)."""
        if packet.size == 0:
            self._flushed = True
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            self._record_error(exc)
            return
        for frame in frames:
            self._add_frame(frame)

    def _add_frame(self, frame: av.AudioFrame) -> None:
        if self._start_s is None and frame.pts is not None:
            time_base = frame.time_base or self._stream.time_base
            if time_base:
                self._start_s = float(frame.pts * time_base) - self._file_start
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self._fifo_key:
            self._drain_fifo()
            self._fifo, self._fifo_key = av.AudioFifo(), key
            self._block = max(1, int(_BLOCK_SECONDS * (frame.sample_rate or AUDIO_SAMPLE_RATE)))
        frame.pts = None  # the FIFO would otherwise insist on gap-free timestamps
        try:
            self._fifo.write(frame)
        except (av.error.FFmpegError, ValueError) as exc:
            self._record_error(exc)
            return
        if self._fifo.samples >= self._block:
            self._resample(self._fifo.read())

    def _drain_fifo(self) -> None:
        if self._fifo is not None and self._fifo.samples:
            self._resample(self._fifo.read())

    def _resample(self, frame: av.AudioFrame | None) -> None:
        try:
            chunks = self._resampler.resample(frame)
        except (av.error.FFmpegError, ValueError) as exc:
            self._record_error(exc)
            return
        self._append(chunks)

    def _record_error(self, exc: BaseException) -> None:
        self._errors += 1
        if self._first_error is None:
            self._first_error = ffmpeg_reason(exc)
        logger.debug("audio decode error: %s", exc)

    def _append(self, chunks: list[np.ndarray]) -> None:
        for chunk in chunks:
            self._total += len(chunk)
            if self._max is not None and self._stored + len(chunk) > self._max:
                chunk = chunk[: max(0, self._max - self._stored)]
            if len(chunk):
                self._chunks.append(chunk)
                self._stored += len(chunk)

    def flush(self) -> None:
        """Drain the decoder (if the demuxer did not) and the resampler."""
        if not self._flushed:
            self._flushed = True
            try:
                for frame in self._stream.decode(None):
                    self._add_frame(frame)
            except (av.error.FFmpegError, EOFError) as exc:
                if not isinstance(exc, (av.error.EOFError, EOFError)):
                    self._record_error(exc)
        self._drain_fifo()
        self._append(self._resampler.drain())

    def result(self) -> AudioResult:
        """The decoded audio."""
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        return AudioResult(
            audio=audio.astype(np.float32, copy=False),
            total_samples=self._total,
            errors=self._errors,
            first_error=self._first_error,
            start_s=self._start_s,
        )


def align_audio(audio: np.ndarray, offset_s: float) -> tuple[np.ndarray, float]:
    """Put 16-kHz ``audio [N]`` on the video's time line: it starts ``offset_s`` after the first frame.

    The processor pairs audio sample 0 with frame 0, so audio that starts later gets that much
    silence before it, and audio that starts earlier loses what precedes the first frame. Offsets
    within :data:`ALIGN_TOLERANCE_S` change nothing. Returns ``(aligned [N'], applied offset in s)``.
    """
    shift = int(round(offset_s * AUDIO_SAMPLE_RATE))
    if abs(offset_s) < ALIGN_TOLERANCE_S or shift == 0:
        return audio, 0.0
    if shift > 0:
        return np.concatenate([np.zeros(shift, dtype=np.float32), audio]), shift / AUDIO_SAMPLE_RATE
    return audio[-shift:], shift / AUDIO_SAMPLE_RATE


def resample_array(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample mono float32 ``samples`` at ``sample_rate`` to 16 kHz with PyAV's resampler."""
    resampler = Resampler()
    chunks: list[np.ndarray] = []
    block = 1 << 16
    for start in range(0, len(samples), block):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[None, start : start + block], dtype=np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = sample_rate
        frame.pts = None
        chunks += resampler.resample(frame)
    chunks += resampler.drain()
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def load_audio_with_librosa(path: Path) -> tuple[np.ndarray, int, int]:
    """Fallback reader for audio files PyAV cannot open: returns (16 kHz mono, rate in, channels in).

    librosa (through soundfile) only reads the samples at their own rate; PyAV resamples them, which
    avoids librosa's slow first resample.

    Raises
    ------
    MediaError
        librosa is missing or cannot read the file either.
    """
    try:
        import librosa  # noqa: PLC0415 - deliberately lazy: slow import, rarely needed
    except ImportError as exc:
        raise MediaError(f"cannot read {path} with PyAV, and librosa is not installed ({one_line(exc)})") from None
    try:
        with warnings.catch_warnings():  # librosa warns when it falls back to audioread
            warnings.simplefilter("ignore")
            samples, rate = librosa.load(str(path), sr=None, mono=False)
    except Exception as exc:  # noqa: BLE001 - librosa raises many types; all mean "unreadable"
        raise MediaError(f"cannot read {path}: neither PyAV nor librosa can decode it ({one_line(exc)})") from None
    samples = np.asarray(samples, dtype=np.float32)
    channels = 1 if samples.ndim == 1 else samples.shape[0]
    mono = samples if samples.ndim == 1 else samples.mean(axis=0, dtype=np.float32)
    return resample_array(mono, int(rate)), int(rate), channels
