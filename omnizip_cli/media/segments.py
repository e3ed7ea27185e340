"""Parallel video decoding: keyframe-bounded segments of one file, each on its own thread (issue 28).

A video stream can be decoded from any keyframe. :func:`plan_segments` cuts the stream at keyframes
into ``K`` segments of about the same number of frames; :func:`decode_segments` decodes them at once,
one PyAV container per thread (PyAV releases the GIL inside the codec and swscale), and each thread
converts its own chosen frames into the shared output array. The frames chosen are those of the
sequential path, by presentation time: the plan already names the timestamp of the frame nearest
each target (``VideoPlan.slot_pts``), and each segment owns the timestamps ``[start, next start)``.

Segment ``k`` seeks to its keyframe, drops frames before it (leading pictures of an open GOP,
which belong to segment ``k - 1``) and decodes past its end until a frame at or after the next
segment's start comes out: decoders emit frames in presentation order, so by then every frame it
owns has come out, leading pictures of the next GOP included. Non-reference frames nobody wants are
skipped in the decoder as in the sequential path.

Anything unexpected (a decode error, a frame without a timestamp, a target left unfilled, a
picture size change, a cancel) returns None and the caller runs the sequential path, which
handles damaged files and reports them: the parallel path only ever gives the sequential result
faster.

When it pays (:func:`segment_count`), measured with ``benchmarks/media_decode.py --segments 1,2``
on the 60-s 1280x720 H.264 + AAC clip and the 300-s 640x360 one: see :data:`PARALLEL_MIN_CPUS`
and :data:`PARALLEL_MIN_FRAMES`. ``OMNIZIP_DECODE_SEGMENTS=N`` forces N segments (``1``: sequential).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from omnizip_cli.errors import UsageError
from omnizip_cli.media.container import MAX_SIDE, open_container
from omnizip_cli.media.datatypes import MediaOptions
from omnizip_cli.media.video import (
    VideoPlan,
    VideoResult,
    allocate_frames,
    convert_frame,
    output_geometry,
    rotation_of,
    usable_cpus,
)

logger = logging.getLogger(__name__)

#: Environment variable: a segment count instead of the measured rule (``1``: sequential).
ENV_VAR = "OMNIZIP_DECODE_SEGMENTS"

__all__ = ["ENV_VAR", "PARALLEL_MIN_CPUS", "PARALLEL_MIN_FRAMES", "Segment", "decode_in_segments", "decode_segments",
           "forced_segments", "plan_segments", "segment_count"]

#: Parallel segments need this many usable cores. On the 2-core development VM with nothing else
#: running (``benchmarks/media_decode.py --segments 1,2 --repeats 5``, ``load_media`` at 2 fps),
#: 2 segments against the sequential pass took 1.24 vs 1.62 s (60-s 1280x720 clip) and 2.15 vs
#: 2.66 s (300-s 640x360), faster in every one of the 5 repeats: the sequential pass leaves most of
#: the second core idle (it only converts the chosen frames and decodes the audio there). An earlier
#: run with other jobs on the machine saw no reliable gain (3.66 vs 3.78 s, and once 3.46 vs 2.59 s):
#: on a machine already busy, the second decoder competes for a core someone else holds.
PARALLEL_MIN_CPUS = 2
#: ... and a stream of at least this many frames (below, opening K containers and seeking costs
#: more than it saves: a few milliseconds per segment against ~1 ms per 720p frame).
PARALLEL_MIN_FRAMES = 240
#: At most this many segments (threads), whatever the cores.
MAX_SEGMENTS = 16
#: Container formats whose seeking lands on the keyframe asked for (an index): the others decode
#: sequentially.
_SEEKABLE_FORMATS = frozenset({"mov", "mp4", "m4v", "m4a", "3gp", "3g2", "mj2", "matroska", "mkv", "webm"})


@dataclass(frozen=True)
class Segment:
    """One keyframe-bounded piece of the stream: owns timestamps ``[start_pts, end_pts)``.

    ``start_pts`` None: from the beginning of the file (no seek); ``end_pts`` None: to its end.
    """

    start_pts: int | None
    end_pts: int | None


def segment_count(plan: VideoPlan, container_format: str, cpus: int | None = None) -> int:
    """How many segments to decode ``plan``'s stream in (``$OMNIZIP_DECODE_SEGMENTS`` overrides the
    rule, for measuring): 1 (the sequential path) unless there are
    :data:`PARALLEL_MIN_CPUS` usable cores, :data:`PARALLEL_MIN_FRAMES` frames with timestamps, an
    indexed container and at least 2 keyframes; else one per core, at most one per keyframe and
    :data:`MAX_SEGMENTS`."""
    if plan.slot_pts is None or not any(name in _SEEKABLE_FORMATS for name in container_format.split(",")):
        return 1
    forced = forced_segments()
    if forced is not None:
        return max(1, min(forced, len(plan.keyframe_pts), MAX_SEGMENTS))
    cpus = usable_cpus() if cpus is None else cpus
    if cpus < PARALLEL_MIN_CPUS or plan.available < PARALLEL_MIN_FRAMES:
        return 1
    return max(1, min(cpus, len(plan.keyframe_pts), MAX_SEGMENTS))


def forced_segments() -> int | None:
    """``$OMNIZIP_DECODE_SEGMENTS`` as a count (``1``: always sequential), or None (the measured rule)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value or value == "auto":
        return None
    try:
        return max(1, int(value))
    except ValueError:
        raise UsageError(f"{ENV_VAR} must be a whole number of segments or 'auto' (got {value!r})") from None


def plan_segments(plan: VideoPlan, count: int) -> list[Segment]:
    """Cut ``plan``'s stream at keyframes into ``count`` (or fewer) segments of about equal frame counts.

    Uses ``plan.times`` (``[N]`` sorted frame seconds) and ``plan.keyframe_pts``. The first segment
    starts at the file's start, the last runs to its end.
    """
    keys = np.asarray(plan.keyframe_pts, dtype=np.int64)
    if count <= 1 or len(keys) < 2:
        return [Segment(None, None)]
    key_times = keys.astype(np.float64) * float(plan.time_base) - plan.start_s
    position = np.searchsorted(plan.times, key_times)  # frames before each keyframe
    cuts: list[int] = []
    for k in range(1, count):
        best = int(np.argmin(np.abs(position - k * len(plan.times) / count)))
        if position[best] > 0 and (not cuts or keys[best] > cuts[-1]):
            cuts.append(int(keys[best]))
    bounds = [None, *cuts, None]
    return [Segment(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


@dataclass
class _Shared:
    """What the segment threads share: the output array (allocated from the first frame) and the tally."""

    plan: VideoPlan
    options: MediaOptions
    slots: dict[int, list[int]]  # timestamp -> output slots it fills
    ready: threading.Event = field(default_factory=threading.Event)
    failed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    frames: np.ndarray | None = None
    size: tuple[int, int] | None = None
    interpolation: str = "BICUBIC"
    source: tuple[int, int] | None = None
    rotation: int = 0
    filled: set[int] = field(default_factory=set)

    def fail(self, why: str) -> None:
        logger.debug("parallel decoding gave up (%s); sequential path", why)
        self.failed.set()
        self.ready.set()


@dataclass
class _Tally:
    decoded: int = 0
    first_t: float | None = None
    last_t: float | None = None


def _decode_one(path: Path, segment: Segment, shared: _Shared, first: bool,
                cancelled: Callable[[], bool]) -> _Tally:
    """Decode one segment into ``shared.frames``; any failure sets ``shared.failed`` (never hangs the
    others: the first segment always settles the output geometry, or fails)."""
    try:
        return _decode_frames(path, segment, shared, first, cancelled)
    except Exception as exc:  # noqa: BLE001 - any failure: the sequential path decides
        shared.fail(f"{type(exc).__name__}: {exc}")
        return _Tally()
    finally:
        if first and not shared.ready.is_set():
            shared.fail("no frame in the first segment")


def _decode_frames(path: Path, segment: Segment, shared: _Shared, first: bool,
                   cancelled: Callable[[], bool]) -> _Tally:
    plan, tally = shared.plan, _Tally()
    tb = float(plan.time_base)
    with open_container(path) as container:
        stream = container.streams[plan.stream_index]
        stream.thread_type, stream.codec_context.thread_count = "SLICE", 1
        context = stream.codec_context
        if segment.start_pts is not None:
            container.seek(segment.start_pts, stream=stream, backward=True, any_frame=False)
        reformatter = VideoReformatter()
        skipping = False
        for packet in container.demux(stream):
            if cancelled():
                shared.fail("cancelled")
            if shared.failed.is_set():
                return tally
            skip = skipping  # the sequential path's rule (VideoSink.feed)
            if packet.size == 0:
                skip = False
            elif packet.pts is not None:
                skip = packet.pts not in plan.wanted_pts
            if skip != skipping:
                context.skip_frame, skipping = ("NONREF" if skip else "DEFAULT"), skip
            for frame in packet.decode():
                if frame.pts is None:
                    shared.fail("a frame without a timestamp")
                    return tally
                if segment.start_pts is not None and frame.pts < segment.start_pts:
                    continue  # a leading picture of the previous segment
                if segment.end_pts is not None and frame.pts >= segment.end_pts:
                    return tally  # every frame this segment owns has come out
                t = frame.pts * tb - plan.start_s
                tally.decoded += 1
                tally.first_t = t if tally.first_t is None else min(tally.first_t, t)
                tally.last_t = t if tally.last_t is None else max(tally.last_t, t)
                if first and not shared.ready.is_set():
                    _set_geometry(shared, frame, stream)
                targets = shared.slots.get(frame.pts)
                if targets:
                    _convert_into(shared, reformatter, frame, stream, targets)
    return tally


def _set_geometry(shared: _Shared, frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> None:
    """The output size from the file's first frame (as the sequential path), then the array."""
    if not (0 < frame.width <= MAX_SIDE and 0 < frame.height <= MAX_SIDE):
        shared.fail("picture dimensions out of range")
        return
    shared.source = (frame.width, frame.height)
    shared.rotation = rotation_of(frame, stream)
    shared.size, shared.interpolation = output_geometry(shared.source, shared.rotation, shared.options, shared.plan)
    shared.frames = allocate_frames((shared.plan.n_frames, *shared.size, 3))
    shared.ready.set()


def _convert_into(shared: _Shared, reformatter: VideoReformatter, frame: av.VideoFrame,
                  stream: av.video.stream.VideoStream, targets: list[int]) -> None:
    shared.ready.wait()
    if shared.failed.is_set():
        return
    if (frame.width, frame.height) != shared.source:
        shared.fail("the picture size changes inside the stream")
        return
    rgb = convert_frame(reformatter, frame, stream, shared.size, shared.interpolation)
    for k in targets:
        shared.frames[k] = rgb
    with shared.lock:
        shared.filled.update(targets)


def decode_in_segments(path: Path, plan: VideoPlan, options: MediaOptions, container_format: str,
                       cancel: threading.Event | None = None) -> VideoResult | None:
    """The planned frames decoded in :func:`segment_count` segments, or None where the rule says one
    segment or the parallel path gave up (the caller then decodes sequentially)."""
    count = segment_count(plan, container_format)
    if count < 2:
        return None
    cancelled = cancel.is_set if cancel is not None else (lambda: False)
    return decode_segments(path, plan, options, plan_segments(plan, count), cancelled=cancelled)


def decode_segments(path: Path, plan: VideoPlan, options: MediaOptions, segments: list[Segment],
                    cancelled: Callable[[], bool] = lambda: False) -> VideoResult | None:
    """Decode ``segments`` of ``plan``'s stream at once; the sequential path's result, or None.

    None: the parallel path gave up (see the module docstring); the caller decodes sequentially.
    ``frames`` ``[n_frames, H, W, 3]`` uint8 and ``times`` ``[n_frames]`` seconds, as
    :class:`~omnizip_cli.media.video.VideoSink` gives them.
    """
    if plan.slot_pts is None or len(segments) < 2:
        return None
    slots: dict[int, list[int]] = {}
    for k, pts in enumerate(plan.slot_pts):
        slots.setdefault(pts, []).append(k)
    shared = _Shared(plan=plan, options=options, slots=slots)
    with ThreadPoolExecutor(max_workers=len(segments), thread_name_prefix="omnizip-segment") as pool:
        jobs = [pool.submit(_decode_one, path, s, shared, i == 0, cancelled) for i, s in enumerate(segments)]
        tallies = [job.result() for job in jobs]
    if shared.failed.is_set() or shared.frames is None or len(shared.filled) != plan.n_frames:
        if not shared.failed.is_set():
            logger.debug("parallel decoding filled %d of %d frames; sequential path", len(shared.filled), plan.n_frames)
        return None
    tb = float(plan.time_base)
    times = np.array([pts * tb - plan.start_s for pts in plan.slot_pts], dtype=np.float64)
    firsts = [t.first_t for t in tallies if t.first_t is not None]
    lasts = [t.last_t for t in tallies if t.last_t is not None]
    return VideoResult(
        frames=shared.frames,
        times=times,
        n_decoded=sum(t.decoded for t in tallies),
        distinct=len(slots),
        rotation=shared.rotation,
        source_width=shared.source[0],
        source_height=shared.source[1],
        errors=0,
        first_error=None,
        first_t=min(firsts),
        last_t=max(lasts),
    )
