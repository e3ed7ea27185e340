"""The one writer of results folders, for ``omnizip profile --out`` and ``omnizip evaluate --out``.

A results folder (as kvpress writes them) holds JSON files, a chart and, for ``evaluate``, a JSON
lines log of the answers. :class:`ResultsFolder` writes each kind the same way for both commands:

* JSON files (:meth:`ResultsFolder.write_json`): indented by 2, one final newline, keys in insertion
  order, written to a temporary file and renamed into place, so that a reader never sees half a file;
* charts (:meth:`ResultsFolder.write_chart`): PNG;
* JSON lines (:meth:`ResultsFolder.append_line`): one record per line, flushed and synced to disk as
  it arrives; :meth:`ResultsFolder.read_lines` drops a last line torn by a kill mid-write.

What each command puts in its folder: ``profile`` (:func:`omnizip_cli.evaluation.profile.write_outputs`)
writes ``metrics.json``, ``config.json`` and ``timings.png``; ``evaluate``
(:class:`omnizip_cli.evaluation.results.EvaluationFolder`) writes ``config.json``,
``predictions.jsonl``, ``metrics.json`` and ``accuracy.png``.

Whose folder it is (:meth:`ResultsFolder.kind`): ``--out`` may name a missing or empty folder, or one
that omnizip wrote, recognised by its ``config.json`` (``"kind"``, or profile's ``"command"``, or the
shape of an evaluation's config from before the marker). A folder of other files is refused
(:meth:`ResultsFolder.check_owned`), so a user's own ``metrics.json`` is never overwritten.
``evaluate`` holds an exclusive lock on the folder's ``.omnizip.lock`` while it writes
(:meth:`ResultsFolder.lock`): a second run on the same folder fails at once instead of appending
duplicate predictions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from omnizip_cli.errors import OmnizipError, UsageError

__all__ = [
    "ACCURACY_CHART",
    "CONFIG",
    "EMPTY",
    "LOCK",
    "METRICS",
    "PREDICTIONS",
    "TIMINGS_CHART",
    "ResultsFolder",
]

CONFIG = "config.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
TIMINGS_CHART = "timings.png"
ACCURACY_CHART = "accuracy.png"
#: The lock file ``evaluate`` holds while it writes the folder (never deleted: see omnizip_cli.filelock).
LOCK = ".omnizip.lock"
#: :meth:`ResultsFolder.kind` of a missing or empty folder.
EMPTY = "empty"
#: Names omnizip leaves in a folder that do not make it a results folder (the lock, write checks).
_OWN_HIDDEN = ".omnizip"
#: The keys of an evaluation's config.json written before it named its kind.
_EVALUATE_CONFIG_KEYS = frozenset({"omnizip_version", "model", "settings", "dataset"})

T = TypeVar("T")



@dataclass
class ResultsFolder:
    """A results folder at ``path``: writes JSON files, charts and JSON lines there (see the module)."""

    path: Path
    _handles: dict[str, IO[str]] = field(default_factory=dict, repr=False)

    def check_writable(self) -> None:
        """Create the folder now and check that a file can be written in it.

        Raises :class:`UsageError` (naming ``--out``) when the path is an existing file, or the
        folder cannot be created or written (``/proc/...``, read-only): called before any work,
        so that a long run is not lost at the end.
        """
        import tempfile

        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {self.path} exists and is not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".omnizip-write-check-"):
                pass
        except OSError as exc:
            raise UsageError(f"--out {self.path} cannot be written: {exc.strerror or exc}") from exc

    def kind(self) -> str | None:
        """Whose folder this is: :data:`EMPTY` (missing, or holding only omnizip's hidden files),
        the kind of omnizip results it holds (``"profile"``, ``"evaluate"``), or None for a folder
        of other files (a ``config.json`` that is not omnizip's included)."""
        try:
            names = [entry.name for entry in self.path.iterdir() if not entry.name.startswith(_OWN_HIDDEN)]
        except FileNotFoundError:
            return EMPTY
        except OSError as exc:
            raise UsageError(f"--out {self.path} cannot be read: {exc.strerror or exc}") from exc
        if not names:
            return EMPTY
        try:
            config = json.loads((self.path / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(config, dict):
            return None
        kind = config.get("kind") or config.get("command")
        if isinstance(kind, str) and kind:
            return kind
        return "evaluate" if _EVALUATE_CONFIG_KEYS <= config.keys() else None

    def check_owned(self, kind: str) -> None:
        """Refuse (:class:`UsageError`) a folder that holds anything but ``kind`` results of omnizip.

        A missing or empty folder is fine, and so is one this command wrote before; a folder of
        other files, or of another command's results, is refused whatever the options, so that no
        file of the user's (or of another run) is overwritten.
        """
        found = self.kind()
        if found in (EMPTY, kind):
            return
        if found is None:
            shown = sorted(entry.name for entry in self.path.iterdir() if not entry.name.startswith(_OWN_HIDDEN))
            listed = ", ".join(shown[:3]) + (", ..." if len(shown) > 3 else "")
            raise UsageError(f"--out {self.path} is not an omnizip results folder (it holds {listed})",
                             hint="give a new or empty folder")
        raise UsageError(f"--out {self.path} holds the results of omnizip {found}",
                         hint="give a new or empty folder")

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the folder's exclusive lock (:data:`LOCK`) for the ``with`` body; the folder is created.

        Never waits: when another process holds it, raises :class:`UsageError` at once (``another
        omnizip <command> is writing ...``). The lock goes with its holder, even a killed one.
        """
        from ..filelock import exclusive_lock

        def busy() -> None:
            raise UsageError(f"another omnizip {command} is writing in {self.path}",
                             hint="wait for it to finish, or choose another --out")

        self.create()
        with exclusive_lock(self.path / LOCK, timeout=0.0, on_wait=busy):
            yield

    def create(self) -> None:
        """Create the folder (and its parents) when missing."""
        self.path.mkdir(parents=True, exist_ok=True)

    def remove(self, *names: str) -> None:
        """Delete the files ``names`` of the folder, those that exist."""
        for name in names:
            (self.path / name).unlink(missing_ok=True)

    def write_json(self, name: str, data: Any, *, ascii_only: bool = False) -> Path:
        """Write ``data`` as the JSON file ``name``, atomically, and return its path.

        ``ascii_only`` escapes every non-ASCII character (``\\u00e9``); otherwise the text is UTF-8.
        """
        path = self.path / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        # insertion order kept: settings stay in the order they were asked for
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=ascii_only) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    def write_chart(self, name: str, image: Any, *, optimize: bool = False) -> Path:
        """Save the ``PIL.Image.Image`` ``image`` as the PNG file ``name`` and return its path."""
        path = self.path / name
        image.save(path, format="PNG", optimize=optimize)
        return path

    def append_line(self, name: str, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line of the JSON lines file ``name``, flushed and synced to disk."""
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = (self.path / name).open("a", encoding="utf-8")
        handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def read_lines(
        self, name: str, parse: Callable[[bytes], T | None], *, what: str = "a record", hint: str | None = None
    ) -> list[T]:
        """The lines of the JSON lines file ``name`` that ``parse`` accepts, in file order.

        ``parse`` returns None for a line it rejects. A rejected last line without its newline was
        torn by a kill mid-write: it is cut off the file. An accepted last line without its newline
        gets one. A rejected line elsewhere raises :class:`OmnizipError` (``line N is not <what>``,
        with ``hint``). A missing file has no lines.
        """
        path = self.path / name
        if not path.exists():
            return []
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: b"" when the file ends with one
        parsed: list[T] = []
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                value = parse(raw)
                if value is None:
                    raise OmnizipError(f"{path}: line {number} is not {what}", hint=hint)
                parsed.append(value)
        if tail.strip():
            value = parse(tail)
            with path.open("r+b") as handle:
                if value is None:  # torn by a kill mid-write: drop it
                    handle.truncate(len(data) - len(tail))
                else:
                    handle.seek(0, os.SEEK_END)
                    handle.write(b"\n")
                    parsed.append(value)
        return parsed

    def close(self) -> None:
        """Close the JSON lines files opened by :meth:`append_line`."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
