"""What ``ask``, ``chat`` and ``keep-map`` share: the console, warnings, opening a video through the
library's one path, streaming an answer to stdout and the answer's JSON.

Answers (sanitised) go to stdout; warnings (control characters escaped), progress and the report go
to stderr. The video is opened by :meth:`omnizip_cli.generation.Session.open` (the disk cache first,
the file's checks, decoding beside the model load, the prompt budget), so the commands and library
users open a video the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..terminal import is_valid_text
from .progress import Spinner

if TYPE_CHECKING:
    from ..compression import CompressionSetting
    from ..generation import AnswerStats, GenerationChunk, GenerationOptions, OpenOptions, Session
    from ..media import MediaOptions
    from ..models import ModelSpec
    from .options import OutputOptions


#: Tokens reserved for a question that is not known when the video is opened (``chat``, ``keep-map``).
CHAT_QUESTION_RESERVE = 128


def check_text(text: str | None, what: str) -> None:
    """Exit 2 with one line when ``text`` is not valid UTF-8 (the tokenizer would fail on it)."""
    if text is not None and not is_valid_text(text):
        raise UsageError(f"{what} is not valid UTF-8")


def check_questions(questions: list[str]) -> list[str]:
    """At least one question, none empty, all valid UTF-8 (exit 2 otherwise)."""
    if not questions:
        raise UsageError("give at least one QUESTION")
    for index, question in enumerate(questions, 1):
        check_text(question, f"question {index}")
        if not question.strip():
            raise UsageError(f"question {index} is empty")
    return questions


@dataclass
class Answering:
    """A command's console, spinner and warnings (each warning shown once, unless ``--json``, where
    the warnings go into the JSON instead)."""

    output: OutputOptions
    console: Any
    spinner: Spinner
    warnings: list[str] = field(default_factory=list)
    show_warnings: bool = True

    @classmethod
    def start(cls, output: OutputOptions, *, warnings_with_json: bool = False) -> Answering:
        """The console on stderr; the spinner on a terminal (not with ``--json`` or ``-q``)."""
        from ..report import make_console
        from .app import prepare_environment

        prepare_environment(output.verbose)
        console = make_console(no_color=output.no_color)
        spinner = Spinner(console, console.is_terminal and not output.quiet and not output.json_output)
        return cls(output, console, spinner, show_warnings=warnings_with_json or not output.json_output)

    def warn(self, message: str) -> None:
        from ..terminal import escape_control

        if message in self.warnings:
            return
        self.warnings.append(message)
        if self.show_warnings:
            self.spinner.stop()
            self.console.print(f"warning: {escape_control(message)}", style="yellow", markup=False,
                               highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        """A line on stderr, unless ``-q``."""
        if not self.output.quiet:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def refuse(self, message: str) -> None:
        """A line on stderr saying why an input was not acted on (even with ``-q``)."""
        from ..terminal import escape_control

        self.spinner.stop()
        self.console.print(f"refused: {escape_control(message)}", style="yellow", markup=False, highlight=False,
                           soft_wrap=True)

    def open(self, video: Path, model: ModelSpec, options: OpenOptions) -> Session:
        """Open ``video`` through the library's one path, with this command's progress and warnings."""
        from ..generation import Session

        try:
            return Session.open(model, video, options, progress=self.spinner.update, warn=self.warn,
                                on_stage=self.spinner.stage)
        finally:
            self.spinner.stop()

    def stream(self, chunks: Iterator[GenerationChunk], *, to_stdout: bool) -> AnswerStats:
        """Consume an answer's stream: its text to stdout as it comes (sanitised) when ``to_stdout``;
        the spinner stops at the first token. An interrupted answer ends its partial line."""
        from .signals import finish_partial_lines, write_stdout
        from ..terminal import sanitize_answer

        stats = None
        try:
            for chunk in chunks:
                if chunk.token is not None:
                    self.spinner.stop()
                if to_stdout and chunk.text:
                    write_stdout(sanitize_answer(chunk.text))
                if chunk.stats is not None:
                    stats = chunk.stats
        except BaseException as exc:
            self.spinner.stop()
            if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                finish_partial_lines()  # end a partial answer's line, so the error line starts clean
            raise
        if stats is None:
            raise RuntimeError("the answer stream ended without its statistics")
        return stats


def open_options(
    *,
    media: MediaOptions,
    compression: CompressionSetting,
    generation: GenerationOptions,
    system: str | None,
    max_prompt_tokens: int | None,
    questions: tuple[str, ...] = (),
    question_reserve: int | None = None,
    use_cache: bool = True,
    revision: str | None = None,
) -> OpenOptions:
    """The library's options for a command's flags: ``ask``'s prompt budget (the context minus
    ``--max-new-tokens`` unless ``--max-prompt-tokens``), so that every command shares cache entries."""
    from ..generation import OpenOptions

    return OpenOptions(media=media, compression=compression, system=system, max_prompt_tokens=max_prompt_tokens,
                       max_new_tokens=generation.max_new_tokens, questions=questions,
                       question_reserve=question_reserve, cache=use_cache, revision=revision)


def request_config(video: Path, *, system: str | None, model: Any, media: MediaOptions,
                   generation: GenerationOptions, stream: bool) -> dict[str, Any]:
    """The resolved request, as the JSON's ``config`` shows it."""
    keys = ("model", "device", "dtype", "attn_implementation", "offline", "revision")
    return {
        "media_path": str(video),
        "system": system,
        "model": {key: getattr(model, key, None) for key in keys},
        "media": media.to_dict(),
        "generation": {**asdict(generation), "stream": stream},
    }
