"""``omnizip chat VIDEO``: a multi-turn conversation about one video, on one compressed prefix.

The video is opened once (from the disk cache when it can: see :mod:`.opening`); each line is a
question. The first question (and the first after ``/reset``) is answered from the media prefix
alone; the next ones continue the conversation (``Session.ask(..., follow_up=True)``).

* On a terminal: a ``> `` prompt with line editing and history (Python's ``readline`` where it
  exists). Otherwise (a pipe, a file): one question per line from stdin, blank lines ignored, so
  a conversation can be scripted.
* Answers stream to stdout (sanitised), one line each; with ``--json``, one JSON object per answer
  per line instead. Warnings, ``/stats`` and notes go to stderr.
* Commands: ``/reset`` forgets the conversation (the video and its prefilled prefix stay),
  ``/stats`` prints the last answer's figures, ``/help``, ``/quit`` (or end of input: Ctrl-D).
* Ctrl-C during an answer stops that answer (the conversation keeps only complete turns) and the
  chat goes on; Ctrl-C at the prompt asks for a second one, which leaves (exit code 130).
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

from .app import app, prepare_environment
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
from .progress import Spinner

if TYPE_CHECKING:
    from ..compression import CompressionSetting
    from ..generation import GenerationOptions
    from ..media import MediaOptions
    from ..models import ModelSpec

PROMPT = "> "
#: Tokens reserved for a chat question when fitting the context (questions are not known up front).
CHAT_QUESTION_RESERVE = 128
HELP = "/reset forgets the conversation, /stats shows the last answer's figures, /quit leaves (or Ctrl-D)"


class _PromptInterrupt(Exception):
    """Ctrl-C at the prompt (not during an answer)."""


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
    :class:`~omnizip_cli.signals.Terminated`). Not the same signal again: its handler would run
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


@app.command()
@with_options(MODEL, MEDIA, COMPRESSION, GENERATION, OUTPUT)
def chat(
    video: Annotated[Path, typer.Argument(help="Video (or audio) file.", show_default=False)],
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
    from . import ask as ask_cli
    from ..report import make_console
    from ..terminal import escape_control
    from .opening import open_video

    prepare_environment(output.verbose)
    console = make_console(no_color=output.no_color)
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    spinner = Spinner(console, console.is_terminal and not output.quiet and not output.json_output)
    warnings: list[str] = []

    def warn(message: str) -> None:
        if message in warnings:
            return
        warnings.append(message)
        spinner.stop()
        console.print(f"warning: {escape_control(message)}", style="yellow", markup=False, highlight=False,
                      soft_wrap=True)

    def note(message: str) -> None:
        if not output.quiet:
            console.print(message, markup=False, highlight=False, soft_wrap=True)

    def budget_for(loaded: Any) -> tuple[int, int]:
        """``ask``'s budget (so both share cache entries); the questions are not known: a fixed reserve."""
        budget, _ = ask_cli.prompt_budget(loaded, ["?"], generation, max_prompt_tokens)
        return budget, CHAT_QUESTION_RESERVE

    try:
        opened = open_video(video, model=model, media_options=media_options, compression=compression, system=system,
                            warn=warn, spinner=spinner, budget_for=budget_for, use_cache=use_cache,
                            start_media=ask_cli.start_media, load_model=ask_cli.load_model,
                            open_session=ask_cli.open_session)
    finally:
        spinner.stop()
    session = opened.session
    config = {"media_path": str(video), "system": system, "model": ask_cli._spec_dict(model),
              "media": media_options.to_dict(), "generation": {**ask_cli._asdict(generation), "stream": True}}
    tokens = session.tokens
    cache = getattr(session, "prefix_cache", None)
    source = " (prefix read from the disk cache)" if cache is not None and cache["source"] == "disk" else ""
    note(f"ready: {tokens.total.before} prompt tokens, {session.prefill.length} after compression{source}."
         + (f" {HELP}" if interactive else ""))

    signals = _PromptSignals()
    with signals.installed() if interactive else nullcontext(signals):
        _converse(session, opened, questions=lambda: read_questions(interactive, signals), interactive=interactive,
                  output=output, generation=generation, config=config, console=console, warnings=warnings,
                  note=note)


def _converse(session: Any, opened: Any, *, questions: Any, interactive: bool, output: OutputOptions,
              generation: Any, config: dict[str, Any], console: Any, warnings: list[str], note: Any) -> None:
    """The question loop of :func:`run_chat`."""
    from ..report.ask_view import print_report
    from ..report.payload import answer_payload
    from .signals import Terminated, finish_partial_lines, write_stdout
    from ..terminal import escape_control, sanitize_answer

    last: dict[str, Any] | None = None
    turns = 0  # complete answers since the start or the last /reset
    first_question = True
    lines = questions()
    interrupted_at_prompt = False
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
            session.reset()
            turns = 0
            note("(conversation forgotten; the video stays)")
            continue
        if command == "/help":
            note(HELP)
            continue
        if command == "/stats":
            if last is None:
                note("(no answer yet)")
            else:
                print_report(console, last)
            continue
        word = command.split()[0]
        if word.startswith("/") and word[1:].isalpha():  # "/foo", "/reset now": a mistyped command, not a question
            note(f"(unknown command {escape_control(question)}: {HELP})")
            continue
        asked = time.perf_counter()
        first_token_at: float | None = None
        stats = None
        answer = session.ask(question, generation, follow_up=turns > 0)
        try:
            for chunk in answer:
                if chunk.token is not None and first_token_at is None:
                    first_token_at = time.perf_counter()
                if chunk.text and not output.json_output:
                    write_stdout(sanitize_answer(chunk.text))
                if chunk.stats is not None:
                    stats = chunk.stats
        except KeyboardInterrupt as exc:
            if isinstance(exc, Terminated):
                raise
            answer.close()  # the session keeps only complete turns
            finish_partial_lines()
            note("(answer stopped; the conversation keeps the turns before it)")
            continue
        except BaseException:
            finish_partial_lines()
            raise
        assert stats is not None
        finished = time.perf_counter()
        origin = opened.started + opened.load_excluded if first_question else asked
        ttft = (first_token_at if first_token_at is not None else finished) - origin
        last = answer_payload(session, stats, question=question, config=config, time_to_first_token_seconds=ttft,
                              total_seconds=finished - origin, include_setup=first_question)
        last["warnings"] = list(warnings)
        last["turn"] = turns + 1
        first_question = False
        turns += 1
        if output.json_output:
            write_stdout(json.dumps(last) + "\n")
        else:
            write_stdout("\n")
