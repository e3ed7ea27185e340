"""``omnizip chat VIDEO``: a multi-turn conversation about one video, on one compressed prefix.

The video is opened once (through the library's one path, from the disk cache when it can: see
:mod:`omnizip_cli.generation.opening`); each line is a question of one
:class:`~omnizip_cli.generation.Conversation`. The first question (and the first after ``/reset``)
is answered from the media prefix alone; the next ones continue the conversation.

* On a terminal: a ``> `` prompt with line editing and history (Python's ``readline`` where it
  exists). Otherwise (a pipe, a file): one question per line from stdin, blank lines ignored, so
  a conversation can be scripted.
* Answers stream to stdout (sanitised), one line each; with ``--json``, one JSON object per answer
  per line instead. Warnings, ``/stats`` and notes go to stderr.
* Commands: ``/reset`` forgets the conversation (the video and its prefilled prefix stay),
  ``/stats`` prints the last answer's figures, ``/help``, ``/quit`` (or end of input: Ctrl-D).
* Ctrl-C during an answer stops that answer (the conversation keeps only complete turns) and the
  chat goes on; a second Ctrl-C within a second leaves (exit code 130), piped or on a terminal;
  Ctrl-C at the prompt asks for a second one, which leaves.
  SIGTERM/SIGHUP end the chat as usual (143/129).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..terminal import is_valid_text
from .answering import CHAT_QUESTION_RESERVE, Answering, check_text, open_options, request_config
from .app import app
from .options import (
    COMPRESSION,
    GENERATION,
    MEDIA,
    MODEL,
    OUTPUT,
    MaxPromptOpt,
    NoCacheOpt,
    OutputOptions,
    SystemOpt,
    check_prompt_budget,
    with_options,
)

if TYPE_CHECKING:
    from ..compression import CompressionSetting
    from ..generation import GenerationOptions
    from ..media import MediaOptions
    from ..models import ModelSpec

PROMPT = "> "
HELP = "/reset forgets the conversation, /stats shows the last answer's figures, /quit leaves (or Ctrl-D)"


class _PromptInterrupt(Exception):
    """Ctrl-C at the prompt (not during an answer)."""


#: A Ctrl-C this soon after one that stopped an answer leaves the chat (130).
DOUBLE_CTRL_C_S = 1.0
#: How often, and for how long, a signal at the prompt wakes the main thread (see _PromptSignals).
WAKE_INTERVAL_S = 0.05
WAKE_FOR_S = 2.0


class _PromptSignals:
    """Make Ctrl-C (and SIGTERM/SIGHUP) reach a prompt waiting in ``input()``.

    A signal sent to the process lands on any of its threads; torch's worker threads are many. The
    interpreter then only notes it, and the main thread, blocked in readline's wait for a key,
    would not see it before the next Enter. While :attr:`at_prompt` is set, a helper thread that
    watches the interpreter's wake-up file descriptor sends ``SIGUSR2`` (a
    no-op for the chat's duration) to the main thread itself, which interrupts the wait; the
    interpreter then runs the pending handler there (``KeyboardInterrupt``, or
    :class:`~omnizip_cli.cli.signals.Terminated`). Not the same signal again: its handler would run
    twice, the second time inside the first. Outside the prompt nothing changes.

    The wake-up is repeated every :data:`WAKE_INTERVAL_S` for as long as the main thread stays at the
    prompt (at most :data:`WAKE_FOR_S`): one that arrives before readline blocks in its wait is not
    seen there, and a byte left in the pipe by a Ctrl-C that stopped an answer may be read only once
    the prompt is up (a wake-up with nothing pending is harmless: readline waits again). Waking only
    once, and only for the first byte, made a later Ctrl-C at the prompt wait for Enter.
    """

    def __init__(self) -> None:
        self.at_prompt = False
        self._stop = False
        self._main = threading.main_thread().ident
        self._watched = {int(signal.SIGINT), *(int(getattr(signal, n)) for n in ("SIGTERM", "SIGHUP")
                                                 if hasattr(signal, n))}

    @contextmanager
    def installed(self) -> Iterator[_PromptSignals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        wake = getattr(signal, "SIGUSR2", None)
        if wake is None or not hasattr(signal, "pthread_kill"):
            yield self
            return
        read, write = os.pipe()
        os.set_blocking(write, False)
        try:
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
            previous_wake = signal.signal(wake, lambda _signum, _frame: None)
        except (ValueError, OSError):
            os.close(read)
            os.close(write)
            yield self
            return
        watcher = threading.Thread(target=self._forward, args=(read,), name="omnizip-prompt-signals", daemon=True)
        watcher.start()
        try:
            yield self
        finally:
            self._stop = True
            signal.set_wakeup_fd(previous)
            signal.signal(wake, previous_wake)
            os.close(write)  # the watcher reads end of file and returns
            watcher.join(timeout=1.0)
            os.close(read)

    def _forward(self, read: int) -> None:
        while True:
            try:
                data = os.read(read, 64)
            except OSError:
                return
            if not data or self._stop:
                return
            if any(b in self._watched for b in data):
                self._wake_main()

    def _wake_main(self) -> None:
        """Send ``SIGUSR2`` to the main thread until it leaves the prompt (or time runs out)."""
        deadline = time.monotonic() + WAKE_FOR_S
        while self.at_prompt and not self._stop and self._main is not None and time.monotonic() < deadline:
            try:
                signal.pthread_kill(self._main, signal.SIGUSR2)
            except (OSError, ValueError):
                return
            time.sleep(WAKE_INTERVAL_S)


def read_questions(interactive: bool, signals: _PromptSignals | None = None) -> Iterator[str]:
    """Lines from the terminal (with readline editing when available) or from stdin; stripped, blank ones skipped.

    On a terminal, a Ctrl-C at the prompt raises :class:`_PromptInterrupt` out of the iteration's
    ``next`` (the caller decides); end of input ends the iteration.
    """
    if interactive:
        try:
            import readline  # noqa: F401 - importing it gives input() line editing and history
        except ImportError:
            pass
        while True:
            try:
                if signals is not None:
                    signals.at_prompt = True
                try:
                    line = input(PROMPT)
                finally:
                    if signals is not None:
                        signals.at_prompt = False
            except EOFError:
                sys.stderr.write("\n")
                return
            except KeyboardInterrupt as exc:
                from .signals import Terminated

                if isinstance(exc, Terminated):
                    raise
                raise _PromptInterrupt() from None
            if line.strip():
                yield line.strip()
    else:
        for line in sys.stdin:
            if line.strip():
                yield line.strip()


def _undecodable_as_surrogates() -> None:
    """Read stdin keeping bytes that are not UTF-8 (as lone surrogates), so that such a line is
    refused on its own instead of ending the chat with a decoding error."""
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="surrogateescape")
        except (ValueError, OSError):  # not a text stream we may change: leave it
            pass


@app.command()
@with_options(MODEL, MEDIA, COMPRESSION, GENERATION, OUTPUT)
def chat(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="Video (or audio) file.", show_default=False)],
    model: ModelSpec,
    media: MediaOptions,
    compression: CompressionSetting,
    generation: GenerationOptions,
    output: OutputOptions,
    system: SystemOpt = None,
    max_prompt_tokens: MaxPromptOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Chat about VIDEO: one question per line (a prompt on a terminal, else stdin); /reset, /stats, /quit."""
    check_prompt_budget(max_prompt_tokens)
    check_text(system, "--system")
    run_chat(video, model=model, media_options=media, compression=compression, generation=generation,
             output=output, system=system, max_prompt_tokens=max_prompt_tokens, use_cache=not no_cache)


def run_chat(
    video: Path,
    *,
    model: ModelSpec,
    media_options: MediaOptions,
    compression: CompressionSetting,
    generation: GenerationOptions,
    output: OutputOptions,
    system: str | None,
    max_prompt_tokens: int | None = None,
    use_cache: bool = True,
    interactive: bool | None = None,
) -> None:
    """Open the session, then answer line after line (see the module docstring)."""
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    _undecodable_as_surrogates()
    answering = Answering.start(output, warnings_with_json=True)
    # ask's prompt budget (so both share cache entries); the questions are not known: a fixed reserve.
    options = open_options(media=media_options, compression=compression, generation=generation, system=system,
                           max_prompt_tokens=max_prompt_tokens, question_reserve=CHAT_QUESTION_RESERVE,
                           use_cache=use_cache, revision=model.revision)
    session = answering.open(video, model, options)
    config = request_config(video, system=system, model=model, media=media_options, generation=generation,
                            stream=True)
    tokens = session.tokens
    source = " (prefix read from the disk cache)" if session.origin.source == "disk" else ""
    answering.note(f"ready: {tokens.total.before} prompt tokens, {session.prefill.length} after compression{source}."
                   + (f" {HELP}" if interactive else ""))

    signals = _PromptSignals()
    with signals.installed() if interactive else nullcontext(signals):
        _converse(session, answering, questions=lambda: read_questions(interactive, signals), generation=generation,
                  config=config)


def _converse(session: Any, answering: Answering, *, questions: Any, generation: Any, config: dict[str, Any]) -> None:
    """The question loop of :func:`run_chat`."""
    from ..report.ask_view import print_report
    from ..report.payload import answer_payload
    from ..generation import PromptTooLong
    from ..terminal import escape_control
    from .signals import Terminated, finish_partial_lines, write_stdout

    output = answering.output
    note = answering.note
    conversation = session.conversation()
    last: dict[str, Any] | None = None
    first_question = True
    lines = questions()
    interrupted_at_prompt = False
    last_stop: float | None = None  # when Ctrl-C last stopped an answer
    while True:
        try:
            question = next(lines)
        except StopIteration:
            return
        except _PromptInterrupt:
            if interrupted_at_prompt:
                raise KeyboardInterrupt from None  # the second Ctrl-C at the prompt leaves (130)
            interrupted_at_prompt = True
            sys.stderr.write("\n(Ctrl-C again or Ctrl-D to leave)\n")
            lines = questions()
            continue
        interrupted_at_prompt = False
        command = question.lower()
        if command in ("/quit", "/exit"):
            return
        if command == "/reset":
            conversation.reset()
            note("(conversation forgotten; the video stays)")
            continue
        if command == "/help":
            note(HELP)
            continue
        if command == "/stats":
            if last is None:
                note("(no answer yet)")
            else:
                print_report(answering.console, last)
            continue
        if not is_valid_text(question):
            answering.refuse("that line is not valid UTF-8: not asked")
            continue
        word = command.split()[0]
        if word.startswith("/") and word[1:].isalpha():  # "/foo", "/reset now": a mistyped command, not a question
            note(f"(unknown command {escape_control(question)}: {HELP})")
            continue
        answer = conversation.ask(question, generation)
        try:
            stats = answering.stream(answer, to_stdout=not output.json_output)
        except PromptTooLong as exc:  # nothing was computed: the conversation is as it was
            answering.refuse(f"{_shortened(question)}: {exc.one_line()}")
            continue
        except KeyboardInterrupt as exc:
            if isinstance(exc, Terminated):
                raise
            now = time.monotonic()
            if last_stop is not None and now - last_stop < DOUBLE_CTRL_C_S:
                raise  # a second Ctrl-C within a second leaves (130), piped or on a terminal
            last_stop = now
            answer.close()  # the conversation keeps only complete turns
            finish_partial_lines()
            note("(answer stopped; the conversation keeps the turns before it; Ctrl-C again to leave)")
            continue
        last = answer_payload(session, stats, question=question, config=config, include_setup=first_question)
        last["warnings"] = list(answering.warnings)
        last["turn"] = conversation.turns
        first_question = False
        if output.json_output:
            write_stdout(json.dumps(last) + "\n")
        else:
            write_stdout("\n")


def _shortened(question: str, limit: int = 60) -> str:
    """The question as a refusal names it: its start, and its length when it is long."""
    if len(question) <= limit:
        return repr(question)
    return f"{question[:limit]!r}... ({len(question):,} characters)"
