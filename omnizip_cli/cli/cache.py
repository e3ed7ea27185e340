"""``omnizip cache info`` and ``omnizip cache clear``: the disk cache of prepared media.

Entries live in ``$OMNIZIP_CACHE/prefixes`` (default ``~/.cache/omnizip/prefixes``), capped at
``OMNIZIP_CACHE_MAX_BYTES`` (default 2 GB, least recently used removed first; 0 turns it off).
See :mod:`omnizip_cli.generation.prefix_cache`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .app import app, run_guarded

cache_app = typer.Typer(name="cache", help="The disk cache of prepared media (where, how big; clear it).",
                        no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(cache_app, name="cache")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _size(n: int) -> str:
    from ..report.units import format_bytes

    return format_bytes(n)


@cache_app.command("info")
def info(json_output: JsonOpt = False) -> None:
    """Where the cache is, how many entries, how many bytes, and the cap."""

    def body() -> None:
        from ..generation.prefix_cache import MAX_BYTES_ENV, PrefixCache
        from .signals import write_stdout

        data = PrefixCache().info()
        if json_output:
            write_stdout(json.dumps(data, indent=2) + "\n")
            return
        state = "" if data["enabled"] else f" (off: {MAX_BYTES_ENV}=0)"
        write_stdout(f"path: {data['path']}\nentries: {data['entries']}\nsize: {_size(data['bytes'])}\n"
                     f"max size: {_size(data['max_bytes'])}{state} (set {MAX_BYTES_ENV})\n")

    run_guarded(False, body)


@cache_app.command("clear")
def clear() -> None:
    """Remove every entry of the cache."""

    def body() -> None:
        from ..generation.prefix_cache import PrefixCache
        from .signals import write_stdout

        cache = PrefixCache(max_bytes=0)  # clearing works whatever the cap
        removed, freed = cache.clear()
        write_stdout(f"removed {removed} entr{'y' if removed == 1 else 'ies'} ({_size(freed)}) from {cache.root}\n")

    run_guarded(False, body)
