"""The dependency versions omnizip is tested with, checked at start-up without importing them."""

from __future__ import annotations

from importlib import metadata

from .errors import EnvironmentProblem

# transformers: the Qwen2.5-Omni internals we call (get_rope_index, the audio encoder's attention,
# the processor's ``load_audio_from_video``) change between minor releases, so we accept only the
# range the test suite has run on.
TRANSFORMERS_MIN = "5.23.0"
TRANSFORMERS_BELOW = "5.24.0"


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


def check_transformers_version(version: str | None = None) -> str:
    """Raise :class:`EnvironmentProblem` unless transformers is inside the tested range."""
    version = version if version is not None else installed_version("transformers")
    wanted = f">={TRANSFORMERS_MIN},<{TRANSFORMERS_BELOW}"
    if version is None:
        raise EnvironmentProblem(f"transformers is not installed (omnizip needs transformers{wanted})")
    if not (_parse(TRANSFORMERS_MIN) <= _parse(version) < _parse(TRANSFORMERS_BELOW)):
        raise EnvironmentProblem(
            f"transformers {version} is installed but omnizip is tested with transformers{wanted}",
            hint=f'pip install "transformers{wanted}"',
        )
    return version
