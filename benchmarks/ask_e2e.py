#!/usr/bin/env python
"""End to end ``omnizip ask`` on a generated clip: file to first token, full vs compressed (issue 19).

    python benchmarks/ask_e2e.py                         # 60 s 1280x720 clip, --model tiny on cuda
    python benchmarks/ask_e2e.py --model /path/to/Qwen2.5-Omni-7B --device cuda
    python benchmarks/ask_e2e.py --tiny                  # CPU smoke: 8 s 320x180 clip

Each run is the real command line in a fresh process (``python -m omnizip_cli ask CLIP "question"
--json``), once with ``--no-compress`` and once with ``--preset 45``, interleaved, ``--repeats``
times after one untimed warm-up run (the tiny checkpoint is built there if needed). The
figures are the command's own ``--json`` timings: ``time_to_first_token_seconds`` (media decode +
preprocessing + encoders + saliency + keep plan + prefill + first token; model load excluded) and
its stages, plus the process wall time.

``--model tiny`` (the default: no weights can be downloaded on the GPU machine) measures the CPU
side and the orchestration of a real ``ask`` on the device; the full-size model side on the same
path is in ``session.py`` (random-weight 7B). Output: JSON lines (``kind``: ``setup``, ``ask``,
``ratio``).
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

BENCH = "ask_e2e"
QUESTION = "What happens in this video?"
VARIANTS = {"full": ["--no-compress"], "compressed": ["--preset", "45"]}

log, emit = json_lines_output(BENCH)


def run_ask(clip: Path, args: argparse.Namespace, extra: list[str]) -> tuple[dict[str, Any], float]:
    """One ``omnizip ask --json`` in a fresh process; (its JSON object, process wall seconds)."""
    command = [sys.executable, "-m", "omnizip_cli", "ask", str(clip), QUESTION, "--json", "--model", args.model,
               "--device", args.device, "--max-new-tokens", str(args.new_tokens), *extra]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
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
              width=args.width, height=args.height, clip_generated_s=generated_s, repeats=args.repeats,
              cpu_count=os.cpu_count()))
    if not args.no_warmup:  # every run is a fresh process: the warm-up only builds the tiny checkpoint, fills caches
        log("warm-up run (compressed)")
        run_ask(clip, args, VARIANTS["compressed"])
    ttft: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name, extra in VARIANTS.items():
            payload, wall = run_ask(clip, args, extra)
            timings = payload["timings"]
            seconds = float(timings["time_to_first_token_seconds"])
            ttft[name].append(seconds)
            tokens = payload.get("tokens", {})
            emit(dict(kind="ask", variant=name, repeat=repeat, model=args.model, device=args.device,
                      file_to_first_token_s=seconds, process_wall_s=wall,
                      load_model_s=timings.get("load_model_seconds"),
                      stages_s={k: v.get("seconds") if isinstance(v, dict) else v
                                for k, v in (timings.get("stages") or {}).items()},
                      prompt_tokens=payload.get("generation", {}).get("prompt_tokens"),
                      prompt_tokens_before_compression=payload.get("generation", {}).get(
                          "prompt_tokens_before_compression"),
                      tokens=tokens))
            log(f"repeat {repeat} {name:<10} file to first token {seconds:7.3f} s (process {wall:6.1f} s)")
    full, compressed = statistics.median(ttft["full"]), statistics.median(ttft["compressed"])
    emit(dict(kind="ratio", name="file_to_first_token_full_over_compressed", value=full / compressed,
              full_s_median=full, compressed_s_median=compressed, statistic="median", target=None,
              meets_target=None, formula="median file_to_first_token_s full / compressed"))
    log(f"file to first token: full {full:.3f} s, compressed {compressed:.3f} s ({full / compressed:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
