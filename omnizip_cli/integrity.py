"""Cheap checks that a checkpoint folder is complete and not corrupt, before anything loads it.

Two kinds of folders reach the loader:

* **the cached tiny checkpoint**, built here: its builder writes a manifest
  (:data:`MANIFEST_NAME`, every file with its size and SHA-256) *last*, so a folder without a valid
  manifest, or whose files do not match it, is incomplete or corrupt and is rebuilt;
* **a real checkpoint folder** given with ``--model DIR``: no manifest, so the checks are structural
  and cheap (no hashing of gigabytes): ``config.json`` is a JSON object; the weights are safetensors
  whose headers parse and whose sizes match the headers (a truncated shard is caught here, not as a
  ``SafetensorError`` deep in transformers); every shard of a sharded index exists; the tokenizer and
  preprocessor files exist and the JSON ones parse. A folder whose only weights are pickles
  (``pytorch_model.bin``) is refused unless the caller opts in (``allow_pickle``), because unpickling
  can run code.

Every problem is a one-line :class:`~omnizip_cli.errors.ModelLoadError` naming the file.
Nothing here imports torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

MANIFEST_NAME = "OMNIZIP_MANIFEST.json"
MANIFEST_FORMAT = 1
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_WEIGHT_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
PICKLE_HINT = (
    "pickle weights can run code when loaded: convert the checkpoint to safetensors, or opt in with "
    "--trust-pickle-weights (loaded with torch's weights_only=True)"
)
REDOWNLOAD_HINT = "delete this folder and download the checkpoint again"
# A safetensors header larger than this is not a real header (the format caps it at 100 MB).
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_JSON_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "preprocessor_config.json",
    "processor_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
)


class CheckpointProblem(ModelLoadError):
    """A checkpoint folder is incomplete or corrupt; :attr:`file` names the first bad file."""

    def __init__(self, folder: str | os.PathLike[str], file: str, reason: str, hint: str | None = REDOWNLOAD_HINT):
        self.folder = str(folder)
        self.file = file
        self.reason = reason
        super().__init__(f"{self.folder} is incomplete or corrupt: {file}: {reason}", hint=hint)


# ------------------------------------------------------------------------------------------------ #
# Manifest (the tiny checkpoint)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> Path:
    """Record every regular file of ``folder`` (size and SHA-256) in :data:`MANIFEST_NAME`.

    Call it **last**, once every other file is written and flushed: the manifest's presence is what
    says "this folder is complete". The manifest itself is written to a temporary name and renamed.
    """
    files: dict[str, dict[str, Any]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name == MANIFEST_NAME or not entry.is_file():
            continue
        files[entry.name] = {"size": entry.stat().st_size, "sha256": sha256_file(entry)}
    manifest = folder / MANIFEST_NAME
    partial = folder / f".{MANIFEST_NAME}.partial"
    with partial.open("w") as handle:
        json.dump({"format": MANIFEST_FORMAT, "files": files}, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(manifest)
    return manifest


def manifest_problem(folder: Path, hashes: bool = True) -> tuple[str, str] | None:
    """``(file, reason)`` when ``folder`` does not match its manifest, ``None`` when it does.

    Checks that the manifest exists and parses, that every listed file exists with the recorded
    size and (``hashes=True``) the recorded SHA-256.
    """
    if not folder.is_dir():
        return ".", "the folder does not exist"
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        return MANIFEST_NAME, "is missing (the build did not finish)"
    except (OSError, ValueError) as exc:
        return MANIFEST_NAME, f"cannot be read ({type(exc).__name__})"
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return MANIFEST_NAME, "has an unknown format"
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        return MANIFEST_NAME, "lists no files"
    for name, expected in sorted(files.items()):
        path = folder / name
        if not isinstance(expected, dict):
            return MANIFEST_NAME, f"has a bad entry for {name}"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return name, "is missing"
        except OSError as exc:
            return name, f"cannot be read: {exc.strerror or exc}"
        if size != expected.get("size"):
            return name, f"has {size} bytes, expected {expected.get('size')}"
        if hashes:
            try:
                digest = sha256_file(path)
            except OSError as exc:
                return name, f"cannot be read: {exc.strerror or exc}"
            if digest != expected.get("sha256"):
                return name, "does not match its recorded SHA-256"
    return None


# ------------------------------------------------------------------------------------------------ #
# Structural checks (any checkpoint folder)


def read_config(folder: Path, label: str | None = None) -> dict[str, Any]:
    """``config.json`` of ``folder`` as a dict; a clear :class:`ModelLoadError` if it is not a JSON object."""
    label = label or str(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{label} is not a model checkpoint: it has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{label}/config.json cannot be read: {exc}", hint=REDOWNLOAD_HINT) from exc
    if not isinstance(config, dict):
        raise ModelLoadError(
            f"{label}/config.json is not a model configuration: it holds a JSON {_json_kind(config)}, not an object",
            hint=REDOWNLOAD_HINT,
        )
    return config


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (``None`` when its header and size agree).

    Reads only the header: 8 bytes of little-endian header length, the JSON header, and the tensors'
    ``data_offsets``; the file must be exactly ``8 + header + max(end offset)`` bytes long.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes, no safetensors header)"
            (header_len,) = struct.unpack("<Q", head)
            if header_len > _MAX_SAFETENSORS_HEADER or 8 + header_len > size:
                return f"truncated or not a safetensors file (header of {header_len} bytes in a {size}-byte file)"
            raw = handle.read(header_len)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "corrupt safetensors header"
    if not isinstance(header, dict):
        return "corrupt safetensors header"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"corrupt safetensors header (tensor {name!r})"
        end = max(end, offsets[1])
    expected = 8 + header_len + end
    if size < expected:
        return f"truncated ({size} bytes, expected {expected})"
    if size > expected:
        return f"corrupt ({size} bytes, expected {expected})"
    return None


def weight_files(folder: Path) -> tuple[str, list[str]]:
    """``("safetensors" | "pickle" | "none", files)``: the weights ``folder`` holds, safetensors first."""
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        return "safetensors", [SAFETENSORS_INDEX]
    if (folder / SAFETENSORS_SINGLE).is_file():
        return "safetensors", [SAFETENSORS_SINGLE]
    pickles = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and (p.name in PICKLE_WEIGHT_NAMES or (p.name.startswith("pytorch_model-") and p.suffix == ".bin"))
    )
    if pickles:
        return "pickle", pickles
    return "none", []


def _check_safetensors_weights(folder: Path, label: str) -> None:
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            shards = sorted(set(data["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointProblem(label, SAFETENSORS_INDEX, f"cannot be read ({type(exc).__name__})") from exc
        if not shards:
            raise CheckpointProblem(label, SAFETENSORS_INDEX, "lists no weight files")
    else:
        shards = [SAFETENSORS_SINGLE]
    for shard in shards:
        shard_path = folder / shard
        if not shard_path.is_file():
            raise CheckpointProblem(label, shard, "is missing")
        problem = safetensors_problem(shard_path)
        if problem:
            raise CheckpointProblem(label, shard, problem)


def check_checkpoint_folder(folder: Path, allow_pickle: bool = False, label: str | None = None) -> dict[str, Any]:
    """Check that ``folder`` holds a complete, safely loadable checkpoint; return its ``config.json``.

    Raises :class:`ModelLoadError` (one line, naming the file) when ``config.json`` is missing or not
    a JSON object, when the folder carries a manifest it does not match, when a safetensors file is
    missing or truncated, when the only weights are pickles and ``allow_pickle`` is false, when there
    are no weights, or when the tokenizer or preprocessor files are missing or unparsable.
    """
    label = label or str(folder)
    config = read_config(folder, label)
    if (folder / MANIFEST_NAME).is_file():
        # Folders built by omnizip carry a manifest: check sizes (hashing a large folder is not cheap).
        problem = manifest_problem(folder, hashes=False)
        if problem:
            raise CheckpointProblem(label, *problem)
    kind, files = weight_files(folder)
    if kind == "safetensors":
        _check_safetensors_weights(folder, label)
    elif kind == "pickle":
        if not allow_pickle:
            raise ModelLoadError(
                f"{label} has only pickle weights ({', '.join(files)}), which omnizip does not load by default",
                hint=PICKLE_HINT,
            )
    else:
        raise CheckpointProblem(label, SAFETENSORS_SINGLE, "no weights found (no model.safetensors or shard index)")
    if not (folder / "tokenizer.json").is_file() and not (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    ):
        raise CheckpointProblem(label, "tokenizer.json", "is missing (and there is no vocab.json + merges.txt)")
    if not (folder / "preprocessor_config.json").is_file() and not (folder / "processor_config.json").is_file():
        raise CheckpointProblem(label, "preprocessor_config.json", "is missing (and there is no processor_config.json)")
    for name in _JSON_FILES:
        path = folder / name
        if name == "config.json" or not path.is_file():
            continue
        try:
            json.loads(path.read_bytes())
        except OSError as exc:
            raise CheckpointProblem(label, name, f"cannot be read: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise CheckpointProblem(label, name, "is not valid JSON (truncated?)") from exc
    return config
