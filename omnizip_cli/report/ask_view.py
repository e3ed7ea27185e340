"""The report of ``omnizip ask`` on stderr: Rich tables rendering :func:`~omnizip_cli.report.payload.answer_payload`.

On a terminal the report is a set of Rich tables; when stderr is not a terminal, or with
``NO_COLOR`` / ``--no-color``, it is plain text (no colours, no box-drawing characters), which
reads well in logs and greps well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..measure import STAGES
from ..measure.memory import MEMORY_COLUMNS
from . import is_plain
from ..terminal import escape_control
from .units import format_bytes, format_percent, format_seconds

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

#: How each stage is named in the report, in :data:`omnizip_cli.measure.STAGES` order.
STAGE_LABELS = {
    "content_hash": "file hash",
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
    table.add_row("file", f"{escape_control(media['path'])} ({media['kind']})")
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
        note = "while the video decoded" if stage.get("overlapped_with_media_decode") else ""
        if name == "prefill":
            source = {"fresh": "", "memory": ", media prefix cached in memory",
                      "disk": ", media prefix from the disk cache"}.get(gen.get("prefix_source", "fresh"), "")
            note = (f"{gen['prefilled_tokens']} of {gen['prompt_tokens']} tokens, "
                    f"{gen['prompt_tokens_per_second']:.0f} tokens/s{source}")
        table.add_row(STAGE_LABELS[name], format_seconds(stage["seconds"]), format_bytes(stage["peak_memory_bytes"]),
                      note)
    table.add_row("time to first token", format_seconds(timings["time_to_first_token_seconds"]), "",
                  timings.get("time_to_first_token_from", "from media decode, load excluded"))
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
    table.add_row("model", model["model"] + ("  (random weights: the answer is meaningless)"
                                             if model.get("random_weights") else ""))
    if model.get("family"):
        table.add_row("family", model["family"])
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
    context = payload.get("context")
    if context is not None:
        line = (f"Context: {tokens['prefill']} of --max-prompt-tokens {context['max_prompt_tokens']}"
                + (f"; {context['reason']}" if context["reason"] else ""))
        if context["frames_sampled"] and context["frames_fit_uncompressed"] < context["frames_sampled"]:
            line += (f"; the model sees {context['frames_sampled']} frames, "
                     f"{context['frames_fit_uncompressed']} would fit uncompressed")
        lines.append(line)
    cache = payload.get("prefix_cache")
    if cache is not None:
        lines.append(prefix_cache_line(cache))
    return lines


def prefix_cache_line(cache: dict[str, Any]) -> str:
    """What the disk cache of prepared media did for this run, in one line."""
    if cache["source"] == "disk":
        return (f"Prefix cache: read from disk in {cache['load_seconds']:.3f} s, skipping "
                f"{cache['saved_seconds']:.3f} s of media decode, preprocessing, encoders and keep plan")
    if cache.get("stored"):
        return "Prefix cache: stored; the next run on this video with these settings skips its set-up"
    return f"Prefix cache: not stored ({cache.get('not_stored') or 'larger than OMNIZIP_CACHE_MAX_BYTES'})"


def print_report(console: Console, payload: dict[str, Any]) -> None:
    """Render an :func:`~omnizip_cli.report.payload.answer_payload` dict on the (stderr) console.

    The random-weights warning is not repeated here: it went to stderr before the answer, and the
    Model table says it.
    """
    for render in (tokens_table, media_table, stages_table, model_table):
        console.print()
        console.print(render(console, payload))
    console.print()
    for line in summary_lines(payload):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def questions_table(console: Console, payloads: list[dict[str, Any]]) -> Table:
    """One row per question of a multi-question run: what each question cost on its own."""
    table = _table(console, "Questions", ("#", "right"), ("prefilled", "right"), ("prefix", "left"),
                   ("first token", "right"), ("decode", "right"), ("answer tokens", "right"))
    for index, payload in enumerate(payloads, 1):
        gen = payload["generation"]
        table.add_row(str(index), str(gen["prefilled_tokens"]), gen["prefix_source"],
                      format_seconds(payload["timings"]["time_to_first_token_seconds"]),
                      f"{gen['decode_tokens_per_second']:.1f} tok/s", str(gen["generated_tokens"]))
    table.caption = ("prefilled: tokens this question prefilled (the first also prefills the media prefix); "
                     "first token: from media decode for question 1, from the question for the others")
    table.caption_justify = "left"
    return table


def print_questions(console: Console, payloads: list[dict[str, Any]]) -> None:
    console.print()
    console.print(questions_table(console, payloads))
