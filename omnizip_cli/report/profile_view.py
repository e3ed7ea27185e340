"""The side-by-side table of ``omnizip profile`` on stderr (Rich), rendering its JSON object.

Text that is not ours (the file's name, the model's id or path, the answers) is shown through
:func:`omnizip_cli.terminal.escape_control` as Rich ``Text``, so it can neither drive the terminal
nor be read as Rich markup (an answer holding ``[/]`` would otherwise stop the report).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..terminal import escape_control
from .units import format_bytes, format_flops, format_seconds
from .units import number as _number


def _seconds_unit(value: float) -> tuple[str, float]:
    if value < 1e-3:
        return "µs", 1e-6
    if value < 1.0:
        return "ms", 1e-3
    return "s", 1.0


def _bytes_unit(value: float) -> tuple[str, float]:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return unit, float(size)
    return "B", 1.0


def _spread(summary: dict[str, Any], units: Callable[[float], tuple[str, float]]) -> str:
    """``median unit`` and, with several runs, ``[min-max]`` in the same unit."""
    median = summary["median"]
    if median is None:
        return "-"
    unit, scale = units(median)
    text = f"{_number(median / scale)} {unit}".rstrip()
    if len(summary["values"]) > 1:
        text += f"\n[{_number(summary['min'] / scale)}–{_number(summary['max'] / scale)}]"
    return text


def _tokens_per_second_unit(_value: float) -> tuple[str, float]:
    return "tok/s", 1.0


def _speedup(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _answer_cell(column: dict[str, Any]) -> str:
    vs = column["vs_full"]
    if vs is None:
        return "reference" if column["key"] == "full" else "-"
    if vs["answer_identical"]:
        return "identical"
    return f"no: token {vs['first_differing_token']},\nchar {vs['first_differing_char']}"


def _short(text: str, width: int = 40) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def _answer_text(column: dict[str, Any]) -> Any:
    """The answer's first words as Rich ``Text``, escaped (``(empty)`` for none)."""
    from rich.text import Text

    return Text(escape_control(_short(column["answer"]["text"], 24)) or "(empty)")


def render_table(payload: dict[str, Any]) -> Any:
    """The side-by-side Rich table: one column per setting, one row per figure."""
    from rich.table import Table
    from rich.text import Text

    columns = payload["settings"]
    repeats = payload["repeats"]
    title = Text(
        f"omnizip profile: {escape_control(Path(payload['media']['path']).name)}, "
        f"{escape_control(str(payload['model']['model']))} on "
        f"{payload['model']['device']} ({payload['model']['dtype']}); median of {repeats} run"
        f"{'s' if repeats != 1 else ''} [min–max]",
        style="table.title",
    )
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("figure", style="bold", no_wrap=True)
    for column in columns:
        table.add_column(column["label"], justify="right")

    def row(name: str, cell: Callable[[dict[str, Any]], Any]) -> None:
        table.add_row(name, *[cell(c) for c in columns])

    def tokens(modality: str) -> Callable[[dict[str, Any]], str]:
        def cell(c: dict[str, Any]) -> str:
            t = c["tokens"][modality]
            return str(t["after"]) if t["after"] == t["before"] else f"{t['before']} → {t['after']}"

        return cell

    for modality in ("video", "audio", "text", "total"):
        row(f"tokens: {modality}", tokens(modality))

    def retention(c: dict[str, Any]) -> str:
        r = c["retention"]
        return f"{r['audio_video'] * 100:.1f} %"

    def aim(c: dict[str, Any]) -> str:
        r = c["retention"]
        if c["source"] == "full":
            return "-"
        if c["source"] == "retention" and r["target"] is not None:
            return f"target {r['target'] * 100:.0f} %"
        return f"nominal {r['nominal'] * 100:.1f} %"

    row("retention (audio+video)", retention)
    row("  asked for", aim)
    figures = [
        ("prefill", "prefill_seconds", _seconds_unit),
        ("time to first token", "ttft_seconds", _seconds_unit),
        ("decode", "decode_tokens_per_second", _tokens_per_second_unit),
        ("end to end", "e2e_seconds", _seconds_unit),
        ("peak memory", "peak_memory_bytes", _bytes_unit),
    ]
    for name, key, units in figures:
        row(name, lambda c, key=key, units=units: _spread(c["figures"][key], units))
        if key == "e2e_seconds":
            row("answer tokens", lambda c: f"{c['figures']['generated_tokens']['median']:.0f}")
    row("prefill FLOPs (LLM)", lambda c: format_flops(c["prefill_flops"]["total"]))
    if payload["reference"] is not None:
        for name, key in (("speedup: prefill", "speedup_prefill"), ("speedup: TTFT", "speedup_ttft"),
                          ("speedup: end to end", "speedup_e2e")):
            row(name, lambda c, key=key: _speedup(c["vs_full"][key]) if c["vs_full"] else "1.00x")

        def saved(c: dict[str, Any]) -> str:
            vs = c["vs_full"]
            if vs is None or vs["memory_saved_bytes"] is None:
                return "-"
            return f"{format_bytes(vs['memory_saved_bytes'])}\n{vs['memory_saved_fraction'] * 100:.1f} %"

        row("memory saved", saved)
        row("FLOPs vs full", lambda c: f"{c['vs_full']['flops_ratio']:.2f}" if c["vs_full"] else "1.00")
        row("answer vs full", _answer_cell)
    row("answer", _answer_text)
    return table


def print_profile_report(console: Any, payload: dict[str, Any]) -> None:
    """The table, then the shared stages, notes and warnings, on the (stderr) console."""
    console.print(render_table(payload))
    shared = payload["shared"]
    console.print(
        f"once for all settings: model load {format_seconds(shared['load_model_seconds'])}, "
        f"media decode {format_seconds(shared['media_decode_seconds'])}, "
        f"processor {format_seconds(shared['preprocess_seconds'])}; memory: {payload['memory_description']}",
        markup=False,
    )
    for note in payload["notes"]:
        console.print(f"note: {note}", style="yellow", markup=False)
    for warning in payload["warnings"]:
        console.print(f"warning: {escape_control(warning)}", style="yellow", markup=False)
