"""The console-script entry point (``omnizip``, ``python -m omnizip_cli``) and the registration of the commands.

Each command module registers itself on :data:`~omnizip_cli.cli.app.app` when imported;
:func:`register_commands` imports them all. The command modules import :mod:`.app`, never this
module, so the dependency goes one way. They import heavy libraries only inside their bodies, so
``omnizip --help`` stays instant.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer

from .app import app

__all__ = ["main", "register_commands"]


def register_commands() -> None:
    """Import the command modules (each registers itself on :data:`~omnizip_cli.cli.app.app`)."""
    from . import ask, cache, chat, env, evaluate, keep_map, profile, serve  # noqa: F401


def main() -> None:
    """Console-script entry point: like ``app()``, but a usage error is one line (exit code 2)."""
    # Typer vendors Click: its exception classes are reached through the public typer.BadParameter.
    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError
    click_exception = typer.BadParameter.__mro__[2]  # click's ClickException

    from .signals import leave, protect_standard_fds, report_interrupt, stdout_guard, terminate_as_interrupt

    protect_standard_fds()
    register_commands()
    try:
        with terminate_as_interrupt(), stdout_guard():
            try:
                code = app(standalone_mode=False)
            except typer.Abort as exc:  # an interrupt outside a command's guard (while parsing options)
                cause = exc.__cause__ if isinstance(exc.__cause__, KeyboardInterrupt) else KeyboardInterrupt()
                leave(report_interrupt(cause))
            except usage_error as exc:
                _usage_exit(exc)
            except click_exception as exc:
                sys.stderr.write(f"error: {' '.join(exc.format_message().split())}\n")
                sys.exit(exc.exit_code)
    except SystemExit as exc:  # typer.Exit inside a command becomes an exit code; leave() knows interrupts
        leave(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
    leave(code if isinstance(code, int) else 0)


def _usage_exit(exc: Any) -> NoReturn:
    """A Click usage error as one line (exit 2); a bare ``omnizip`` shows the help as Click does."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        sys.stderr.write(exc.format_message() + "\n")
        sys.exit(exc.exit_code)
    hint = f" (see: omnizip {exc.ctx.info_name} --help)" if exc.ctx is not None and exc.ctx.parent else ""
    sys.stderr.write(f"error: {' '.join(exc.format_message().split())}{hint}\n")
    sys.exit(exc.exit_code)
