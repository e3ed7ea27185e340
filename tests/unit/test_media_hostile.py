"""Issue 29, the media items: hostile files that used to crash, mislead or be silently half-used.

* many-channel audio (8, 16 channels) crashed the process in PyAV (checked in child processes, so a
  segfault fails the test instead of killing pytest);
* playlists and FFmpeg's other indirect inputs are refused before anything is decoded;
* a video that starts after its audio is not "truncated", and the ``--max-frames`` warning never
  says "0.00 fps";
* a second audio track is named, not silently ignored;
* a file in a folder that cannot be entered, tried for real in a process without root's override.

Files are tiny and written with PyAV (``tests/helpers/media_factory.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from omnizip_cli.errors import MediaError
from omnizip_cli.media import AUDIO_SAMPLE_RATE, MediaOptions, load_media, probe
from omnizip_cli.media import container as media_container

try:
    from tests.helpers.media_factory import AudioTrack, VideoSpec, has_encoder, write_media
except ImportError:  # tests/ on sys.path instead of the repository root
    from media_factory import AudioTrack, VideoSpec, has_encoder, write_media  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
SR = AUDIO_SAMPLE_RATE


def _needs(*encoders: str) -> None:
    missing = [e for e in encoders if not has_encoder(e)]
    if missing:
        pytest.skip(f"PyAV's FFmpeg has no {', '.join(missing)} encoder")


def _one_line(info: pytest.ExceptionInfo, *fragments: str) -> str:
    exc = info.value
    assert isinstance(exc, MediaError) and exc.exit_code == 1
    line = exc.one_line()
    assert "\n" not in line and line
    for fragment in fragments:
        assert fragment.lower() in line.lower(), (fragment, line)
    return line


# -- 1. audio with 8 or more channels -------------------------------------------------------------
CHILD_LOAD = r"""
import json, sys
import numpy as np
from omnizip_cli.errors import MediaError
from omnizip_cli.media import load_media
try:
    media = load_media(sys.argv[1])
except MediaError as exc:
    print(json.dumps({"error": exc.one_line()}))
    raise SystemExit(exc.exit_code)
audio = media.audio
np.save(sys.argv[2], audio if audio is not None else np.zeros(0, np.float32))
print(json.dumps({"kind": media.summary.kind, "channels": media.summary.audio_channels_in,
                  "warnings": list(media.summary.warnings)}))
"""


def _load_in_child(path: Path, out: Path) -> dict:
    """``load_media(path)`` in a child process; a crash (a segfault is -11) fails with its code."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD_LOAD, str(path), str(out)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"exit code {result.returncode} (-11: segfault): {result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _tone(track: AudioTrack) -> np.ndarray:
    """The mono mix the loader should give: the mean of the track's channels (channel c is tone / (c+1))."""
    return track.samples().mean(axis=0, dtype=np.float32)


@pytest.mark.parametrize("channels", [8, 16])
def test_wav_with_many_channels_is_downmixed_in_a_child_process(tmp_path: Path, channels: int) -> None:
    """8 and 16 channels: no crash, and the mono mix is the mean of the channels, as for 1 or 2."""
    _needs("pcm_s16le")
    track = AudioTrack("pcm_s16le", SR, channels, seconds=1.0)  # 16 kHz: no resampling, exact comparison
    path = write_media(tmp_path / f"ch{channels}.wav", None, (track,))
    assert probe(path).audio.channels == channels
    info = _load_in_child(path, tmp_path / "audio.npy")
    assert (info["kind"], info["channels"]) == ("audio", channels)
    audio = np.load(tmp_path / "audio.npy")
    expected = _tone(track)
    assert audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=channels * 2 / 32768)  # s16 rounding per channel


def test_video_with_an_aac_7_1_track_in_a_child_process(tmp_path: Path) -> None:
    """A video whose AAC track has 8 channels (7.1): frames and a downmixed mono track."""
    _needs("libx264", "aac")
    track = AudioTrack("aac", 48000, 8, seconds=2.0)
    path = write_media(tmp_path / "surround.mp4", VideoSpec(seconds=2.0), (track,))
    assert probe(path).audio.channels == 8
    info = _load_in_child(path, tmp_path / "audio.npy")
    assert (info["kind"], info["channels"]) == ("video+audio", 8)
    audio = np.load(tmp_path / "audio.npy")
    assert abs(len(audio) / SR - 2.0) < 0.1
    # AAC is lossy and its 7.1 channel order differs from ours, but a mean is a mean: compare levels.
    expected_rms = float(np.sqrt(np.mean(_tone(track) ** 2)))
    middle = audio[SR // 2 : 3 * SR // 2]
    assert float(np.sqrt(np.mean(middle**2))) == pytest.approx(expected_rms, rel=0.1)


def test_stereo_downmix_is_still_the_float32_mean_of_the_two_channels(tmp_path: Path) -> None:
    """The packed resampling changes nothing for 2 channels: bit for bit (L + R) / 2 in float32."""
    _needs("pcm_s16le")
    path = write_media(tmp_path / "stereo.wav", None, (AudioTrack("pcm_s16le", SR, 2, seconds=1.0),))
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in container.decode(audio=0)])  # [n, 2] s16
    left, right = (samples.astype(np.float32) / 32768).T
    reference = (left + right) / np.float32(2)
    np.testing.assert_array_equal(load_media(path).audio, reference)


# -- 5. playlists and other indirect inputs -------------------------------------------------------
@pytest.fixture
def clip(tmp_path: Path) -> Path:
    _needs("libx264", "aac")
    return write_media(tmp_path / "a.mp4", VideoSpec(seconds=1.0), (AudioTrack("aac", SR, 1, seconds=1.0),))


HLS = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\na.mp4\n#EXT-X-ENDLIST\n"
PLAYLISTS = [
    ("list.ffconcat", "ffconcat version 1.0\nfile a.mp4\nfile a.mp4\n", "an FFmpeg concat list"),
    ("list.txt", "# made by hand\nfile 'a.mp4'\nfile 'a.mp4'\n", "an FFmpeg concat list"),
    ("list.m3u8", HLS, "an HLS playlist"),
    ("playlist.mp4", HLS, "an HLS playlist"),  # recognised by its content, whatever its name
    ("music.m3u", "#EXTM3U\n#EXTINF:1,A\na.mp4\n", "an M3U playlist"),
    ("stream.mpd", '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>\n', "a DASH manifest"),
    ("session.bin", "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nm=video 5004 RTP/AVP 96\n", "an SDP session description"),
    ("radio.pls", "[playlist]\nFile1=a.mp4\nNumberOfEntries=1\n", "a PLS playlist"),
]


@pytest.mark.parametrize("name, text, kind", PLAYLISTS, ids=[p[0] for p in PLAYLISTS])
def test_playlists_are_refused_before_anything_is_opened(clip: Path, monkeypatch: pytest.MonkeyPatch,
                                                         name: str, text: str, kind: str) -> None:
    """A playlist's bytes do not change when the files it names do: refused, one line, exit code 1."""
    path = clip.parent / name
    path.write_text(text)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("FFmpeg opened a playlist")

    monkeypatch.setattr(media_container, "open_container", never)
    for load in (load_media, probe):
        with pytest.raises(MediaError) as info:
            load(path)
        line = _one_line(info, f"{path} is {kind}", "not a list of other files")
        assert "Hint:" in line


@pytest.mark.parametrize(
    "given, protocol",
    [("concat:a.mp4|a.mp4", "concat"), ("concat:/tmp/a.mp4|/tmp/b.mp4", "concat"),
     ("subfile:,,start,0,end,100,,:a.mp4", "subfile"), ("pipe:0", "pipe"), ("crypto:a.mp4", "crypto")],
)
def test_ffmpeg_protocol_inputs_are_refused(given: str, protocol: str) -> None:
    with pytest.raises(MediaError) as info:
        load_media(given)
    _one_line(info, f"{given} is an FFmpeg protocol input ({protocol}:), not a file")


def test_a_file_named_like_a_protocol_is_still_a_file(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``concat:x.mp4`` that exists is that file (FFmpeg never sees a protocol: paths are made absolute)."""
    named = clip.parent / "concat:x.mp4"
    shutil.copy(clip, named)
    monkeypatch.chdir(clip.parent)
    assert load_media("concat:x.mp4").summary.kind == "video+audio"


def test_a_concat_list_that_ffmpeg_recognises_is_refused_when_opened(clip: Path) -> None:
    """Past the sniffing (which sees the usual forms), the demuxer's name still refuses it."""
    path = clip.parent / "list.ffconcat"
    path.write_text("ffconcat version 1.0\nfile a.mp4\n")
    with pytest.raises(MediaError) as info:
        media_container.open_container(path)
    _one_line(info, "is an FFmpeg concat list")


def test_playlist_refused_by_the_cli_in_one_line(clip: Path) -> None:
    """A real ``omnizip ask`` on an HLS playlist: exit code 1, one line, before any model work."""
    path = clip.parent / "list.m3u8"
    path.write_text(HLS)
    result = subprocess.run(
        [sys.executable, "-m", "omnizip_cli", "ask", str(path), "What?", "--model", "tiny", "--no-cache"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and f"{path} is an HLS playlist" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# -- 9. a video that starts late; --max-frames across a gap ---------------------------------------
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("use_audio", [True, False])
def test_video_starting_after_its_audio_is_not_called_truncated(tmp_path: Path, suffix: str,
                                                                use_audio: bool) -> None:
    """The video runs 3-11 s, the audio 0-11 s: the file ends where its header says, nothing is cut."""
    _needs("libx264", "aac")
    video = VideoSpec(fps=10, pts_s=[3.0 + i * 0.1 for i in range(80)])
    path = write_media(tmp_path / f"late{suffix}", video, (AudioTrack("aac", SR, 1, seconds=11.0),))
    media = load_media(path, MediaOptions(use_audio=use_audio))
    assert media.frame_times[0] == pytest.approx(3.0)
    assert not [w for w in media.summary.warnings if "truncated" in w or "ends early" in w], media.summary.warnings


def test_truncated_file_is_still_called_truncated(tmp_path: Path) -> None:
    """The same check on a file cut in half: it still warns (compared by end times)."""
    _needs("libx264", "libopus")
    full = write_media(tmp_path / "long.mkv", VideoSpec(fps=10, seconds=6.0), (AudioTrack("libopus", 48000, 1, 6.0),))
    half = tmp_path / "half.mkv"
    half.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    for use_audio in (True, False):
        warnings = load_media(half, MediaOptions(use_audio=use_audio)).summary.warnings
        assert [w for w in warnings if "truncated" in w or "ends early" in w], warnings


def test_max_frames_warning_across_a_five_hour_gap(tmp_path: Path) -> None:
    """30 frames in 3 s, then one 5 h later. The default --max-frames 768 limits nothing (the file has
    31 frames): no --max-frames warning. A binding --max-frames says the rate it gives, never 0.00 fps."""
    _needs("libx264")
    times = [i * 0.1 for i in range(30)] + [18000.0]
    path = write_media(tmp_path / "gap.mp4", VideoSpec(fps=10, pts_s=times))
    default = load_media(path).summary.warnings
    assert not [w for w in default if "--max-frames" in w], default
    assert [w for w in default if "jump by" in w], default  # the gap itself is reported
    capped = load_media(path, MediaOptions(max_frames=4)).summary.warnings
    cap = [w for w in capped if "--max-frames 4" in w]
    assert cap and "caps the sampling at 4 frames, one frame every 4500 s (1.3 h) instead of 2 fps" in cap[0], capped
    assert not [w for w in default + capped if "0.00 fps" in w]


# -- 10. several audio tracks ---------------------------------------------------------------------
def test_the_audio_track_used_is_named_when_there_are_several(tmp_path: Path) -> None:
    _needs("libx264", "aac", "libopus")
    tracks = (
        AudioTrack("aac", 44100, 1, seconds=2.0, default=False),
        AudioTrack("libopus", 48000, 2, seconds=2.0, default=True),
        AudioTrack("aac", 44100, 1, seconds=2.0, default=False),
    )
    path = write_media(tmp_path / "three.mkv", VideoSpec(seconds=2.0), tracks)
    warnings = load_media(path).summary.warnings
    named = [w for w in warnings if "audio tracks" in w]
    assert named == [
        "the file has 3 audio tracks: only audio track 2 of 3 (stream #2, opus) is used, the one marked default;"
        " the other 2 are ignored"
    ], warnings
    assert not [w for w in load_media(path, MediaOptions(use_audio=False)).summary.warnings if "audio tracks" in w]


def test_a_single_audio_track_gives_no_track_warning(clip: Path) -> None:
    assert load_media(clip).summary.warnings == ()


# -- 15. a folder that cannot be entered, for real ------------------------------------------------
def _unprivileged_prefix() -> list[str]:
    """A command prefix that runs a child without root's permission override (``unshare --user``:
    the same uid, no capabilities), or ``[]`` where that is not possible."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return ["env"]  # not root: permissions already apply
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    probe_run = subprocess.run([unshare, "--user", "true"], capture_output=True, timeout=30)
    return [unshare, "--user"] if probe_run.returncode == 0 else []


def test_file_in_a_folder_that_cannot_be_entered_in_a_real_process(clip: Path, tmp_path: Path) -> None:
    prefix = _unprivileged_prefix()
    if not prefix:
        pytest.skip("no way to run a child without root's permission override here (unshare --user)")
    folder = tmp_path / "locked"
    folder.mkdir()
    path = folder / "a.mp4"
    shutil.copy(clip, path)
    folder.chmod(0)
    try:
        result = subprocess.run(
            [*prefix, sys.executable, "-c",
             "import sys\nfrom omnizip_cli.errors import MediaError\nfrom omnizip_cli.media import load_media\n"
             "try:\n    load_media(sys.argv[1])\nexcept MediaError as exc:\n    print(exc.exit_code, exc.one_line())",
             str(path)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
        )
    finally:
        folder.chmod(0o755)
    assert result.stdout.strip() == f"1 cannot access {path}: permission denied (on a folder of the path)", \
        result.stderr[-2000:]
