"""The line ``omnizip serve`` prints on stderr once it listens, and a reader for another process's.

``omnizip serve: listening on http://HOST:PORT (pid N)``: :func:`listening_line` writes it;
:class:`StderrWatcher` reads a server process's stderr on a thread (every line kept) and notes its
address, for the programs that start a server and talk to it (benchmarks, tests, notebooks).
"""

from __future__ import annotations

import re
import threading
from typing import IO

LISTENING = re.compile(r"omnizip serve: listening on (http://\S+) \(pid (\d+)\)")


def listening_line(url: str, pid: int) -> str:
    return f"omnizip serve: listening on {url} (pid {pid})\n"


class StderrWatcher:
    """Reads ``stream`` (a server's stderr, text) until it ends: ``lines`` and, once it listens, ``url``."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, name="omnizip-serve-stderr", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.stream:
            self.lines.append(line)
            found = LISTENING.search(line)
            if found and self.url is None:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()  # the process ended (url stays None if it never listened)

    def wait(self, timeout: float) -> str | None:
        """The server's URL once it listens; None when it ended first or ``timeout`` ran out."""
        self._ready.wait(timeout)
        return self.url

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return "".join(self.lines)
