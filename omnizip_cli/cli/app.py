"""The Typer app and its error guard: what the command modules import.

Only answers go to stdout; the report, progress and warnings go to stderr. Errors are one line
(``error: ...``) with exit code 1 for runtime failures, 2 for usage errors and 130 on Ctrl-C;
``--debug`` or ``OMNIZIP_DEBUG=1`` shows the traceback instead. Heavy libraries (torch,
transformers, av) are imported inside the commands, so ``omnizip --help`` is instant.

The console-script entry point is :mod:`.main`: it imports the command modules (each registers
itself on :data:`app`), so the commands import this module and never the other way round.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated, NoReturn, TypeVar

import typer

from .. import __version__
from ..errors import OmnizipError, OutOfMemory

app = typer.Typer(
    name="omnizip",
    help="Ask questions about local videos with omni models (Qwen2.5-Omni, Qwen3-Omni), made fast by OmniZip token compression.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DEBUG_ENV_VAR = "OMNIZIP_DEBUG"
T = TypeVar("T")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"omnizip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Ask questions about local videos with omni models (Qwen2.5-Omni, Qwen3-Omni), made fast by OmniZip token compression."""


def fail(error: OmnizipError) -> NoReturn:
    sys.stderr.write(f"error: {error.one_line()}\n")
    raise typer.Exit(error.exit_code)


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0", "false")


def run_guarded(debug: bool, body: Callable[[], T]) -> T:
    """Run ``body()`` turning failures into one-line errors with the right exit code."""
    debug = debug_requested(debug)
    try:
        return body()
    except typer.Exit:
        raise
    except KeyboardInterrupt as exc:
        # Ctrl-C, and SIGTERM/SIGHUP delivered the same way (omnizip_cli.cli.signals): one line, the
        # conventional 128 + signal exit code, and a second interrupt during cleanup exits quietly.
        # Click would turn a re-raised KeyboardInterrupt into "Aborted!" and exit 1.
        from .signals import report_interrupt

        if debug:
            import traceback

            traceback.print_exc()
        raise typer.Exit(report_interrupt(exc)) from None
    except BrokenPipeError:  # the reader of stdout went away (| head): quiet, exit 141
        from .signals import exit_broken_pipe

        exit_broken_pipe()
    except OmnizipError as exc:
        if debug:
            raise
        fail(exc)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if _is_out_of_memory(exc):
            fail(OutOfMemory(f"out of memory: {message}" if message else "out of memory"))
        fail(OmnizipError(f"{type(exc).__name__}: {message}" if message else type(exc).__name__,
                          hint="run again with --debug for the traceback"))


def _is_out_of_memory(exc: BaseException) -> bool:
    if type(exc).__name__ in ("OutOfMemoryError", "MemoryError"):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def prepare_environment(verbose: bool) -> None:
    """Check the transformers version, then quiet library logging and progress bars."""
    from ..versions import check_transformers_version

    from ..quiet import quiet_libraries

    check_transformers_version()
    quiet_libraries(verbose)
