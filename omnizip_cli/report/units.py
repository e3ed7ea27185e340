"""One set of unit formatters for every report: decimal units (1 GB = 10^9 bytes), as mlx-lm prints."""

from __future__ import annotations

import math


def format_seconds(seconds: float | None) -> str:
    """``0.0123`` -> ``"12.3 ms"``, ``2.5`` -> ``"2.50 s"``, ``4e-5`` -> ``"40 µs"``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def format_bytes(count: float | None) -> str:
    """Decimal units: ``915_000_000`` -> ``"915 MB"``, ``1.5e9`` -> ``"1.50 GB"``."""
    if count is None:
        return "-"
    magnitude = abs(count)
    if magnitude >= 1e9:
        return f"{count / 1e9:.2f} GB"
    if magnitude >= 1e6:
        return f"{count / 1e6:.0f} MB"
    if magnitude >= 1e3:
        return f"{count / 1e3:.0f} kB"
    return f"{count:.0f} B"


def format_percent(fraction: float) -> str:
    return f"{fraction * 100:.1f} %"


def format_flops(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if value >= size:
            return f"{number(value / size)} {unit}"
    return f"{number(value)} FLOP"


def number(value: float) -> str:
    """Three significant figures or so: ``123``, ``12.3``, ``1.23``."""
    magnitude = abs(value)
    if magnitude >= 100 or value == 0:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def finite(value: float) -> float:
    """``value`` as a float, 0.0 when it is not finite (JSON has no NaN or infinity)."""
    return float(value) if math.isfinite(value) else 0.0


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0
