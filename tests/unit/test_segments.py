"""Parallel decoding in keyframe-bounded segments (issue 28): the sequential path's frames, exactly.

The clips are real H.264 files whose every frame carries its own index as 16x16 black/white blocks,
so the frame chosen for each sampling time can be read back from its pixels.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from omnizip_cli.errors import UsageError
from omnizip_cli.media import MediaOptions, load_media
from omnizip_cli.media import segments as seg
from omnizip_cli.media.loader import plan_media
from tests.helpers.media_factory import has_encoder

BITS = 10
BLOCK = 16
FPS = 30


def _indexed_frame(index: int, width: int, height: int) -> np.ndarray:
    img = np.full((height, width, 3), 128, dtype=np.uint8)
    for bit in range(BITS):
        value = 255 if (index >> bit) & 1 else 0
        img[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = value
    return img


def read_index(frame: np.ndarray, width: int) -> int:
    """The index drawn by :func:`_indexed_frame`, from a frame scaled to ``width`` pixels wide."""
    scale = frame.shape[1] / width
    index = 0
    for bit in range(BITS):
        y, x = int(BLOCK * scale / 2), int((bit + 0.5) * BLOCK * scale)
        index |= int(frame[y, x].mean() > 128) << bit
    return index


def write_indexed_clip(path: Path, seconds: float, *, open_gop: bool = False, width: int = 192,
                       height: int = 112, audio: bool = True) -> Path:
    """H.264 (B-frames, a keyframe every second; open GOPs when asked) + AAC, frame ``i`` at ``i / 30`` s."""
    params = f"keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=3" + (":open-gop=1" if open_gop else "")
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "10", "x264-params": params}
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i in range(int(seconds * FPS)):
            frame = av.VideoFrame.from_ndarray(_indexed_frame(i, width, height), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            samples = (0.3 * np.sin(np.arange(int(seconds * 16000)) / 16000 * 2 * np.pi * 440)).astype(np.float32)
            for start in range(0, len(samples), 16000):
                chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 16000], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 16000, start, Fraction(1, 16000)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not has_encoder("libx264") or not has_encoder("aac"):
        pytest.skip("no H.264/AAC encoder in this FFmpeg build")
    root = tmp_path_factory.mktemp("segments")
    return {
        "closed": write_indexed_clip(root / "closed.mp4", 12.0),
        "open": write_indexed_clip(root / "open.mp4", 12.0, open_gop=True),
        "mkv": write_indexed_clip(root / "clip.mkv", 8.0, audio=False),
    }


def _load(path: Path, segments: str, monkeypatch: pytest.MonkeyPatch, **options):
    monkeypatch.setenv(seg.ENV_VAR, segments)
    return load_media(path, MediaOptions(**options))


@pytest.mark.parametrize("name", ["closed", "open", "mkv"])
@pytest.mark.parametrize("count", ["2", "3", "5"])
def test_segments_give_the_sequential_frames(clips: dict[str, Path], name: str, count: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = seg.decode_segments
    monkeypatch.setattr(seg, "decode_segments", lambda *a, **k: calls.append(r := real(*a, **k)) or r)
    sequential = _load(clips[name], "1", monkeypatch, fps=4.0)
    assert not calls
    parallel = _load(clips[name], count, monkeypatch, fps=4.0)
    assert calls and calls[0] is not None, "the parallel path gave up"
    assert np.array_equal(parallel.frames, sequential.frames)
    assert np.array_equal(parallel.frame_times, sequential.frame_times)
    assert (parallel.audio is None and sequential.audio is None) or np.array_equal(parallel.audio, sequential.audio)
    fields = [f for f in sequential.summary.__dataclass_fields__ if f != "decode_seconds"]
    assert [getattr(parallel.summary, f) for f in fields] == [getattr(sequential.summary, f) for f in fields]
    # each chosen frame is the one nearest its sampling time, read back from its pixels
    indices = [read_index(frame, 192) for frame in parallel.frames]
    assert indices == [int(round(t * FPS)) for t in parallel.frame_times]
    assert len(set(indices)) == len(indices) > 30


def test_a_gap_in_the_coverage_falls_back_to_the_sequential_path(clips: dict[str, Path],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment that stops early leaves targets unfilled: the parallel path gives up, nothing is lost."""
    plan = plan_media(clips["closed"], MediaOptions(fps=4.0)).video
    parts = seg.plan_segments(plan, 3)
    short = [seg.Segment(None, plan.keyframe_pts[1] // 2), *parts[1:]]  # ends before the next one starts
    assert seg.decode_segments(clips["closed"], plan, MediaOptions(fps=4.0), short) is None
    whole = seg.decode_segments(clips["closed"], plan, MediaOptions(fps=4.0), parts)
    assert whole is not None and whole.frames.shape[0] == plan.n_frames


def test_plan_segments_cuts_at_keyframes_into_even_parts(clips: dict[str, Path]) -> None:
    plan = plan_media(clips["closed"], MediaOptions(fps=4.0)).video
    assert len(plan.keyframe_pts) == 12  # one a second
    parts = seg.plan_segments(plan, 4)
    assert [p.start_pts for p in parts][0] is None and parts[-1].end_pts is None
    cuts = [p.start_pts for p in parts[1:]]
    assert all(c in plan.keyframe_pts for c in cuts) and cuts == sorted(cuts)
    assert [parts[i].end_pts for i in range(3)] == cuts
    assert len(parts) == 4
    assert seg.plan_segments(plan, 1) == [seg.Segment(None, None)]
    assert len(seg.plan_segments(plan, 40)) == 12  # at most one per keyframe


def test_the_rule(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(seg.ENV_VAR, raising=False)
    plan = plan_media(clips["closed"], MediaOptions(fps=4.0)).video  # 360 frames, 12 keyframes
    assert plan.available >= seg.PARALLEL_MIN_FRAMES
    assert seg.segment_count(plan, "mp4", cpus=2) == 2  # 2 cores: 2 segments measured faster
    assert seg.segment_count(plan, "mp4", cpus=1) == 1
    assert seg.segment_count(plan, "mp4", cpus=8) == 8
    assert seg.segment_count(plan, "mp4", cpus=64) == 12
    assert seg.segment_count(plan, "mpegts", cpus=8) == 1  # no index to seek by
    short = plan_media(clips["mkv"], MediaOptions(fps=4.0)).video  # 240 frames
    monkeypatch.setattr(seg, "PARALLEL_MIN_FRAMES", 241)
    assert seg.segment_count(short, "mkv", cpus=8) == 1
    monkeypatch.setenv(seg.ENV_VAR, "3")
    assert seg.segment_count(short, "mkv", cpus=1) == 3
    monkeypatch.setenv(seg.ENV_VAR, "many")
    with pytest.raises(UsageError) as info:
        seg.segment_count(short, "mkv")
    assert "\n" not in str(info.value) and seg.ENV_VAR in str(info.value)


def test_a_cancel_stops_the_segments(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from omnizip_cli.media.loader import DecodeCancelled, decode_media

    plan = plan_media(clips["closed"], MediaOptions(fps=4.0)).video
    assert seg.decode_segments(clips["closed"], plan, MediaOptions(fps=4.0), seg.plan_segments(plan, 3),
                               cancelled=lambda: True) is None
    monkeypatch.setenv(seg.ENV_VAR, "3")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DecodeCancelled):
        decode_media(plan_media(clips["closed"], MediaOptions(fps=4.0)), cancel=cancel)
