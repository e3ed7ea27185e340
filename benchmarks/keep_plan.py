"""Time the OmniZip keep plan against the loop-by-loop reference.

Builds a processor-like layout for a clip (2-s chunks of 2 grid steps + 50 audio tokens; 25 audio
tokens/s, one grid step per second at fps 2) with random embeddings at full model width, and times
``build_keep_plan`` (vectorized) and ``tests/helpers/compression_reference.reference_keep_plan`` (loops).
Prints one JSON object per measurement:

    {"bench": "keep_plan", "clip_s", "device", "dtype", "tokens", "vectorized_ms", "reference_ms",
     "ratio", "identical", ...}

``ratio`` = reference_ms / vectorized_ms; times are medians of ``--repeats`` runs after a warm-up
(``vectorized_min_ms``: the fastest; the reference is run ``--reference-repeats`` times, default 1,
as it is slow). ``*_cpu_ms`` / ``cpu_ratio`` are the same in process CPU time (all threads): less
disturbed by other jobs on a shared machine (use ``--threads 1`` there, as idle OpenMP threads spin).
``identical`` says the two plans agree (keep mask and merged embeddings). The reference runs where
the embeddings are; on CUDA its per-frame loops launch many small kernels.

    python benchmarks/keep_plan.py                     # CPU, 60 s and 300 s, bf16 and float32
    python benchmarks/keep_plan.py --device cuda --clips 60 300
    python benchmarks/keep_plan.py --quick             # CI smoke run: small clip, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _import_reference():
    """tests/helpers/compression_reference.py, importable once the repository root is on sys.path."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.helpers import compression_reference

    return compression_reference


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[list[float], list[float], object]:
    """Wall-clock and process-CPU milliseconds of ``repeats`` calls (synchronised on CUDA), last result."""
    result = None
    wall, cpu = [], []
    for _ in range(repeats):
        _synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        _synchronize(device)
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return wall, cpu, result


def measure(
    clip_s: int,
    device: torch.device,
    dtype: torch.dtype,
    *,
    dim: int,
    tokens_per_frame_hw: tuple[int, int],
    repeats: int,
    reference_repeats: int,
    run_reference: bool,
    seed: int = 0,
) -> dict:
    from omnizip_cli.compression import PRESETS, build_keep_plan

    ref = _import_reference()
    height, width = tokens_per_frame_hw
    generator = torch.Generator().manual_seed(seed)
    case = ref.synthetic_case(
        generator, frames=clip_s, height=height, width=width, num_audio=25 * clip_s, dim=dim, dtype=dtype
    )
    case.embeds = case.embeds.to(device)
    case.audio_scores = case.audio_scores.to(device)
    config = PRESETS["45"]
    kwargs = case.kwargs(config)

    build_keep_plan(**kwargs)  # warm-up
    vectorized, vectorized_cpu, plan = _timed_ms(lambda: build_keep_plan(**kwargs), repeats, device)
    vectorized_ms = statistics.median(vectorized)
    row = {
        "bench": "keep_plan",
        "clip_s": clip_s,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "dim": dim,
        "threads": torch.get_num_threads(),
        "tokens": int(case.input_ids.numel()),
        "audio_tokens": plan.audio_total,
        "video_tokens": plan.video_total,
        "retention": round(plan.retention, 4),
        "vectorized_ms": round(vectorized_ms, 2),
        "vectorized_min_ms": round(min(vectorized), 2),
        "vectorized_cpu_ms": round(statistics.median(vectorized_cpu), 2),
    }
    if run_reference:
        reference, reference_cpu, reference_plan = _timed_ms(
            lambda: ref.reference_keep_plan(**kwargs), reference_repeats, device
        )
        reference_ms = statistics.median(reference)
        merged = case.embeds.clone()
        merged[plan.merged_positions] = plan.merged_embeds
        row["reference_ms"] = round(reference_ms, 2)
        row["reference_cpu_ms"] = round(statistics.median(reference_cpu), 2)
        row["ratio"] = round(reference_ms / vectorized_ms, 2)
        row["cpu_ratio"] = round(row["reference_cpu_ms"] / max(row["vectorized_cpu_ms"], 1e-9), 2)
        row["identical"] = bool(
            torch.equal(plan.keep.cpu(), reference_plan.keep.cpu())
            and torch.equal(merged, reference_plan.merged_embeds(case.embeds))
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--clips", type=int, nargs="+", default=[60, 300], help="clip lengths in seconds")
    parser.add_argument(
        "--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32", "float16"]
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the vectorized plan (median)")
    parser.add_argument("--reference-repeats", type=int, default=1, help="timed runs of the loop reference")
    parser.add_argument("--no-reference", action="store_true", help="time the vectorized plan only")
    parser.add_argument("--dim", type=int, default=3584, help="embedding width (3584 = Qwen2.5-Omni-7B)")
    parser.add_argument(
        "--grid",
        type=int,
        nargs=2,
        default=[24, 24],
        metavar=("H", "W"),
        help="patch grid of a frame; tokens per frame = (H//2)*(W//2) (24 24 -> 144; 16 28 -> 112)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a 6 s clip, width 64, 1 repeat")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.quick:
        args.clips, args.repeats, args.reference_repeats, args.dim = [6], 1, 1, 64
    device = torch.device(args.device)
    for clip_s in args.clips:
        for dtype_name in args.dtypes:
            row = measure(
                clip_s,
                device,
                getattr(torch, dtype_name),
                dim=args.dim,
                tokens_per_frame_hw=tuple(args.grid),
                repeats=args.repeats,
                reference_repeats=args.reference_repeats,
                run_reference=not args.no_reference,
            )
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
