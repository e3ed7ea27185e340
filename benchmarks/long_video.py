"""Long videos: host memory and time of video preprocessing, and time of the audio saliency.

Two measurements, one JSON object per line on stdout (``"bench": "long_video"``), progress on stderr.

``kind: "preprocess"``: the processor's video preprocessing (the real ``Qwen2_5OmniProcessor`` of
``--model tiny``, whose preprocessing is Qwen2.5-Omni's) on ``--frames`` random frames sampled from a
1280x720 source, each measurement in a fresh child process so its peak RSS is its own:

* ``variant``: ``stock_nobudget`` (one processor call, frames sized without a total pixel budget:
  omnizip before issue 14), ``stock`` (one call, frames under qwen-omni-utils' default budget, now
  the default) and ``chunked`` (:func:`omnizip_cli.models.preprocess.bounded_processor`, default budget);
  ``chunked_nobudget`` on request (``--variants``);
* ``frame_px``, ``video_tokens``, ``peak_rss_bytes`` (the child's ``VmHWM``: everything it ever held,
  frames, interpreter and libraries included), ``base_rss_bytes`` (RSS before the call, frames
  included), ``wall_s`` (the processor call), ``estimate_peak_bytes`` (the pre-flight estimate for
  ``chunked``) and ``sha256`` of ``pixel_values_videos``;
* ``kind: "equivalence"``: ``stock`` and ``chunked`` give the same ``sha256`` (bitwise the same model
  inputs) at each frame count;
* ``kind: "target"``: 768 frames, ``chunked``: ``peak_rss_bytes <= 6 GB``.

``kind: "saliency"``: :mod:`omnizip_cli.models.saliency` on random queries and keys of the real audio
encoder's last layer (20 heads, head_dim 64, 50 frames per second) for ``--audio-seconds``:
``variant`` ``before`` (the global softmax at every length) and ``after`` (the recorder's rule:
global up to 300 s, the encoder's 100-frame windows past it), ``scheme``, ``wall_s`` (median of
``--repeats``) and ``threads``.

    python benchmarks/long_video.py                       # 128 256 768 frames; 300 900 1800 s of audio
    python benchmarks/long_video.py --variants stock chunked --frames 768
    python benchmarks/long_video.py --quick               # CI smoke: 8 and 16 frames, 20 / 40 s of audio

``stock_nobudget`` at 768 frames needs about 20 GB of RAM: it is skipped (``"skipped"`` record)
when the pre-flight estimate of one call (5 float32 copies) exceeds the available memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.jsonlines import json_lines_output  # noqa: E402

BENCH = "long_video"
SOURCE_HEIGHT, SOURCE_WIDTH = 720, 1280
TARGET_PEAK_BYTES = 6 * 10**9
HEADS, HEAD_DIM, FRAMES_PER_SECOND = 20, 64, 50
STOCK_COPIES = 5  # float32 copies of the whole video one stock call holds at its peak (measured ~4-5)
VARIANTS = ("stock_nobudget", "stock", "chunked", "chunked_nobudget")

log, emit = json_lines_output(BENCH)


def frame_size(frames: int, budget: bool) -> tuple[int, int]:
    """The media layer's frame size for ``frames`` frames of a 1280x720 source."""
    from omnizip_cli.media import MediaOptions, sizing
    from omnizip_cli.media.datatypes import NO_TOTAL_PIXELS

    options = MediaOptions() if budget else MediaOptions(total_pixels=NO_TOTAL_PIXELS)
    pixels = sizing.frame_pixel_budget(frames, options.min_pixels, options.max_pixels, options.effective_total_pixels)
    return sizing.output_size(SOURCE_HEIGHT, SOURCE_WIDTH, 0, options.min_pixels, pixels)


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def child(frames: int, variant: str) -> dict[str, Any]:
    """One preprocessing measurement (run in a fresh process)."""
    import numpy as np

    from omnizip_cli.models.preprocess import bounded_processor, check_fits, chunk_frames_for
    from omnizip_cli.models.prompts import media_messages
    from omnizip_cli.models.qwen2_5_omni import ADAPTER

    processor = ADAPTER.tiny_processor()
    height, width = frame_size(frames, budget=not variant.endswith("_nobudget"))
    video = np.random.default_rng(0).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    prompt = processor.apply_chat_template(media_messages("video", "What happens?", None), add_generation_prompt=True,
                                           tokenize=False)
    kwargs = {
        "text": [prompt],
        "videos": [video],
        "videos_kwargs": {"size": {"shortest_edge": height * width, "longest_edge": height * width}, "fps": 2.0,
                          "do_sample_frames": False},
        "return_tensors": "pt",
    }
    estimate = None
    base = _status_bytes("VmRSS")
    start = time.perf_counter()
    if variant.startswith("chunked"):
        estimate = check_fits(frames, height, width, chunk_frames=chunk_frames_for(height, width)).peak_bytes
        # the chunked stock call this benchmark measures (the one-pass path is the default since issue 28)
        out = bounded_processor(processor, video, fused=False)(**kwargs)
    else:
        out = processor(**kwargs)
    wall = time.perf_counter() - start
    values = out["pixel_values_videos"]
    grid = [int(v) for v in out["video_grid_thw"][0].tolist()]
    return {
        "kind": "preprocess",
        "frames": frames,
        "variant": variant,
        "source_px": f"{SOURCE_WIDTH}x{SOURCE_HEIGHT}",
        "frame_px": f"{width}x{height}",
        "video_tokens": grid[0] * grid[1] * grid[2] // 4,
        "pixel_values_bytes": values.numel() * values.element_size(),
        "peak_rss_bytes": _status_bytes("VmHWM"),
        "base_rss_bytes": base,
        "wall_s": round(wall, 3),
        "estimate_peak_bytes": estimate,
        "sha256": hashlib.sha256(values.numpy().tobytes()).hexdigest(),
    }


def run_child(frames: int, variant: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(frames), variant], cwd=REPO_ROOT, capture_output=True, text=True,
        check=False,
    )
    if result.returncode != 0:
        return {"kind": "preprocess", "frames": frames, "variant": variant, "error": result.stderr.strip()[-500:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def preprocess(frame_counts: list[int], variants: list[str]) -> list[dict[str, Any]]:
    from omnizip_cli.models.preprocess import available_bytes

    records = []
    for frames in frame_counts:
        by_variant = {}
        for variant in variants:
            height, width = frame_size(frames, budget=not variant.endswith("_nobudget"))
            need = STOCK_COPIES * 4 * 3 * height * width * frames
            free = available_bytes()
            if variant.startswith("stock") and free is not None and need > 0.8 * free:
                record = {"kind": "skipped", "frames": frames, "variant": variant,
                          "reason": f"one call needs about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB available"}
            else:
                log(f"preprocess {frames} frames, {variant}")
                record = run_child(frames, variant)
            emit(record)
            records.append(record)
            by_variant[variant] = record
        if "stock" in by_variant and "chunked" in by_variant and "sha256" in by_variant["stock"]:
            emit({"kind": "equivalence", "frames": frames,
                  "bitwise_equal": by_variant["stock"]["sha256"] == by_variant["chunked"].get("sha256")})
        if frames == 768 and "peak_rss_bytes" in by_variant.get("chunked", {}):
            peak = by_variant["chunked"]["peak_rss_bytes"]
            emit({"kind": "target", "frames": frames, "peak_rss_bytes": peak, "target_bytes": TARGET_PEAK_BYTES,
                  "meets_target": peak is not None and peak <= TARGET_PEAK_BYTES})
    return records


def saliency(seconds_list: list[float], repeats: int, threshold: int | None, before_max: float | None = None) -> None:
    import torch

    from omnizip_cli.models.saliency import (
        DEFAULT_QUERY_CHUNK,
        FALLBACK_WINDOW_FRAMES,
        GLOBAL_SALIENCY_MAX_FRAMES,
        default_head_chunk,
        frame_attention_received,
        windowed_attention_received,
    )

    threshold = GLOBAL_SALIENCY_MAX_FRAMES if threshold is None else threshold
    for seconds in seconds_list:
        frames = int(seconds * FRAMES_PER_SECOND)
        generator = torch.Generator().manual_seed(0)
        q = torch.randn(HEADS, frames, HEAD_DIM, generator=generator)
        k = torch.randn(HEADS, frames, HEAD_DIM, generator=generator)
        windows = list(range(0, frames, FALLBACK_WINDOW_FRAMES)) + [frames]
        head_chunk = default_head_chunk(HEADS, frames, DEFAULT_QUERY_CHUNK)

        def global_() -> None:
            frame_attention_received(q, k, HEAD_DIM**-0.5, query_chunk=DEFAULT_QUERY_CHUNK, head_chunk=head_chunk)

        def windowed() -> None:
            windowed_attention_received(q, k, HEAD_DIM**-0.5, windows)

        after_scheme = "windowed" if frames > threshold else "global"
        for variant, scheme, fn in (("before", "global", global_),
                                    ("after", after_scheme, windowed if after_scheme == "windowed" else global_)):
            if variant == "before" and before_max is not None and seconds > before_max:
                emit({"kind": "skipped", "audio_seconds": seconds, "variant": variant,
                      "reason": f"--before-max-seconds {before_max:g}"})
                continue
            log(f"saliency {seconds:g} s, {variant} ({scheme})")
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - start)
            emit({"kind": "saliency", "audio_seconds": seconds, "frames": frames, "variant": variant, "scheme": scheme,
                  "threshold_frames": threshold, "wall_s": round(statistics.median(runs), 3),
                  "runs_s": [round(r, 3) for r in runs], "threads": torch.get_num_threads()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[128, 256, 768])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS[:3]))
    parser.add_argument("--audio-seconds", type=float, nargs="+", default=[300.0, 900.0, 1800.0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--before-max-seconds", type=float, default=None,
                        help="skip the global-softmax ('before') timing past this length (quadratic cost)")
    parser.add_argument("--skip-preprocess", action="store_true")
    parser.add_argument("--skip-saliency", action="store_true")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 8 and 16 frames, 20 and 40 s of audio")
    parser.add_argument("--child", nargs=2, metavar=("FRAMES", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1])))
        return 0
    threshold = None
    if args.quick:
        args.frames, args.audio_seconds, threshold = [8, 16], [20.0, 40.0], 1500  # 30 s: both sides of it
        args.variants = [v for v in args.variants if v != "stock_nobudget"]
    if not args.skip_preprocess:
        records = preprocess(args.frames, args.variants)
        if any("error" in r for r in records):
            return 1
    if not args.skip_saliency:
        saliency(args.audio_seconds, args.repeats, threshold, args.before_max_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
