"""Tests for omnizip_cli.media on real files written with PyAV (see media_factory.py).

Files are small (a few seconds, 160x96) and built once per session, on demand; a test whose encoder
is missing from PyAV's FFmpeg build is skipped with the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from omnizip_cli.errors import MediaError, UsageError
from omnizip_cli.media import (
    AUDIO_SAMPLE_RATE,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    MediaOptions,
    load_media,
    probe,
    sizing,
    smart_resize,
)
from omnizip_cli.media import container as media_container
from omnizip_cli.media.video import decoder_threading

try:
    from tests.helpers.media_factory import (
        AudioTrack,
        VideoSpec,
        corrupt_middle,
        has_encoder,
        patch_fourcc,
        truncate,
        write_media,
    )
except ImportError:  # tests/ on sys.path instead of the repository root
    from media_factory import (  # type: ignore[no-redef]
        AudioTrack,
        VideoSpec,
        corrupt_middle,
        has_encoder,
        patch_fourcc,
        truncate,
        write_media,
    )

SR = AUDIO_SAMPLE_RATE


# -- fixtures -------------------------------------------------------------------------------------
class MediaLibrary:
    """Builds test files on first use and caches them for the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def get(self, name: str) -> Path:
        if name not in self._built:
            builder, encoders = BUILDERS[name]
            missing = [e for e in encoders if not has_encoder(e)]
            if missing:
                pytest.skip(f"PyAV's FFmpeg has no {', '.join(missing)} encoder")
            self._built[name] = builder(self)
        return self._built[name]

    def path(self, name: str) -> Path:
        return self.root / name


BUILDERS: dict[str, tuple[Callable[[MediaLibrary], Path], tuple[str, ...]]] = {}


def media_file(name: str, video: VideoSpec | None, audio: tuple[AudioTrack, ...] = (), *encoders: str) -> None:
    """Register a file made by write_media."""
    needed = tuple(encoders) + ((video.codec,) if video else ()) + tuple(t.codec for t in audio)
    BUILDERS[name] = (lambda lib: write_media(lib.path(name), video, audio), needed)


V3 = VideoSpec(width=160, height=96, fps=10, seconds=3.0)
media_file("h264_aac.mp4", V3, (AudioTrack("aac", 44100, 2, seconds=3.0),))
media_file(
    "vp9_opus.webm", VideoSpec(codec="libvpx-vp9", fps=10, seconds=3.0), (AudioTrack("libopus", 48000, 1, seconds=3.0),)
)
media_file(
    "two_tracks.mkv",
    V3,
    (
        AudioTrack("aac", 44100, 1, seconds=2.0, freq=440, default=False),
        AudioTrack("libopus", 48000, 2, seconds=2.5, freq=1000, default=True),
    ),
)
media_file("h264_pcm.mov", V3, (AudioTrack("pcm_s16le", 48000, 2, seconds=3.0),))
media_file(
    "mpeg4_mp3.avi", VideoSpec(codec="mpeg4", fps=10, seconds=3.0), (AudioTrack("libmp3lame", 44100, 1, seconds=3.0),)
)
media_file("h264_aac.ts", V3, (AudioTrack("aac", 48000, 2, seconds=3.0),))
media_file("rot_m90.mp4", VideoSpec(rotation=-90, fps=10, seconds=2.0))
media_file("rot_p90.mp4", VideoSpec(rotation=90, fps=10, seconds=2.0))
media_file("rot_180.mp4", VideoSpec(rotation=180, fps=10, seconds=2.0))
VFR_TIMES = (0.0, 0.05, 0.1, 0.4, 0.45, 1.0, 1.02, 1.5, 2.2, 2.3, 2.35, 2.9, 3.6, 3.62, 4.1)
media_file("vfr.mp4", VideoSpec(fps=30, pts_s=VFR_TIMES))
media_file("odd_333x197.mp4", VideoSpec(width=333, height=197, pix_fmt="yuv444p", fps=10, seconds=2.0))
media_file("no_audio.mp4", V3)
media_file("hd_1280x720.mp4", VideoSpec(width=1280, height=720, fps=10, seconds=1.0))
media_file("one_frame.mp4", VideoSpec(fps=10, seconds=0.1))
media_file("long_audio.mp4", VideoSpec(fps=5, seconds=4.0), (AudioTrack("aac", 16000, 1, seconds=4.0),))
media_file("stereo_44k.wav", None, (AudioTrack("pcm_s16le", 44100, 2, seconds=2.0),))
media_file("mono_48k.flac", None, (AudioTrack("flac", 48000, 1, seconds=2.0),))
media_file("stereo_44k.mp3", None, (AudioTrack("libmp3lame", 44100, 2, seconds=2.0),))
media_file("opus_48k.ogg", None, (AudioTrack("libopus", 48000, 1, seconds=2.0),))
media_file("vorbis_44k.ogg", None, (AudioTrack("vorbis", 44100, 2, seconds=2.0),))
media_file("aac_44k.m4a", None, (AudioTrack("aac", 44100, 1, seconds=2.0),))
media_file("empty_audio.wav", None, (AudioTrack("pcm_s16le", 16000, 1, seconds=0.0),))
media_file("short_audio.wav", None, (AudioTrack("pcm_s16le", 16000, 1, seconds=0.02),))
media_file("empty_video.mkv", VideoSpec(seconds=0.0), (AudioTrack("libopus", 48000, 1, seconds=1.0),))
media_file("huge.mkv", VideoSpec(width=17000, height=64, codec="mjpeg", pix_fmt="yuvj420p", fps=5, seconds=0.4))
media_file("long.mkv", VideoSpec(fps=10, seconds=6.0), (AudioTrack("libopus", 48000, 1, seconds=6.0),))
media_file("long.mp4", VideoSpec(fps=10, seconds=6.0), (AudioTrack("aac", 44100, 1, seconds=6.0),))
media_file("gap_10h.mp4", VideoSpec(fps=30, pts_s=(0.0, 36000.0)))  # 2 frames, 10 hours apart


def _derived(name: str, source: str, make: Callable[[Path, Path], Path]) -> None:
    def build(lib: MediaLibrary) -> Path:
        return make(lib.get(source), lib.path(name))

    BUILDERS[name] = (build, ())


_derived("half.mp4", "h264_aac.mp4", lambda src, dst: truncate(src, dst, 0.5))
_derived("half.mkv", "long.mkv", lambda src, dst: truncate(src, dst, 0.5))
_derived("corrupt_middle.mp4", "long.mp4", lambda src, dst: corrupt_middle(src, dst))
_derived("unknown_codec.mp4", "no_audio.mp4", lambda src, dst: patch_fourcc(src, dst, b"avc1", b"zzzz"))
_derived(
    "unknown_audio_codec.webm", "vp9_opus.webm", lambda src, dst: patch_fourcc(src, dst, b"A_OPUS", b"A_ZZZZ", b"")
)
_derived("unknown_default_track.mkv", "two_tracks.mkv", lambda s, d: patch_fourcc(s, d, b"A_OPUS", b"A_ZZZZ", b""))


def _write_bytes(name: str, data: bytes) -> None:
    def build(lib: MediaLibrary) -> Path:
        path = lib.path(name)
        path.write_bytes(data)
        return path

    BUILDERS[name] = (build, ())


_write_bytes("text.mp4", b"hello, this is not a video\n" * 40)
_write_bytes("random.mp4", np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
_write_bytes("zero.mp4", b"")
_write_bytes("subtitles.srt", b"1\n00:00:01,000 --> 00:00:02,000\nHello\n\n2\n00:00:03,000 --> 00:00:04,000\nWorld\n")


def _png(lib: MediaLibrary) -> Path:
    path = lib.path("still.png")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 48, 32, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 48, 3), np.uint8), format="rgb24")
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _cover_mp3(lib: MediaLibrary) -> Path:
    path = lib.path("cover.mp3")
    track = AudioTrack("libmp3lame", 44100, 1, seconds=1.0)
    with av.open(str(path), "w") as out:
        audio = out.add_stream("libmp3lame", rate=44100)
        audio.layout = "mono"
        cover = out.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        out.start_encoding()
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")
        picture.pts = 0
        out.mux(cover.encode(picture))
        out.mux(cover.encode(None))
        data = track.samples()
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


BUILDERS["still.png"] = (_png, ("png",))
BUILDERS["cover.mp3"] = (_cover_mp3, ("libmp3lame", "mjpeg"))


@pytest.fixture(scope="session")
def lib(tmp_path_factory: pytest.TempPathFactory) -> MediaLibrary:
    return MediaLibrary(tmp_path_factory.mktemp("media"))


# -- helpers --------------------------------------------------------------------------------------
def all_frame_times(path: Path) -> np.ndarray:
    """Presentation time of every frame, by decoding everything with plain PyAV (the reference)."""
    with av.open(str(path)) as container:
        start = container.start_time / av.time_base if container.start_time is not None else 0.0
        return np.array([f.time - start for f in container.decode(video=0)])


def expected_times(path: Path, n: int) -> np.ndarray:
    """Nearest frame to each of n evenly spaced targets from the first to the last frame."""
    times = all_frame_times(path)
    targets = np.linspace(times[0], times[-1], n)
    return np.array([times[np.argmin(np.abs(times - t))] for t in targets])


def expected_n(path: Path, fps: float = 2.0, max_frames: int = 768) -> int:
    """qwen-omni-utils' frame count for the whole clip."""
    times = all_frame_times(path)
    step = np.median(np.diff(times)) if len(times) > 1 else 0.1
    duration = times[-1] - times[0] + step
    wanted = min(max(duration * fps, 4), max_frames // 2 * 2, len(times))
    return max(2, int(wanted + 1e-6) // 2 * 2)


def assert_frames_ok(media, options: MediaOptions | None = None) -> None:
    options = options or MediaOptions()
    frames = media.frames
    assert frames is not None and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3
    t, h, w, _ = frames.shape
    assert t % 2 == 0 and t >= 2
    assert h % 28 == 0 and w % 28 == 0
    budget = sizing.frame_pixel_budget(t, options.min_pixels, options.max_pixels, options.effective_total_pixels)
    assert options.min_pixels <= h * w <= budget
    assert media.frame_times.shape == (t,)
    assert np.all(np.diff(media.frame_times) >= 0)
    s = media.summary
    assert (s.frames_sampled, s.frame_height, s.frame_width) == (t, h, w)


def audio_tolerance(frame_size: int, rate_in: int, frames: float = 1.0) -> int:
    """Allowed length error at 16 kHz: ``frames`` codec frames of ``frame_size`` samples, plus rounding."""
    return int(np.ceil(frames * frame_size * SR / rate_in)) + 2


def assert_audio_len(media, seconds: float, tolerance: int) -> None:
    audio = media.audio
    assert audio is not None and audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - seconds * SR) <= tolerance, (len(audio), seconds * SR, tolerance)
    assert media.summary.audio_seconds == pytest.approx(len(audio) / SR)


def dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio[:SR]))
    return float(np.argmax(spectrum) * SR / min(len(audio), SR))


def assert_one_line_media_error(exc_info: pytest.ExceptionInfo, *fragments: str) -> None:
    exc = exc_info.value
    assert isinstance(exc, MediaError) and exc.exit_code == 1
    for text in (str(exc), exc.one_line()):
        assert "\n" not in text and text.strip() == text and text
    for fragment in fragments:
        assert fragment.lower() in exc.one_line().lower(), (fragment, exc.one_line())


# -- sizing (pure) --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size, expected",
    [
        ((720, 1280), (560, 1008)),  # downscaled into max_pixels
        ((360, 640), (364, 644)),  # rounded to multiples of 28
        ((96, 160), (252, 420)),  # upscaled to min_pixels
        ((1080, 1920), (560, 1008)),
        ((1920, 1080), (1008, 560)),
    ],
)
def test_smart_resize_known_values(size, expected):
    assert smart_resize(*size) == expected


def test_smart_resize_invariants():
    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(20, 4000, 2))
        if max(h, w) / min(h, w) > 200:
            continue
        rh, rw = smart_resize(h, w)
        assert rh % 28 == 0 and rw % 28 == 0
        assert rh * rw <= VIDEO_MAX_PIXELS
        assert rh * rw >= VIDEO_MIN_PIXELS or rh * rw > VIDEO_MAX_PIXELS * 0.5
        assert abs(np.log((rw / rh) / (w / h))) < 0.35


@pytest.mark.parametrize("size", [(0, 100), (100, -1), (10, 3000)])
def test_smart_resize_rejects_bad_sizes(size):
    with pytest.raises(ValueError):
        smart_resize(*size)


@pytest.mark.parametrize(
    "duration, fps, available, max_frames, expected",
    [
        (6.0, 2.0, 150, 768, 12),
        (5.9, 2.0, 150, 768, 10),  # floor to even, like qwen-omni-utils
        (1.0, 2.0, 30, 768, 4),  # FPS_MIN_FRAMES
        (1000.0, 2.0, 30000, 768, 768),
        (1000.0, 2.0, 30000, 101, 100),  # odd cap rounds down
        (10.0, 2.0, 3, 768, 2),  # not more than the frames available
        (0.1, 2.0, 1, 768, 2),  # one frame: used twice
    ],
)
def test_count_frames(duration, fps, available, max_frames, expected):
    assert sizing.count_frames(duration, fps, available, max_frames) == expected


def test_pixel_budget_matches_qwen_formula():
    assert sizing.frame_pixel_budget(12, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS, None) == VIDEO_MAX_PIXELS
    assert sizing.frame_pixel_budget(12, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS, 1_200_000) == 200_000
    # never below 1.05 * min_pixels, never above max_pixels
    assert sizing.frame_pixel_budget(768, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS, 10_000) == int(VIDEO_MIN_PIXELS * 1.05)
    assert sizing.frame_pixel_budget(2, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS, 10**12) == VIDEO_MAX_PIXELS


def test_nearest_indices_prefers_earlier_on_ties():
    times = np.array([0.0, 1.0, 2.0])
    assert sizing.nearest_indices(times, np.array([0.5, 1.4, 1.6, 5.0, -1.0])).tolist() == [0, 1, 2, 2, 0]


def test_decoder_threading_policy():
    assert decoder_threading(2) == ("SLICE", 0)
    assert decoder_threading(16) == ("AUTO", 0)


# -- options --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"fps": 0}, "--fps"),
        ({"fps": float("nan")}, "--fps"),
        ({"max_frames": 1}, "--max-frames"),
        ({"max_frames": 2.5}, "--max-frames"),
        ({"min_pixels": 0}, "--min-pixels"),
        ({"max_pixels": 100}, "--max-pixels"),
        ({"min_pixels": 200_000, "max_pixels": 100_000}, "--max-pixels"),
        ({"total_pixels": 10}, "--total-pixels"),
        ({"max_audio_seconds": -1}, "--max-audio-seconds"),
        ({"use_audio": "no"}, "use_audio"),
    ],
)
def test_options_validation(kwargs, flag):
    with pytest.raises(UsageError) as info:
        MediaOptions(**kwargs)
    assert info.value.exit_code == 2 and flag in str(info.value) and "\n" not in str(info.value)


def test_options_defaults_are_qwen_defaults():
    o = MediaOptions()
    assert (o.fps, o.max_frames, o.min_pixels, o.max_pixels, o.total_pixels) == (2.0, 768, 100352, 602112, None)
    assert o.use_audio and o.max_audio_seconds is None
    assert o.to_dict()["fps"] == 2.0


# -- containers and codecs ------------------------------------------------------------------------
def test_h264_aac_mp4(lib):
    path = lib.get("h264_aac.mp4")
    media = load_media(path)
    assert_frames_ok(media)
    assert media.frames.shape == (6, 252, 420, 3)  # 3 s at 2 fps; 160x96 upscaled to min_pixels
    np.testing.assert_allclose(media.frame_times, [0.0, 0.6, 1.2, 1.7, 2.3, 2.9], atol=1e-6)
    assert_audio_len(media, 3.0, audio_tolerance(1024, 44100))
    s = media.summary
    assert (s.kind, s.container, s.video_codec, s.audio_codec) == ("video+audio", "mp4", "h264", "aac")
    assert (s.audio_sample_rate_in, s.audio_channels_in) == (44100, 2)
    assert (s.source_width, s.source_height, s.rotation) == (160, 96, 0)
    assert s.fps_used == pytest.approx(2.0)
    assert s.duration_s == pytest.approx(3.0, abs=0.05)
    assert s.decode_seconds > 0 and s.warnings == () and not s.audio_truncated
    assert media.has_video and media.has_audio
    json.dumps(s.to_dict())


@pytest.mark.parametrize(
    "name, vcodec, acodec, rate, channels, seconds, tolerance",
    [
        ("vp9_opus.webm", "vp9", "opus", 48000, 1, 3.0, audio_tolerance(960, 48000)),
        ("h264_pcm.mov", "h264", "pcm_s16le", 48000, 2, 3.0, 2),
        # MP3 in AVI: the container cannot carry the encoder delay and padding (576 + up to 1152
        # samples), so the decoded length may exceed one frame.
        ("mpeg4_mp3.avi", "mpeg4", "mp3", 44100, 1, 3.0, audio_tolerance(1152, 44100, frames=2)),
        # MPEG-TS starts its clock at 1.4 s and cannot signal AAC priming either.
        ("h264_aac.ts", "h264", "aac", 48000, 2, 3.0, audio_tolerance(1024, 48000, frames=2)),
    ],
)
def test_other_containers(lib, name, vcodec, acodec, rate, channels, seconds, tolerance):
    path = lib.get(name)
    media = load_media(path)
    assert_frames_ok(media)
    n = expected_n(path)
    assert media.frames.shape[0] == n == 6
    np.testing.assert_allclose(media.frame_times, expected_times(path, n), atol=1e-6)
    assert_audio_len(media, seconds, tolerance)
    s = media.summary
    assert (s.video_codec, s.audio_codec) == (vcodec, acodec)
    assert (s.audio_sample_rate_in, s.audio_channels_in) == (rate, channels)
    assert s.kind == "video+audio" and s.container == {"ts": "mpegts"}.get(Path(name).suffix[1:], Path(name).suffix[1:])
    assert 0.0 <= media.frame_times[0] < 0.1


def test_mkv_uses_the_default_audio_track(lib):
    media = load_media(lib.get("two_tracks.mkv"))
    s = media.summary
    assert s.container == "mkv"
    assert (s.audio_codec, s.audio_sample_rate_in, s.audio_channels_in) == ("opus", 48000, 2)
    assert_audio_len(media, 2.5, audio_tolerance(960, 48000))  # the 2.5 s track, not the 2.0 s one
    assert abs(dominant_hz(media.audio) - 1000) < 5
    info = probe(lib.get("two_tracks.mkv"))
    assert [st.type for st in info.streams] == ["video", "audio", "audio"]
    assert info.audio.index == 2 and info.audio.default and info.video.index == 0


def test_stereo_is_averaged_to_mono(lib):
    # channel 0 carries the tone at 0.5, channel 1 at 0.25: their mean peaks at 0.375
    media = load_media(lib.get("stereo_44k.wav"))
    assert float(np.max(np.abs(media.audio[1000:-1000]))) == pytest.approx(0.375, abs=0.01)
    assert abs(dominant_hz(media.audio) - 440) < 3


@pytest.mark.parametrize("rotation, stripe", [(-90, "top"), (90, "bottom"), (180, "right")])
def test_rotation_metadata(lib, rotation, stripe):
    name = {-90: "rot_m90.mp4", 90: "rot_p90.mp4", 180: "rot_180.mp4"}[rotation]
    media = load_media(lib.get(name))
    assert_frames_ok(media)
    t, h, w, _ = media.frames.shape
    assert (h, w) == ((420, 252) if rotation in (90, -90) else (252, 420))
    assert media.summary.rotation == rotation
    assert (media.summary.source_width, media.summary.source_height) == (160, 96)
    # the stored picture has a white stripe down its left quarter; find where it went
    gray = media.frames[0].mean(axis=2)
    edges = {
        "top": gray[: h // 8].mean(),
        "bottom": gray[-h // 8 :].mean(),
        "left": gray[:, : w // 8].mean(),
        "right": gray[:, -w // 8 :].mean(),
    }
    assert max(edges, key=edges.get) == stripe and edges[stripe] > 200


def test_variable_frame_rate_samples_by_time(lib):
    path = lib.get("vfr.mp4")
    media = load_media(path)
    assert_frames_ok(media)
    times = np.array(VFR_TIMES)
    step = np.median(np.diff(times))
    n = int((times[-1] - times[0] + step) * 2 + 1e-6) // 2 * 2
    assert media.frames.shape[0] == n == 8
    targets = np.linspace(0.0, times[-1], n)
    nearest = np.array([times[np.argmin(np.abs(times - t))] for t in targets])
    np.testing.assert_allclose(media.frame_times, nearest, atol=1e-3)
    # by frame index the picks would differ (e.g. index-based sampling takes 0.1 s for the 0.6 s target)
    gaps = np.diff(times).max()
    assert np.all(np.abs(media.frame_times - targets) <= gaps / 2 + 1e-6)


def test_odd_dimensions(lib):
    media = load_media(lib.get("odd_333x197.mp4"))
    assert_frames_ok(media)
    _, h, w, _ = media.frames.shape
    assert (media.summary.source_width, media.summary.source_height) == (333, 197)
    assert abs(w / h - 333 / 197) < 0.1


@pytest.mark.parametrize("name, interpolation", [("h264_aac.mp4", "BICUBIC"), ("hd_1280x720.mp4", "AREA")])
def test_frames_are_the_nearest_frames_bit_exact(lib, name, interpolation):
    """Skipping non-reference frames in the decoder must not change any chosen frame (enlarged with
    bicubic, shrunk with area averaging)."""
    path = lib.get(name)
    media = load_media(path)
    _, h, w, _ = media.frames.shape
    wanted = {round(t, 6) for t in media.frame_times}
    reference = {}
    from av.video.reformatter import VideoReformatter

    scaler = VideoReformatter()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if round(frame.time, 6) in wanted:
                reference[round(frame.time, 6)] = scaler.reformat(
                    frame, width=w, height=h, format="rgb24", interpolation=interpolation, threads=1
                ).to_ndarray()
    for k, t in enumerate(media.frame_times):
        np.testing.assert_array_equal(media.frames[k], reference[round(t, 6)])


def test_pixel_and_frame_budgets(lib):
    path = lib.get("h264_aac.mp4")
    capped = load_media(path, MediaOptions(max_frames=4))
    assert capped.frames.shape[0] == 4
    assert any("--max-frames 4" in w for w in capped.summary.warnings)
    small = load_media(path, MediaOptions(total_pixels=6 * 60_000))
    assert_frames_ok(small, MediaOptions(total_pixels=6 * 60_000))
    h, w = small.frames.shape[1:3]
    assert h * w <= max(6 * 60_000 / 6 * 2, int(VIDEO_MIN_PIXELS * 1.05))
    tight = MediaOptions(min_pixels=28 * 28, max_pixels=4 * 28 * 28)
    tiny = load_media(path, tight)
    assert_frames_ok(tiny, tight)
    one_fps = load_media(path, MediaOptions(fps=1.0))
    assert one_fps.frames.shape[0] == 4  # 3 s at 1 fps -> 3, raised to FPS_MIN_FRAMES


def test_single_frame_video_is_doubled(lib):
    media = load_media(lib.get("one_frame.mp4"))
    assert media.frames.shape[0] == 2
    np.testing.assert_array_equal(media.frames[0], media.frames[1])
    assert any("single frame" in w for w in media.summary.warnings)


def test_video_without_audio(lib):
    media = load_media(lib.get("no_audio.mp4"))
    assert media.audio is None and not media.has_audio
    assert media.summary.kind == "video" and media.summary.audio_codec is None
    assert media.summary.audio_seconds == 0.0


def test_no_audio_option_ignores_the_track(lib):
    media = load_media(lib.get("h264_aac.mp4"), MediaOptions(use_audio=False))
    assert media.audio is None and media.frames is not None
    assert media.summary.kind == "video" and media.summary.audio_codec == "aac"


def test_max_audio_seconds_cuts_and_reports(lib):
    path = lib.get("long_audio.mp4")
    full = load_media(path)
    assert full.summary.audio_truncated is False
    assert_audio_len(full, 4.0, audio_tolerance(1024, 16000))
    cut = load_media(path, MediaOptions(max_audio_seconds=1.5))
    assert len(cut.audio) == 1.5 * SR and cut.summary.audio_seconds == 1.5
    assert cut.summary.audio_truncated is True
    assert any("--max-audio-seconds" in w for w in cut.summary.warnings)


@pytest.mark.parametrize(
    "name, codec, rate, channels, tolerance",
    [
        ("stereo_44k.wav", "pcm_s16le", 44100, 2, 2),
        ("mono_48k.flac", "flac", 48000, 1, 2),
        ("stereo_44k.mp3", "mp3", 44100, 2, audio_tolerance(1152, 44100)),
        ("opus_48k.ogg", "opus", 48000, 1, audio_tolerance(960, 48000)),
        ("vorbis_44k.ogg", "vorbis", 44100, 2, audio_tolerance(1024, 44100)),
        ("aac_44k.m4a", "aac", 44100, 1, audio_tolerance(1024, 44100)),
    ],
)
def test_audio_only_files(lib, name, codec, rate, channels, tolerance):
    media = load_media(lib.get(name))
    assert media.frames is None and media.frame_times is None and not media.has_video
    assert_audio_len(media, 2.0, tolerance)
    s = media.summary
    assert (s.kind, s.audio_codec, s.audio_sample_rate_in, s.audio_channels_in) == ("audio", codec, rate, channels)
    assert (s.frames_sampled, s.frame_height, s.frame_width, s.fps_used) == (0, 0, 0, 0.0)
    assert s.video_codec is None and s.source_width is None
    assert s.duration_s == pytest.approx(len(media.audio) / SR, abs=1e-3)


def test_cover_art_is_not_video(lib):
    path = lib.get("cover.mp3")
    media = load_media(path)
    assert media.summary.kind == "audio" and media.frames is None
    assert_audio_len(media, 1.0, audio_tolerance(1152, 44100))
    info = probe(path)
    assert not info.has_video and info.has_audio
    assert any(s.attached_pic for s in info.streams)


def test_librosa_fallback_when_pyav_cannot_open(lib, monkeypatch):
    path = lib.get("mono_48k.flac")

    def refuse(p):
        raise media_container.UnreadableFile(f"cannot read {p}: simulated")

    monkeypatch.setattr(media_container, "open_container", refuse)
    media = load_media(path)
    assert media.summary.kind == "audio" and "librosa" in media.summary.warnings[0]
    assert_audio_len(media, 2.0, 2)


# -- damaged but usable ---------------------------------------------------------------------------
def test_truncated_mkv_keeps_what_decoded(lib):
    media = load_media(lib.get("half.mkv"))
    assert_frames_ok(media)
    assert 2.0 < media.summary.duration_s < 4.5
    assert media.frames.shape[0] == expected_n(lib.get("half.mkv"))
    assert media.audio is not None and 2.0 * SR < len(media.audio) < 4.5 * SR
    assert any("truncated" in w or "ends early" in w for w in media.summary.warnings)
    assert all("\n" not in w for w in media.summary.warnings)


def test_corrupt_middle_is_skipped_with_a_warning(lib):
    media = load_media(lib.get("corrupt_middle.mp4"))
    assert_frames_ok(media)
    assert media.frames.shape[0] == 12
    assert media.audio is not None and len(media.audio) > 2 * SR
    assert media.summary.warnings, "damaged packets must be reported"


# -- bad input: one-line MediaError ---------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(MediaError) as info:
        load_media(tmp_path / "nope.mp4")
    assert_one_line_media_error(info, "no such file")


def test_directory(tmp_path):
    with pytest.raises(MediaError) as info:
        load_media(tmp_path)
    assert_one_line_media_error(info, "is a directory")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_permissions(lib, tmp_path):
    path = tmp_path / "secret.mp4"
    path.write_bytes(lib.get("h264_aac.mp4").read_bytes())
    path.chmod(0)
    try:
        with pytest.raises(MediaError) as info:
            load_media(path)
        assert_one_line_media_error(info, "permission denied")
    finally:
        path.chmod(0o600)


UNREADABLE_AS_NOBODY = r"""
import sys
from omnizip_cli.errors import MediaError
from omnizip_cli.media import load_media
try:
    load_media(sys.argv[1])
except MediaError as exc:
    print(exc.exit_code, exc.one_line())
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to run a child as nobody")
@pytest.mark.parametrize("locked", ["file", "folder"])
def test_unreadable_permissions_as_another_user(lib, locked):
    """Root reads anything, so the check runs in a real child process that drops to ``nobody``."""
    import subprocess
    import sys
    import tempfile

    try:
        subprocess.run([sys.executable, "-c", "import omnizip_cli.media"], user=65534, check=True, timeout=60,
                       cwd="/", env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"user nobody cannot run this interpreter or import the package here ({type(exc).__name__})")
    root = Path(tempfile.mkdtemp(prefix="omnizip-perm-"))
    try:
        root.chmod(0o755)
        folder = root / "sub"
        folder.mkdir(mode=0o755)
        path = folder / "secret.mp4"
        path.write_bytes(lib.get("h264_aac.mp4").read_bytes())
        (path if locked == "file" else folder).chmod(0)
        repo = Path(__file__).resolve().parents[1]
        result = subprocess.run(
            [sys.executable, "-c", UNREADABLE_AS_NOBODY, str(path)],
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
            user=65534,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        folder.chmod(0o755)
        import shutil

        shutil.rmtree(root)
    expected = {
        "file": f"1 cannot read {path}: permission denied",
        "folder": f"1 cannot access {path}: permission denied (on a folder of the path)",
    }[locked]
    assert result.stdout.strip() == expected, result.stderr[-2000:]


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_unreadable_file_even_for_root():
    """``/proc/self/mem`` is a regular file that no one can read from offset 0 (EIO), root included."""
    with pytest.raises(MediaError) as info:
        load_media("/proc/self/mem")
    assert_one_line_media_error(info, "cannot read /proc/self/mem: input/output error")


@pytest.mark.parametrize(
    "given, shown",
    [
        ("http://example.com/a.mp4", "http://example.com/a.mp4"),
        (Path("http://example.com/a.mp4"), "http://example.com/a.mp4"),  # pathlib collapses the //
        ("https://example.com/v?id=1&t=2", "https://example.com/v?id=1&t=2"),
        (Path("rtmp://live.example.com/app/stream"), "rtmp://live.example.com/app/stream"),
        ("rtsp://camera.local:554/feed", "rtsp://camera.local:554/feed"),
        ("ftp://host/pub/a.mkv", "ftp://host/pub/a.mkv"),
        ("s3://bucket/key.mp4", "s3://bucket/key.mp4"),
        ("HTTP://EXAMPLE.COM/A.MP4", "HTTP://EXAMPLE.COM/A.MP4"),
    ],
)
def test_urls_are_rejected_with_a_download_hint(given, shown):
    with pytest.raises(MediaError) as info:
        load_media(given)
    assert_one_line_media_error(info, "download it first")
    assert info.value.one_line().startswith(f"{shown} is a URL: omnizip reads local files only")


def test_file_urls_ask_for_the_path():
    with pytest.raises(MediaError) as info:
        load_media("file:///tmp/a.mp4")
    assert_one_line_media_error(info, "is a file:// URL, not a path", "pass the path itself")


def test_a_local_folder_named_like_a_scheme_is_a_path(lib, tmp_path, monkeypatch):
    (tmp_path / "http:").mkdir()
    (tmp_path / "http:" / "a.mp4").write_bytes(lib.get("h264_aac.mp4").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert load_media("http:/a.mp4").frames is not None


def test_symlink_loop(tmp_path):
    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    with pytest.raises(MediaError) as info:
        load_media(tmp_path / "a.mp4")
    assert_one_line_media_error(info, "is a symlink loop")
    assert "no such file" not in info.value.one_line()


def test_broken_symlink(tmp_path):
    (tmp_path / "a.mp4").symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(MediaError) as info:
        load_media(tmp_path / "a.mp4")
    assert_one_line_media_error(info, "broken symlink", "gone.mp4")


def test_two_frames_ten_hours_apart(lib):
    """The duration is the real span (gap counted once), two frames are used, and the gap is reported."""
    media = load_media(lib.get("gap_10h.mp4"))
    summary = media.summary
    assert 36000.0 <= summary.duration_s < 36001.0  # not 72000 (the gap used to count twice)
    assert summary.frames_sampled == 2 and media.frames.shape[0] == 2
    assert media.frame_times.tolist() == pytest.approx([0.0, 36000.0])
    assert [w for w in summary.warnings if "jump by 36000 s (10.0 h) after 0.0 s" in w]
    assert not [w for w in summary.warnings if "--max-frames" in w]  # all frames are used: nothing capped


def test_unreadable_permissions_simulated(lib, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(media_container, "open", denied, raising=False)
    with pytest.raises(MediaError) as info:
        load_media(lib.get("h264_aac.mp4"))
    assert_one_line_media_error(info, "permission denied")


@pytest.mark.parametrize(
    "name, fragments",
    [
        ("zero.mp4", ("empty",)),
        ("text.mp4", ("not a media file",)),
        ("random.mp4", ("not a media file",)),
        ("half.mp4", ("corrupt or truncated",)),
        ("still.png", ("images are not supported",)),
        ("unknown_codec.mp4", ("cannot decode", "video")),
        ("huge.mkv", ("absurd dimensions", "17000x64")),
        ("subtitles.srt", ("no video or audio stream",)),
        ("empty_video.mkv", ("empty", "no frames")),
        ("empty_audio.wav", ("no usable audio",)),
        ("short_audio.wav", ("no usable audio",)),
    ],
)
def test_bad_input(lib, name, fragments):
    with pytest.raises(MediaError) as info:
        load_media(lib.get(name))
    assert_one_line_media_error(info, *fragments)


def test_undecodable_audio_track_suggests_no_audio(lib):
    path = lib.get("unknown_audio_codec.webm")
    with pytest.raises(MediaError) as info:
        load_media(path)
    assert_one_line_media_error(info, "audio track", "cannot decode", "--no-audio")
    media = load_media(path, MediaOptions(use_audio=False))
    assert media.summary.kind == "video" and media.frames.shape[0] == 6


def test_undecodable_default_track_falls_back_to_a_decodable_one(lib):
    media = load_media(lib.get("unknown_default_track.mkv"))
    assert (media.summary.audio_codec, media.summary.audio_sample_rate_in) == ("aac", 44100)
    assert_audio_len(media, 2.0, audio_tolerance(1024, 44100))


def test_no_audio_option_on_an_audio_file(lib):
    with pytest.raises(MediaError) as info:
        load_media(lib.get("mono_48k.flac"), MediaOptions(use_audio=False))
    assert_one_line_media_error(info, "--no-audio")


SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.mark.parametrize(
    "name, kind, frames, seconds",
    [("talking.mp4", "video+audio", 12, 6.4), ("silent.mp4", "video", 8, 4.0), ("speech.wav", "audio", 0, 4.3)],
)
def test_committed_samples(name, kind, frames, seconds):
    media = load_media(SAMPLES / name)
    s = media.summary
    assert (s.kind, s.frames_sampled) == (kind, frames)
    assert s.duration_s == pytest.approx(seconds, abs=0.1)
    if frames:
        assert (s.frame_height, s.frame_width) == (252, 448)  # already multiples of 28: not rescaled
    if media.audio is not None:
        assert float(np.sqrt(np.mean(media.audio**2))) > 0.02  # there is speech, not silence
    assert s.warnings == ()


def test_probe_is_cheap_and_describes_streams(lib):
    info = probe(lib.get("h264_aac.mp4"))
    assert info.container == "mp4" and info.has_video and info.has_audio
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 160, 96)
    assert info.video.fps == pytest.approx(10.0)
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 44100, 2)
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    json.dumps(info.to_dict())
    with pytest.raises(MediaError) as bad:
        probe(lib.get("text.mp4"))
    assert_one_line_media_error(bad, "not a media file")


def test_a_relative_name_with_a_colon_is_a_file(lib, tmp_path, monkeypatch):
    """FFmpeg would read ``clip:1.mp4`` as protocol ``clip``: the loader opens an absolute path."""
    (tmp_path / "clip:1.mp4").write_bytes(lib.get("h264_aac.mp4").read_bytes())
    monkeypatch.chdir(tmp_path)
    media = load_media("clip:1.mp4")
    assert media.frames is not None and media.summary.path == "clip:1.mp4"


def test_token_pixels_sizes_frames_for_the_models_token(lib):
    """``token_pixels`` (the adapter's ``VisionGeometry.token_pixels``): sides are multiples of it,
    within the same pixel bounds; the default is 28 (Qwen2.5-Omni), frame for frame."""
    assert sizing.output_size(360, 640, 0, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS, 32) == smart_resize(360, 640, 32)
    assert smart_resize(360, 640, 32) == (352, 640)
    path = lib.get("h264_aac.mp4")
    default = load_media(path)
    np.testing.assert_array_equal(default.frames, load_media(path, token_pixels=28).frames)
    qwen3 = load_media(path, token_pixels=32)
    h, w = qwen3.frames.shape[1:3]
    assert h % 32 == 0 and w % 32 == 0 and VIDEO_MIN_PIXELS <= h * w <= VIDEO_MAX_PIXELS
    assert qwen3.frames.shape[0] == default.frames.shape[0]
    np.testing.assert_array_equal(qwen3.frame_times, default.frame_times)
