#!/usr/bin/env python
"""End to end ``omnizip ask`` on a generated clip: file to first token, full vs compressed (issue 19).

    python benchmarks/ask_e2e.py                         # 60 s 1280x720 clip, --model tiny on cuda
    python benchmarks/ask_e2e.py --model /path/to/Qwen2.5-Omni-7B --device cuda
    python benchmarks/ask_e2e.py --tiny                  # CPU smoke: 8 s 320x180 clip

Each run is the real command line in a fresh process (``python -m omnizip_cli ask CLIP "question"
--json --no-cache``: every run decodes and encodes), with ``--no-compress`` and with ``--preset 45``,
each with media decoding overlapped with model work (the default: decoding beside the model load,
the audio track encoded while the video decodes) and without (``OMNIZIP_OVERLAP=0``: the sequential
path), interleaved, ``--repeats`` times after one untimed warm-up run (the tiny checkpoint is built
there if needed). The figures are the command's own ``--json`` timings:
``time_to_first_token_seconds`` (media decode + preprocessing + encoders + saliency + keep plan +
prefill + first token; the model load excluded where decoding did not overlap it) and its stages,
plus the process wall time (model load included: what overlapping the decode with the load saves).

``--model tiny`` (the default: no weights can be downloaded on the GPU machine) measures the CPU
side and the orchestration of a real ``ask`` on the device; the full-size model side on the same
path is in ``session.py`` (random-weight 7B). Output: JSON lines (``kind``: ``setup``, ``ask``,
``ratio``: full over compressed, and sequential over overlapped for the time to first token and
the process wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.jsonlines import json_lines_output  # noqa: E402
from omnizip_cli.media import VIDEO_MIN_PIXELS  # noqa: E402

PAPER_MAX_PIXELS = 224 * 392  # frames of at most 224 x 392: 112 tokens per 2 frames, as in benchmarks/session.py

BENCH = "ask_e2e"
QUESTION = "What happens in this video?"
VARIANTS = {"full": ["--no-compress"], "compressed": ["--preset", "45"]}
OVERLAP = {"overlapped": "1", "sequential": "0"}  # $OMNIZIP_OVERLAP

log, emit = json_lines_output(BENCH)


def run_ask(clip: Path, args: argparse.Namespace, extra: list[str], overlap: str = "1") -> tuple[dict[str, Any], float]:
    """One ``omnizip ask --json`` in a fresh process; (its JSON object, process wall seconds)."""
    command = [sys.executable, "-m", "omnizip_cli", "ask", str(clip), QUESTION, "--json", "--no-cache",
               "--model", args.model, "--device", args.device, "--max-new-tokens", str(args.new_tokens),
               "--min-pixels", str(min(VIDEO_MIN_PIXELS, args.max_pixels)), "--max-pixels", str(args.max_pixels),
               *extra]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", OMNIZIP_OVERLAP=overlap))
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{BENCH}: omnizip ask failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout), wall


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: a short small clip")
    parser.add_argument("--model", default="tiny", help="--model of omnizip ask (default tiny)")
    parser.add_argument("--device", default=None, help="--device of omnizip ask (default cuda; --tiny cpu)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length (default 60; --tiny 8)")
    parser.add_argument("--width", type=int, default=None, help="clip width (default 1280; --tiny 320)")
    parser.add_argument("--height", type=int, default=None, help="clip height (default 720; --tiny 180)")
    parser.add_argument("--max-pixels", type=int, default=PAPER_MAX_PIXELS,
                        help="--max-pixels of omnizip ask (default 224 x 392, the paper's: a 60-s clip at 2 fps "
                             "fits the 32k context uncompressed)")
    parser.add_argument("--new-tokens", type=int, default=4, help="--max-new-tokens (default 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per variant (default 2; --tiny 1)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first run of each variant")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the generated clip is cached")
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.seconds = args.seconds or (8.0 if args.tiny else 60.0)
    args.width = args.width or (320 if args.tiny else 1280)
    args.height = args.height or (180 if args.tiny else 720)
    args.repeats = args.repeats or (1 if args.tiny else 2)
    return args


def main(argv: list[str] | None = None) -> int:
    from benchmarks.session import benchmark_clip

    args = parse_args(argv)
    clip, generated_s = benchmark_clip(args.seconds, args.width, args.height, args.work_dir)
    emit(dict(kind="setup", model=args.model, device=args.device, clip=str(clip), seconds=args.seconds,
              width=args.width, height=args.height, max_pixels=args.max_pixels, clip_generated_s=generated_s, repeats=args.repeats,
              cpu_count=os.cpu_count()))
    if not args.no_warmup:  # every run is a fresh process: the warm-up only builds the tiny checkpoint, fills caches
        log("warm-up run (compressed)")
        run_ask(clip, args, VARIANTS["compressed"])
    ttft: dict[tuple[str, str], list[float]] = {(n, o): [] for n in VARIANTS for o in OVERLAP}
    walls: dict[tuple[str, str], list[float]] = {(n, o): [] for n in VARIANTS for o in OVERLAP}
    for repeat in range(args.repeats):
        for name, extra in VARIANTS.items():
            for overlap, value in OVERLAP.items():
                payload, wall = run_ask(clip, args, extra, value)
                timings = payload["timings"]
                seconds = float(timings["time_to_first_token_seconds"])
                ttft[name, overlap].append(seconds)
                walls[name, overlap].append(wall)
                stages = timings.get("stages") or {}
                emit(dict(kind="ask", variant=name, overlap=overlap, repeat=repeat, model=args.model,
                          device=args.device, file_to_first_token_s=seconds, process_wall_s=wall,
                          load_model_s=timings.get("load_model_seconds"),
                          stages_s={k: v.get("seconds") if isinstance(v, dict) else v for k, v in stages.items()},
                          overlapped_stages=sorted(k for k, v in stages.items()
                                                   if isinstance(v, dict) and v.get("overlapped_with_media_decode")),
                          prompt_tokens=payload.get("generation", {}).get("prompt_tokens"),
                          prompt_tokens_before_compression=payload.get("generation", {}).get(
                              "prompt_tokens_before_compression"),
                          tokens=payload.get("tokens", {})))
                log(f"repeat {repeat} {name:<10} {overlap:<10} file to first token {seconds:7.3f} s "
                    f"(process {wall:6.1f} s)")
    median = {key: statistics.median(values) for key, values in ttft.items()}
    full, compressed = median["full", "overlapped"], median["compressed", "overlapped"]
    emit(dict(kind="ratio", name="file_to_first_token_full_over_compressed", value=full / compressed,
              full_s_median=full, compressed_s_median=compressed, statistic="median", target=None,
              meets_target=None, formula="median file_to_first_token_s full / compressed (overlapped)"))
    log(f"file to first token: full {full:.3f} s, compressed {compressed:.3f} s ({full / compressed:.2f}x)")
    for name in VARIANTS:
        for what, table in (("file_to_first_token", median),
                            ("process_wall", {k: statistics.median(v) for k, v in walls.items()})):
            before, after = table[name, "sequential"], table[name, "overlapped"]
            emit(dict(kind="ratio", name=f"{what}_sequential_over_overlapped_{name}", value=before / after,
                      sequential_s_median=before, overlapped_s_median=after, statistic="median", target=None,
                      meets_target=None, formula=f"median {what} (OMNIZIP_OVERLAP=0) / (overlap on), --{name}"))
            log(f"{name:<10} {what}: sequential {before:.3f} s, overlapped {after:.3f} s ({before / after:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
