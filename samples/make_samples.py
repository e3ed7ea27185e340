"""Make the sample media in ``samples/`` (committed, so users and tests need neither this script nor espeak-ng).

Writes, with PyAV only (no ffmpeg binary):

* ``talking.mp4``: about 6 s, 448x252 H.264 at 25 fps with AAC mono 16 kHz speech; a red ball rolls
  left to right, a blue square bounces, and a banner reads "OMNIZIP SAMPLE";
* ``silent.mp4``: 4 s, 448x252 H.264 at 25 fps and no audio track; big digits count 1 to 4,
  one per second, while a green bar sweeps down;
* ``speech.wav``: about 4 s of speech, 16 kHz mono 16-bit PCM, audio only.

Speech comes from espeak-ng (``apt-get install espeak-ng``), called through ``subprocess``. The
output is deterministic for a given espeak-ng, PyAV and FFmpeg build (single-threaded encoding).

Usage::

    python samples/make_samples.py              # writes next to this script
    python samples/make_samples.py --out-dir /tmp/samples
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS = 448, 252, 25
AUDIO_RATE = 16000
TALKING_TEXT = "Hello from omnizip. A red ball rolls from left to right, while a blue square bounces."
SPEECH_TEXT = "The quick brown fox jumps over the lazy dog, twice."
ESPEAK_ARGS = ["-v", "en-us", "-s", "165", "-a", "150"]

# A 5x7 bitmap font for the characters the drawings use (rows top to bottom, "#" = ink).
FONT = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "I": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "#####"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("####.", "....#", "....#", ".###.", "....#", "....#", "####."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    " ": (".....",) * 7,
}


def glyph(char: str) -> np.ndarray:
    """The 7x5 boolean bitmap of ``char``."""
    return np.array([[c == "#" for c in row] for row in FONT[char]], dtype=bool)


def draw_text(img: np.ndarray, text: str, x: int, y: int, scale: int, color: tuple[int, int, int]) -> None:
    """Draw ``text`` with the bitmap font, top-left at (x, y), each font pixel ``scale`` px wide."""
    for i, char in enumerate(text):
        mask = np.kron(glyph(char), np.ones((scale, scale), dtype=bool))
        x0 = x + i * 6 * scale
        h, w = mask.shape
        region = img[y : y + h, x0 : x0 + w]
        region[mask[: region.shape[0], : region.shape[1]]] = color


def background(t: float) -> np.ndarray:
    """A slowly shifting two-colour gradient, uint8 RGB [H, W, 3]."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    img[..., 0] = 30 + 40 * (xx / WIDTH)
    img[..., 1] = 40 + 50 * (yy / HEIGHT) + 10 * np.sin(t)
    img[..., 2] = 80 + 60 * (1 - xx / WIDTH)
    return img.astype(np.uint8)


def talking_frame(i: int) -> np.ndarray:
    """Frame ``i`` of talking.mp4: banner, rolling red ball, bouncing blue square."""
    t = i / FPS
    img = background(t)
    draw_text(img, "OMNIZIP SAMPLE", 22, 14, 4, (250, 250, 250))
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    cx, cy, r = 30 + (WIDTH - 60) * min(1.0, t / 6.0), 170, 24
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (220, 40, 40)
    side = 36
    sy = int(80 + 110 * abs(np.sin(np.pi * t / 1.5)))
    sx = WIDTH - 90
    img[max(0, sy - side) : sy, sx : sx + side] = (40, 70, 230)
    return img


def silent_frame(i: int) -> np.ndarray:
    """Frame ``i`` of silent.mp4: a big digit for the current second and a sweeping green bar."""
    t = i / FPS
    img = background(t + 2.0)
    digit = str(min(4, int(t) + 1))
    draw_text(img, digit, WIDTH // 2 - 30, 60, 18, (255, 230, 60))
    bar_y = int((t % 1.0) * (HEIGHT - 12))
    img[bar_y : bar_y + 12, 20:120] = (40, 200, 80)
    return img


def espeak(text: str, workdir: Path) -> np.ndarray:
    """Speech for ``text`` from espeak-ng as float32 mono at 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("error: espeak-ng is not installed; install it (e.g. apt-get install espeak-ng) and rerun")
    wav = workdir / "speech_raw.wav"
    subprocess.run([exe, *ESPEAK_ARGS, "-w", str(wav), text], check=True, capture_output=True)
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
    chunks = []
    with av.open(str(wav)) as container:
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray()[0] for f in resampler.resample(frame)]
    chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)


def pad_to(samples: np.ndarray, seconds: float, lead: float = 0.3) -> np.ndarray:
    """``lead`` seconds of silence, the samples, then silence up to ``seconds``."""
    total = int(round(seconds * AUDIO_RATE))
    out = np.zeros(max(total, len(samples) + int(lead * AUDIO_RATE)), dtype=np.float32)
    start = int(lead * AUDIO_RATE)
    out[start : start + len(samples)] = samples
    return out[:total] if total >= start + len(samples) else out


def _video_stream(out: av.container.OutputContainer) -> av.video.stream.VideoStream:
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.options = {"preset": "medium", "crf": "27"}
    stream.codec_context.thread_count = 1  # deterministic output
    return stream


def _mux_video(out: av.container.OutputContainer, stream, n_frames: int, draw) -> None:
    for i in range(n_frames):
        frame = av.VideoFrame.from_ndarray(draw(i), format="rgb24")
        frame.pts = i
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _mux_audio(out: av.container.OutputContainer, stream, samples: np.ndarray) -> None:
    block = 4096
    for start in range(0, len(samples), block):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + block].copy(), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_talking(path: Path, speech: np.ndarray) -> None:
    """talking.mp4: video plus speech, at least 6 s long."""
    audio = pad_to(speech, max(6.0, len(speech) / AUDIO_RATE + 0.6))
    seconds = len(audio) / AUDIO_RATE
    with av.open(str(path), "w") as out:
        out.metadata["comment"] = "omnizip sample, made by samples/make_samples.py"
        video = _video_stream(out)
        sound = out.add_stream("aac", rate=AUDIO_RATE)
        sound.layout = "mono"
        sound.bit_rate = 32000
        _mux_video(out, video, int(round(seconds * FPS)), talking_frame)
        _mux_audio(out, sound, audio)


def make_silent(path: Path, seconds: float = 4.0) -> None:
    """silent.mp4: video only."""
    with av.open(str(path), "w") as out:
        out.metadata["comment"] = "omnizip sample, made by samples/make_samples.py"
        _mux_video(out, _video_stream(out), int(round(seconds * FPS)), silent_frame)


def make_speech(path: Path, speech: np.ndarray) -> None:
    """speech.wav: audio only, 16-bit PCM."""
    audio = pad_to(speech, max(4.0, len(speech) / AUDIO_RATE + 0.5), lead=0.2)
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=AUDIO_RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        talking_speech = espeak(TALKING_TEXT, Path(tmp))
        plain_speech = espeak(SPEECH_TEXT, Path(tmp))
    outputs = {
        "talking.mp4": lambda p: make_talking(p, talking_speech),
        "silent.mp4": make_silent,
        "speech.wav": lambda p: make_speech(p, plain_speech),
    }
    total = 0
    for name, make in outputs.items():
        path = args.out_dir / name
        make(path)
        size = path.stat().st_size
        total += size
        print(f"{path}: {size / 1024:.1f} KiB")
    print(f"total: {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
