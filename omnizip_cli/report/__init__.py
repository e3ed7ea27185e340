"""Reports: JSON payloads (one ``SCHEMA_VERSION``), Rich renderers on stderr, units, charts, results folders."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

#: The version of every ``--json`` object and results file (docs/json-schema.md): bumped when a field
#: changes meaning or goes away; new fields may be added without a bump.
SCHEMA_VERSION = 2


def make_console(no_color: bool = False) -> Console:
    """A stderr console; Rich itself honours NO_COLOR, FORCE_COLOR and TERM=dumb."""
    from rich.console import Console

    return Console(stderr=True, no_color=no_color or None, highlight=False)


def is_plain(console: Console) -> bool:
    """Plain text (no colour, no box drawing) when stderr is not a terminal or colours are off."""
    return not console.is_terminal or bool(console.no_color)
