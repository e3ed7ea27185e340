"""Process plumbing for the CLI: signals, a second Ctrl-C, broken pipes, a closed stdout (issue 18).

Conventions (also in the README):

* **Ctrl-C** (SIGINT) exits with **130**, **SIGTERM** with **143**, **SIGHUP** with **129**
  (``128 + signal number``), after finishing any partial output line and printing one line on
  stderr (``error: interrupted`` / ``error: terminated by SIGTERM`` / ``error: terminated by SIGHUP``).
  SIGTERM and SIGHUP take the same path as Ctrl-C: inside :func:`terminate_as_interrupt` they raise
  :class:`Terminated`, a :class:`KeyboardInterrupt` subclass, so every ``finally`` and
  ``except KeyboardInterrupt`` cleanup runs.
* **A second interrupt** (Ctrl-C, SIGTERM or SIGHUP) once the first one is being handled exits at
  once, quietly, with the first one's code: no traceback, no second message. A cleanup that hangs
  can thus always be cut short. See :func:`report_interrupt` / :func:`begin_shutdown`.
* **A broken pipe** on stdout (``omnizip ask ... | head -c 5``) is the reader's choice, not an error:
  no message, and exit code **141** (``128 + SIGPIPE``, what a shell reports for ``cat big | head``
  and what ``set -o pipefail`` expects). stdout is pointed at ``/dev/null`` first so the
  interpreter's final flush cannot print "Exception ignored ... BrokenPipeError".
* **A closed stdout** (``omnizip ask ... >&-``) is an error, reported up front, one line, exit code 1
  (:class:`StdoutUnavailable`): there is nowhere to write the answer. :func:`protect_standard_fds`
  also keeps a later ``open()`` from silently becoming file descriptor 1.

Nothing here runs at import time. Handlers can only be installed from the main thread; elsewhere
the context managers do nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn, TextIO

from ..errors import OmnizipError

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
#: The signals that :func:`terminate_as_interrupt` turns into :class:`Terminated` (where they exist).
TERMINATION_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
_INTERRUPT_SIGNALS: tuple[int, ...] = (signal.SIGINT, *TERMINATION_SIGNALS)

# Module state, touched only from the main thread (signal handlers run there too).
_closed_at_start: set[int] = set()
_partial_line: dict[int, bool] = {}  # stream fd -> the last write through this module did not end a line
_shutting_down = False


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, delivered like Ctrl-C; :attr:`exit_code` is ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class StdoutUnavailable(OmnizipError):
    """stdout is closed (``>&-``): there is nowhere to write the answer (exit code 1)."""

    def __init__(self) -> None:
        super().__init__(
            "standard output is closed: there is nowhere to write the answer",
            hint="redirect it to a file or to /dev/null instead of closing it",
        )


class BrokenPipeExit(SystemExit):
    """Raised to leave quietly (exit code 141) when the reader of stdout went away."""

    def __init__(self) -> None:
        super().__init__(EXIT_BROKEN_PIPE)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# -- signals ---------------------------------------------------------------------------------------
def interrupt_exit_code(exc: BaseException) -> int:
    """The exit code for an interrupt: ``128 + signum`` for :class:`Terminated`, else 130."""
    return exc.exit_code if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def interrupt_message(exc: BaseException) -> str:
    """The one line to print for an interrupt (without ``error:``)."""
    if isinstance(exc, Terminated):
        return f"terminated by {exc.signal_name}"
    return "interrupted"


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@contextmanager
def terminate_as_interrupt(signums: Sequence[int] = TERMINATION_SIGNALS) -> Iterator[None]:
    """Within the block, the given signals (SIGTERM, SIGHUP) raise :class:`Terminated`.

    The previous handlers are restored on exit. A signal whose disposition was "ignore" when the
    block started (e.g. SIGHUP under ``nohup``) stays ignored. Outside the main thread: no-op.
    """
    if not _in_main_thread():
        yield
        return
    previous: dict[int, object] = {}
    try:
        for signum in signums:
            old = signal.getsignal(signum)
            if old == signal.SIG_IGN:
                continue
            previous[signum] = old
            signal.signal(signum, _raise_terminated)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)  # type: ignore[arg-type]


def begin_shutdown(exit_code: int) -> None:
    """From now on, SIGINT/SIGTERM/SIGHUP end the process at once with ``exit_code``, quietly.

    Call it when the first interrupt is caught, before any cleanup: a second Ctrl-C during the
    cleanup (or in the interpreter's shutdown, e.g. while joining worker threads) then cannot
    print a traceback. Buffered output is flushed (errors ignored), then ``os._exit``.
    Idempotent; outside the main thread it does nothing.
    """
    global _shutting_down
    if _shutting_down or not _in_main_thread():
        return
    _shutting_down = True

    def exit_now(_signum: int, _frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:  # noqa: BLE001 - we are leaving: a broken stream must not stop that
                pass
        os._exit(exit_code)

    for signum in _INTERRUPT_SIGNALS:
        try:
            signal.signal(signum, exit_now)
        except (OSError, ValueError):
            pass


def leave(code: int) -> NoReturn:
    """``sys.exit(code)``; after an interrupt (:func:`begin_shutdown`), flush and ``os._exit`` instead.

    The interpreter's finalisation gives SIGINT back its default disposition, so a second Ctrl-C
    arriving then would kill the process by signal (exit -2, maybe a traceback from a library's
    teardown); once we are leaving because of an interrupt, nothing after this line is needed.
    """
    if _shutting_down:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:  # noqa: BLE001 - leaving: a broken stream must not stop that
                pass
        os._exit(code)
    sys.exit(code)


def report_interrupt(exc: BaseException, stream: TextIO | None = None) -> int:
    """Handle a caught interrupt: guard against a second one, end partial lines, print one line.

    Returns the exit code (130, 143 or 129) for the caller to exit with after its cleanup. Usage::

        with terminate_as_interrupt():
            try:
                run()
            except KeyboardInterrupt as exc:
                code = report_interrupt(exc)
                cleanup()
                sys.exit(code)
    """
    code = interrupt_exit_code(exc)
    begin_shutdown(code)
    finish_partial_lines()
    err = stream if stream is not None else sys.stderr
    if err is not None:
        try:
            err.write(f"error: {interrupt_message(exc)}\n")
            err.flush()
        except (OSError, ValueError):
            pass
    return code


# -- standard streams ------------------------------------------------------------------------------
def protect_standard_fds() -> frozenset[int]:
    """Open ``/dev/null`` on any of file descriptors 0, 1, 2 that is closed; return which were.

    Call it first thing in ``main()``: with ``>&-`` the next ``open()`` would otherwise get file
    descriptor 1, and anything written to "stdout" by a C library would land in that file.
    :func:`require_stdout` remembers that stdout was closed.
    """
    closed: set[int] = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    _closed_at_start.update(closed)
    return frozenset(closed)


def require_stdout() -> TextIO:
    """``sys.stdout``, or :class:`StdoutUnavailable` when it is closed. Call it before heavy work."""
    stdout = sys.stdout
    if stdout is None or 1 in _closed_at_start:
        raise StdoutUnavailable()
    try:
        fd = stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return stdout  # not a real file (tests, a redirect in-process): nothing more to check
    try:
        os.fstat(fd)
    except OSError:
        raise StdoutUnavailable() from None
    return stdout


def exit_broken_pipe() -> NoReturn:
    """Leave quietly after a broken pipe on stdout: stdout to ``/dev/null``, then exit 141."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, sys.stdout.fileno())
        finally:
            os.close(null)
    except (AttributeError, OSError, ValueError):
        pass
    raise BrokenPipeExit()


def write_stdout(text: str, flush: bool = True) -> None:
    """Write ``text`` to stdout (and flush); a broken pipe becomes a quiet exit 141.

    Raises :class:`StdoutUnavailable` when stdout is closed. Remembers whether the text ended a
    line, so :func:`report_interrupt` can finish a half-written answer with a newline.
    """
    stdout = require_stdout()
    if text:  # before the write: an interrupt can land inside it, and the line must still be finished
        _partial_line[1] = not text.endswith("\n")
    try:
        stdout.write(text)
        if flush:
            stdout.flush()
    except BrokenPipeError:
        exit_broken_pipe()


def finish_partial_lines() -> None:
    """Write a newline on stdout/stderr where the last write left a line unfinished."""
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        if _partial_line.get(fd) and stream is not None:
            try:
                stream.write("\n")
                stream.flush()
            except (OSError, ValueError):
                pass
            _partial_line[fd] = False


@contextmanager
def stdout_guard() -> Iterator[None]:
    """Turn a ``BrokenPipeError`` from stdout inside the block into a quiet exit 141.

    stdout is flushed when the block ends, inside the guard, so output still buffered (a ``print``
    without flush) cannot fail later in the interpreter's shutdown. A ``BrokenPipeError`` that
    escapes the block is taken to be stdout's (the CLI writes to no other pipe).
    """
    try:
        yield
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        exit_broken_pipe()
