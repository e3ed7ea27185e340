#!/usr/bin/env python
"""Many questions of one video through one ``Session``; a cold open against a reopen (issue 13).

    python benchmarks/session.py                 # GPU: random-weight 7B thinker, 60 s 1280x720 clip
    python benchmarks/session.py --tiny          # CPU smoke: --model tiny, 60 s 640x360 clip (CI)
    python benchmarks/session.py --reopen plain  # the reopen as a second Session.open without the cache
    python benchmarks/session.py --size 0.5b-llm --device cpu --seconds 20   # CPU, LLM-bound

Model: on a GPU the **Qwen2.5-Omni-7B thinker** with random weights, built directly on the device in
bfloat16 (``benchmarks/thinker_configs.py``: ``random_loaded_model``; nothing is downloaded), with
the tiny checkpoint's stock processor (real Omni preprocessing values; the model's special token
ids are set to that tokenizer's). ``--tiny`` loads ``--model tiny`` on the CPU in float32. The
model is loaded once, before anything is timed: every figure below excludes the model load.

Clip: ``--seconds`` (60) of H.264 + AAC at ``--width`` x ``--height`` (1280 x 720; ``--tiny``
640 x 360), generated once with PyAV (``media_decode.make_clip``) and cached in ``--work-dir``.
Frames are sampled at 2 fps and sized to at most ``--max-pixels`` (default 224 x 392 = 87,808, the
paper's budget: 112 video tokens + 25 audio tokens per second, about 8.3 k tokens for 60 s).

What runs (after one untimed warm-up open + question on the same clip):

* ``open`` ``cold``: ``Session.open(loaded, path, compression=--compression)`` (media decode,
  processor, encoders, saliency, keep plan), then question 1 (its answer prefills the kept media
  prefix into the KV cache, then the question), then questions 2-5 on the same session (only
  their own tokens are prefilled onto the cached prefix). One ``question`` line per question.
* ``open`` ``reopen``: the same file opened again and question 1 asked. ``--reopen disk`` (the
  default, what the GPU suite measures) goes through :func:`open_from_disk_cache`: the cold open
  (a miss: the benchmark's own prefix cache is emptied first) wrote the prepared prefix to disk,
  and the reopen reads it back (``reopen_kind: "disk_cache"``; ``"disk_miss"`` if the entry was not
  there, e.g. its write failed: then every stage reran and the ratio is not judged against the
  target). ``--reopen plain`` opens it with ``Session.open(cache=False)`` again: every stage reruns,
  so the ratio is about 1 (``reopen_kind: "session_open"``; no target).
* ``open`` ``full``: a cold open with compression off and its question 1 (file to first token,
  full vs compressed), unless ``--no-full``.

Each cold / reopen / full triple runs ``--repeats`` times; ratios use medians.

Output: JSON lines (``kind``: ``setup``, ``clip``, ``open``, ``question``, ``ratio``), progress on
stderr. ``ratio`` lines: ``ttft_q{2..5}_over_q1`` and ``ttft_followups_over_q1`` (median of
questions 2-5 over question 1; target <= 0.05 on a GPU with the 7B), ``reopen_over_cold`` (reopen
file-to-first-token over the cold one, model load excluded; target <= 0.15 for a disk-cache hit) and
``file_to_first_token_full_over_compressed``. The ``reopen`` open line also has the disk entry's
``disk_entry_bytes`` and ``disk_load_s`` (the read). On the CPU only the ratios mean something; targets are
GPU targets and ``meets_target`` is null off the GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.jsonlines import json_lines_output  # noqa: E402
from benchmarks.thinker_configs import CPU_SIZES  # noqa: E402

BENCH = "session"
QUESTIONS = (
    "What happens in this video?",
    "What colour is the moving box?",
    "Is there any sound, and what does it sound like?",
    "How many objects move across the frame?",
    "Describe the background in one sentence.",
)
FOLLOW_UP_TARGET = 0.05
REOPEN_TARGET = 0.15
PAPER_MAX_PIXELS = 224 * 392

log, emit = json_lines_output(BENCH)


# ------------------------------------------------------------------------------------------ the disk cache (--reopen disk)


#: The benchmark's own prefix cache (``--reopen disk``): ``<work dir>/prefix-cache``, emptied before each cold open.
DISK_CACHE: Any = None


def open_from_disk_cache(loaded: Any, path: Path, **open_kwargs: Any) -> Any | None:
    """Open ``path`` through the disk cache of prepared media (issue 13), the benchmark's own
    :class:`~omnizip_cli.generation.prefix_cache.PrefixCache` (never ``$OMNIZIP_CACHE``).

    A miss (the cold open, after the cache was emptied) decodes, encodes, plans and writes the
    entry (its write is part of the cold open's time); a hit (the reopen) returns a
    :class:`~omnizip_cli.generation.Session` on the prepared prefix read from the entry (kept,
    merged embeddings, positions, plan figures, media summary), skipping media decode, processor,
    encoders and plan: the library's own opening path. None when ``--reopen disk`` was not asked.
    """
    if DISK_CACHE is None:
        return None
    from omnizip_cli.generation import OpenOptions, Session

    return Session.open(loaded, path, OpenOptions(cache=DISK_CACHE, **open_kwargs))


# ------------------------------------------------------------------------------------------ setup


def benchmark_clip(seconds: float, width: int, height: int, work_dir: Path | None) -> tuple[Path, float]:
    """The H.264 + AAC clip (``media_decode.make_clip``), cached; returns (path, seconds spent generating)."""
    from benchmarks.media_decode import make_clip

    work = work_dir or Path(tempfile.gettempdir()) / "omnizip-bench"
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"bench_{width}x{height}_{seconds:g}s_30fps.mp4"
    if path.exists():
        return path, 0.0
    started = time.perf_counter()
    make_clip(path, seconds, width, height, 30)
    return path, time.perf_counter() - started


def load(args: argparse.Namespace) -> Any:
    """The model, loaded once (tiny checkpoint on the CPU, or the random-weight full-size thinker)."""
    import torch

    if args.tiny:
        from omnizip_cli.models.registry import ModelSpec, load_model

        return load_model(ModelSpec(model="tiny", device=args.device or "cpu", dtype="float32"))
    from benchmarks.thinker_configs import random_loaded_model

    device = args.device or "cuda"
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return random_loaded_model(args.size, device, dtype, tiny_encoders=args.size in CPU_SIZES)


# ------------------------------------------------------------------------------------------ measuring


def ask(session: Any, question: str, new_tokens: int) -> Any:
    """One independent question on ``session``; its :class:`~omnizip_cli.generation.stream.AnswerStats`."""
    from omnizip_cli.generation.sampling import GenerationOptions

    return session.answer(question, GenerationOptions(max_new_tokens=new_tokens))


def open_and_ask(loaded: Any, path: Path, args: argparse.Namespace, *, compression: Any, variant: str,
                 repeat: int, base: dict[str, Any], questions: tuple[str, ...]) -> dict[str, Any]:
    """Open the clip (``variant``: cold, reopen or full), ask ``questions``; emit one open + one line per question."""
    from omnizip_cli.generation import Session

    media_options = sampling(args)
    kind = "session_open"
    loaded_sync(loaded)
    started = time.perf_counter()
    session = None
    if variant in ("cold", "reopen") and args.reopen == "disk":
        if variant == "cold":
            DISK_CACHE.clear()  # a real cold open: a miss that writes the entry
        session = open_from_disk_cache(loaded, path, media=media_options, compression=compression)
        kind = "disk_cache" if session.origin.source == "disk" else "disk_miss"
        if variant == "reopen" and kind == "disk_miss":
            log("the reopen missed the disk cache (was the cold open's entry written?): every stage reran")
    if session is None:
        session = Session.open(loaded, path, media=media_options, compression=compression, cache=False)
    loaded_sync(loaded)
    open_seconds = time.perf_counter() - started
    answers = [ask(session, q, args.new_tokens) for q in questions]
    first = answers[0]
    record = dict(
        base, kind="open", variant=variant, repeat=repeat, reopen_kind=kind if variant == "reopen" else None,
        compression=None if compression is None else str(compression), open_s=open_seconds,
        q1_first_token_s=first.first_token_seconds, file_to_first_token_s=open_seconds + first.first_token_seconds,
        stages_s={name: r["seconds"] for name, r in session.timer.to_dict().items()},
        prefix_tokens_before=session.tokens.total.before, prefix_tokens_after=session.tokens.total.after,
        retention=session.tokens.total.after / max(session.tokens.total.before, 1),
        prefix_source=session.origin.source, disk_entry_bytes=session.origin.entry_bytes,
        disk_load_s=session.origin.load_seconds,
    )
    emit(record)
    log(f"repeat {repeat} {variant:<7} open {open_seconds:7.3f} s, q1 first token {first.first_token_seconds:7.3f} s")
    record["questions"] = []
    for index, stats in enumerate(answers, start=1):
        line = dict(
            base, kind="question", variant=variant, repeat=repeat, question=index,
            first_token_s=stats.first_token_seconds, prefill_s=stats.prefill_seconds,
            prefilled_tokens=stats.prefilled_tokens, prompt_tokens=stats.prompt_tokens,
            prefix_source=stats.prefix_source, generated_tokens=stats.generated_tokens,
            decode_tokens_per_second=stats.decode_tokens_per_second, decoder=stats.decoder,
        )
        emit(line)
        record["questions"].append(line)
        if len(answers) > 1:
            log(f"repeat {repeat} {variant:<7} q{index} first token {stats.first_token_seconds:7.3f} s "
                f"({stats.prefilled_tokens} tokens prefilled, prefix from {stats.prefix_source})")
    del session
    return record


def sampling(args: argparse.Namespace) -> Any:
    """2 fps, frames of at most ``--max-pixels`` (the minimum lowered to match when needed)."""
    from omnizip_cli.media import VIDEO_MIN_PIXELS, MediaOptions

    return MediaOptions(min_pixels=min(VIDEO_MIN_PIXELS, args.max_pixels), max_pixels=args.max_pixels)


def loaded_sync(loaded: Any) -> None:
    """Wait for the model's CUDA device (no-op on the CPU)."""
    if str(loaded.device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(loaded.device)


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: --model tiny in float32")
    parser.add_argument("--size", choices=("7b", "3b", *CPU_SIZES), default="7b",
                        help="random-weight thinker (default 7b; 0.5b-llm: a 0.5B-class LLM under tiny "
                             "encoders, for a CPU run bound by the language model)")
    parser.add_argument("--device", default=None, help="cuda (default), cuda:N or cpu; --tiny: cpu")
    parser.add_argument("--seconds", type=float, default=60.0, help="clip length (default 60)")
    parser.add_argument("--width", type=int, default=None, help="clip width (default 1280; --tiny 640)")
    parser.add_argument("--height", type=int, default=None, help="clip height (default 720; --tiny 360)")
    parser.add_argument("--max-pixels", type=int, default=PAPER_MAX_PIXELS,
                        help=f"pixels per sampled frame at most (default {PAPER_MAX_PIXELS} = 224x392)")
    parser.add_argument("--compression", default="45", help="preset of the compressed runs (default 45)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per answer (default 16; --tiny 4)")
    parser.add_argument("--repeats", type=int, default=None, help="cold/reopen/full triples (default 2; --tiny 1)")
    parser.add_argument("--reopen", choices=("disk", "plain"), default="disk",
                        help="reopen through the disk cache the cold open wrote (disk, the default) or with "
                             "Session.open(cache=False) again (plain)")
    parser.add_argument("--no-full", action="store_true", help="skip the uncompressed cold open")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up open")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the generated clip is cached")
    args = parser.parse_args(argv)
    args.width = args.width or (640 if args.tiny else 1280)
    args.height = args.height or (360 if args.tiny else 720)
    args.new_tokens = args.new_tokens or (4 if args.tiny else 16)
    args.repeats = args.repeats or (1 if args.tiny else 2)
    if args.repeats < 1 or args.new_tokens < 1 or args.seconds <= 0:
        parser.error("--repeats, --new-tokens and --seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    if not args.tiny and not str(args.device or "cuda").startswith("cpu") and not torch.cuda.is_available():
        print(f"{BENCH}: no CUDA GPU here; the random-weight {args.size} thinker runs on a GPU only "
              "(use --tiny for the CPU smoke run)", file=sys.stderr)
        return 2
    path, generated_s = benchmark_clip(args.seconds, args.width, args.height, args.work_dir)
    log(f"clip {path} ({'generated in %.1f s' % generated_s if generated_s else 'cached'})")
    loaded = load(args)
    if args.reopen == "disk":
        from omnizip_cli.generation.prefix_cache import PrefixCache

        global DISK_CACHE
        DISK_CACHE = PrefixCache((args.work_dir or Path(tempfile.gettempdir()) / "omnizip-bench") / "prefix-cache",
                                 max_bytes=10**12)
    cuda = str(loaded.device).startswith("cuda")
    base = dict(model=loaded.name, device=loaded.device, dtype=loaded.dtype)
    emit(dict(
        base, kind="setup", random_weights=True, load_s=loaded.load_seconds,
        parameters=sum(p.numel() for p in loaded.model.parameters()),
        fast_encoder_attention=loaded.fast_encoder_attention, encoder_attention_note=loaded.encoder_attention_note,
        torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version(),
        cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(loaded.device) if cuda else None,
        cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), repeats=args.repeats,
        new_tokens=args.new_tokens, reopen=args.reopen, compression=args.compression,
    ))
    emit(dict(base, kind="clip", path=str(path), seconds=args.seconds, width=args.width, height=args.height,
              clip_bytes=path.stat().st_size, generated_s=generated_s, max_pixels=args.max_pixels))
    log(f"{loaded.name} on {loaded.device} (loaded in {loaded.load_seconds:.1f} s, excluded from every figure)")

    if not args.no_warmup:
        log("warm-up: one untimed open + question")
        from omnizip_cli.generation import Session

        warm = Session.open(loaded, path, media=sampling(args), compression=args.compression, cache=False)
        ask(warm, QUESTIONS[0], args.new_tokens)
        del warm

    runs: dict[str, list[dict[str, Any]]] = {"cold": [], "reopen": [], "full": []}
    for repeat in range(args.repeats):
        runs["cold"].append(open_and_ask(loaded, path, args, compression=args.compression, variant="cold",
                                         repeat=repeat, base=base, questions=QUESTIONS))
        runs["reopen"].append(open_and_ask(loaded, path, args, compression=args.compression, variant="reopen",
                                           repeat=repeat, base=base, questions=QUESTIONS[:1]))
        if not args.no_full:
            runs["full"].append(open_and_ask(loaded, path, args, compression=None, variant="full",
                                             repeat=repeat, base=base, questions=QUESTIONS[:1]))

    def ratio(name: str, value: float, target: float | None, formula: str, **extra: Any) -> None:
        meets = (value <= target) if (target is not None and cuda) else None
        emit(dict(base, kind="ratio", name=name, value=value, target=target, comparison="<=" if target else "",
                  meets_target=meets, formula=formula, statistic="median", **extra))
        log(f"{name:<42} {value:8.4f}  (target <= {target}, GPU 7B)" if target else f"{name:<42} {value:8.4f}")

    def median_ttft(question: int) -> float:
        return statistics.median(r["questions"][question - 1]["first_token_s"] for r in runs["cold"])

    q1 = median_ttft(1)
    for question in range(2, len(QUESTIONS) + 1):
        ratio(f"ttft_q{question}_over_q1", median_ttft(question) / q1, FOLLOW_UP_TARGET,
              f"median first_token_s of question {question} / of question 1 (cold session)")
    followups = statistics.median(
        q["first_token_s"] for r in runs["cold"] for q in r["questions"][1:]
    )
    ratio("ttft_followups_over_q1", followups / q1, FOLLOW_UP_TARGET,
          "median first_token_s of questions 2-5 / median of question 1")
    cold = statistics.median(r["file_to_first_token_s"] for r in runs["cold"])
    reopen = statistics.median(r["file_to_first_token_s"] for r in runs["reopen"])
    kinds = {r["reopen_kind"] for r in runs["reopen"]}
    reopen_kind = kinds.pop() if len(kinds) == 1 else "mixed"
    # the target is the disk cache's: a plain reopen (or a miss) reruns every stage and is not judged by it
    ratio("reopen_over_cold", reopen / cold, REOPEN_TARGET if reopen_kind == "disk_cache" else None,
          "median file_to_first_token_s reopen / cold (model load excluded)", reopen_kind=reopen_kind)
    if runs["full"]:
        full = statistics.median(r["file_to_first_token_s"] for r in runs["full"])
        ratio("file_to_first_token_full_over_compressed", full / cold, None,
              "median file_to_first_token_s full (no compression) / compressed cold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
