"""The ``omnizip`` command line: one thin module per command over the Session (``ask``, ``chat``,
``profile``, ``evaluate``, ``keep-map``, ``cache``, ``env``), the options declared once
(:mod:`.options`), the Typer app and its error guard (:mod:`.app`), the entry point (:mod:`.main`)
and the process plumbing for signals and pipes (:mod:`.signals`).

Importing the package registers every command on :data:`app` (command modules import no heavy
library at import time).
"""

from .app import app
from .main import register_commands

register_commands()

__all__ = ["app"]
