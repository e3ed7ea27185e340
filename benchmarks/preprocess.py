#!/usr/bin/env python
"""Media decode + processor per clip: omnizip's CPU paths, the device path, and the stock path (issues 19, 28).

    python benchmarks/preprocess.py                    # 60 s 1280x720 clip: stock / fused / device processor
    python benchmarks/preprocess.py --device cpu       # the device path on the CPU (uint8 patchify first)
    python benchmarks/preprocess.py --tiny             # CPU smoke: 8 s 320x180 clip
    python benchmarks/preprocess.py --versus-stock --stock-python /tmp/venv-stock/bin/python
                                                       # against qwen-omni-utils + the stock processor

In-process mode: the clip (H.264 + AAC, ``media_decode.make_clip``) is decoded with ``load_media``
at omnizip's defaults, then the stock ``Qwen2_5OmniProcessor`` (the tiny checkpoint's: real Omni
preprocessing values; no model is needed) builds the question-independent prompt through the
adapter's ``prepare`` in three variants:

* ``stock``: ``OMNIZIP_PREPROCESS_DEVICE=stock``: the stock video processor (float32 rescale,
  normalise, patchify) over bounded chunks of frames;
* ``fused``: the CPU default (:mod:`omnizip_cli.models.fused_preprocess`): uint8 frames straight
  into the float32 patches in one pass; must be bitwise ``stock``;
* ``device``: ``prepare(..., device=D)`` (:mod:`omnizip_cli.models.device_preprocess`), D =
  ``--device`` (default ``cuda`` when there is a GPU, else ``cpu``); within 1e-5 of ``stock``.

Each repeat decodes the media once and runs the variants on it (interleaved), after one untimed
warm-up of each. Output: JSON lines (``setup``, ``run`` per repeat and variant, ``equivalence``,
``summary`` with medians and ``stock_over_device`` / ``stock_over_fused`` of media + processor).

``--versus-stock`` (issue 28): each side runs in its own process, pinned to the first N usable
cores (``--cores``, default ``2,all``), interleaved, ``--repeats`` times (default 3): omnizip
(``load_media`` + ``prepare`` on the whole one-turn prompt) against the stock path as the model
card writes it (qwen-omni-utils ``process_mm_info`` with the audio of the video, then
``Qwen2_5OmniProcessor``; the card's own call raises in transformers 5.23, so the audio is passed as
``load_audio_from_video``), in ``--stock-python``'s environment (qwen-omni-utils installed there,
FFmpeg on its PATH). Records: ``child`` per process (decode, processor, peak RSS, token grid),
``versus`` per clip and core count (medians, ratio stock / omnizip, peak RSS of both).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.jsonlines import json_lines_output  # noqa: E402

BENCH = "preprocess"
log, emit = json_lines_output(BENCH)
QUESTION = "What happens in this video?"
#: The issue-28 clips: (seconds, width, height).
VERSUS_CLIPS = ((60.0, 1280, 720), (300.0, 640, 360))
TINY_CLIPS = ((8.0, 320, 180),)


@contextlib.contextmanager
def preprocess_setting(value: str | None) -> Iterator[None]:
    """``OMNIZIP_PREPROCESS_DEVICE`` set to ``value`` (None: unset) inside the block."""
    old = os.environ.get("OMNIZIP_PREPROCESS_DEVICE")
    if value is None:
        os.environ.pop("OMNIZIP_PREPROCESS_DEVICE", None)
    else:
        os.environ["OMNIZIP_PREPROCESS_DEVICE"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OMNIZIP_PREPROCESS_DEVICE", None)
        else:
            os.environ["OMNIZIP_PREPROCESS_DEVICE"] = old


def timed_prepare(processor: Any, media: Any, variant: str, device: str | None) -> tuple[Any, float]:
    """The adapter's ``prepare`` for ``variant`` (stock / fused / device); (prompt, seconds)."""
    import torch

    from omnizip_cli.models.qwen2_5_omni import ADAPTER

    target = device if variant == "device" else None
    with preprocess_setting("stock" if variant == "stock" else None):
        started = time.perf_counter()
        prepared = ADAPTER.prepare(processor, media, device=target)
        if target is not None and target.startswith("cuda"):
            torch.cuda.synchronize(target)
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
    parser.add_argument("--versus-stock", action="store_true", help="omnizip against qwen-omni-utils + processor")
    parser.add_argument("--stock-python", default=os.environ.get("OMNIZIP_STOCK_PYTHON", sys.executable),
                        help="interpreter with qwen-omni-utils installed (default $OMNIZIP_STOCK_PYTHON or this one)")
    parser.add_argument("--cores", default="2,all", help="core counts to pin each side to (--versus-stock)")
    parser.add_argument("--child", choices=("omnizip", "stock"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sample-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (8.0 if args.tiny else 60.0)
    args.width = args.width or (320 if args.tiny else 1280)
    args.height = args.height or (180 if args.tiny else 720)
    args.repeats = args.repeats or (1 if args.tiny else 3)
    return args


# -- versus the stock path: one process per measurement ---------------------------------------------
def pin_cores(count: int) -> int:
    """Run this process on the first ``count`` usable cores (before torch starts its threads)."""
    cores = sorted(os.sched_getaffinity(0))[:count]
    os.sched_setaffinity(0, cores)
    return len(cores)


def child(side: str, clip: Path, cores: int, sample_out: Path | None = None) -> dict[str, Any]:
    """One measurement in this process: decode + processor of ``clip`` by ``side``, pinned to ``cores``.
    ``sample_out``: where to save the first temporal step's rows of ``pixel_values_videos`` (``.npy``)."""
    used = pin_cores(cores)
    import torch

    torch.set_num_threads(used)
    from omnizip_cli.models.prompts import media_messages
    from omnizip_cli.models.qwen2_5_omni import ADAPTER

    processor = ADAPTER.tiny_processor()
    if side == "omnizip":
        from omnizip_cli.media import MediaOptions, load_media

        reader = "pyav"
        started = time.perf_counter()
        media = load_media(clip, MediaOptions())
        decoded = time.perf_counter()
        tensors = ADAPTER.prepare(processor, media, question=QUESTION).tensors
    else:
        from qwen_omni_utils import process_mm_info

        messages = media_messages("video+audio", QUESTION, None)
        messages[0]["content"][0]["video"] = str(clip)
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        started = time.perf_counter()
        audios, images, videos, video_kwargs = process_mm_info(messages, use_audio_in_video=True,
                                                               return_video_kwargs=True)
        decoded = time.perf_counter()
        fps = video_kwargs.get("fps")
        from qwen_omni_utils.v2_5.vision_process import get_video_reader_backend

        reader = get_video_reader_backend()
        tensors = processor(text=[text], audio=audios, images=images, videos=videos, return_tensors="pt",
                            load_audio_from_video=True, audio_from_video_indices=[0],
                            videos_kwargs={"fps": fps[0] if isinstance(fps, list) else fps})
    done = time.perf_counter()
    pixels = tensors["pixel_values_videos"]
    if sample_out is not None:
        grid = [int(v) for v in tensors["video_grid_thw"].reshape(-1).tolist()]
        import numpy as np

        np.save(sample_out, pixels[: grid[1] * grid[2]].contiguous().numpy())
    return dict(kind="child", side=side, clip=clip.name, cores=used, reader=reader, media_decode_s=decoded - started,
                processor_s=done - decoded, media_and_processor_s=done - started,
                peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                video_grid_thw=[int(v) for v in tensors["video_grid_thw"].reshape(-1).tolist()],
                input_tokens=int(tensors["input_ids"].shape[-1]),
                pixel_values_sha256=hashlib.sha256(pixels.contiguous().numpy().tobytes()).hexdigest()[:16])


def run_child(python: str, side: str, clip: Path, cores: int, sample_out: Path | None = None) -> dict[str, Any]:
    """:func:`child` in a fresh process (its own peak RSS); the record, or one with ``error``."""
    command = [python, str(Path(__file__).resolve()), "--child", side, "--clip", str(clip), "--cores", str(cores)]
    if sample_out is not None:
        command += ["--sample-out", str(sample_out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(kind="child", side=side, clip=clip.name, cores=cores, error=tail[-300:])
    return json.loads(lines[-1])


def pixel_difference(stock: Path, ours: Path) -> dict[str, Any]:
    """How far omnizip's first two frames, as the model receives them, are from the stock path's:
    the first temporal step's rows of ``pixel_values_videos`` from each side, mapped back to 0-255
    pixel values with the processor's mean and std (``statistic``: PSNR in dB, mean and largest
    absolute difference in pixel levels, the share of equal values). Frames are chosen the same way
    on both sides for a constant-rate clip; the difference is the scaling (the stock path converts
    to RGB at full size, then resizes with torchvision's bicubic and antialias; omnizip scales with
    swscale from YUV)."""
    import numpy as np

    from omnizip_cli.models.qwen2_5_omni import ADAPTER

    if not (stock.exists() and ours.exists()):
        return dict(skipped="a side saved no sample")
    a, b = np.load(stock), np.load(ours)
    if a.shape != b.shape:
        return dict(skipped=f"different shapes {list(a.shape)} and {list(b.shape)}")
    video = ADAPTER.tiny_processor().video_processor
    mean = np.asarray(video.image_mean, dtype=np.float64).reshape(1, 3, 1)
    std = np.asarray(video.image_std, dtype=np.float64).reshape(1, 3, 1)

    def levels(values: Any) -> Any:
        return (values.astype(np.float64).reshape(len(values), 3, -1) * std + mean) * 255.0

    diff = levels(b) - levels(a)
    mse = float(np.mean(diff**2))
    per_channel = diff.mean(axis=(0, 2))
    return dict(psnr_db=round(10 * np.log10(255.0**2 / mse), 2) if mse > 0 else float("inf"),
                mean_abs_levels=round(float(np.abs(diff).mean()), 3), max_abs_levels=round(float(np.abs(diff).max()), 2),
                mean_signed_levels_rgb=[round(float(v), 3) for v in per_channel],
                equal_share=round(float(np.mean(np.abs(diff) < 0.5)), 4), rows=int(len(a)))


def versus(args: argparse.Namespace) -> int:
    """Both sides, interleaved, medians per clip and core count, ratios in one run."""
    from benchmarks.session import benchmark_clip
    from omnizip_cli.media.video import usable_cpus

    usable = usable_cpus()
    counts = sorted({usable if c == "all" else min(int(c), usable) for c in args.cores.split(",")})
    specs = TINY_CLIPS if args.tiny else VERSUS_CLIPS
    clips = [benchmark_clip(s, w, h, args.work_dir)[0] for s, w, h in specs]
    emit(dict(kind="setup", mode="versus_stock", clips=[c.name for c in clips], cores=counts, usable_cpus=usable,
              repeats=args.repeats, stock_python=args.stock_python, python=platform.python_version(),
              load_average=list(os.getloadavg())))
    runs: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    samples = Path(tempfile.mkdtemp(prefix="omnizip-versus-"))
    for repeat in range(args.repeats):
        for cores in counts:
            for clip in clips:
                for side in ("stock", "omnizip"):
                    sample = samples / f"{clip.stem}-{side}.npy" if repeat == 0 and cores == counts[0] else None
                    record = run_child(args.stock_python if side == "stock" else sys.executable, side, clip, cores,
                                       sample)
                    record["repeat"] = repeat
                    emit(record)
                    if "error" in record:
                        log(f"{clip.name} {cores} cores {side}: failed ({record['error']})")
                        continue
                    runs.setdefault((clip.name, cores, side), []).append(record)
                    log(f"repeat {repeat} {clip.name} {cores} cores {side:<7}: decode {record['media_decode_s']:.2f} s"
                        f" + processor {record['processor_s']:.2f} s, peak RSS {record['peak_rss_bytes'] / 1e9:.2f} GB")
    for clip in clips:
        emit(dict(kind="pixels", clip=clip.name, **pixel_difference(samples / f"{clip.stem}-stock.npy",
                                                                     samples / f"{clip.stem}-omnizip.npy")))
    shutil.rmtree(samples, ignore_errors=True)
    for clip in clips:
        for cores in counts:
            sides = {side: runs.get((clip.name, cores, side), []) for side in ("stock", "omnizip")}
            if not all(sides.values()):
                emit(dict(kind="versus", clip=clip.name, cores=cores, skipped="a side failed every run"))
                continue
            med = {side: {key: statistics.median(r[key] for r in rs) for key in
                          ("media_decode_s", "processor_s", "media_and_processor_s", "peak_rss_bytes")}
                   for side, rs in sides.items()}
            ratio = med["stock"]["media_and_processor_s"] / med["omnizip"]["media_and_processor_s"]
            emit(dict(kind="versus", clip=clip.name, cores=cores, statistic="median", runs=len(sides["omnizip"]),
                      stock=med["stock"], omnizip=med["omnizip"], stock_over_omnizip=ratio,
                      same_video_grid=sides["stock"][0]["video_grid_thw"] == sides["omnizip"][0]["video_grid_thw"],
                      video_grid_thw={s: rs[0]["video_grid_thw"] for s, rs in sides.items()},
                      readers={s: rs[0].get("reader") for s, rs in sides.items()}))
            log(f"{clip.name}, {cores} cores: stock {med['stock']['media_and_processor_s']:.2f} s, omnizip"
                f" {med['omnizip']['media_and_processor_s']:.2f} s ({med['omnizip']['media_decode_s']:.2f} +"
                f" {med['omnizip']['processor_s']:.2f}): {ratio:.2f}x")
    return 0


# -- in process: the processor variants on one decode ------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.clip, int(args.cores), args.sample_out)), file=sys.stdout,
              flush=True)  # to the parent
        return 0
    if args.versus_stock:
        return versus(args)
    import torch
    import transformers

    from benchmarks.session import benchmark_clip
    from omnizip_cli.media import MediaOptions, load_media
    from omnizip_cli.models.qwen2_5_omni import ADAPTER

    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    clip, generated_s = benchmark_clip(args.seconds, args.width, args.height, args.work_dir)
    processor = ADAPTER.tiny_processor()
    emit(dict(kind="setup", clip=str(clip), seconds=args.seconds, width=args.width, height=args.height,
              clip_generated_s=generated_s, device_path=device, repeats=args.repeats, cpu_count=os.cpu_count(),
              torch_threads=torch.get_num_threads(), torch=torch.__version__, transformers=transformers.__version__,
              python=platform.python_version(),
              gpu=torch.cuda.get_device_name(device) if device.startswith("cuda") else None))
    variants = ("stock", "fused", "device")
    media = load_media(clip, MediaOptions())
    for name in variants:  # warm-up (CUDA context, allocator, kernels)
        timed_prepare(processor, media, name, device)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    outputs: dict[str, Any] = {}
    for repeat in range(args.repeats):
        started = time.perf_counter()
        media = load_media(clip, MediaOptions())
        decode_s = time.perf_counter() - started
        for name in variants:
            prepared, seconds = timed_prepare(processor, media, name, device)
            outputs[name] = prepared.tensors
            runs[name].append({"media_decode_s": decode_s, "processor_s": seconds})
            frames = media.frames
            target = device if name == "device" else "cpu"
            emit(dict(kind="run", variant=name, device=target, repeat=repeat, media_decode_s=decode_s,
                      processor_s=seconds, media_and_processor_s=decode_s + seconds,
                      frames=int(frames.shape[0]), frame_px=[int(frames.shape[1]), int(frames.shape[2])],
                      pixel_values_shape=list(prepared.tensors["pixel_values_videos"].shape),
                      pixel_values_device=str(prepared.tensors["pixel_values_videos"].device)))
            log(f"repeat {repeat} {name:<6} ({target}): media decode {decode_s:6.3f} s, processor {seconds:6.3f} s")
    stock, moved = outputs["stock"]["pixel_values_videos"], outputs["device"]["pixel_values_videos"].cpu()
    difference = float((stock - moved).abs().max()) if stock.shape == moved.shape else float("inf")
    others_equal = all(
        torch.equal(value, outputs["device"][key].cpu()) and torch.equal(value, outputs["fused"][key])
        for key, value in outputs["stock"].items() if key != "pixel_values_videos" and isinstance(value, torch.Tensor)
    )
    emit(dict(kind="equivalence", what="pixel_values_videos", max_abs_err=difference, bound=1e-5,
              within_bound=difference <= 1e-5, other_tensors_equal=others_equal,
              fused_bitwise_equal=bool(torch.equal(outputs["fused"]["pixel_values_videos"], stock))))
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    total = {name: m["media_decode_s"] + m["processor_s"] for name, m in medians.items()}
    emit(dict(kind="summary", device_path=device, statistic="median",
              stock_processor_s=medians["stock"]["processor_s"], device_processor_s=medians["device"]["processor_s"],
              fused_processor_s=medians["fused"]["processor_s"],
              media_decode_s=medians["stock"]["media_decode_s"], stock_media_and_processor_s=total["stock"],
              device_media_and_processor_s=total["device"], fused_media_and_processor_s=total["fused"],
              stock_over_device=total["stock"] / total["device"], stock_over_fused=total["stock"] / total["fused"],
              processor_stock_over_device=medians["stock"]["processor_s"] / medians["device"]["processor_s"],
              processor_stock_over_fused=medians["stock"]["processor_s"] / medians["fused"]["processor_s"]))
    log(f"media + processor: stock {total['stock']:.3f} s, fused {total['fused']:.3f} s,"
        f" device path on {device} {total['device']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
