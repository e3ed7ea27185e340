"""The ``omnizip`` command line: one thin module per command over the Session (``ask``, ``profile``,
``env``), the options declared once (:mod:`.options`), the error guard (:mod:`.app`)."""

from .app import app, main, register_commands

register_commands()

__all__ = ["app", "main"]
