"""Benchmark: ``load_media`` at 2 fps against a plain PyAV loop that decodes every frame.

The clip is generated with PyAV (H.264 at 30 fps, x264 ``veryfast`` crf 23 with its default
B-frames and one slice per frame like ffmpeg-made files, showing a panning texture; plus AAC
stereo 44.1 kHz) and cached in ``--work-dir`` (default: a folder under the system temp dir), so
later runs skip the encoding. Each repeat times, on the same file:

* ``plain_loop_s``: ``for f in container.decode(video=0): pass`` with PyAV's default threading,
  converting nothing;
* ``sampler_s``: ``omnizip_cli.media.load_media(path, MediaOptions(fps=2))``, which also decodes
  the audio track, resamples it to 16 kHz and converts the sampled frames to RGB at their
  smart-resized size (the parallel segments where the rule in ``omnizip_cli/media/segments.py``
  chooses them);
* ``segments_<N>_s`` for each ``--segments N`` (default ``1`` and the usable cores): the same with
  ``OMNIZIP_DECODE_SEGMENTS=N`` (``1``: the sequential pass; more: N keyframe-bounded segments
  decoded on N threads, issue 28), with ``segments_equal`` saying whether the frames were the same.

The figure of merit is ``ratio = plain_loop_s / sampler_s`` (> 1 means the sampler is faster); the
summary line uses the medians of the interleaved repeats. CPU seconds (all threads) are reported
beside the wall times: on a shared machine they show whether a slow repeat was contention.
Output: one JSON line per repeat, then a summary line (``"summary": true``).

Measured on the 2-core development VM (PyAV 18.1.0, 7 repeats, machine otherwise idle): sampler
1.78 s against 2.23 s for the plain loop, ratio 1.26 (repeats 0.98-1.32); CPU time of both about
2.2 s. Other jobs on the same machine push single repeats below 1.

Usage::

    python benchmarks/media_decode.py                      # 60 s 1280x720, 3 repeats
    python benchmarks/media_decode.py --quick              # small CI smoke run
    python benchmarks/media_decode.py --seconds 120 --width 1920 --height 1080 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

try:
    from omnizip_cli.media import MediaOptions, load_media
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from omnizip_cli.media import MediaOptions, load_media


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture twice the frame size (blurred noise plus colour gradients), uint8 RGB."""
    rng = np.random.default_rng(seed)
    h2, w2 = 2 * height, 2 * width
    small = rng.integers(0, 256, (h2 // 8 + 1, w2 // 8 + 1, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)[:h2, :w2].astype(np.float32)
    for axis in (0, 1):  # cheap box blur so the encoder sees texture, not pure noise
        big = (big + np.roll(big, 4, axis=axis) + np.roll(big, -4, axis=axis)) / 3
    yy, xx = np.mgrid[0:h2, 0:w2].astype(np.float32)
    big[..., 0] = 0.6 * big[..., 0] + 100 * (xx / w2)
    big[..., 2] = 0.6 * big[..., 2] + 100 * (yy / h2)
    grain = rng.integers(0, 12, (h2, w2, 1), dtype=np.uint8)
    return np.clip(big + grain, 0, 255).astype(np.uint8)


def make_clip(path: Path, seconds: float, width: int, height: int, rate: int = 30) -> Path:
    """Encode the benchmark clip: panning texture with a moving box, H.264 + AAC 44.1 kHz stereo."""
    tex = _texture(height, width)
    tmp = path.with_suffix(".partial.mp4")
    with av.open(str(tmp), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "23"}
        # Frame-threaded encoding gives one slice per frame, like files made by the ffmpeg CLI,
        # cameras and phones; PyAV's default (slice threads) would write several slices per frame.
        video.thread_type = "FRAME"
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "stereo"
        n_frames = int(round(seconds * rate))
        for i in range(n_frames):
            x = int(width * 0.5 * (1 + np.sin(i / 90))) % width
            y = int(height * 0.5 * (1 + np.cos(i / 70))) % height
            img = tex[y : y + height, x : x + width].copy()
            bx = (i * 7) % (width - 64)
            img[height // 3 : height // 3 + 64, bx : bx + 64] = (240, 240, 40)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        sr, block = 44100, 44100
        total = int(round(seconds * sr))
        for start in range(0, total, block):
            t = (np.arange(start, min(total, start + block)) / sr).astype(np.float64)
            tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
            data = np.stack([tone, 0.5 * tone]).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    os.replace(tmp, path)
    return path


def plain_loop(path: Path) -> tuple[float, float, int]:
    """Decode every video frame with PyAV defaults, converting nothing; returns (wall s, CPU s, frames)."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    with av.open(str(path)) as container:
        for _ in container.decode(video=0):
            n += 1
    return time.perf_counter() - wall, time.process_time() - cpu, n


def sampler(path: Path, fps: float) -> tuple[float, float, dict]:
    """Time ``load_media``; returns (wall s, CPU s of all threads, summary dict)."""
    wall, cpu = time.perf_counter(), time.process_time()
    media = load_media(path, MediaOptions(fps=fps))
    return time.perf_counter() - wall, time.process_time() - cpu, media.summary.to_dict()


def segments_run(path: Path, fps: float, count: int) -> tuple[float, np.ndarray]:
    """Time ``load_media`` with ``OMNIZIP_DECODE_SEGMENTS=count``; returns (wall s, frames)."""
    old = os.environ.get("OMNIZIP_DECODE_SEGMENTS")
    os.environ["OMNIZIP_DECODE_SEGMENTS"] = str(count)
    try:
        wall = time.perf_counter()
        media = load_media(path, MediaOptions(fps=fps))
        return time.perf_counter() - wall, media.frames
    finally:
        if old is None:
            os.environ.pop("OMNIZIP_DECODE_SEGMENTS", None)
        else:
            os.environ["OMNIZIP_DECODE_SEGMENTS"] = old


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="clip length (default 60)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--rate", type=int, default=30, help="clip frame rate (default 30)")
    parser.add_argument("--fps", type=float, default=2.0, help="sampling rate for load_media (default 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=None, help="where the clip is cached")
    parser.add_argument("--quick", action="store_true", help="small CI smoke run: 4 s 320x240, 1 repeat")
    parser.add_argument("--segments", default=None,
                        help="segment counts to time load_media with (default: 1 and the usable cores)")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    args.segment_counts = sorted({int(v) for v in (args.segments or f"1,{max(2, cores)}").split(",")})
    if args.quick:
        args.seconds, args.width, args.height, args.repeats = 4.0, 320, 240, 1
    if args.repeats < 1 or args.seconds <= 0 or args.width < 64 or args.height < 64:
        parser.error("need --repeats >= 1, --seconds > 0 and a size of at least 64x64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.gettempdir()) / "omnizip-bench"
    work.mkdir(parents=True, exist_ok=True)
    clip = work / f"bench_{args.width}x{args.height}_{args.seconds:g}s_{args.rate}fps.mp4"
    gen_s = 0.0
    if not clip.exists():
        t0 = time.perf_counter()
        make_clip(clip, args.seconds, args.width, args.height, args.rate)
        gen_s = time.perf_counter() - t0
    common = {
        "bench": "media_decode",
        "clip": str(clip),
        "clip_bytes": clip.stat().st_size,
        "seconds": args.seconds,
        "size": f"{args.width}x{args.height}",
        "rate": args.rate,
        "fps": args.fps,
        "cpus": os.cpu_count(),
        "pyav": av.__version__,
        "python": platform.python_version(),
    }
    # Warm the page cache and the libraries once so that neither side pays first-touch costs.
    plain_loop(clip)
    sampler(clip, args.fps)
    plain_times, sampler_times = [], []
    segment_times: dict[int, list[float]] = {n: [] for n in args.segment_counts}
    segments_equal = True
    summary: dict = {}
    for i in range(args.repeats):  # interleaved, so that load changes on the machine hit both sides
        plain_s, plain_cpu, n_decoded = plain_loop(clip)
        sampler_s, sampler_cpu, summary = sampler(clip, args.fps)
        plain_times.append(plain_s)
        sampler_times.append(sampler_s)
        reference = None
        for count in args.segment_counts:
            seconds, frames = segments_run(clip, args.fps, count)
            segment_times[count].append(seconds)
            reference = frames if reference is None else reference
            segments_equal = segments_equal and bool(np.array_equal(frames, reference))
        record = {
            **common,
            "repeat": i,
            "sampler_s": round(sampler_s, 4),
            "plain_loop_s": round(plain_s, 4),
            "ratio": round(plain_s / sampler_s, 3),
            "sampler_cpu_s": round(sampler_cpu, 4),
            "plain_loop_cpu_s": round(plain_cpu, 4),
            "frames_decoded_plain": n_decoded,
            "frames_sampled": summary["frames_sampled"],
            "frame_size": f"{summary['frame_width']}x{summary['frame_height']}",
            "audio_seconds": summary["audio_seconds"],
            **{f"segments_{n}_s": round(t[-1], 4) for n, t in segment_times.items()},
        }
        print(json.dumps(record), flush=True)
    sampler_med, plain_med = statistics.median(sampler_times), statistics.median(plain_times)
    final = {
        **common,
        "summary": True,
        "repeats": args.repeats,
        "generate_s": round(gen_s, 2),
        "sampler_s": round(sampler_med, 4),
        "plain_loop_s": round(plain_med, 4),
        "ratio": round(plain_med / sampler_med, 3),
        "frames_sampled": summary["frames_sampled"],
        "sampler_not_slower": sampler_med <= plain_med,
        **{f"segments_{n}_s": round(statistics.median(t), 4) for n, t in segment_times.items()},
        "segments_equal": segments_equal,
    }
    print(json.dumps(final), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
