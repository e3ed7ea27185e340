"""An exclusive inter-process lock on a file (``fcntl.flock``; Linux and macOS).

Used to serialise the building of cached artefacts (the tiny checkpoint): several ``omnizip``
processes started at once on an empty cache must not build into, or replace, a folder another one
is reading. The lock is advisory and tied to the open file: it is released when the holder closes
it or exits, even if it is killed, so a crashed builder never leaves a stale lock behind. The lock
file itself is never deleted (deleting it would let two processes lock two different inodes).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OmnizipError


class LockTimeout(OmnizipError):
    """Another process held the lock for longer than the caller was willing to wait."""


@contextmanager
def exclusive_lock(
    path: Path,
    timeout: float = 900.0,
    poll: float = 0.05,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` body.

    Waits at most ``timeout`` seconds, polling every ``poll`` seconds, then raises
    :class:`LockTimeout`. ``on_wait`` is called once, the first time the lock is found held
    (e.g. to tell the user that another process is building). Not re-entrant: locking the same file
    twice from one process through two ``with`` blocks deadlocks until the timeout.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another omnizip process has held {path} for over {timeout:.0f} s",
                        hint="wait for it to finish, or stop it",
                    ) from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
