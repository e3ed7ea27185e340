"""A transient spinner on stderr that names each stage as it starts (terminal only)."""

from __future__ import annotations

from typing import Any

STAGE_MESSAGES = {
    "preprocess": "preprocessing (processor) ...",
    "audio_encoder": "encoding audio ...",
    "saliency": "scoring audio saliency ...",
    "vision_encoder": "encoding video ...",
    "keep_plan": "planning compression ...",
    "prefill": "prefilling ...",
}


class Spinner:
    """Every call is a no-op when disabled (not a terminal, ``--json`` or ``-q``)."""

    def __init__(self, console: Any, enabled: bool) -> None:
        self._status = console.status("starting ...", spinner="dots") if enabled else None
        self._running = False

    def update(self, message: str) -> None:
        if self._status is None:
            return
        self._status.update(message)
        if not self._running:
            self._status.start()
            self._running = True

    def stage(self, name: str) -> None:
        """A :class:`~omnizip_cli.measure.StageTimer` ``on_stage`` callback."""
        self.update(STAGE_MESSAGES.get(name, f"{name.replace('_', ' ')} ..."))

    def stop(self) -> None:
        if self._status is not None and self._running:
            self._status.stop()
            self._running = False
