"""``load_media``: one call from a path to model-ready frames, audio and a summary.

Passes over the file (each opens its own PyAV container):

1. header: pick the streams and reject what cannot work (:func:`_select`);
2. video scan: packet timestamps without decoding (:func:`~omnizip_cli.media.video.scan_video`);
3. decoding: the video on the calling thread, the audio at the same time on a worker thread
   (PyAV releases the GIL while decoding, so the two use separate cores).

Usability rule for damaged files: packets that fail to decode are skipped, and a read error ends a
stream early; either way what decoded is kept, with a warning in ``summary.warnings``, as long as
at least one video frame decoded (for a file with a video track) or at least 0.1 s of audio decoded
(for an audio-only file). Otherwise :class:`MediaError`. Audio shorter than 0.1 s beside a usable
video is dropped with a warning. A file whose decoded streams end clearly before the header says
they do (a truncated download) gets a warning too (end times are compared, so a video that starts
after its audio is not "truncated"). With several audio tracks, the one used is named in a warning.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import av
import av.error
import numpy as np

from omnizip_cli.errors import MediaError
from omnizip_cli.media import container as ct
from omnizip_cli.media import hwdecode, segments
from omnizip_cli.media.audio import MIN_AUDIO_SECONDS, AudioResult, AudioSink, align_audio, load_audio_with_librosa
from omnizip_cli.media.datatypes import (
    AUDIO_SAMPLE_RATE,
    FRAME_FACTOR,
    IMAGE_FACTOR,
    DecodedMedia,
    MediaOptions,
    MediaSummary,
)
from omnizip_cli.media.sizing import floor_by_factor, nearest_indices
from omnizip_cli.media.video import VideoPlan, VideoResult, VideoSink, decoded_span, plan_video, scan_video

logger = logging.getLogger(__name__)

Sink = TypeVar("Sink", VideoSink, AudioSink)

#: With a video, this much more audio than ``max_audio_seconds`` is decoded, in case the track starts
#: before the first frame (that part is cut when aligning); the final cut comes after the alignment.
_ALIGN_MARGIN_S = 30.0

#: Decoding less than this share of the header's duration (and over 0.5 s less) means "truncated".
_TRUNCATION_SHARE = 0.9


@dataclass(frozen=True)
class _Selection:
    """The streams chosen from the header."""

    container: str
    video_index: int | None
    audio_index: int | None  # None also when use_audio is False
    video_codec: str | None
    audio_codec: str | None
    audio_rate_in: int | None
    audio_channels_in: int | None
    header_duration: float | None
    video_end_s: float | None = None  # where the header says the chosen video stream ends (None: not said)
    audio_end_s: float | None = None  # the same for the chosen audio stream
    notes: tuple[str, ...] = ()  # warnings from the header (which audio track is used)


@dataclass(frozen=True)
class _Decoded:
    video: VideoResult | None
    audio: AudioResult | None
    read_error: str | None


# -- header ---------------------------------------------------------------------------------------
def _select(path: Path, options: MediaOptions) -> _Selection:
    """Open the header, pick the streams and reject what cannot work."""
    with ct.open_container(path) as container:
        video = ct.pick_stream(container, "video")
        audio_any = ct.pick_stream(container, "audio")
        audio = audio_any if options.use_audio else None
        if video is None and audio_any is None:
            kinds = ", ".join(s.type for s in container.streams) or "no streams"
            raise MediaError(
                f"{path} has no video or audio stream (FFmpeg reads it as {ct.format_name(container)} with {kinds})"
            )
        if video is None and audio is None:
            raise MediaError(f"{path} has no video track and --no-audio ignores its audio", hint="drop --no-audio")
        if video is not None:
            ct.require_decoder(video, path)
            ct.check_dimensions(video.codec_context.width, video.codec_context.height, path)
        if audio is not None:
            ct.require_decoder(audio, path)
        actx = audio_any.codec_context if audio_any is not None else None
        file_start = ct.container_start(container)
        notes = (note,) if audio is not None and (note := _audio_track_note(container, audio)) else ()
        return _Selection(
            container=ct.format_name(container),
            video_index=video.index if video is not None else None,
            audio_index=audio.index if audio is not None else None,
            video_codec=ct.codec_name(video),
            audio_codec=ct.codec_name(audio_any),
            audio_rate_in=(actx.sample_rate or None) if actx is not None else None,
            audio_channels_in=(actx.layout.nb_channels or None) if actx is not None else None,
            header_duration=ct.container_duration(container),
            video_end_s=ct.stream_end(video, file_start) if video is not None else None,
            audio_end_s=ct.stream_end(audio, file_start) if audio is not None else None,
            notes=notes,
        )


def _audio_track_note(container: av.container.InputContainer, chosen: av.stream.Stream) -> str | None:
    """With several audio tracks, which one is used and why (only one is ever decoded); else None."""
    tracks = [s for s in container.streams if s.type == "audio" and not ct.is_cover_art(s)]
    if len(tracks) < 2:
        return None
    position = tracks.index(chosen) + 1
    language = chosen.metadata.get("language") if chosen.metadata else None
    details = ", ".join(x for x in (ct.codec_name(chosen), language if language not in (None, "und") else None) if x)
    if ct.is_default(chosen):
        why = "the one marked default"
    elif tracks[0] is not chosen:
        why = "the first one this FFmpeg can decode"
    else:
        why = "the first (none is marked default)"
    others = "the other one is ignored" if len(tracks) == 2 else f"the other {len(tracks) - 1} are ignored"
    return (
        f"the file has {len(tracks)} audio tracks: only audio track {position} of {len(tracks)}"
        f" (stream #{chosen.index}{', ' + details if details else ''}) is used, {why}; {others}"
    )


# -- decoding -------------------------------------------------------------------------------------
class DecodeCancelled(Exception):
    """Decoding stopped because its ``cancel`` event was set (the caller no longer needs the media)."""


def _run_pass(path: Path, stream_index: int, make_sink: Callable[[av.stream.Stream], Sink],
              cancel: threading.Event | None = None, hwaccel: object | None = None) -> tuple[Sink, str | None]:
    """Demux one stream into a sink; a read error ends the pass early. Returns (flushed sink, error).

    ``cancel`` set: :class:`DecodeCancelled` at the next packet. ``hwaccel``: hardware decoding."""
    with ct.open_container(path, hwaccel) as container:
        stream = container.streams[stream_index]
        sink = make_sink(stream)
        errors: list[str] = []
        try:
            for packet in ct.demux_until_error(container, stream, errors):
                if cancel is not None and cancel.is_set():
                    raise DecodeCancelled(f"decoding {path} was cancelled")
                if packet.stream.index == stream_index:
                    sink.feed(packet)
            sink.flush()
        except BaseException:
            if isinstance(sink, VideoSink):
                sink.close()
            raise
        return sink, errors[0] if errors else None


def _decode_video(path: Path, plan: VideoPlan, options: MediaOptions, cancel: threading.Event | None = None,
                  container_format: str = "") -> tuple[VideoResult, str | None]:
    """The planned frames: with ``$OMNIZIP_HW_DECODE`` on NVDEC (:mod:`.hwdecode`, the CPU when it
    cannot), else in keyframe-bounded segments on several threads where that pays (:mod:`.segments`),
    else (or when that gives up) one sequential pass."""
    accel = hwdecode.accel_with_note()
    if accel is not None:
        try:
            sink, read_error = _run_pass(path, plan.stream_index, lambda s: VideoSink(s, plan, options, path),
                                         cancel, accel)
            return sink.result(), read_error
        except (MediaError, av.error.FFmpegError) as exc:
            hwdecode.note_once(f"hardware decoding failed, decoding on the CPU: {ct.one_line(exc)}")
    result = segments.decode_in_segments(path, plan, options, container_format, cancel)
    if cancel is not None and cancel.is_set():
        raise DecodeCancelled(f"decoding {path} was cancelled")
    if result is not None:
        return result, None
    sink, read_error = _run_pass(path, plan.stream_index, lambda s: VideoSink(s, plan, options, path), cancel)
    return sink.result(), read_error


def _decode_audio(path: Path, index: int, max_samples: int | None,
                  cancel: threading.Event | None = None) -> tuple[AudioResult, str | None]:
    sink, read_error = _run_pass(path, index, lambda s: AudioSink(s, max_samples, ct.container_start(s.container)),
                                 cancel)
    return sink.result(), read_error


def _decode(path: Path, plan: VideoPlan | None, audio_index: int | None, options: MediaOptions,
            on_audio: Callable[[np.ndarray], None] | None = None, cancel: threading.Event | None = None,
            container_format: str = "") -> _Decoded:
    """Decode the chosen streams; with both, the audio runs on a worker thread beside the video.

    ``on_audio`` (with both streams) gets the audio :func:`load_media` will most likely return, on
    the worker thread, as soon as the audio track is decoded (see :func:`_early_audio`).
    """
    max_samples = None
    if options.max_audio_seconds is not None:
        max_samples = int(round(options.max_audio_seconds * AUDIO_SAMPLE_RATE))
    if plan is None:
        audio, error = _decode_audio(path, audio_index, max_samples, cancel)
        return _Decoded(video=None, audio=audio, read_error=error)
    if max_samples is not None:  # room for an audio track that starts before the video (cut once aligned)
        max_samples += int(_ALIGN_MARGIN_S * AUDIO_SAMPLE_RATE)

    def decode_audio() -> tuple[AudioResult, str | None]:
        result = _decode_audio(path, audio_index, max_samples, cancel)
        if on_audio is not None:
            early = _early_audio(result[0], plan, options, path)
            if early is not None:
                try:
                    on_audio(early)
                except Exception:  # noqa: BLE001 - a consumer's failure must not break decoding
                    logger.debug("on_audio failed", exc_info=True)
        return result

    audio = audio_error = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnizip-audio") as pool:
        audio_job = pool.submit(decode_audio) if audio_index is not None else None
        try:
            video, video_error = _decode_video(path, plan, options, cancel, container_format)
        except DecodeCancelled:
            if audio_job is not None:
                audio_job.cancel()
            raise
        if audio_job is not None:
            audio, audio_error = audio_job.result()
    return _Decoded(video=video, audio=audio, read_error=video_error or audio_error)


def _early_audio(result: AudioResult, plan: VideoPlan, options: MediaOptions, path: Path) -> np.ndarray | None:
    """The audio :func:`load_media` will return, predicted before the video has decoded.

    The same rules as the final assembly (:func:`_final_audio`), with the first sampled frame's time
    taken from the plan (the packet time nearest the first target, which is the decoded frame's time
    unless frames fail to decode). None when the final audio would be None. A prediction only:
    whoever uses it compares it with what is finally returned.
    """
    first_frame = None
    if not plan.index_times and len(plan.times):
        first_frame = float(plan.times[nearest_indices(plan.times, plan.targets[:1])[0]])
    return _final_audio(result, first_frame, True, path, None, options).audio  # with video: never raises


# -- checks and warnings --------------------------------------------------------------------------
def _check_video(result: VideoResult, path: Path, read_error: str | None) -> None:
    if result.frames is None or result.n_decoded == 0:
        reason = result.first_error or read_error
        suffix = f" ({reason})" if reason else ""
        raise MediaError(f"no video frame could be decoded from {path}; the file is corrupt or truncated{suffix}")


def _human_seconds(seconds: float) -> str:
    """``36000`` -> ``"36000 s (10.0 h)"``; short values in seconds only."""
    if seconds >= 3600:
        return f"{seconds:.0f} s ({seconds / 3600:.1f} h)"
    if seconds >= 60:
        return f"{seconds:.0f} s ({seconds / 60:.1f} min)"
    return f"{seconds:.1f} s"


def _skipped_packets(kind: str, count: int, first_error: str | None) -> str:
    return f"{kind}: {count} packet(s) could not be decoded and were skipped ({first_error})"


def _video_warnings(result: VideoResult, plan: VideoPlan, options: MediaOptions) -> list[str]:
    warnings = []
    if result.errors:
        warnings.append(_skipped_packets("video", result.errors, result.first_error))
    if plan.available < 2:
        warnings.append("the video has a single frame; it is used twice (frames come in pairs)")
    elif result.distinct < plan.n_frames:
        warnings.append(
            f"only {result.distinct} distinct frames could be decoded for {plan.n_frames} sampling points;"
            " some frames are repeated"
        )
    if plan.gap_s > 0:
        warnings.append(
            f"the video's timestamps jump by {_human_seconds(plan.gap_s)} after {plan.gap_at_s:.1f} s:"
            f" the {plan.duration_s:.1f} s duration includes that gap, and frames sampled by time"
            " repeat the frames around it"
        )
    capped = plan.n_frames >= floor_by_factor(options.max_frames, FRAME_FACTOR)
    if capped and plan.duration_s * options.fps > options.max_frames + 1 and plan.available > plan.n_frames:
        # Only when --max-frames is what limits the count (not the frames the file has), and with
        # the rate said so that it is never "0.00 fps".
        warnings.append(
            f"--max-frames {options.max_frames} caps the sampling at {plan.n_frames} frames,"
            f" {_rate_text(plan.fps_used)} instead of {options.fps:g} fps, over {_human_seconds(plan.duration_s)}"
            " of video"
        )
    return warnings


def _rate_text(fps: float) -> str:
    """``2.5`` -> ``"2.50 fps"``; slow rates as the interval (``"one frame every 23.4 s"``), never 0.00 fps."""
    if fps >= 0.1:
        return f"{fps:.2f} fps"
    if fps <= 0:
        return "no frame rate"
    return f"one frame every {_human_seconds(1.0 / fps)}"


def _usable_audio(result: AudioResult, has_video: bool, path: Path, read_error: str | None) -> np.ndarray | None:
    """The audio to return, or None (with video) when too short; raises without video."""
    if result.total_seconds >= MIN_AUDIO_SECONDS:
        return result.audio
    if not has_video:
        reason = result.first_error or read_error
        suffix = f" ({reason})" if reason else ""
        raise MediaError(
            f"no usable audio in {path}: {result.total_seconds:.3f} s decoded,"
            f" at least {MIN_AUDIO_SECONDS} s needed{suffix}"
        )
    return None


def _audio_warnings(result: AudioResult, kept: bool) -> list[str]:
    warnings = []
    if result.errors:
        warnings.append(_skipped_packets("audio", result.errors, result.first_error))
    if not kept:
        warnings.append(f"the audio track gave only {result.total_seconds:.3f} s of audio; it is ignored")
    return warnings


@dataclass(frozen=True)
class _FinalAudio:
    audio: np.ndarray | None
    offset: float
    truncated: bool
    warnings: list[str]


def _final_audio(audio: AudioResult, first_frame_s: float | None, has_video: bool, path: Path,
                 read_error: str | None, options: MediaOptions) -> _FinalAudio:
    """The audio to return from a decoded track: usable or not, aligned with the first frame at
    ``first_frame_s`` (None: no alignment), cut to ``--max-audio-seconds``; with its warnings."""
    audio_out = _usable_audio(audio, has_video, path, read_error)
    warnings = _audio_warnings(audio, audio_out is not None)
    offset = 0.0
    if audio_out is not None and first_frame_s is not None and audio.start_s is not None:
        audio_out, offset = align_audio(audio_out, audio.start_s - first_frame_s)
        if offset > 0:
            warnings.append(
                f"the audio track starts {offset:.2f} s after the video; {offset:.2f} s of silence were put"
                " before it so that sounds stay paired with their frames"
            )
        elif offset < 0:
            warnings.append(
                f"the audio track starts {-offset:.2f} s before the first video frame; that part is not used"
            )
        if len(audio_out) < MIN_AUDIO_SECONDS * AUDIO_SAMPLE_RATE:
            warnings.append("no audio overlaps the video once aligned with it; the audio is ignored")
            audio_out, offset = None, 0.0
    truncated = False
    if audio_out is not None and options.max_audio_seconds is not None:
        audio_out, cut = _cut(audio_out, options)
        truncated = cut or audio.truncated
        if truncated:
            warnings.append(
                f"audio cut to {len(audio_out) / AUDIO_SAMPLE_RATE:.1f} s by --max-audio-seconds"
                f" {options.max_audio_seconds:g}; the track is {audio.total_seconds + max(offset, 0.0):.1f} s"
                + (" with the leading silence" if offset > 0 else "")
            )
    return _FinalAudio(audio_out, offset, truncated, warnings)


def _expected_end(sel: _Selection, decoded_video: bool, decoded_audio: bool) -> float | None:
    """Where the header says the decoded streams end, in seconds from the file's start.

    The end of each decoded stream where the header gives it (a stream that starts late, or a
    longer track that was not decoded, then never looks like a truncation); else the file's
    duration."""
    ends = [end for used, end in ((decoded_video, sel.video_end_s), (decoded_audio, sel.audio_end_s)) if used]
    if ends and all(end is not None for end in ends):
        return max(ends)
    return sel.header_duration


def _decoded_end(video: VideoResult | None, plan: VideoPlan | None, audio: AudioResult | None) -> float:
    """Where the decoded streams end, in seconds from the file's start (the same time line)."""
    ends = [0.0]
    if video is not None and video.last_t is not None and plan is not None:
        ends.append(video.last_t + plan.step_s)
    if audio is not None:
        ends.append((audio.start_s or 0.0) + audio.total_seconds)
    return max(ends)


def _completeness_warning(decoded_end: float, header_end: float | None, read_error: str | None) -> str | None:
    """A warning when the file is damaged or ends (on its time line) clearly before its header says.

    Ends are compared, not lengths: a video that starts 3 s after its audio is 3 s shorter than the
    file, not truncated."""
    header = f" of the {header_end:.1f} s the header announces" if header_end else ""
    if read_error:
        return (f"the file is damaged or ends early ({read_error}); using what decoded, up to {decoded_end:.1f} s"
                f"{header}")
    if header_end and decoded_end < _TRUNCATION_SHARE * header_end and header_end - decoded_end > 0.5:
        return f"the file looks truncated: what decoded ends at {decoded_end:.1f} s{header}"
    return None


# -- fallback for audio files PyAV cannot read ----------------------------------------------------
def _cut(audio: np.ndarray, options: MediaOptions) -> tuple[np.ndarray, bool]:
    if options.max_audio_seconds is None:
        return audio, False
    limit = int(round(options.max_audio_seconds * AUDIO_SAMPLE_RATE))
    return audio[:limit], len(audio) > limit


def _librosa_fallback(path: Path, error: MediaError, options: MediaOptions, start: float) -> DecodedMedia:
    """Read an audio file with librosa when PyAV cannot; re-raises ``error`` if librosa cannot either."""
    try:
        audio, rate, channels = load_audio_with_librosa(path)
    except MediaError:
        raise error from None
    if len(audio) < MIN_AUDIO_SECONDS * AUDIO_SAMPLE_RATE:
        raise error
    kept, truncated = _cut(audio, options)
    warnings = ["decoded with librosa because PyAV could not read the file"]
    if truncated:
        warnings.append(f"audio cut to {len(kept) / AUDIO_SAMPLE_RATE:.1f} s by --max-audio-seconds")
    summary = MediaSummary(
        path=str(path),
        container=path.suffix.lower().lstrip("."),
        kind="audio",
        duration_s=len(audio) / AUDIO_SAMPLE_RATE,
        video_codec=None,
        audio_codec=None,
        frames_sampled=0,
        frame_height=0,
        frame_width=0,
        fps_used=0.0,
        rotation=0,
        source_width=None,
        source_height=None,
        audio_seconds=len(kept) / AUDIO_SAMPLE_RATE,
        audio_truncated=truncated,
        audio_sample_rate_in=rate,
        audio_channels_in=channels,
        decode_seconds=time.perf_counter() - start,
        warnings=tuple(warnings),
    )
    return DecodedMedia(frames=None, frame_times=None, audio=kept, summary=summary)


def _may_use_librosa(path: Path, error: MediaError, options: MediaOptions) -> bool:
    return isinstance(error, ct.UnreadableFile) and options.use_audio and path.suffix.lower() in ct.SOUNDFILE_EXTENSIONS


# -- public entry point ---------------------------------------------------------------------------
def load_media(path: str | os.PathLike, options: MediaOptions = MediaOptions(),  # noqa: B008 (frozen)
               on_audio: Callable[[np.ndarray], None] | None = None, *,
               token_pixels: int = IMAGE_FACTOR) -> DecodedMedia:
    """Decode ``path`` into sampled RGB frames and 16 kHz mono audio for a Qwen omni model.

    Video frames are sampled at ``options.fps`` by presentation time (qwen-omni-utils' frame count
    and even spacing, nearest decoded frame per target time), scaled with :func:`smart_resize` to
    sides that are multiples of ``token_pixels`` (the pixels one video token of the model covers:
    its adapter's ``VisionGeometry.token_pixels``; default 28, Qwen2.5-Omni's) and turned upright
    according to the rotation metadata. The audio track (or the audio file) is
    resampled to 16 kHz and averaged to mono, as float32. See the module docstring for damaged files.

    ``on_audio``: for a video with an audio track, called on the audio worker thread as soon as the
    audio has decoded (usually well before the video), with the audio this call will most likely
    return (a prediction: the first frame's time comes from the plan). It lets model work on the
    audio overlap the video decoding (:mod:`omnizip_cli.generation.early_audio`); it should return
    quickly, and what it raises is ignored.

    Raises
    ------
    MediaError
        Missing, unreadable, not media, an image, no usable stream, undecodable codec, absurd
        dimensions, or nothing decodable (one-line message, exit code 1).
    """
    return decode_media(plan_media(path, options, token_pixels=token_pixels), on_audio)


@dataclass(frozen=True)
class MediaPlan:
    """A file whose header and video timestamps passed every check, ready to decode (:func:`plan_media`)."""

    path: Path
    options: MediaOptions
    started: float  # perf_counter when planning began (decode_seconds counts from here)
    selection: _Selection | None  # None: PyAV cannot read it; librosa will try (fallback_error says why)
    video: VideoPlan | None
    fallback_error: MediaError | None = None


def plan_media(path: str | os.PathLike, options: MediaOptions = MediaOptions(),  # noqa: B008 (frozen)
               *, token_pixels: int = IMAGE_FACTOR) -> MediaPlan:
    """The cheap first half of :func:`load_media`: the header, the streams and the video's sampling
    plan (packet timestamps, no decoding; frame sides multiples of ``token_pixels``). Most bad files
    fail here, with the same errors."""
    start = time.perf_counter()
    p = ct.check_path(path)
    try:
        sel = _select(p, options)
    except MediaError as exc:
        if _may_use_librosa(p, exc, options):
            return MediaPlan(path=p, options=options, started=start, selection=None, video=None, fallback_error=exc)
        raise
    plan = None
    if sel.video_index is not None:
        plan = plan_video(scan_video(p, sel.video_index), sel.video_index, options, p, token_pixels)
    return MediaPlan(path=p, options=options, started=start, selection=sel, video=plan)


def decode_media(plan: MediaPlan, on_audio: Callable[[np.ndarray], None] | None = None,
                 cancel: threading.Event | None = None) -> DecodedMedia:
    """The second half of :func:`load_media`: decode what ``plan`` chose (may run on another thread).

    ``cancel`` set while decoding: :class:`DecodeCancelled` soon after (checked between packets).
    """
    if plan.selection is None:
        assert plan.fallback_error is not None
        return _librosa_fallback(plan.path, plan.fallback_error, plan.options, plan.started)
    decoded = _decode(plan.path, plan.video, plan.selection.audio_index, plan.options, on_audio, cancel,
                      plan.selection.container)
    return _assemble(plan.path, plan.selection, plan.video, decoded, plan.options, plan.started)


def _assemble(
    path: Path, sel: _Selection, plan: VideoPlan | None, decoded: _Decoded, options: MediaOptions, start: float
) -> DecodedMedia:
    """Check what decoded, collect the warnings and build the :class:`DecodedMedia`."""
    video, audio = decoded.video, decoded.audio
    warnings: list[str] = []
    video_span = 0.0
    if video is not None:
        _check_video(video, path, decoded.read_error)
        warnings += _video_warnings(video, plan, options)
        video_span = decoded_span(video, plan)
    audio_out, offset, truncated = None, 0.0, False
    if audio is not None:
        aligned_to = None  # both on the file's time line (frame times from timestamps): align them
        if video is not None and audio.start_s is not None and len(video.times) and not plan.index_times:
            aligned_to = float(video.times[0])
        final = _final_audio(audio, aligned_to, video is not None, path, decoded.read_error, options)
        audio_out, offset, truncated = final.audio, final.offset, final.truncated
        warnings += final.warnings
    warnings += sel.notes
    decoded_s = max(video_span, audio.total_seconds if audio is not None else 0.0)
    expected_end = _expected_end(sel, video is not None, audio is not None)
    note = _completeness_warning(_decoded_end(video, plan, audio), expected_end, decoded.read_error)
    if note is not None:
        warnings.insert(0, note)
    frames = video.frames if video is not None else None
    kind = "audio" if frames is None else ("video+audio" if audio_out is not None else "video")
    summary = MediaSummary(
        path=str(path),
        container=sel.container,
        kind=kind,
        duration_s=round(decoded_s, 6),
        video_codec=sel.video_codec,
        audio_codec=sel.audio_codec,
        frames_sampled=0 if frames is None else int(frames.shape[0]),
        frame_height=0 if frames is None else int(frames.shape[1]),
        frame_width=0 if frames is None else int(frames.shape[2]),
        fps_used=round(plan.fps_used, 6) if plan is not None else 0.0,
        rotation=video.rotation if video is not None else 0,
        source_width=video.source_width if video is not None else None,
        source_height=video.source_height if video is not None else None,
        audio_seconds=0.0 if audio_out is None else len(audio_out) / AUDIO_SAMPLE_RATE,
        audio_truncated=truncated,
        audio_sample_rate_in=sel.audio_rate_in,
        audio_channels_in=sel.audio_channels_in,
        decode_seconds=time.perf_counter() - start,
        warnings=tuple(ct.one_line(w) for w in warnings),
        audio_offset_s=round(offset, 6),
    )
    logger.debug("decoded %s in %.3f s (%s)", path, summary.decode_seconds, kind)
    return DecodedMedia(
        frames=frames,
        frame_times=video.times if video is not None else None,
        audio=audio_out,
        summary=summary,
    )
