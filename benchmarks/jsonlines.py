"""JSON-lines output shared by the benchmarks: figures on stdout, progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def json_default(value: Any) -> Any:
    """Tensors and numpy scalars as numbers, sets and tuples as lists, anything else as text."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def json_lines_output(bench: str) -> tuple[Callable[[str], None], Callable[[dict[str, Any]], None]]:
    """``(log, emit)`` for benchmark ``bench``: ``log`` writes progress to stderr, ``emit`` one JSON
    object (tagged ``"bench": bench``) per line to stdout."""

    def log(message: str) -> None:
        print(f"[{bench}] {message}", file=sys.stderr, flush=True)

    def emit(record: dict[str, Any]) -> None:
        print(json.dumps({"bench": bench, **record}, default=json_default), flush=True)

    return log, emit
