"""Evaluation datasets: a generic manifest and local copies of Video-MME, WorldSense and AVUT.

Nothing is downloaded: every reader takes a local annotation file, and the videos are looked up on
disk (``video_dir`` overrides where). A row that cannot be used (a missing field, an answer that
is not one of the options, a duplicate id) becomes a :class:`RowProblem` and is counted; it never
stops the loading. A missing video is not checked here: the runner reports it per item.

Layouts
-------
Text files are UTF-8; a byte-order mark selects UTF-8, UTF-16 or UTF-32 instead. Other encodings
(and UTF-16 without its mark) are refused with one line. A CSV's delimiter is a comma, a semicolon
or a tab, whichever splits the header into the most columns; a header that none of them splits is
refused, naming the three. A ``.parquet`` file that is not one (no ``PAR1`` magic) or cannot be
read is one line too. Videos given as URLs (``https://...``, ``s3://...``) are bad rows: nothing is
downloaded.

``manifest`` (``.jsonl``, ``.json`` array, or ``.csv`` with a header), one item per row:

* ``video`` (required): the video path, relative to the manifest's folder (or to ``video_dir``);
* ``question`` (required);
* ``options`` (optional): a list of option texts (JSON list; in CSV a JSON list or texts separated
  by ``|``). A leading ``A.``/``(A)``/``A)`` matching the option's position is removed. With
  options the item is multiple choice, otherwise open-ended (exact match);
* ``answer`` (required): the letter of the right option (or its exact text), or the open answer;
* ``id`` (optional, unique): default ``q-`` + 10 hex digits of a hash of video, question and options,
  so ids do not shift when rows are added;
* ``category`` (optional): per-category accuracy is reported when present.

``videomme``: Video-MME's ``videomme/test-00000-of-00001.parquet`` (reading parquet needs
``pyarrow``) or the same rows as a JSON list. Fields used: ``videoID`` (the video is
``<video_dir>/<videoID>.mp4``), ``question_id`` (id), ``question``, ``options`` (``"A. ..."``),
``answer`` (letter), ``duration`` (short/medium/long: the category, as Video-MME reports),
``domain``, ``sub_category``, ``task_type`` (kept in ``meta``). Default ``video_dir``: the first
existing of ``data``, ``videos``, ``video`` next to the ``videomme`` folder (or next to the file).

``worldsense``: WorldSense's ``worldsense_qa.json``: an object keyed by video, each with
``video_id``, ``domain``, ``duration``, ``sub_category`` and ``task0``, ``task1``, ... each holding
``question``, ``candidates`` (``"A. ..."``), ``answer`` (letter), ``task_type``, ``task_domain``.
The video is ``<video_dir>/<video_id>.mp4``; default ``video_dir``: ``videos`` next to the file.
Category: ``domain``; id: ``<video_id>/<task key>``.

``avut``: AVUT's ``AV_Human_data.json`` (as read by OmniZip's ``eval/eval_avut.py``): a list of
``video_id``, ``QA_id``, ``video_path`` (``data/...``), ``question``, ``option_A`` ... ``option_F``,
``answer`` (letter), ``task_type`` (the category). The video is ``<video_dir>/<video_path>``
without its leading ``data/`` when ``video_dir`` is given, else ``video_path`` relative to the
file's folder. Id: ``QA_id`` (else ``video_id`` and the row number).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnizip_cli.errors import EnvironmentProblem, UsageError

__all__ = ["LAYOUTS", "Dataset", "Item", "RowProblem", "load_dataset", "option_letter"]

LAYOUTS = ("auto", "manifest", "videomme", "worldsense", "avut")
LETTERS = "ABCDEFGHIJ"
_LETTER_PREFIX = re.compile(r"^\s*\(?([A-Ja-j])\s*[\.\):]\s*")
#: ``scheme://`` at the start of a video path (two letters at least: ``C://`` is a drive).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
#: A dataset path that is a URL (``pathlib`` makes ``https://`` into ``https:/``).
_URL_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
URL_PROBLEM = "URLs are not supported in manifests: download the file first"
#: The CSV delimiters recognised, in order of preference when they split a header alike.
CSV_DELIMITERS = (",", ";", "\t")
#: Byte-order marks, longest first (UTF-32 LE starts like UTF-16 LE).
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"), (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
    (b"\xef\xbb\xbf", "utf-8", "UTF-8"), (b"\xff\xfe", "utf-16-le", "UTF-16"), (b"\xfe\xff", "utf-16-be", "UTF-16"),
)


def option_letter(index: int) -> str:
    """``A`` for 0, ``B`` for 1, ..."""
    return LETTERS[index]


@dataclass(frozen=True)
class Item:
    """One question about one video.

    ``options`` are the option texts without letters (empty for an open question); ``answer`` is
    then a letter. ``video`` is the resolved path; ``video_name`` the path as the dataset wrote it
    (stored in the results, so moving the videos does not change the run).
    """

    id: str
    video: Path
    video_name: str
    question: str
    answer: str
    options: tuple[str, ...] = ()
    category: str | None = None
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.options)


@dataclass(frozen=True)
class RowProblem:
    """A row that was skipped, and why (``row`` is the 1-based row or a key)."""

    row: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.message}"


@dataclass
class Dataset:
    """The usable items of an annotation file and the rows that were not usable."""

    name: str
    path: Path
    layout: str
    items: list[Item]
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def videos(self) -> list[Path]:
        """Distinct videos in order of first appearance."""
        return list(dict.fromkeys(item.video for item in self.items))

    def fingerprint(self) -> str:
        """SHA-256 of what defines the items (not where the videos are): a changed dataset differs."""
        digest = hashlib.sha256()
        for item in self.items:
            row = [item.id, item.video_name, item.question, list(item.options), item.answer, item.category]
            digest.update(json.dumps(row, ensure_ascii=False).encode())
            digest.update(b"\n")
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """The dataset part of ``config.json``."""
        return {
            "name": self.name,
            "path": str(self.path),
            "layout": self.layout,
            "items": len(self.items),
            "videos": len(self.videos),
            "bad_rows": len(self.problems),
            "fingerprint": self.fingerprint(),
        }


class _BadRow(Exception):
    pass


# ---------------------------------------------------------------------------------- entry point


def load_dataset(path: str | Path, layout: str = "auto", video_dir: str | Path | None = None) -> Dataset:
    """Read an annotation file in one of :data:`LAYOUTS` (``auto``: guessed from the file).

    Raises :class:`UsageError` for a missing or unrecognised file or layout and for a missing
    video folder; rows that cannot be used are returned in :attr:`Dataset.problems`.
    """
    if _URL_PATH.match(str(path)) and not Path(path).exists():
        raise UsageError(f"{path}: URLs are not supported: download the file first")
    path = Path(path)
    if layout not in LAYOUTS:
        raise UsageError(f"unknown dataset layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if path.is_dir():
        path = _find_annotation(path)
    if not path.is_file():
        raise UsageError(f"dataset not found: {path}")
    videos = Path(video_dir) if video_dir is not None else None
    if videos is not None and not videos.is_dir():
        raise UsageError(f"--video-dir is not a folder: {videos}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rows: Any = _read_parquet(path)
        layout = "videomme" if layout == "auto" else layout
    elif suffix == ".csv":
        rows = _read_csv(path)
    elif suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif suffix == ".json":
        rows = _read_json(path)
    else:
        raise UsageError(f"{path.name}: expected a .jsonl, .json, .csv or .parquet file")
    if layout == "auto":
        layout = _guess_layout(rows)
    reader = {"manifest": _manifest, "videomme": _videomme, "worldsense": _worldsense, "avut": _avut}[layout]
    items, problems = reader(path, rows, videos)
    items, duplicates = _unique(items)
    problems.extend(duplicates)
    return Dataset(name=path.stem, path=path, layout=layout, items=items, problems=problems)


def _find_annotation(folder: Path) -> Path:
    candidates = [
        folder / "videomme" / "test-00000-of-00001.parquet",
        folder / "worldsense_qa.json",
        folder / "AV_Human_data.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UsageError(f"{folder} is a folder without a known annotation file; give the file itself")


def _guess_layout(rows: Any) -> str:
    if isinstance(rows, dict):
        if any(isinstance(v, dict) and any(k.startswith("task") for k in v) for v in rows.values()):
            return "worldsense"
        raise UsageError("a JSON object is read only as WorldSense's worldsense_qa.json; give --layout")
    first = next((row for row in rows if isinstance(row, dict)), None) if isinstance(rows, list) else None
    if first is None:
        return "manifest"  # empty or malformed: the manifest reader reports the rows
    if "option_A" in first:
        return "avut"
    if "videoID" in first and "question_id" in first:
        return "videomme"
    return "manifest"


# ---------------------------------------------------------------------------------- file readers


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    """The file's text: UTF-8, or the encoding its byte-order mark names (the mark removed).

    Raises :class:`UsageError` for bytes that are not text in that encoding, and for NUL
    characters (UTF-16 without a mark decodes as UTF-8 with a NUL after every ASCII letter).
    """
    data = _read_bytes(path)
    encoding, label, start = "utf-8", "UTF-8", 0
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            encoding, label, start = codec, name, len(bom)
            break
    try:
        text = data[start:].decode(encoding)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not {label} text "
                         f"(byte {exc.start + start}: {exc.object[exc.start:exc.start + 1]!r})",
                         hint="save it as UTF-8") from None
    if "\x00" in text:
        raise UsageError(f"{path} holds NUL characters (UTF-16 without a byte-order mark)",
                         hint="save it as UTF-8 (or as UTF-16 with its byte-order mark)")
    return text


def _lines(text: str) -> io.StringIO:
    """The lines of ``text`` as reading a file gives them: split at ``\\n``, ``\\r\\n`` or ``\\r`` only
    (a JSON string may hold a raw U+2028, which ``str.splitlines`` would split at)."""
    return io.StringIO(text, newline=None)


def _read_jsonl(path: Path) -> list[Any]:
    rows: list[Any] = []
    for number, line in enumerate(_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            rows.append(_Unparsed(number, f"not JSON ({exc.msg})"))
    return rows


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None


def _read_csv(path: Path) -> list[Any]:
    text = _read_text(path)
    delimiter = _csv_delimiter(path, text)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return [dict(row) for row in reader]
    except csv.Error as exc:
        raise UsageError(f"{path} is not a readable CSV file: {exc} (line {reader.line_num})") from None


def _csv_delimiter(path: Path, text: str) -> str:
    """The delimiter of :data:`CSV_DELIMITERS` that splits the header into the most columns.

    An empty file gets a comma (no rows); a header that none of them splits into at least two
    columns (``video|question|answer``) raises :class:`UsageError` saying which are expected.
    """
    header = next((line.rstrip("\n") for line in _lines(text) if line.strip()), "")
    if not header:
        return ","
    columns = {d: len(next(csv.reader([header], delimiter=d), [])) for d in CSV_DELIMITERS}
    best = max(CSV_DELIMITERS, key=lambda d: columns[d])  # the first of equals: a comma
    if columns[best] < 2:
        raise UsageError(f"{path}: the header {header[:60]!r} is one column: expected comma, semicolon or tab "
                         "separated columns (video, question, answer, ...)")
    return best


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise EnvironmentProblem(
            f"reading {path.name} needs pyarrow", hint='pip install pyarrow (or "omnizip[datasets]")'
        ) from None
    import pyarrow as pa

    try:
        with path.open("rb") as handle:
            head = handle.read(4)
            handle.seek(max(handle.seek(0, os.SEEK_END) - 4, 0))
            tail = handle.read(4)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head != b"PAR1" or tail != b"PAR1":
        raise UsageError(f"{path} is not a parquet file (no PAR1 magic bytes)")
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UsageError(f"{path} is not a readable parquet file: {reason}") from None


@dataclass(frozen=True)
class _Unparsed:
    number: int
    message: str


# ---------------------------------------------------------------------------------- row helpers


def _text(row: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _BadRow(f"missing {key!r}")
        return None
    if isinstance(value, (dict, list)):
        raise _BadRow(f"{key!r} must be text, got {type(value).__name__}")
    return str(value).strip()


def _clean_options(raw: Iterable[Any]) -> tuple[str, ...]:
    """Option texts without a leading letter that matches their position."""
    options = []
    for index, value in enumerate(raw):
        if value is None:
            raise _BadRow(f"option {index + 1} is empty")
        text = str(value).strip()
        match = _LETTER_PREFIX.match(text)
        if match and index < len(LETTERS) and match.group(1).upper() == LETTERS[index]:
            text = text[match.end():].strip()
        if not text:
            raise _BadRow(f"option {index + 1} is empty")
        options.append(text)
    if len(options) > len(LETTERS):
        raise _BadRow(f"at most {len(LETTERS)} options, got {len(options)}")
    if len(options) == 1:
        raise _BadRow("a multiple-choice question needs at least 2 options")
    return tuple(options)


def _answer_letter(answer: str, options: tuple[str, ...]) -> str:
    """The gold letter: a letter in range, ``(B)``/``B.``, or the exact text of one option."""
    text = answer.strip()
    match = re.fullmatch(r"\(?([A-Ja-j])[\.\):]?", text) or _LETTER_PREFIX.match(text)
    if match:
        letter = match.group(1).upper()
        if LETTERS.index(letter) < len(options):
            return letter
        raise _BadRow(f"answer {answer!r} is not one of the {len(options)} options")
    lowered = [o.casefold() for o in options]
    if text.casefold() in lowered:
        return LETTERS[lowered.index(text.casefold())]
    raise _BadRow(f"answer {answer!r} is neither an option letter nor an option's text")


def _auto_id(video: str, question: str, options: tuple[str, ...]) -> str:
    digest = hashlib.sha1(json.dumps([video, question, list(options)], ensure_ascii=False).encode()).hexdigest()
    return f"q-{digest[:10]}"


def _meta(pairs: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in pairs.items() if v is not None and str(v) != "")


def _unique(items: list[Item]) -> tuple[list[Item], list[RowProblem]]:
    seen: set[str] = set()
    kept, problems = [], []
    for item in items:
        if item.id in seen:
            problems.append(RowProblem(item.id, f"duplicate id {item.id!r} (first one kept)"))
            continue
        seen.add(item.id)
        kept.append(item)
    return kept, problems


def _rows(rows: Any, what: str) -> Iterator[tuple[str, Any]]:
    if not isinstance(rows, list):
        raise UsageError(f"expected a list of {what} rows")
    for number, row in enumerate(rows, start=1):
        yield str(number), row


# ---------------------------------------------------------------------------------- layouts


def _manifest(path: Path, rows: Any, video_dir: Path | None) -> tuple[list[Item], list[RowProblem]]:
    base = video_dir or path.parent
    items, problems = [], []
    for number, row in _rows(rows, "manifest"):
        if isinstance(row, _Unparsed):
            problems.append(RowProblem(str(row.number), row.message))
            continue
        try:
            if not isinstance(row, dict):
                raise _BadRow("not an object")
            video = _text(row, "video")
            question = _text(row, "question")
            answer = _text(row, "answer")
            assert video is not None and question is not None and answer is not None
            _local(video)
            raw = row.get("options")
            if isinstance(raw, str):
                raw = _options_from_text(raw)
            if raw is not None and not isinstance(raw, list):
                raise _BadRow("'options' must be a list")
            options = _clean_options(raw or [])
            if options:
                answer = _answer_letter(answer, options)
            item_id = _text(row, "id", required=False) or _auto_id(video, question, options)
            category = _text(row, "category", required=False)
            items.append(Item(id=item_id, video=(base / video), video_name=video, question=question,
                              answer=answer, options=options, category=category))
        except _BadRow as exc:
            problems.append(RowProblem(number, str(exc)))
    return items, problems


def _local(video: str) -> None:
    """Refuse (as a bad row) a video given as a URL: it would read as a missing local file."""
    if _URL.match(video):
        raise _BadRow(URL_PROBLEM)


def _options_from_text(text: str) -> list[Any] | None:
    text = text.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise _BadRow("'options' is not a valid JSON list") from None
        if not isinstance(value, list):
            raise _BadRow("'options' must be a list")
        return value
    return [part for part in text.split("|")]


def _default_video_dir(path: Path, names: Iterable[str], parents: Iterable[Path]) -> Path:
    for parent in parents:
        for name in names:
            if (parent / name).is_dir():
                return parent / name
    raise UsageError(f"no video folder found for {path} (looked for {', '.join(names)}); pass --video-dir")


def _videomme(path: Path, rows: Any, video_dir: Path | None) -> tuple[list[Item], list[RowProblem]]:
    if video_dir is None:
        parents = [path.parent.parent, path.parent] if path.parent.name == "videomme" else [path.parent]
        video_dir = _default_video_dir(path, ("data", "videos", "video"), parents)
    items, problems = [], []
    for number, row in _rows(rows, "Video-MME"):
        try:
            if not isinstance(row, dict):
                raise _BadRow("not an object")
            video_id = _text(row, "videoID")
            question = _text(row, "question")
            raw = row.get("options")
            if raw is not None and not isinstance(raw, (list, tuple)):
                raw = list(raw) if hasattr(raw, "__iter__") and not isinstance(raw, str) else None
            if not raw:
                raise _BadRow("missing 'options'")
            options = _clean_options(raw)
            answer = _answer_letter(_text(row, "answer") or "", options)
            name = f"{video_id}.mp4"
            items.append(Item(
                id=_text(row, "question_id", required=False) or f"{video_id}-{number}",
                video=video_dir / name, video_name=name, question=question or "", answer=answer,
                options=options, category=_text(row, "duration", required=False),
                meta=_meta({k: row.get(k) for k in ("domain", "sub_category", "task_type", "video_id")}),
            ))
        except _BadRow as exc:
            problems.append(RowProblem(number, str(exc)))
    return items, problems


def _worldsense(path: Path, rows: Any, video_dir: Path | None) -> tuple[list[Item], list[RowProblem]]:
    if not isinstance(rows, dict):
        raise UsageError("WorldSense's worldsense_qa.json is an object keyed by video")
    video_dir = video_dir or _default_video_dir(path, ("videos",), [path.parent])
    items, problems = [], []
    for key, entry in rows.items():
        if not isinstance(entry, dict):
            problems.append(RowProblem(str(key), "not an object"))
            continue
        video_id = str(entry.get("video_id") or key).strip()
        name = f"{video_id}.mp4"
        tasks = sorted((k for k in entry if k.startswith("task")), key=_task_order)
        if not tasks:
            problems.append(RowProblem(str(key), "no task0, task1, ... questions"))
        for task in tasks:
            try:
                qa = entry[task]
                if not isinstance(qa, dict):
                    raise _BadRow("not an object")
                raw = qa.get("candidates")
                if not isinstance(raw, list) or not raw:
                    raise _BadRow("missing 'candidates'")
                options = _clean_options(raw)
                answer = _answer_letter(_text(qa, "answer") or "", options)
                items.append(Item(
                    id=f"{video_id}/{task}", video=video_dir / name, video_name=name,
                    question=_text(qa, "question") or "", answer=answer, options=options,
                    category=_text(entry, "domain", required=False),
                    meta=_meta({"task_type": qa.get("task_type"), "task_domain": qa.get("task_domain"),
                                "duration": entry.get("duration"), "sub_category": entry.get("sub_category")}),
                ))
            except _BadRow as exc:
                problems.append(RowProblem(f"{key}/{task}", str(exc)))
    return items, problems


def _task_order(key: str) -> tuple[int, str]:
    digits = key[4:]
    return (int(digits), key) if digits.isdigit() else (1 << 30, key)


def _avut(path: Path, rows: Any, video_dir: Path | None) -> tuple[list[Item], list[RowProblem]]:
    items, problems = [], []
    for number, row in _rows(rows, "AVUT"):
        try:
            if not isinstance(row, dict):
                raise _BadRow("not an object")
            video_path = _text(row, "video_path")
            assert video_path is not None
            _local(video_path)
            raw = [row[f"option_{letter}"] for letter in LETTERS[:6] if row.get(f"option_{letter}") is not None]
            options = _clean_options(raw)
            if not options:
                raise _BadRow("missing 'option_A' ...")
            answer = _answer_letter(_text(row, "answer") or "", options)
            if video_dir is not None:
                relative = video_path[5:] if video_path.startswith("data/") else video_path
                video = video_dir / relative
            else:
                video = path.parent / video_path
            qa_id = _text(row, "QA_id", required=False)
            item_id = qa_id or f"{_text(row, 'video_id', required=False) or video_path}-{number}"
            items.append(Item(
                id=item_id, video=video, video_name=video_path, question=_text(row, "question") or "",
                answer=answer, options=options, category=_text(row, "task_type", required=False),
                meta=_meta({"video_id": row.get("video_id")}),
            ))
        except _BadRow as exc:
            problems.append(RowProblem(number, str(exc)))
    return items, problems
