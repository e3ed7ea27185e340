#!/usr/bin/env python
"""Decode speed after a long prompt: stock ``generate`` vs our eager loop vs the fast decoder (issue 9).

    python benchmarks/decode_speed.py                          # GPU: random-weight 7B, contexts 8192 and 3000
    python benchmarks/decode_speed.py --context 8192 --new-tokens 128 --repeats 5
    python benchmarks/decode_speed.py --tiny                   # CPU smoke: tiny model, static path without graph

Model: the Qwen2.5-Omni-7B thinker's language model with random weights (28 layers, hidden 3584,
28 heads, 4 KV heads, intermediate 18944, vocab 152064, M-RoPE sections [16, 24, 24], untied head),
built directly on the GPU in bfloat16 (``_from_config(config, dtype=torch.bfloat16)`` under
``with torch.device("cuda")``; nothing is downloaded, the default dtype is never changed). The vision
and audio encoders are tiny: only the language model runs here. ``--tiny`` uses the tiny thinker of
``--model tiny`` on the CPU in float32.

Prompt: ``--context`` tokens given as ``inputs_embeds`` (embeddings of random ids) with 3-D M-RoPE
``position_ids``, as our pipeline prefills. A context shorter than ``--position-span`` (default: the
largest context) gets positions spread evenly over the span, like a compressed prompt whose kept
tokens keep their original positions (3000 tokens after compressing an 8 k-token clip). The end token
is set to an id outside the vocabulary so that every path decodes exactly ``--new-tokens`` tokens.

Paths, each decoding ``--new-tokens`` greedy tokens after the same prefill:

* ``stock_generate``: ``model.generate(inputs_embeds=..., attention_mask=..., position_ids=...,
  do_sample=False)`` (dynamic cache), timed by a streamer that stamps each new token;
* ``eager_loop``: :func:`omnizip_cli.generation.stream.generate` with ``decoder="eager"`` (dynamic
  cache, one Python step per token);
* ``fast``: the same with ``decoder="fast"`` (:mod:`omnizip_cli.generation.static_graph`): static KV cache and, on a GPU, the step
  replayed as a CUDA graph (``decoder`` says which). Its first call at a context allocates the cache
  and captures the graph: that one-off cost is the ``warmup`` line, never part of the rates.

Decode rate = (tokens - 1) / (time from the first token on the host to the last one on the host), as
:attr:`AnswerStats.decode_tokens_per_second`. Each path runs once untimed, then ``--repeats``
times interleaved (stock, eager, fast, stock, ...); figures are medians. CUDA is synchronised around
each run and ``max_memory_allocated`` is reset before it (weights included); on the CPU the process's
peak RSS is reported instead.

Output: JSON lines on stdout (``kind``: ``setup``, ``warmup``, ``run``, ``decode``, ``equivalence``,
``ratio``), progress on stderr. ``run``: one line per timed run as soon as it ends (so a run cut
short keeps every run measured); ``decode``: the medians per path, once a context's runs are done. ``ratio`` lines: ``fast_over_stock`` (target >= 2.0 on the GPU at
the 8 k context), ``fast_over_eager``, ``eager_over_stock``. ``equivalence`` compares the greedy tokens
of the three paths (with random bf16 weights near-uniform logits may flip an argmax between kernels;
exactness is proven on the tiny model in float32 by ``tests/model/test_fast_decoding.py``).
"""

from __future__ import annotations

import argparse
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
from benchmarks.thinker_configs import adapter, build_model, full_thinker_config  # noqa: E402

BENCH = "decode_speed"
FAST_OVER_STOCK_TARGET = 2.0
log, emit = json_lines_output(BENCH)


# ------------------------------------------------------------------------------------------ model


def thinker_7b_config() -> Any:
    """The 7B thinker's language model dimensions; tiny vision and audio encoders (unused here)."""
    return full_thinker_config("7b", tiny_encoders=True)


def build_decoding_model(config: Any, device: str, dtype: Any) -> Any:
    """Random-weight thinker on ``device`` that decodes until max_new_tokens (its end token is unreachable)."""
    model = build_model(config, device, dtype)
    text = config.text_config
    model.generation_config.eos_token_id = [int(text.vocab_size)]
    model.generation_config.pad_token_id = int(text.pad_token_id)
    return model


def language_model_parameters(model: Any) -> int:
    language = sum(p.numel() for p in model.model.language_model.parameters())
    return int(language + sum(p.numel() for p in model.lm_head.parameters()))


def make_prefill(model: Any, context: int, span: int, seed: int = 0) -> Any:
    """``context`` prompt tokens as embeddings, positions spread over ``span`` (original positions kept)."""
    import torch

    from omnizip_cli.models.base import PrefillInputs

    device = model.model.language_model.embed_tokens.weight.device
    generator = torch.Generator().manual_seed(seed)
    vocab = int(model.config.get_text_config().vocab_size)
    ids = torch.randint(0, vocab, (1, context), generator=generator).to(device)
    with torch.no_grad():
        embeds = model.model.language_model.embed_tokens(ids)
    span = max(span, context)
    positions = torch.linspace(0, span - 1, context).round().long() if span > context else torch.arange(context)
    positions = positions.to(device).view(1, 1, -1).expand(3, 1, -1).contiguous()
    return PrefillInputs(
        embeds=embeds,
        attention_mask=torch.ones((1, context), dtype=torch.long, device=device),
        position_ids=positions,
    )


# --------------------------------------------------------------------------------------- measuring


class TokenClock:
    """A ``generate`` streamer that stamps the host time of every generated token."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.ids: list[int] = []

    def put(self, value: Any) -> None:
        if value.numel() == 0 or value.dim() > 1:
            return  # the prompt ([1, L], empty with inputs_embeds); new tokens come as [batch]
        self.stamps.append(time.perf_counter())
        self.ids.extend(int(x) for x in value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class Device:
    def __init__(self, device: str) -> None:
        import torch

        self.device = device
        self.cuda = device.startswith("cuda")
        self.torch = torch

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> tuple[int, str]:
        if self.cuda:
            return int(self.torch.cuda.max_memory_allocated(self.device)), "cuda_max_allocated"
        from omnizip_cli.measure import process_peak_rss_bytes

        return int(process_peak_rss_bytes()), "cpu_rss"


def run_stock(model: Any, prefill: Any, new_tokens: int, dev: Device) -> dict[str, Any]:
    import torch

    clock = TokenClock()
    dev.reset_peak()
    dev.sync()
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(
            inputs_embeds=prefill.embeds,
            attention_mask=prefill.attention_mask,
            position_ids=prefill.position_ids,
            max_new_tokens=new_tokens,
            do_sample=False,
            streamer=clock,
        )
    dev.sync()
    steps = len(clock.stamps) - 1
    decode = clock.stamps[-1] - clock.stamps[0] if steps > 0 else 0.0
    return {
        "tokens": clock.ids,
        "tokens_per_second": steps / decode if decode > 0 else 0.0,
        "first_token_s": clock.stamps[0] - started if clock.stamps else 0.0,
        "decoder": "stock_generate",
        "peak": dev.peak(),
    }


def run_ours(model: Any, prefill: Any, new_tokens: int, dev: Device, fast: bool) -> dict[str, Any]:
    from omnizip_cli.generation.sampling import GenerationOptions
    from omnizip_cli.generation.stream import generate
    from omnizip_cli.measure import StageTimer

    options = GenerationOptions(max_new_tokens=new_tokens)
    dev.reset_peak()
    text = adapter().text_model(model)
    # decoder="fast": static KV cache, its step replayed as a CUDA graph on a GPU (run eagerly on the CPU)
    result = generate(text, prefill, options, decoder="fast" if fast else "eager", timer=StageTimer(device=dev.device))
    dev.sync()
    return {
        "tokens": result.token_ids,
        "tokens_per_second": result.decode_tokens_per_second,
        "first_token_s": result.first_token_seconds,
        "decoder": result.decoder,
        "warmup_s": getattr(result, "warmup_seconds", 0.0),
        "notes": list(result.notes),
        "peak": dev.peak(),
    }


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def bench_context(model: Any, args: argparse.Namespace, context: int, span: int, dev: Device, setup: dict) -> None:
    prefill = make_prefill(model, context, span)
    base = {"model": setup["model"], "device": setup["device"], "dtype": setup["dtype"], "context": context,
            "position_span": max(span, context), "new_tokens": args.new_tokens}
    paths = {
        "stock_generate": lambda: run_stock(model, prefill, args.new_tokens, dev),
        "eager_loop": lambda: run_ours(model, prefill, args.new_tokens, dev, fast=False),
        "fast": lambda: run_ours(model, prefill, args.new_tokens, dev, fast=True),
    }
    log(f"context {context}: untimed first runs (the fast path allocates its cache and captures its graph)")
    first: dict[str, dict[str, Any]] = {name: run() for name, run in paths.items()}
    emit({**base, "kind": "warmup", "path": "fast", "decoder": first["fast"]["decoder"],
          "warmup_s": first["fast"]["warmup_s"], "notes": first["fast"]["notes"]})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for repeat in range(args.repeats):
        for name, run in paths.items():
            result = run()
            runs[name].append(result)
            emit({**base, "kind": "run", "path": name, "repeat": repeat, "decoder": result["decoder"],
                  "tokens_generated": len(result["tokens"]), "tokens_per_second": result["tokens_per_second"],
                  "first_token_s": result["first_token_s"], "peak_memory_bytes": result["peak"][0],
                  "memory_kind": result["peak"][1]})
        log(f"context {context}: repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{n} {runs[n][-1]['tokens_per_second']:.1f} tok/s" for n in paths))
    medians: dict[str, float] = {}
    for name, results in runs.items():
        rates = [r["tokens_per_second"] for r in results]
        median = statistics.median(rates)
        medians[name] = median
        peak, kind = max(r["peak"][0] for r in results), results[0]["peak"][1]
        emit({
            **base,
            "kind": "decode",
            "path": name,
            "decoder": results[-1]["decoder"],
            "tokens_generated": len(results[-1]["tokens"]),
            "tokens_per_second_median": median,
            "ms_per_token_median": 1000.0 / median if median > 0 else None,
            "runs_tokens_per_second": rates,
            "first_token_s_median": statistics.median(r["first_token_s"] for r in results),
            "warmup_s": first[name].get("warmup_s", 0.0) if name == "fast" else 0.0,
            "warmup_s_in_timed_runs": [r.get("warmup_s", 0.0) for r in results] if name == "fast" else None,
            "peak_memory_bytes": peak,
            "memory_kind": kind,
        })
    stock, eager, fast = (runs[n][-1]["tokens"] for n in ("stock_generate", "eager_loop", "fast"))
    emit({**base, "kind": "equivalence", "greedy_tokens_equal_fast_eager": fast == eager,
          "greedy_tokens_equal_eager_stock": eager == stock, "common_prefix_fast_eager": common_prefix(fast, eager),
          "common_prefix_eager_stock": common_prefix(eager, stock)})

    def ratio(name: str, numerator: str, denominator: str, target: float | None) -> None:
        value = medians[numerator] / medians[denominator] if medians[denominator] > 0 else None
        emit({**base, "kind": "ratio", "name": name, "value": value, "target": target,
              "meets_target": (value >= target) if target is not None and value is not None else None,
              "formula": f"median tokens/s {numerator} / {denominator}"})

    ratio("fast_over_stock", "fast", "stock_generate", FAST_OVER_STOCK_TARGET if dev.cuda else None)
    ratio("fast_over_eager", "fast", "eager_loop", None)
    ratio("eager_over_stock", "eager_loop", "stock_generate", None)


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=int, nargs="+", default=None,
                        help="prompt lengths in tokens (default 8192 3000; --tiny: 512 192)")
    parser.add_argument("--position-span", type=int, default=None,
                        help="positions of shorter contexts are spread over this span (default: largest context)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens decoded per run (default 64; --tiny: 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path after an untimed one (default 3)")
    parser.add_argument("--device", default="cuda", help="CUDA device for the 7B run (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: tiny model, float32")
    args = parser.parse_args(argv)
    if args.context is None:
        args.context = [512, 192] if args.tiny else [8192, 3000]
    if args.new_tokens is None:
        args.new_tokens = 16 if args.tiny else 64
    if args.new_tokens < 2 or args.repeats < 1 or min(args.context) < 1:
        parser.error("--new-tokens must be >= 2, --repeats >= 1 and contexts >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    from omnizip_cli.generation.static_graph import choose_decoder

    if args.tiny:
        device, dtype, config, name = "cpu", torch.float32, adapter().tiny_thinker_config(), "tiny"
    else:
        if not torch.cuda.is_available():
            log("no CUDA GPU: the 7B benchmark needs one (use --tiny for the CPU smoke run)")
            return 2
        device, dtype, config, name = args.device, torch.bfloat16, thinker_7b_config(), "qwen2.5-omni-7b-thinker-llm"
    dev = Device(device)
    log(f"building the {name} model (random weights) on {device}")
    started = time.perf_counter()
    model = build_decoding_model(config, device, dtype)
    dev.sync()
    build_seconds = time.perf_counter() - started
    policy = choose_decoder(device, "sdpa")
    setup = {
        "kind": "setup",
        "model": name,
        "random_weights": True,
        "llm_parameters": language_model_parameters(model),
        "device": device,
        "gpu": torch.cuda.get_device_name(device) if dev.cuda else None,
        "dtype": str(dtype).replace("torch.", ""),
        "attn_implementation": "sdpa",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "contexts": args.context,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "build_seconds": build_seconds,
        "policy_decoder": policy[0],
        "policy_reason": policy[1],
    }
    emit(setup)
    span = args.position_span or max(args.context)
    for context in args.context:
        bench_context(model, args, context, span, dev, setup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
