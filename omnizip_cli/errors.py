"""Errors that the CLI turns into a one-line message and an exit code.

Every failure a user can cause (bad media, a wrong model folder, out of memory, a bad option value)
is raised as an :class:`OmnizipError` subclass. The CLI prints ``error: <message>`` (and the hint,
if any, on the same line) to stderr and exits with :attr:`OmnizipError.exit_code`; ``--debug`` or
``OMNIZIP_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations


class OmnizipError(Exception):
    """A failure with a message meant for the user (exit code 1)."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint on a single line, without a trailing period clash, safe for a terminal.

        Whitespace runs (newlines included) collapse to one space; any other control character, e.g.
        an escape sequence in a file name, is shown escaped (``\\x1b[2J``): see
        :func:`omnizip_cli.terminal.escape_control`.
        """
        from .terminal import escape_control

        text = escape_control(" ".join(self.message.split()))
        if self.hint:
            text = f"{text.rstrip('.')}. Hint: {escape_control(' '.join(self.hint.split()))}"
        return text


class UsageError(OmnizipError):
    """A bad option value or combination (exit code 2, like Click's usage errors).

    ``field`` names the setting at fault (a config field such as ``rho_audio``) and ``problem`` says
    what is wrong with it, so that a front end can name the value the way its user gave it
    (:meth:`for_option`: ``--rho-audio must be ...``).
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, *, field: str | None = None,
                 problem: str | None = None) -> None:
        super().__init__(message, hint)
        self.field = field
        self.problem = problem

    @classmethod
    def of_field(cls, field: str, problem: str, hint: str | None = None) -> UsageError:
        """``"<field> <problem>"``, with the field and the problem kept apart."""
        return cls(f"{field} {problem}", hint, field=field, problem=problem)

    def for_option(self, options: dict[str, str]) -> UsageError:
        """The same error naming the option that sets the field (``options``: field -> option), if any."""
        if self.field in options and self.problem is not None:
            return UsageError(f"{options[self.field]} {self.problem}", self.hint)
        return self


class MediaError(OmnizipError):
    """The media file is missing, unreadable, corrupt, or has no usable stream."""


class ModelLoadError(OmnizipError):
    """The model folder or hub id is not a loadable Qwen2.5-Omni checkpoint."""


class EnvironmentProblem(OmnizipError):
    """An installed dependency is missing or outside the tested version range."""


class OutOfMemory(OmnizipError):
    """The device ran out of memory; the hint says what to lower."""

    DEFAULT_HINT = (
        "lower --max-pixels, --max-frames or --fps, or compress harder (--preset 35 or a lower --retention)"
    )

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint or self.DEFAULT_HINT)
