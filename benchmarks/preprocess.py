#!/usr/bin/env python
"""Media decode + processor per clip: the stock CPU pixel work against the device path (issue 19).

    python benchmarks/preprocess.py                    # 60 s 1280x720 clip; device path on cuda if there is one
    python benchmarks/preprocess.py --device cpu       # the device path on the CPU (uint8 patchify first)
    python benchmarks/preprocess.py --tiny             # CPU smoke: 8 s 320x180 clip

The clip (H.264 + AAC, ``media_decode.make_clip``) is decoded with ``load_media`` at omnizip's
defaults (2 fps, at most 768 x 28 x 28 pixels per frame: 1036 x 588 for 720p), then the stock
``Qwen2_5OmniProcessor`` (the tiny checkpoint's: real Omni preprocessing values; no model is
needed) builds the question-independent prompt through the adapter's ``prepare``:

* ``stock``: ``prepare(..., device=None)``: rescale, normalise and patchify of every frame in
  float32 on the CPU;
* ``device``: ``prepare(..., device=D)`` (:mod:`omnizip_cli.models.device_preprocess`): frames
  moved to D as uint8, patchified in uint8, converted and normalised on the patches there. D is
  ``--device`` (default: ``cuda`` when there is a GPU, else ``cpu``).

Each repeat decodes the media once and runs both variants on it (interleaved), after one untimed
warm-up of each; CUDA is synchronised before a variant's clock stops. Output: JSON lines (``kind``:
``setup``, ``run`` per repeat and variant, ``equivalence``, ``summary`` with medians and the ratio
``stock_over_device`` of media + processor). Median seconds, so one slow repeat on a shared machine
does not move them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.jsonlines import json_lines_output  # noqa: E402

BENCH = "preprocess"
log, emit = json_lines_output(BENCH)


def timed_prepare(processor: Any, media: Any, device: str | None) -> tuple[Any, float]:
    """The adapter's ``prepare`` with the pixel work on ``device`` (None: stock); (prompt, seconds)."""
    import torch

    from omnizip_cli.models.qwen2_5_omni import ADAPTER

    started = time.perf_counter()
    prepared = ADAPTER.prepare(processor, media, device=device)
    if device is not None and device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return prepared, time.perf_counter() - started


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: a short small clip, one repeat")
    parser.add_argument("--device", default=None, help="device of the device path (default cuda if any, else cpu)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length (default 60; --tiny 8)")
    parser.add_argument("--width", type=int, default=None, help="clip width (default 1280; --tiny 320)")
    parser.add_argument("--height", type=int, default=None, help="clip height (default 720; --tiny 180)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3; --tiny 1)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the generated clip is cached")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (8.0 if args.tiny else 60.0)
    args.width = args.width or (320 if args.tiny else 1280)
    args.height = args.height or (180 if args.tiny else 720)
    args.repeats = args.repeats or (1 if args.tiny else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    from benchmarks.session import benchmark_clip
    from omnizip_cli.models.qwen2_5_omni import ADAPTER
    from omnizip_cli.media import MediaOptions, load_media

    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    clip, generated_s = benchmark_clip(args.seconds, args.width, args.height, args.work_dir)
    processor = ADAPTER.tiny_processor()
    emit(dict(kind="setup", clip=str(clip), seconds=args.seconds, width=args.width, height=args.height,
              clip_generated_s=generated_s, device_path=device, repeats=args.repeats, cpu_count=os.cpu_count(),
              torch_threads=torch.get_num_threads(), torch=torch.__version__, transformers=transformers.__version__,
              python=platform.python_version(),
              gpu=torch.cuda.get_device_name(device) if device.startswith("cuda") else None))
    variants = {"stock": None, "device": device}
    media = load_media(clip, MediaOptions())
    for name, target in variants.items():  # warm-up (CUDA context, allocator, kernels)
        timed_prepare(processor, media, target)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    outputs: dict[str, Any] = {}
    for repeat in range(args.repeats):
        started = time.perf_counter()
        media = load_media(clip, MediaOptions())
        decode_s = time.perf_counter() - started
        for name, target in variants.items():
            prepared, seconds = timed_prepare(processor, media, target)
            outputs[name] = prepared.tensors
            runs[name].append({"media_decode_s": decode_s, "processor_s": seconds})
            frames = media.frames
            emit(dict(kind="run", variant=name, device=target or "cpu", repeat=repeat, media_decode_s=decode_s,
                      processor_s=seconds, media_and_processor_s=decode_s + seconds,
                      frames=int(frames.shape[0]), frame_px=[int(frames.shape[1]), int(frames.shape[2])],
                      pixel_values_shape=list(prepared.tensors["pixel_values_videos"].shape),
                      pixel_values_device=str(prepared.tensors["pixel_values_videos"].device)))
            log(f"repeat {repeat} {name:<6} ({target or 'cpu'}): media decode {decode_s:6.3f} s, "
                f"processor {seconds:6.3f} s")
    stock, moved = outputs["stock"]["pixel_values_videos"], outputs["device"]["pixel_values_videos"].cpu()
    difference = float((stock - moved).abs().max()) if stock.shape == moved.shape else float("inf")
    others_equal = all(
        torch.equal(value, outputs["device"][key].cpu()) for key, value in outputs["stock"].items()
        if key != "pixel_values_videos" and isinstance(value, torch.Tensor)
    )
    emit(dict(kind="equivalence", what="pixel_values_videos", max_abs_err=difference, bound=1e-5,
              within_bound=difference <= 1e-5, other_tensors_equal=others_equal))
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    total = {name: m["media_decode_s"] + m["processor_s"] for name, m in medians.items()}
    emit(dict(kind="summary", device_path=device, statistic="median",
              stock_processor_s=medians["stock"]["processor_s"], device_processor_s=medians["device"]["processor_s"],
              media_decode_s=medians["stock"]["media_decode_s"], stock_media_and_processor_s=total["stock"],
              device_media_and_processor_s=total["device"], stock_over_device=total["stock"] / total["device"],
              processor_stock_over_device=medians["stock"]["processor_s"] / medians["device"]["processor_s"]))
    log(f"media + processor: stock {total['stock']:.3f} s, device path on {device} {total['device']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
