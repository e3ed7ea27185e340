"""The dependency versions omnizip is tested with, checked at start-up without importing them."""

from __future__ import annotations

import sys
from importlib import metadata

from .errors import EnvironmentProblem

# transformers: the Qwen omni internals we call (get_rope_index, the audio encoder's attention, the
# processor's ``load_audio_from_video``) change between minor releases. The test suite runs on the
# oldest and on the newest release of this range (CI: ``.ci/run``, one environment each). Older
# releases are refused; newer ones run with a one-line warning (they are untested, not known bad).
TRANSFORMERS_MIN = "5.23.0"
#: The newest release the test suite has run on.
TRANSFORMERS_NEWEST_TESTED = "5.25.0"
#: The first release above the tested range (``>=MIN,<BELOW`` is what ``omnizip env`` shows).
TRANSFORMERS_BELOW = "5.26.0"
#: The first release known to break omnizip: 5.40 removes the ``past_key_values`` argument of the
#: language models' ``forward`` in favour of ``cache``, which 5.23 does not accept (it would silently
#: ignore it), so omnizip keeps ``past_key_values`` and ``pyproject.toml`` stops below 5.40.
TRANSFORMERS_KNOWN_BREAKING = "5.40.0"

_warned: set[str] = set()


def _parse(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


def installed_version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def tested_range() -> str:
    """The tested transformers range as a requirement specifier (``>=5.23.0,<5.26.0``)."""
    return f">={TRANSFORMERS_MIN},<{TRANSFORMERS_BELOW}"


def newer_than_tested(version: str) -> str | None:
    """The one-line warning for a transformers release above the tested range, or None."""
    if _parse(version) < _parse(TRANSFORMERS_BELOW):
        return None
    return (f"transformers {version} is newer than the newest release omnizip is tested with "
            f"({TRANSFORMERS_NEWEST_TESTED}); if something fails, pip install \"transformers{tested_range()}\"")


def check_transformers_version(version: str | None = None, *, warn: bool = True) -> str:
    """Raise :class:`EnvironmentProblem` when transformers is missing or older than the tested range.

    A release newer than the tested range is accepted: with ``warn``, a one-line ``warning:`` is
    written to stderr (once per process and version).
    """
    version = version if version is not None else installed_version("transformers")
    wanted = tested_range()
    if version is None:
        raise EnvironmentProblem(f"transformers is not installed (omnizip needs transformers{wanted})")
    if _parse(version) < _parse(TRANSFORMERS_MIN):
        raise EnvironmentProblem(
            f"transformers {version} is installed but omnizip needs transformers>={TRANSFORMERS_MIN} "
            f"(tested with transformers{wanted})",
            hint=f'pip install "transformers{wanted}"',
        )
    message = newer_than_tested(version)
    if message is not None and warn and version not in _warned:
        _warned.add(version)
        try:
            sys.stderr.write(f"warning: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed stderr: the warning is not worth failing for
            pass
    return version
