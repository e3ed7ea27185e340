"""The summary of an evaluation: a Rich table (stderr) and the ``accuracy.png`` chart (Pillow).

Both render ``metrics.json`` only (:func:`omnizip_cli.evaluation.results.compute_metrics`), so a
finished folder can be redrawn without rerunning anything. Rich and Pillow are imported inside the
functions. Text that comes from the dataset (its name, the categories) reaches the terminal through
:func:`omnizip_cli.terminal.escape_control`, as Rich ``Text`` (never parsed as markup).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omnizip_cli.evaluation.accuracy_chart import render_accuracy_chart
from omnizip_cli.report.units import format_bytes, format_seconds

__all__ = ["format_progress", "paired_rows", "print_summary", "render_accuracy_chart", "summary_rows"]


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


def _points(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}"


def paired_rows(metrics: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per setting but full of the paired comparison against full (what the second table shows)."""
    rows = []
    for key, m in metrics["settings"].items():
        if m.get("source") == "full" or m.get("paired_items") is None:
            continue
        interval = m.get("delta_ci95")
        flips = m.get("flips") or {}
        p = m.get("mcnemar_p")
        realized = m.get("retention_realized")
        rows.append({
            "setting": m.get("label", key),
            "pairs": str(m.get("paired_items") or 0),
            "delta": _points(m.get("delta_vs_full")),
            "ci": "-" if interval is None else f"[{interval[0] * 100:+.1f}, {interval[1] * 100:+.1f}]",
            "p": "-" if p is None else f"{p:.3g}",
            "flips": f"{flips.get('right_to_wrong', 0)}/{flips.get('wrong_to_right', 0)}",
            "agree": _pct(m.get("agreement_with_full"), 0),
            "realized": _pct(realized, 0),
            "unparsed": str(m.get("unparsed", 0)),
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
    headers = ["setting", "n", "acc", "kept", "A/V", "TTFT", "x full", "tok/s", "mem", "err"]
    for name in headers:
        table.add_column(name, justify="left" if name == "setting" else "right", no_wrap=True)
    for row in summary_rows(metrics):
        table.add_row(*(_shown(cell) for key, cell in row.items() if key != "agree"))  # agree: in the paired table
    console.print(table)
    console.print("n: answered; acc: accuracy; kept: acc / full's acc on the same items; "
                  "A/V: audio+video tokens kept; TTFT: median time to first token (x full: speed-up); "
                  "tok/s: median decode rate; mem: peak memory; err: failed answers", style="dim")
    paired = paired_rows(metrics)
    if paired:
        table = Table(title="paired against full (items both answered)", title_justify="left", box=box.SIMPLE_HEAD,
                      padding=(0, 1), collapse_padding=True, pad_edge=False)
        for name in ("setting", "n", "delta", "95% CI", "p", "-/+", "agree", "A/V", "unp"):
            table.add_column(name, justify="left" if name == "setting" else "right", no_wrap=True)
        for row in paired:
            table.add_row(*(_shown(cell) for cell in row.values()))
        console.print(table)
        console.print("n: items both answered (failed answers are left out of both arms); delta, 95% CI: "
                      "accuracy points vs full, paired bootstrap (an interval holding 0 is within the noise); p: "
                      "McNemar exact; -/+: right->wrong / wrong->right; agree: same answer as full; A/V: tokens "
                      "kept vs full's, mean per item; unp: no letter found (scored wrong)", style="dim")
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
