"""The report on stderr (Rich, plain when not a terminal) and the ``--json`` payload."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from .loading import LoadedModel
    from .media import MediaSummary
    from .runner import RunResult

SCHEMA_VERSION = 1


def make_console(no_color: bool = False) -> Console:
    """A stderr console; Rich itself honours NO_COLOR, FORCE_COLOR and TERM=dumb."""
    from rich.console import Console

    return Console(stderr=True, no_color=no_color or None, highlight=False)


def print_report(console: Console, result: RunResult, *, loaded: LoadedModel, media: MediaSummary) -> None:
    tokens = result.tokens
    console.print(
        f"tokens: video {tokens.video.before} -> {tokens.video.after}, audio {tokens.audio.before} -> "
        f"{tokens.audio.after}, text {tokens.text.before}; generated {len(result.token_ids)} tokens "
        f"in {result.total_seconds:.2f} s",
        markup=False,
    )
    if loaded.is_tiny:
        console.print("note: tiny random model: the weights are random and the answer is meaningless", markup=False)


def result_to_json(result: RunResult, *, loaded: LoadedModel, media: MediaSummary, settings: Any) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "answer": result.answer,
        "model": loaded.describe(),
        "compression": result.compression,
        "tokens": result.tokens.to_dict(),
        "media": media.to_dict(),
        "timings": result.timer.to_dict(),
        "warnings": result.warnings,
    }
