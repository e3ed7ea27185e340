"""Video: plan the sampling times from packet timestamps, then decode and convert only what is needed.

Two passes over the file:

1. :func:`scan_video` demuxes the video packets without decoding them and reads their presentation
   timestamps (cheap: no decoding). That gives the exact frame count and times, even for variable
   frame rate, and :func:`plan_video` turns them into target times (qwen-omni-utils' even spacing
   from the first to the last frame) and the set of frames nearest to those targets.
2. :class:`VideoSink` receives the packets of the main decoding pass. Frames that are not wanted and
   that no other frame references are skipped inside the decoder (``skip_frame=NONREF``); every
   decoded frame goes through a nearest-to-target selector, and only the chosen frames are scaled
   and converted to RGB, directly at their final size, then rotated as the display matrix says.

Threads: the chosen frames are converted on a worker thread (:class:`FrameConverter`) while the
decoder goes on, and the loader decodes the audio track on another; PyAV releases the GIL in both.
The decoder itself uses frame threads only on machines with 4 or more cores
(:func:`decoder_threading`). Where there are 2 or more cores, an indexed container and enough
frames, :mod:`.segments` decodes keyframe-bounded pieces of the stream on several threads instead,
and this sequential pass is its fallback.

What it costs, on the 2-core machine this was built on, for a 60 s 1280x720 30 fps H.264 clip at
2 fps (``benchmarks/media_decode.py``): the decoder skips about 45 % of the frames (non-reference
B-frames), which removes about 30 % of the decoding work (1.5 of 2.2 CPU-seconds remain);
converting the 120 chosen frames costs about 0.3 s, decoding and resampling the audio 0.1 s, the
timestamp scan 0.03 s. In all, about the CPU time of a plain decode of every frame, and about
0.8x its wall time because the conversion and the audio run beside the decoder.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from omnizip_cli.errors import MediaError
from omnizip_cli.media import sizing
from omnizip_cli.media.container import (
    check_dimensions,
    container_start,
    demux_until_error,
    ffmpeg_reason,
    open_container,
    stream_rate,
)
from omnizip_cli.media.datatypes import IMAGE_FACTOR, MediaOptions

logger = logging.getLogger(__name__)

#: swscale scalers for the chosen frames: area averaging when shrinking, bicubic when enlarging.
#: Against Qwen's reference (torchvision bicubic with antialias on the RGB frame) both score the same
#: (about 36 dB PSNR on 1280x720 -> 1008x560, dominated by chroma handling), and area is ~30 % cheaper.
DOWNSCALE_INTERPOLATION = "AREA"
UPSCALE_INTERPOLATION = "BICUBIC"
#: Frame threading needs at least this many usable cores to pay off (see :func:`decoder_threading`).
FRAME_THREADS_MIN_CPUS = 4
#: Frame rate assumed when a stream has neither timestamps nor a rate in its header.
_FALLBACK_RATE = 25.0


@dataclass(frozen=True)
class VideoScan:
    """Presentation timestamps of the video packets, read without decoding."""

    pts: tuple[int, ...]  # raw timestamps, in packet order, of packets that have one
    n_packets: int  # all non-empty packets, with or without a timestamp
    time_base: Fraction
    start_s: float  # container start time, subtracted from all times
    rate: float | None  # nominal frame rate from the header
    error: str | None  # a demuxing error that ended the scan early
    keyframe_pts: tuple[int, ...] = ()  # timestamps of the keyframe packets (where decoding can start)


@dataclass(frozen=True)
class VideoPlan:
    """Which frames to sample.

    With timestamps (``index_times`` False) ``times`` holds every frame's time and ``wanted_pts`` the
    raw timestamps of the frames nearest to ``targets``. Without them, frame ``k`` is taken to be at
    ``k / rate`` and every frame is decoded.
    """

    stream_index: int
    n_frames: int
    targets: np.ndarray  # [n_frames] seconds
    times: np.ndarray  # [available] sorted seconds
    wanted_pts: frozenset[int] | None
    index_times: bool
    rate: float
    step_s: float  # typical frame interval
    duration_s: float
    time_base: Fraction
    start_s: float
    pixel_budget: float
    token_pixels: int = IMAGE_FACTOR  # frame sides are multiples of it (the model's token, in pixels)
    gap_s: float = 0.0  # the largest jump between consecutive frame times, when it is a gap (else 0)
    gap_at_s: float = 0.0  # the time of the frame before that gap
    slot_pts: tuple[int, ...] | None = None  # [n_frames] raw timestamp of the frame chosen for each target
    keyframe_pts: tuple[int, ...] = ()  # sorted timestamps of the keyframes (segment starts for parallel decoding)

    @property
    def available(self) -> int:
        return len(self.times)

    @property
    def fps_used(self) -> float:
        """Effective sampling rate, ``n / duration`` (qwen-omni-utils' ``sample_fps``)."""
        return self.n_frames / self.duration_s if self.duration_s > 0 else 0.0


def scan_video(path: Path, stream_index: int) -> VideoScan:
    """Demux (without decoding) the video stream ``stream_index`` and collect packet timestamps."""
    pts: list[int] = []
    keys: list[int] = []
    n_packets = 0
    errors: list[str] = []
    with open_container(path) as container:
        stream = container.streams[stream_index]
        for packet in demux_until_error(container, stream, errors):
            if packet.size == 0 or packet.is_discard:
                continue
            n_packets += 1
            if packet.pts is not None:
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        return VideoScan(
            pts=tuple(pts),
            n_packets=n_packets,
            time_base=stream.time_base or Fraction(1, 1),
            start_s=container_start(container),
            rate=stream_rate(stream),
            error=errors[0] if errors else None,
            keyframe_pts=tuple(keys),
        )


#: A "frame interval" longer than this is a gap in the timestamps, not a frame rate (issue 18).
_MAX_FRAME_INTERVAL_S = 10.0
#: An interval longer than this many typical intervals (and over _MAX_FRAME_INTERVAL_S) is a gap.
_GAP_FACTOR = 50.0


def _typical_step(times: np.ndarray, rate: float | None) -> float:
    """The typical frame interval: the median interval, or the nominal rate when that is not usable.

    A median interval over :data:`_MAX_FRAME_INTERVAL_S` (e.g. a 2-frame video whose frames are 10
    hours apart, where the header's "rate" is derived from that gap too) is not a frame interval: the
    step falls back to the nominal rate if it is plausible, else to 25 fps. The step is what the
    last frame adds to the duration, so a gap is counted once, not twice.
    """
    if len(times) > 1:
        step = float(np.median(np.diff(times)))
        if 0 < step <= _MAX_FRAME_INTERVAL_S:
            return step
    if rate and 1.0 / rate <= _MAX_FRAME_INTERVAL_S:
        return 1.0 / rate
    return 1.0 / _FALLBACK_RATE


def _largest_gap(times: np.ndarray, step: float) -> tuple[float, float]:
    """``(gap seconds, time before it)`` of the largest jump between frames when it is a gap, else zeros."""
    if len(times) < 2:
        return 0.0, 0.0
    intervals = np.diff(times)
    k = int(np.argmax(intervals))
    gap = float(intervals[k])
    if gap > max(_MAX_FRAME_INTERVAL_S, _GAP_FACTOR * step):
        return gap, float(times[k])
    return 0.0, 0.0


def plan_video(scan: VideoScan, stream_index: int, options: MediaOptions, path: Path,
               token_pixels: int = IMAGE_FACTOR) -> VideoPlan:
    """Turn a :class:`VideoScan` into a :class:`VideoPlan` for ``options``, frame sides multiples of
    ``token_pixels`` (the model's ``VisionGeometry.token_pixels``).

    Raises
    ------
    MediaError
        The stream has no packets at all.
    """
    if scan.n_packets == 0:
        reason = f" ({scan.error})" if scan.error else ""
        raise MediaError(f"the video track of {path} is empty: it has no frames{reason}")
    rate = scan.rate or _FALLBACK_RATE
    index_times = len(scan.pts) < scan.n_packets
    if index_times:
        logger.debug("video packets lack timestamps; assuming a constant %.3f fps", rate)
        times = np.arange(scan.n_packets, dtype=np.float64) / rate
        raw = None
    else:
        raw = np.unique(np.asarray(scan.pts, dtype=np.int64))
        times = raw.astype(np.float64) * float(scan.time_base) - scan.start_s
    step = _typical_step(times, scan.rate)
    # The duration is the real span of the timestamps (gaps included: that is what the file says);
    # the frame count is capped by the frames that exist, so a gap never allocates more frames.
    duration = float(times[-1] - times[0]) + step
    gap, gap_at = _largest_gap(times, step)
    n = sizing.count_frames(duration, options.fps, len(times), options.max_frames)
    targets = sizing.target_times(float(times[0]), float(times[-1]), n)
    wanted = slot_pts = None
    if raw is not None:
        slot_pts = tuple(int(v) for v in raw[sizing.nearest_indices(times, targets)])
        wanted = frozenset(slot_pts)
    budget = sizing.frame_pixel_budget(n, options.min_pixels, options.max_pixels, options.effective_total_pixels)
    return VideoPlan(
        stream_index=stream_index,
        n_frames=n,
        targets=targets,
        times=times,
        wanted_pts=wanted,
        index_times=index_times,
        rate=rate,
        step_s=step,
        duration_s=duration,
        time_base=scan.time_base,
        start_s=scan.start_s,
        pixel_budget=budget,
        token_pixels=token_pixels,
        gap_s=gap,
        gap_at_s=gap_at,
        slot_pts=slot_pts,
        keyframe_pts=tuple(sorted(set(scan.keyframe_pts))) if raw is not None else (),
    )


#: Below this many bytes the output array is allocated normally.
_POPULATE_MIN_BYTES = 1 << 22


def allocate_frames(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array of ``shape`` whose memory is mapped in one system call.

    On Linux the pages are pre-faulted with ``MAP_POPULATE``. Filling a freshly allocated array of
    a few hundred MB otherwise takes one page fault per 4 KiB page; on a virtual machine that cost
    more than converting the frames (0.3-0.6 s against 0.05 s for 120 frames of 1008x560, measured).
    Elsewhere, or if the mapping fails, this is ``np.empty``.
    """
    size = int(np.prod(shape))
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is None or size < _POPULATE_MIN_BYTES:
        return np.empty(shape, dtype=np.uint8)
    try:
        buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    except (OSError, ValueError, OverflowError):
        return np.empty(shape, dtype=np.uint8)
    return np.frombuffer(buffer, dtype=np.uint8).reshape(shape)


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def decoder_threading(cpus: int | None = None) -> tuple[str, int]:
    """``(thread_type, thread_count)`` for the video decoder (count 0 lets FFmpeg choose).

    With 4 or more cores: ``"AUTO"`` (frame and slice threads). With fewer: ``"SLICE"`` only, which is
    PyAV's default: frame conversion and audio decoding already run on their own threads, and on a
    2-core machine frame threads competing with them made ``load_media`` 10-20 % slower (measured
    with ``benchmarks/media_decode.py``). Skipping and converting less is what wins there.
    """
    cpus = usable_cpus() if cpus is None else cpus
    return ("AUTO", 0) if cpus >= FRAME_THREADS_MIN_CPUS else ("SLICE", 0)


class NearestFrameSelector:
    """Streams decoded frames and picks, for each target time, the closest frame seen.

    Frames must arrive in presentation order (decoders output them so). For target ``k`` the choice
    is made as soon as a frame at or after it arrives: it is that frame or the previous one, whichever
    is closer (the earlier one on ties). ``pick(k, frame, time)`` is called once per target.
    """

    def __init__(self, targets: np.ndarray, pick: Callable[[int, object, float], None]) -> None:
        self._targets = targets
        self._pick = pick
        self._k = 0
        self._prev: object | None = None
        self._prev_t = 0.0

    def push(self, frame: object, t: float) -> None:
        """Offer one decoded frame at time ``t`` seconds."""
        targets, k = self._targets, self._k
        while k < len(targets) and t >= targets[k]:
            target = targets[k]
            if self._prev is not None and target - self._prev_t <= t - target:
                self._pick(k, self._prev, self._prev_t)
            else:
                self._pick(k, frame, t)
            k += 1
        self._k = k
        self._prev, self._prev_t = frame, t

    def finish(self) -> None:
        """Give the remaining targets (past the last frame) the last frame."""
        while self._k < len(self._targets) and self._prev is not None:
            self._pick(self._k, self._prev, self._prev_t)
            self._k += 1


def rotation_of(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Display rotation of ``frame`` in degrees counter-clockwise, normalised to (-180, 180].

    Read from the frame's display-matrix side data; old files that only carry the legacy
    ``rotate`` tag (clockwise degrees) are honoured too.
    """
    degrees = 0.0
    try:
        degrees = float(frame.rotation or 0)
    except Exception:  # noqa: BLE001 - malformed side data: treat as unrotated
        degrees = 0.0
    if degrees == 0 and stream.metadata.get("rotate"):
        try:
            degrees = -float(stream.metadata["rotate"])
        except ValueError:
            degrees = 0.0
    quarter = int(round(degrees / 90.0)) % 4
    return {0: 0, 1: 90, 2: 180, 3: -90}[quarter]


def output_geometry(source: tuple[int, int], rotation: int, options: MediaOptions,
                    plan: VideoPlan) -> tuple[tuple[int, int], str]:
    """``((height, width), interpolation)`` of the output frames for a ``source`` of ``(width, height)``
    pixels shown rotated by ``rotation`` degrees."""
    width, height = source
    size = sizing.output_size(height, width, (rotation // 90) % 4, options.min_pixels, plan.pixel_budget,
                              plan.token_pixels)
    shrinking = size[0] * size[1] < width * height
    return size, DOWNSCALE_INTERPOLATION if shrinking else UPSCALE_INTERPOLATION


def convert_frame(reformatter: VideoReformatter, frame: av.VideoFrame, stream: av.video.stream.VideoStream,
                  size: tuple[int, int], interpolation: str) -> np.ndarray:
    """``frame`` scaled straight to ``size`` (height, width) in RGB ``[H, W, 3]`` uint8, then rotated
    for display."""
    out_h, out_w = size
    turns = (rotation_of(frame, stream) // 90) % 4
    width, height = (out_h, out_w) if turns % 2 else (out_w, out_h)
    rgb = reformatter.reformat(
        frame, width=width, height=height, format="rgb24", interpolation=interpolation, threads=1
    ).to_ndarray()
    return np.rot90(rgb, turns) if turns else rgb


class FrameConverter:
    """Runs frame conversions on one worker thread, overlapping them with decoding.

    PyAV releases the GIL while swscale converts, so this uses a second core. At most
    ``max_pending`` frames wait for conversion, which bounds the decoded frames held in memory.
    """

    def __init__(self, convert: Callable[[av.VideoFrame], np.ndarray], max_pending: int = 8) -> None:
        self._convert = convert
        self._slots = threading.BoundedSemaphore(max_pending)
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []

    def submit(self, out: np.ndarray, k: int, frame: av.VideoFrame) -> None:
        """Convert ``frame`` into ``out[k]`` in the background."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnizip-frames")
        self._slots.acquire()
        self._futures.append(self._pool.submit(self._run, out, k, frame))

    def _run(self, out: np.ndarray, k: int, frame: av.VideoFrame) -> None:
        try:
            out[k] = self._convert(frame)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Wait for all conversions; re-raise the first failure."""
        if self._pool is None:
            return
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
            self._pool = None
            self._futures = []


@dataclass
class VideoResult:
    """What :class:`VideoSink` produced."""

    frames: np.ndarray | None
    times: np.ndarray
    n_decoded: int
    distinct: int
    rotation: int
    source_width: int | None
    source_height: int | None
    errors: int
    first_error: str | None
    first_t: float | None
    last_t: float | None


class VideoSink:
    """Decodes the packets of one video stream and keeps the planned frames (see module docstring)."""

    def __init__(self, stream: av.video.stream.VideoStream, plan: VideoPlan, options: MediaOptions, path: Path):
        stream.thread_type, stream.codec_context.thread_count = decoder_threading()
        self._stream = stream
        self._ctx = stream.codec_context
        self._plan = plan
        self._options = options
        self._path = path
        self._tb = float(plan.time_base)
        self._skip_allowed = plan.wanted_pts is not None
        self._skipping = False
        self._selector = NearestFrameSelector(plan.targets, self._pick)
        self._frames: np.ndarray | None = None
        self._times = np.zeros(plan.n_frames, dtype=np.float64)
        self._size: tuple[int, int] | None = None  # final (height, width)
        self._interpolation = UPSCALE_INTERPOLATION
        self._rotation = 0
        self._source: tuple[int, int] | None = None
        self._last_pick: tuple[object, int] | None = None
        self._repeats: list[tuple[int, int]] = []  # (slot, slot it repeats)
        self._converter = FrameConverter(self._convert)
        self._reformatter = VideoReformatter()  # one scaler context, reused for every frame
        self._distinct = 0
        self._n_decoded = 0
        self._errors = 0
        self._first_error: str | None = None
        self._first_t: float | None = None
        self._last_t: float | None = None
        self._flushed = False

    # -- decoding ---------------------------------------------------------------------------
    def feed(self, packet: av.Packet) -> None:
        """Decode one packet (a zero-size packet flushes the decoder)."""
        if packet.size == 0:
            self._set_skipping(False)
            self._flushed = True
        elif self._skip_allowed and packet.pts is not None:
            self._set_skipping(packet.pts not in self._plan.wanted_pts)
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            self._record_error(exc)
            return
        for frame in frames:
            self._push(frame)

    def flush(self) -> None:
        """Drain the decoder if the demuxer did not send a flush packet (e.g. after a read error)."""
        if self._flushed:
            return
        self._flushed = True
        self._set_skipping(False)
        try:
            frames = self._stream.decode(None)
        except (av.error.FFmpegError, EOFError) as exc:
            if not isinstance(exc, (av.error.EOFError, EOFError)):
                self._record_error(exc)
            return
        for frame in frames:
            self._push(frame)

    def _set_skipping(self, skip: bool) -> None:
        if skip != self._skipping:
            self._ctx.skip_frame = "NONREF" if skip else "DEFAULT"
            self._skipping = skip

    def _record_error(self, exc: BaseException) -> None:
        self._errors += 1
        if self._first_error is None:
            self._first_error = ffmpeg_reason(exc)
        logger.debug("video decode error: %s", exc)

    def _frame_time(self, frame: av.VideoFrame) -> float:
        if self._plan.index_times or frame.pts is None:
            if self._plan.index_times:
                return self._n_decoded / self._plan.rate
            return (self._last_t if self._last_t is not None else 0.0) + self._plan.step_s
        return frame.pts * self._tb - self._plan.start_s

    def _push(self, frame: av.VideoFrame) -> None:
        t = self._frame_time(frame)
        if self._source is None:
            check_dimensions(frame.width, frame.height, self._path)
            self._source = (frame.width, frame.height)
            self._rotation = rotation_of(frame, self._stream)
        self._n_decoded += 1
        self._first_t = t if self._first_t is None else min(self._first_t, t)
        self._last_t = t if self._last_t is None else max(self._last_t, t)
        self._selector.push(frame, t)

    # -- selection and conversion -----------------------------------------------------------
    def _pick(self, k: int, frame: object, t: float) -> None:
        self._times[k] = t
        if self._last_pick is not None and self._last_pick[0] is frame:
            self._repeats.append((k, self._last_pick[1]))
            return
        self._last_pick = (frame, k)
        self._distinct += 1
        self._converter.submit(self._frames_array(), k, frame)

    def _frames_array(self) -> np.ndarray:
        if self._frames is None:
            self._size, self._interpolation = output_geometry(self._source, self._rotation, self._options, self._plan)
            self._frames = allocate_frames((self._plan.n_frames, *self._size, 3))
        return self._frames

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        return convert_frame(self._reformatter, frame, self._stream, self._size, self._interpolation)

    def close(self) -> None:
        """Stop the conversion worker (also after a failure)."""
        self._converter.close()

    def result(self) -> VideoResult:
        """Finish selection and conversion; return the frames (``frames`` is None if nothing decoded)."""
        self._selector.finish()
        try:
            self._converter.close()
        except (av.error.FFmpegError, ValueError) as exc:
            raise MediaError(f"cannot convert the video frames of {self._path} to RGB ({ffmpeg_reason(exc)})") from None
        for k, source in self._repeats:
            self._frames[k] = self._frames[source]
        return VideoResult(
            frames=self._frames,
            times=self._times,
            n_decoded=self._n_decoded,
            distinct=self._distinct,
            rotation=self._rotation,
            source_width=self._source[0] if self._source else None,
            source_height=self._source[1] if self._source else None,
            errors=self._errors,
            first_error=self._first_error,
            first_t=self._first_t,
            last_t=self._last_t,
        )


def decoded_span(result: VideoResult, plan: VideoPlan) -> float:
    """Seconds of video actually decoded (first to last frame plus one frame interval)."""
    if result.first_t is None or result.last_t is None:
        return 0.0
    return max(0.0, result.last_t - result.first_t) + plan.step_s
