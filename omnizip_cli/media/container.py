"""Opening files with PyAV, choosing streams and turning failures into one-line :class:`MediaError`."""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error

from omnizip_cli.errors import MediaError
from omnizip_cli.media.datatypes import MediaProbe, StreamInfo

logger = logging.getLogger(__name__)

#: Largest picture side accepted; anything larger (or 0) is treated as a broken header.
MAX_SIDE = 16384
#: FFmpeg demuxers that mean "a still image".
_IMAGE_FORMATS = frozenset({"image2", "image2pipe", "gif_pipe", "apng"})
_IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".ppm", ".pgm"}
)
#: Audio files that libsndfile (librosa's reader) may read when FFmpeg cannot.
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".aiff", ".aif", ".caf", ".w64"})

#: Extensions whose demuxer has another name.
_EXT_FORMATS = {"mkv": "matroska", "mka": "matroska", "m4v": "mp4", "oga": "ogg", "opus": "ogg", "aif": "aiff"}
#: FFmpeg demuxers that accept arbitrary text or bytes as "video" (``tty`` renders any .txt as ANSI art).
_TEXT_FORMATS = frozenset({"tty", "bin", "idf", "adf", "xbin"})
_IMAGES_HINT = "extract frames into a video first, e.g. ffmpeg -loop 1 -i IMAGE -t 2 OUT.mp4"


def one_line(text: str) -> str:
    """Collapse whitespace (FFmpeg messages sometimes carry newlines) to a single line."""
    return " ".join(str(text).split())


def ffmpeg_reason(exc: BaseException) -> str:
    """A short reason from a PyAV exception, without the file name FFmpeg appends."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return one_line(reason)


class UnreadableFile(MediaError):
    """FFmpeg could not open the file, or has no decoder for the stream we need."""


#: ``scheme:/...`` at the start of a path: a URL (``pathlib`` turns ``http://`` into ``http:/``).
#: Two letters at least, so a Windows drive (``C:/``) is not a scheme.
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")
_URL_HINT = "download it first (e.g. curl -LO URL, or yt-dlp URL) and pass the local file"

#: FFmpeg protocols that read other inputs through one name (``concat:a.mp4|b.mp4``,
#: ``subfile:...``, ``pipe:0``...). ``open_container`` never lets FFmpeg see a protocol (it opens the
#: absolute path), but such a name is refused with its own message rather than "no such file".
_FFMPEG_PROTOCOLS = frozenset(
    {"async", "cache", "concat", "concatf", "crypto", "data", "fd", "hls", "md5", "pipe", "subfile", "tee"}
)
_PROTOCOL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
#: FFmpeg demuxers that read other files (or network streams) named inside the input: a playlist's
#: bytes do not change when the files it names do, so its hash cannot key the prefix cache.
_INDIRECT_FORMATS = {
    "concat": "an FFmpeg concat list",
    "hls": "an HLS playlist",
    "applehttp": "an HLS playlist",
    "dash": "a DASH manifest",
    "imf": "an IMF composition playlist",
    "sdp": "an SDP session description",
    "rtsp": "an RTSP session description",
    "avisynth": "an AviSynth script",
    "vapoursynth": "a VapourSynth script",
}
#: File extensions of playlists and scripts, refused without opening them.
_INDIRECT_EXTENSIONS = {
    ".m3u8": "an HLS playlist",
    ".m3u": "an M3U playlist",
    ".ffconcat": "an FFmpeg concat list",
    ".ffcat": "an FFmpeg concat list",
    ".mpd": "a DASH manifest",
    ".sdp": "an SDP session description",
    ".pls": "a PLS playlist",
    ".xspf": "an XSPF playlist",
    ".avs": "an AviSynth script",
    ".vpy": "a VapourSynth script",
}
#: Bytes read from the start of a file to recognise a playlist by its content.
_SNIFF_BYTES = 4096
_CONCAT_LINE_RE = re.compile(rb"^\s*(ffconcat\s+version|file\s+\S)")
_INDIRECT_HINTS = {
    "an FFmpeg concat list": "join the files first, e.g. ffmpeg -f concat -safe 0 -i LIST -c copy OUT.mkv",
    "an HLS playlist": "download or join its segments first, e.g. ffmpeg -i LIST.m3u8 -c copy OUT.mkv",
}
_INDIRECT_HINT = "pass the media file itself (one local file), or join what the list names into one file first"


def ffmpeg_protocol(path: str | os.PathLike) -> str | None:
    """The FFmpeg protocol ``path`` starts with (``"concat"`` for ``concat:a.mp4|b.mp4``), or None."""
    match = _PROTOCOL_RE.match(os.fsdecode(os.fspath(path)))
    if match and match.group(1).lower() in _FFMPEG_PROTOCOLS:
        return match.group(1).lower()
    return None


def indirect_kind(path: Path, head: bytes) -> str | None:
    """What kind of indirect input ``path`` is (``"an HLS playlist"``...), from its extension or its
    first bytes ``head``; None for anything else.

    Recognised by content too (a playlist renamed ``.mp4``): ``#EXTM3U`` (HLS/M3U), a concat list
    (``ffconcat version``, or a first line ``file NAME``), ``[playlist]`` (PLS), an XML DASH manifest
    (``<MPD``), XSPF playlist (``<playlist``) or IMF composition playlist, and an SDP description
    (``v=0`` then ``o=``/``s=``/``m=`` lines).
    """
    by_extension = _INDIRECT_EXTENSIONS.get(path.suffix.lower())
    if by_extension is not None:
        return by_extension
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"#EXTM3U"):
        return "an HLS playlist" if b"#EXT-X-" in text else "an M3U playlist"
    first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(b"#")), b"")
    if _CONCAT_LINE_RE.match(first):
        return "an FFmpeg concat list"
    if text[:10].lower() == b"[playlist]":
        return "a PLS playlist"
    if text.startswith(b"<"):
        if b"<MPD" in text:
            return "a DASH manifest"
        if b"CompositionPlaylist" in text:
            return "an IMF composition playlist"
        if b"<playlist" in text and b"xspf" in text:
            return "an XSPF playlist"
    if text.startswith(b"v=0") and re.search(rb"[\r\n](o|s|m)=", text[:512]):
        return "an SDP session description"
    return None


def indirect_input_error(path: str | os.PathLike, kind: str) -> MediaError:
    """The one-line refusal of a playlist (or another input that names other files)."""
    return MediaError(
        f"{os.fsdecode(os.fspath(path))} is {kind}: omnizip reads one media file, not a list of other files"
        " (the files it names are not checked, so a cached answer could be stale)",
        hint=_INDIRECT_HINTS.get(kind, _INDIRECT_HINT),
    )


def url_scheme(path: str | os.PathLike) -> str | None:
    """The URL scheme ``path`` starts with (``"http"``, ``"s3"``...), or ``None`` for a plain path.

    Accepts the original string (``http://host/a.mp4``) and the :class:`Path` form, which
    collapses ``//`` (``http:/host/a.mp4``).
    """
    text = os.fsdecode(os.fspath(path))
    match = _URL_RE.match(text)
    return match.group(1).lower() if match else None


def _as_url(text: str) -> str:
    """Undo pathlib's ``//`` collapse for display: ``http:/host/a`` -> ``http://host/a``."""
    scheme, _, rest = text.partition(":/")
    return text if rest.startswith("/") or scheme.lower() == "file" else f"{scheme}://{rest}"


def check_path(path: str | os.PathLike) -> Path:
    """Return ``path`` as a :class:`Path` if it is a readable, non-empty regular file.

    A string or :class:`Path` that starts with a URL scheme (``http://``, ``https://``, ``rtmp://``,
    ``s3://``, ``file://``...) and is not an existing local path is rejected with a "download it
    first" hint: only local files are read.

    Playlists and other inputs that name other files (an HLS ``.m3u8``, an FFmpeg concat list,
    a DASH manifest..., see :func:`indirect_kind`) and FFmpeg protocol names (``concat:a|b``) are
    refused too: omnizip keys its prefix cache on the bytes of the one file it is given.

    Raises
    ------
    MediaError
        A URL, an FFmpeg protocol, missing, a broken symlink, a symlink loop, a parent folder that
        cannot be searched, a directory, not a regular file, unreadable, empty, or a playlist
        (always one line, exit code 1).
    """
    text = os.fsdecode(os.fspath(path))
    p = Path(text)
    protocol = ffmpeg_protocol(text)
    if protocol is not None and not os.path.lexists(text):
        hint = "pass the path of one local media file"
        if protocol.startswith("concat"):
            hint = "join the parts into one file first, e.g. ffmpeg -i 'concat:A|B' -c copy OUT.mkv, and pass that"
        raise MediaError(f"{text} is an FFmpeg protocol input ({protocol}:), not a file: omnizip reads one local"
                         " media file", hint=hint)
    scheme = url_scheme(text)
    if scheme is not None and not os.path.lexists(text):
        if scheme == "file":
            raise MediaError(
                f"{text} is a file:// URL, not a path", hint="pass the path itself (the part after file://)"
            )
        raise MediaError(f"{_as_url(text)} is a URL: omnizip reads local files only", hint=_URL_HINT)
    try:
        st = os.stat(p)  # follows symlinks
    except FileNotFoundError:
        if os.path.islink(p):
            raise MediaError(f"{p} is a broken symlink (it points to {os.readlink(p)}, which does not exist)") from None
        raise MediaError(f"no such file: {p}") from None
    except NotADirectoryError:
        raise MediaError(f"no such file: {p} (a part of the path is a file, not a folder)") from None
    except PermissionError:
        raise MediaError(f"cannot access {p}: permission denied (on a folder of the path)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaError(f"{p} is a symlink loop (it never resolves to a file)") from None
        raise MediaError(f"cannot access {p}: {one_line(exc.strerror or exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(f"{p} is a directory, not a media file")
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{p} is not a regular file")
    try:
        with open(p, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except PermissionError:
        raise MediaError(f"cannot read {p}: permission denied") from None
    except OSError as exc:
        raise MediaError(f"cannot read {p}: {one_line(exc.strerror or exc)}") from None
    if not head:
        raise MediaError(f"{p} is empty (0 bytes)")
    kind = indirect_kind(p, head)
    if kind is not None:
        raise indirect_input_error(p, kind)
    return p


def is_image_path(path: Path) -> bool:
    """True for the usual still-image file extensions."""
    return path.suffix.lower() in _IMAGE_EXTENSIONS


def images_error(path: Path) -> MediaError:
    """The error for a still image."""
    return MediaError(f"{path} is an image; images are not supported, only video and audio files", hint=_IMAGES_HINT)


def open_container(path: Path, hwaccel: object | None = None) -> av.container.InputContainer:
    """Open ``path`` for reading, mapping FFmpeg failures to :class:`MediaError`.

    ``hwaccel``: a PyAV ``HWAccel`` for hardware decoding (:mod:`.hwdecode`), or None."""
    try:
        # Absolute, so FFmpeg never takes a relative name with a colon ("a:b.mp4", "http:/x.mp4")
        # for a protocol (issue 18, case 10): check_path already rejected real URLs.
        extra = {"hwaccel": hwaccel} if hwaccel is not None else {}
        container = av.open(os.path.abspath(path), mode="r", **extra)
    except av.error.FFmpegError as exc:
        if is_image_path(path):
            raise images_error(path) from None
        raise UnreadableFile(
            f"cannot read {path}: not a media file FFmpeg understands, or the file is corrupt or truncated"
            f" ({ffmpeg_reason(exc)})"
        ) from None
    except (OSError, ValueError, UnicodeError) as exc:
        raise MediaError(f"cannot open {path}: {one_line(exc)}") from None
    try:
        if format_name(container) in _IMAGE_FORMATS or container.format.name.endswith("_pipe"):
            raise images_error(path)
        if format_name(container) in _TEXT_FORMATS:
            raise UnreadableFile(f"cannot read {path}: it is a text file, not a video or audio file")
        kind = next((_INDIRECT_FORMATS[n] for n in container.format.name.split(",") if n in _INDIRECT_FORMATS), None)
        if kind is not None:  # a playlist check_path did not recognise (it sniffs the usual ones)
            raise indirect_input_error(path, kind)
    except BaseException:
        container.close()
        raise
    return container


def demux_until_error(
    container: av.container.InputContainer, stream: av.stream.Stream, errors: list[str]
) -> Iterator[av.Packet]:
    """The packets of ``stream``, until its end or the first demuxing error.

    A broken file ends the iteration early instead of raising: the reason is appended to ``errors``
    so the caller can keep what was read and warn.
    """
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            errors.append(ffmpeg_reason(exc))
            return
        yield packet


def format_name(container: av.container.Container) -> str:
    """A short container name: the one matching the file extension when FFmpeg lists several."""
    names = container.format.name.split(",")
    ext = Path(container.name).suffix.lower().lstrip(".")
    return ext if ext in names or _EXT_FORMATS.get(ext) in names else names[0]


def is_cover_art(stream: av.stream.Stream) -> bool:
    """Attached pictures (album covers) and timed thumbnails are not video."""
    flags = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails
    return bool(stream.disposition & flags)


def is_default(stream: av.stream.Stream) -> bool:
    """True when the container flags the stream as the default of its type."""
    return bool(stream.disposition & av.stream.Disposition.default)


def pick_stream(container: av.container.InputContainer, kind: str) -> av.stream.Stream | None:
    """The stream of ``kind`` (``"video"``/``"audio"``) to use: the default-flagged one, else the first.

    Cover art is skipped. Streams whose codec this FFmpeg cannot decode are still returned (and then
    rejected with a clear message by :func:`require_decoder`) when nothing better exists.
    """
    candidates = [s for s in container.streams if s.type == kind and not is_cover_art(s)]
    if not candidates:
        return None
    decodable = [s for s in candidates if s.codec_context is not None] or candidates
    defaults = [s for s in decodable if is_default(s)]
    return (defaults or decodable)[0]


def codec_name(stream: av.stream.Stream | None) -> str | None:
    """Canonical codec name ("h264", "aac", "mp3"...), or None."""
    if stream is None:
        return None
    ctx = stream.codec_context
    if ctx is None:
        return None
    try:
        return ctx.codec.canonical_name
    except Exception:  # noqa: BLE001 - fall back to the context's name
        return ctx.name


def require_decoder(stream: av.stream.Stream, path: Path) -> None:
    """Raise :class:`MediaError` when FFmpeg has no decoder for ``stream``."""
    if stream.codec_context is not None:
        return
    if stream.type == "audio":
        raise UnreadableFile(
            f"the audio track of {path} uses a codec this FFmpeg build cannot decode",
            hint=(
                "pass --no-audio to use the video alone,"
                " or re-encode the audio (ffmpeg -i IN -c:v copy -c:a aac OUT.mp4)"
            ),
        )
    raise UnreadableFile(
        f"the video track of {path} uses a codec this FFmpeg build cannot decode",
        hint="re-encode it, e.g. ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4",
    )


def check_dimensions(width: int | None, height: int | None, path: Path) -> None:
    """Reject zero or absurd picture sizes (over 16384 px on a side, or more elongated than 200:1)."""
    w, h = int(width or 0), int(height or 0)
    if w <= 0 or h <= 0:
        raise MediaError(f"the video track of {path} has no valid picture size ({w}x{h}); the file is probably corrupt")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise MediaError(f"the video track of {path} has absurd dimensions {w}x{h} (the limit is {MAX_SIDE} px a side)")
    if max(w, h) / min(w, h) > 200:
        raise MediaError(f"the video track of {path} has an extreme aspect ratio {w}x{h} (the limit is 200:1)")


def stream_duration(stream: av.stream.Stream) -> float | None:
    """Header duration of a stream in seconds, if known."""
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


_MATROSKA_DURATION_RE = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


def stream_end(stream: av.stream.Stream, file_start_s: float) -> float | None:
    """Where the header says ``stream`` ends, in seconds from the file's start (None: not said).

    From the stream's start time and duration (MP4, MOV...), else from Matroska's per-track
    ``DURATION`` tag (FFmpeg writes the track's end time there; other muxers its length, which
    only makes the end look earlier: never a false "truncated").
    """
    time_base = stream.time_base
    if stream.duration is not None and time_base:
        start = float(stream.start_time * time_base) if stream.start_time is not None else file_start_s
        return start + float(stream.duration * time_base) - file_start_s
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    match = _MATROSKA_DURATION_RE.match(str(tag).strip()) if tag else None
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds) - file_start_s


def container_duration(container: av.container.InputContainer) -> float | None:
    """Header duration of the file in seconds, if known."""
    if container.duration is None:
        return None
    return container.duration / av.time_base


def container_start(container: av.container.InputContainer) -> float:
    """Start time of the file in seconds (0 when unknown); frame times are measured from it."""
    if container.start_time is None:
        return 0.0
    return container.start_time / av.time_base


def _rate(stream: av.stream.Stream) -> Fraction | None:
    for attr in ("average_rate", "guessed_rate", "base_rate"):
        value = getattr(stream, attr, None)
        if value:
            return Fraction(value)
    return None


def stream_rate(stream: av.stream.Stream) -> float | None:
    """Nominal frame rate of a video stream, if the header gives one."""
    rate = _rate(stream)
    return float(rate) if rate else None


def describe_stream(stream: av.stream.Stream) -> StreamInfo:
    """A :class:`StreamInfo` for ``stream`` from header data only."""
    ctx = stream.codec_context
    info: dict = {
        "index": stream.index,
        "type": stream.type,
        "codec": codec_name(stream),
        "decodable": ctx is not None,
        "default": is_default(stream),
        "attached_pic": is_cover_art(stream),
        "duration_s": stream_duration(stream),
        "language": stream.metadata.get("language") if stream.metadata else None,
    }
    if stream.type == "video" and ctx is not None:
        info.update(width=ctx.width or None, height=ctx.height or None, fps=stream_rate(stream))
    if stream.type == "audio" and ctx is not None:
        info.update(sample_rate=ctx.sample_rate or None, channels=ctx.layout.nb_channels or None)
    return StreamInfo(**info)


def probe(path: str | os.PathLike) -> MediaProbe:
    """Cheap stream information (no decoding): container, duration and the streams, with the video
    and audio streams that :func:`load_media` would pick.

    Raises
    ------
    MediaError
        The path is missing, unreadable, an image, or not a media file.
    """
    p = check_path(path)
    with open_container(p) as container:
        streams = tuple(describe_stream(s) for s in container.streams)
        video = pick_stream(container, "video")
        audio = pick_stream(container, "audio")
        return MediaProbe(
            path=str(p),
            container=format_name(container),
            duration_s=container_duration(container),
            streams=streams,
            video=next((s for s in streams if video is not None and s.index == video.index), None),
            audio=next((s for s in streams if audio is not None and s.index == audio.index), None),
        )
