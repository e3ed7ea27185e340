"""The summary of an evaluation: a Rich table (stderr) and the ``accuracy.png`` chart (Pillow).

Both render ``metrics.json`` only (:func:`omnizip_cli.evaluation.results.compute_metrics`), so a
finished folder can be redrawn without rerunning anything. Rich and Pillow are imported inside the
functions. Text that comes from the dataset (its name, the categories) reaches the terminal through
:func:`omnizip_cli.terminal.escape_control`, as Rich ``Text`` (never parsed as markup).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omnizip_cli.report.units import format_bytes, format_seconds

__all__ = ["format_progress", "print_summary", "render_accuracy_chart", "summary_rows"]


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def summary_rows(metrics: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row of formatted cells per setting, in the settings' order (what the table shows)."""
    rows = []
    for key, m in metrics["settings"].items():
        rate = m.get("decode_tokens_per_second_median")
        speedup = m.get("ttft_speedup_vs_full")
        rows.append({
            "setting": m.get("label", key),
            "n": str(m["answered"]),
            "accuracy": _pct(m["accuracy"]),
            "kept": _pct(m.get("accuracy_kept")),
            "agree": _pct(m.get("agreement_with_full")),
            "tokens": _pct(m.get("retention"), 0),
            "ttft": format_seconds(m.get("ttft_seconds_median")),
            "speedup": "-" if speedup is None else f"{speedup:.2f}x",
            "decode": "-" if rate is None else f"{rate:.1f}",
            "memory": format_bytes(m.get("peak_memory_bytes_max")),
            "errors": str(m["errors"]) + (f" ({m['missing']} to do)" if m.get("missing") else ""),
        })
    return rows


def print_summary(metrics: Mapping[str, Any], console: Any | None = None) -> None:
    """Print the summary table (and the per-category accuracy when there are categories) to
    ``console`` (default: a Rich console on stderr). Fits 80 columns. The dataset's name, the
    settings' labels and the categories are shown escaped (:func:`_shown`)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=True)
    data = metrics["dataset"]
    title = _shown(f"{data['name']}: {data['items']} questions on {data['videos']} videos", style="table.title")
    table = Table(title=title,
                  title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False)
    headers = ["setting", "n", "acc", "kept", "agree", "A/V", "TTFT", "x full", "tok/s", "mem", "err"]
    for name in headers:
        table.add_column(name, justify="left" if name == "setting" else "right", no_wrap=True)
    for row in summary_rows(metrics):
        table.add_row(*(_shown(cell) for cell in row.values()))
    console.print(table)
    console.print("n: answered; acc: accuracy; kept: acc / full's acc on the same items; agree: same answer as "
                  "full; A/V: audio+video tokens kept; TTFT: median time to first token (x full: speed-up); "
                  "tok/s: median decode rate; mem: peak memory; err: failed answers", style="dim")
    settings = metrics["settings"]
    categories = sorted({c for m in settings.values() for c in (m.get("by_category") or {})})
    if categories:
        per = Table(title="accuracy by category (answered items)", title_justify="left", box=box.SIMPLE_HEAD)
        per.add_column("category")
        for m in settings.values():
            per.add_column(_shown(str(m.get("label", "?"))), justify="right")
        for name in categories:
            cells = []
            for m in settings.values():
                entry = (m.get("by_category") or {}).get(name)
                cells.append("-" if entry is None else f"{_pct(entry['accuracy'])} ({entry['items']})")
            per.add_row(_shown(name), *cells)
        console.print(per)
    if data.get("bad_rows"):
        console.print(f"[yellow]{data['bad_rows']} dataset rows skipped[/] (see metrics.json: dataset.problems)")


def _shown(text: str, style: str = "") -> Any:
    """``text`` as a Rich ``Text``: terminal controls escaped (``\\x1b[2J``), ``[...]`` not markup."""
    from rich.text import Text

    from omnizip_cli.terminal import escape_control

    return Text(escape_control(text), style=style)


def format_progress(progress: Any) -> str:
    """One line for a :class:`~omnizip_cli.evaluation.runner.Progress`: done/total, rate, ETA."""
    rate = "-" if progress.answers_per_second is None else f"{progress.answers_per_second:.2f} answers/s"
    if progress.answers_per_second is not None and getattr(progress, "settings", 1) > 1:
        rate += f", {progress.items_per_second:.2f} items/s"
    eta = "-" if progress.eta_seconds is None else _clock(progress.eta_seconds)
    errors = f", {progress.errors} errors" if progress.errors else ""
    return f"{progress.done}/{progress.total} answers ({rate}, ETA {eta}{errors})"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render_accuracy_chart(metrics: Mapping[str, Any], model: str = "?") -> Any:
    """Horizontal bars of accuracy per setting (full first), each captioned with the accuracy kept
    vs full, the share of audio+video tokens kept and the median time to first token. Returns a
    ``PIL.Image.Image``. Style (fonts, palette, sizes) from :mod:`omnizip_cli.report.drawing`."""
    from PIL import Image, ImageDraw

    from omnizip_cli.report.drawing import (
        BACKGROUND,
        BLUISH_GREEN,
        CHART_MIN_HEIGHT,
        CHART_WIDTH,
        GRID,
        INK,
        MUTED,
        draw_value_grid,
        fit_text,
        load_fonts,
        text_right,
    )

    settings = list(metrics["settings"].items())
    fonts = load_fonts()
    top, left, right = 96, 150, 330
    bar_height, bar_gap = 40, 30
    body = max(1, len(settings)) * (bar_height + bar_gap)
    height = max(CHART_MIN_HEIGHT - 100, top + body + 80)
    image = Image.new("RGB", (CHART_WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    data = metrics["dataset"]
    draw.text((24, 18), "Accuracy by setting: full vs OmniZip", fill=INK, font=fonts.title)
    subtitle = (f"{model} on {data['name']}: {data['items']} questions, {data['videos']} videos. "
                "Caption: accuracy kept vs full (paired), A/V tokens kept, median time to first token.")
    draw.text((24, 52), fit_text(draw, subtitle, fonts.small, CHART_WIDTH - 48), fill=MUTED, font=fonts.small)

    plot_left, plot_right = left, CHART_WIDTH - right
    plot_top, plot_bottom = top, top + body
    width = plot_right - plot_left
    draw_value_grid(draw, [(plot_left + width * tick / 100, f"{tick} %") for tick in range(0, 101, 20)],
                    (plot_left, plot_top, plot_right, plot_bottom), fonts.small)
    full_colour, compressed_colour = MUTED, BLUISH_GREEN  # grey for full, Okabe-Ito green
    for index, (key, m) in enumerate(settings):
        y0 = plot_top + index * (bar_height + bar_gap) + bar_gap / 2
        y1 = y0 + bar_height
        text_right(draw, plot_left - 12, y0 + bar_height / 2 - 9, str(m.get("label", key)), fonts.text, INK)
        accuracy = m.get("accuracy")
        x_end = plot_left + width * (accuracy or 0.0)
        colour = full_colour if m.get("source") == "full" else compressed_colour
        if x_end - plot_left >= 1:
            draw.rectangle([plot_left, y0, x_end, y1], fill=colour)
        draw.rectangle([plot_left, y0, plot_right, y1], outline=GRID, width=1)
        caption = _pct(accuracy)
        if m.get("accuracy_kept") is not None and m.get("source") != "full":
            caption += f"  ({_pct(m['accuracy_kept'])} of full)"
        draw.text((plot_right + 10, y0 + 2), caption, fill=INK, font=fonts.text)
        details = [f"{_pct(m.get('retention'), 0)} tokens" if m.get("retention") is not None else None,
                   f"TTFT {format_seconds(m.get('ttft_seconds_median'))}" if m.get("ttft_seconds_median") else None,
                   f"agrees with full {_pct(m['agreement_with_full'], 0)}"
                   if m.get("agreement_with_full") is not None and m.get("source") != "full" else None,
                   f"{m['errors']} errors" if m.get("errors") else None]
        draw.text((plot_right + 10, y0 + 22), "  ".join(d for d in details if d), fill=MUTED, font=fonts.small)
    return image
