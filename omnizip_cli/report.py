"""The report of ``omnizip ask`` (Rich, on stderr) and its ``--json`` payload.

Both are made from one dict, :func:`build_payload`, so every figure the report shows is in the JSON
and the other way round. :func:`print_report` only renders that dict; the schema is documented in
``docs/json-schema.md`` (``schema_version`` below changes when a field changes meaning or goes
away; new fields may be added without a bump).

On a terminal the report is a set of Rich tables; when stderr is not a terminal, or with
``NO_COLOR`` / ``--no-color``, it is plain text (no colours, no box-drawing characters), which
reads well in logs and greps well.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .stats import STAGES

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from .loading import LoadedModel
    from .media import MediaSummary
    from .runner import RunResult

SCHEMA_VERSION = 1

TINY_NOTE = "--model tiny: the weights are random, so the answer is meaningless"
TTFT_DEFINITION = (
    "wall time from the start of media decoding to the first answer token, model loading excluded "
    "(media decode + preprocessing + encoders + saliency + keep plan + prefill + choosing the first token)"
)
TOTAL_DEFINITION = "wall time from the start of media decoding to the last answer token, model loading excluded"

#: How each stage is named in the report, in :data:`omnizip_cli.stats.STAGES` order.
STAGE_LABELS = {
    "load_model": "model load",
    "media_decode": "media decode",
    "preprocess": "preprocessing",
    "audio_encoder": "audio encoder",
    "vision_encoder": "vision encoder",
    "saliency": "saliency",
    "keep_plan": "keep plan",
    "prefill": "prefill",
    "decode_warmup": "decoder warm-up",
    "decode": "decode",
}
#: What the peak-memory figures measure.
MEMORY_LABELS = {
    "cuda_allocated": "GPU allocated",
    "cpu_rss": "process RSS",
}
#: The short column header of the per-stage peak memory.
MEMORY_COLUMNS = {
    "cuda_allocated": "peak GPU alloc",
    "cpu_rss": "peak RSS",
}
MEMORY_DEFINITIONS = {
    "cuda_allocated": "torch's peak allocated GPU memory within each stage",
    "cpu_rss": "process high-water resident memory at the end of each stage",
}


def make_console(no_color: bool = False) -> Console:
    """A stderr console; Rich itself honours NO_COLOR, FORCE_COLOR and TERM=dumb."""
    from rich.console import Console

    return Console(stderr=True, no_color=no_color or None, highlight=False)


# ----------------------------------------------------------------------------- payload
def build_payload(
    result: RunResult,
    *,
    loaded: LoadedModel,
    media: MediaSummary,
    settings: Any,
    time_to_first_token_seconds: float | None = None,
    total_seconds: float | None = None,
) -> dict[str, Any]:
    """The ``--json`` object: the answer, the configuration and every figure of the report.

    ``settings`` is the :class:`~omnizip_cli.commands.AskSettings` of the run. The wall-clock
    figures are measured by the caller (see :data:`TTFT_DEFINITION`); without them they are summed
    from the stage timings.
    """
    timer = result.timer
    gen = result.generation
    stage_sum = sum(timer.seconds(name) for name in STAGES if name not in ("load_model", "prefill", "decode"))
    if time_to_first_token_seconds is None:
        time_to_first_token_seconds = stage_sum + gen.first_token_seconds
    if total_seconds is None:
        total_seconds = stage_sum + timer.seconds("prefill") + timer.seconds("decode")

    stages: dict[str, Any] = {}
    memory_kind = "cuda_allocated" if loaded.device.startswith("cuda") else "cpu_rss"
    for name in STAGES:
        record = timer.stages.get(name)
        stages[name] = {
            "ran": record is not None,
            "seconds": _finite(record.seconds) if record is not None else 0.0,
            "peak_memory_bytes": record.peak_memory_bytes if record is not None else None,
            "memory_kind": record.memory_kind if record is not None and record.peak_memory_bytes is not None
            else memory_kind,
        }
    peaks = [s["peak_memory_bytes"] for n, s in stages.items() if s["peak_memory_bytes"] is not None
             and s["memory_kind"] == memory_kind]

    generated = len(result.token_ids)
    prefill_seconds = timer.seconds("prefill")
    tokens = result.tokens.to_dict()
    tokens.update(
        {
            "prompt": result.prompt_length,
            "prefill": result.prefill_length,
            "context_length": result.context_length,
            "generated": generated,
        }
    )
    generation = getattr(settings, "generation", None)
    spec = getattr(settings, "model", None)
    media_options = getattr(settings, "media", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "answer": result.answer,
        "random_weights": loaded.is_tiny,
        "config": {
            "media_path": str(getattr(settings, "media_path", media.path)),
            "question": getattr(settings, "question", None),
            "system": getattr(settings, "system", None),
            "model": _spec_dict(spec),
            "media": media_options.to_dict() if media_options is not None else None,
            "compression": result.compression,
            "generation": {
                "max_new_tokens": getattr(generation, "max_new_tokens", None),
                "temperature": getattr(generation, "temperature", None),
                "top_p": getattr(generation, "top_p", None),
                "top_k": getattr(generation, "top_k", None),
                "seed": getattr(generation, "seed", None),
                "stream": bool(getattr(settings, "stream", False)),
            },
        },
        "model": loaded.describe(),
        "compression": {
            "enabled": result.compression is not None,
            "label": compression_label(result.compression),
            "groups": result.groups,
        },
        "media": media.to_dict(),
        "tokens": tokens,
        "generation": {
            "prompt_tokens": result.prefill_length,
            "prompt_tokens_before_compression": result.prompt_length,
            "prompt_seconds": _finite(prefill_seconds),
            "prompt_tokens_per_second": _rate(result.prefill_length, prefill_seconds),
            "generated_tokens": generated,
            "first_token_seconds": _finite(gen.first_token_seconds),
            "decode_tokens": max(generated - 1, 0),
            "decode_seconds": _finite(gen.decode_seconds),
            "decode_tokens_per_second": _finite(gen.decode_tokens_per_second),
            "stop_reason": gen.stop_reason,
            "decoder": gen.decoder,
            "decoder_notes": list(gen.notes),
        },
        "timings": {
            "stages": stages,
            "load_model_seconds": _finite(timer.seconds("load_model")),
            "time_to_first_token_seconds": _finite(time_to_first_token_seconds),
            "time_to_first_token_definition": TTFT_DEFINITION,
            "total_seconds": _finite(total_seconds),
            "total_definition": TOTAL_DEFINITION,
        },
        "memory": {
            "kind": memory_kind,
            "label": MEMORY_LABELS[memory_kind],
            "definition": MEMORY_DEFINITIONS[memory_kind],
            "peak_bytes": max(peaks) if peaks else None,
        },
        "warnings": list(result.warnings),
    }


def result_to_json(result: RunResult, *, loaded: LoadedModel, media: MediaSummary, settings: Any) -> dict[str, Any]:
    """Alias of :func:`build_payload` without the wall-clock figures (kept for older callers)."""
    return build_payload(result, loaded=loaded, media=media, settings=settings)


def _spec_dict(spec: Any) -> dict[str, Any] | None:
    if spec is None:
        return None
    keys = ("model", "device", "dtype", "attn_implementation", "offline", "revision")
    return {key: getattr(spec, key, None) for key in keys}


def compression_label(compression: dict[str, Any] | None) -> str:
    """``off``, ``preset 45 (...)`` or ``custom (...)``: the OmniZip setting in one line."""
    if compression is None:
        return "off"
    from .compression import PRESETS

    name = next((f"preset {key}" for key, preset in PRESETS.items() if preset.to_dict() == compression), "custom")
    return (
        f"OmniZip {name}: rho_audio {compression.get('rho_audio'):g}, rho_video {compression.get('rho_video'):g}, "
        f"anchors {compression.get('anchor_ratio'):g}, G {compression.get('merge_g')}"
    )


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


# ----------------------------------------------------------------------------- formatting
def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def format_bytes(count: int | None) -> str:
    """Decimal units, as mlx-lm prints its peak memory (1 GB = 10^9 bytes)."""
    if count is None:
        return "-"
    if count >= 1e9:
        return f"{count / 1e9:.2f} GB"
    if count >= 1e6:
        return f"{count / 1e6:.0f} MB"
    return f"{count / 1e3:.0f} kB"


def format_percent(fraction: float) -> str:
    return f"{fraction * 100:.1f} %"


# ----------------------------------------------------------------------------- rendering
def is_plain(console: Console) -> bool:
    """Plain text (no colour, no box drawing) when stderr is not a terminal or colours are off."""
    return not console.is_terminal or bool(console.no_color)


def _table(console: Console, title: str, *columns: tuple[str, str]) -> Table:
    from rich import box
    from rich.table import Table

    plain = is_plain(console)
    table = Table(
        title=title,
        title_justify="left",
        title_style="none" if plain else "bold",
        caption_style="none" if plain else "dim",
        box=None if plain else box.SIMPLE_HEAD,
        header_style=None if plain else "bold cyan",
        pad_edge=False,
        show_edge=False,
    )
    for header, justify in columns:
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    return table


def tokens_table(console: Console, payload: dict[str, Any]) -> Table:
    tokens = payload["tokens"]
    table = _table(console, "Tokens", ("modality", "left"), ("before", "right"), ("after", "right"),
                   ("dropped", "right"), ("kept", "right"))
    for name in ("video", "audio", "text", "total"):
        row = tokens[name]
        table.add_row(name, str(row["before"]), str(row["after"]), str(row["dropped"]),
                      format_percent(row["retention"]))
    return table


def media_table(console: Console, payload: dict[str, Any]) -> Table:
    media = payload["media"]
    table = _table(console, "Media", ("", "left"), ("", "left"))
    table.show_header = False
    table.add_row("file", f"{media['path']} ({media['kind']})")
    table.add_row("duration", f"{media['duration_s']:.2f} s")
    if media["frames_sampled"]:
        table.add_row(
            "frames sampled",
            f"{media['frames_sampled']} at {media['frame_width']}x{media['frame_height']} px, "
            f"{media['fps_used']:.2f} fps",
        )
    else:
        table.add_row("frames sampled", "0 (no video)")
    truncated = "truncated" if media["audio_truncated"] else "not truncated"
    audio = f"{media['audio_seconds']:.2f} s ({truncated})" if media["audio_seconds"] else "none"
    table.add_row("audio length", audio)
    table.add_row("decode time", format_seconds(media["decode_seconds"]))
    return table


def stages_table(console: Console, payload: dict[str, Any]) -> Table:
    timings = payload["timings"]
    stages = timings["stages"]
    gen = payload["generation"]
    memory = payload["memory"]
    table = _table(console, "Time and memory", ("stage", "left"), ("time", "right"),
                   (MEMORY_COLUMNS[memory["kind"]], "right"), ("", "left"))
    table.caption = f"{MEMORY_COLUMNS[memory['kind']]}: {memory['definition']}"
    table.caption_justify = "left"
    for name in STAGES:
        if name in ("load_model", "decode"):
            continue
        stage = stages[name]
        if not stage["ran"] and name == "decode_warmup":  # only the CUDA-graph decoder has one
            continue
        if not stage["ran"]:
            table.add_row(STAGE_LABELS[name], "-", "-", "not run")
            continue
        note = ""
        if name == "prefill":
            note = f"{gen['prompt_tokens']} tokens, {gen['prompt_tokens_per_second']:.0f} tokens/s"
        table.add_row(STAGE_LABELS[name], format_seconds(stage["seconds"]), format_bytes(stage["peak_memory_bytes"]),
                      note)
    table.add_row("time to first token", format_seconds(timings["time_to_first_token_seconds"]), "",
                  "from media decode, load excluded")
    decode = stages["decode"]
    table.add_row("decode", format_seconds(decode["seconds"]), format_bytes(decode["peak_memory_bytes"]),
                  f"{gen['decode_tokens']} tokens, {gen['decode_tokens_per_second']:.1f} tokens/s")
    table.add_row("total", format_seconds(timings["total_seconds"]), format_bytes(memory["peak_bytes"]),
                  "to the last token, load excluded")
    load = stages["load_model"]
    table.add_row("model load", format_seconds(load["seconds"]), format_bytes(load["peak_memory_bytes"]),
                  "not in the total")
    return table


def model_table(console: Console, payload: dict[str, Any]) -> Table:
    model = payload["model"]
    gen = payload["generation"]
    table = _table(console, "Model", ("", "left"), ("", "left"))
    table.show_header = False
    table.add_row("model", model["model"] + ("  (random weights)" if model.get("random_weights") else ""))
    if model["path"] != model["model"]:
        table.add_row("path", model["path"])
    table.add_row("device", model["device"])
    table.add_row("dtype", model["dtype"])
    table.add_row("attention", model["attn_implementation"])
    if "fast_encoder_attention" in model:
        encoders = "one varlen call per layer" if model["fast_encoder_attention"] else "stock per-window attention"
        note = model.get("encoder_attention_note")
        table.add_row("encoders", f"{encoders} ({note})" if note else encoders)
    table.add_row("compression", payload["compression"]["label"])
    decoder = gen["decoder"] + (f" ({'; '.join(gen['decoder_notes'])})" if gen["decoder_notes"] else "")
    table.add_row("decoder", f"{decoder}, stopped by {gen['stop_reason']}")
    return table


def summary_lines(payload: dict[str, Any]) -> list[str]:
    """mlx-lm's wording, plus the compression and time-to-first-token figures."""
    tokens = payload["tokens"]
    gen = payload["generation"]
    memory = payload["memory"]
    lines = [
        f"Prompt: {gen['prompt_tokens']} tokens, {gen['prompt_tokens_per_second']:.3f} tokens-per-sec "
        f"({tokens['prompt']} before compression, {format_percent(tokens['total']['retention'])} kept)",
        f"Generation: {gen['generated_tokens']} tokens, {gen['decode_tokens_per_second']:.3f} tokens-per-sec",
        f"Time to first token: {payload['timings']['time_to_first_token_seconds']:.3f} s "
        f"(media decode to first token, model load excluded)",
    ]
    if memory["peak_bytes"] is not None:
        lines.append(f"Peak memory: {memory['peak_bytes'] / 1e9:.3f} GB ({memory['label']})")
    return lines


def print_report(console: Console, payload: dict[str, Any]) -> None:
    """Render :func:`build_payload`'s dict on the (stderr) console."""
    plain = is_plain(console)
    if payload.get("random_weights"):
        console.print(
            f"note: {TINY_NOTE}", style=None if plain else "bold red", markup=False, highlight=False, soft_wrap=True
        )
    for render in (tokens_table, media_table, stages_table, model_table):
        console.print()
        console.print(render(console, payload))
    console.print()
    for line in summary_lines(payload):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
