"""A fingerprint of a model's files: what the prefix cache keys a model by, besides its name.

A cached prefix holds what the model's encoders produced, so an entry must never be served to other
weights under the same name (a fine-tune written into the same folder, a re-download, a new hub
commit). Hashing every byte of a 15 GB checkpoint at each run would cost seconds to minutes, so the
fingerprint hashes what changes whenever the weights do, cheaply:

* every regular file of the folder (top level, hidden files and omnizip's own manifest skipped):
  its name, size and modification time (nanoseconds);
* the **whole content** of every file up to :data:`CONTENT_HASH_BYTES` (configs, tokenizer and
  processor files, a small checkpoint's weights: the tiny test checkpoints are hashed whole);
* for larger ``.safetensors`` files, the SHA-256 of their header (tensor names, dtypes, shapes and
  byte offsets) plus the first and last :data:`EDGE_BYTES` of the tensor data;
* for a hub model, the resolved commit (the snapshot folder's name) and that snapshot's files as
  above.

A weight file edited in place (same shapes, same size) still changes its modification time, so it
is a miss. What is not seen: bytes in the middle of a large weight file changed with its time set
back by hand. Cost (measured on a 2-core CPU): 2 ms for the tiny checkpoint, 0.03 s for a folder of
four 4 GB shards.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any

from ..integrity import sha256_file

#: Files up to this size are hashed whole (every config, tokenizer and processor file; small weights).
CONTENT_HASH_BYTES = 64 * 1024 * 1024
#: Bytes hashed at each end of a large safetensors file's tensor data.
EDGE_BYTES = 1024 * 1024
#: A safetensors header larger than this is not a real header (the format caps it at 100 MB).
_MAX_HEADER = 100 * 1024 * 1024
_SKIPPED = {"OMNIZIP_MANIFEST.json"}


def _hash_safetensors_cheaply(path: Path, size: int) -> str:
    """SHA-256 of a safetensors file's header and of the two ends of its data."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        prefix = handle.read(8)
        digest.update(prefix)
        header = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        if 0 < header <= min(_MAX_HEADER, size - 8):
            digest.update(handle.read(header))
            start = 8 + header
        else:
            start = 8
        handle.seek(start)
        digest.update(handle.read(EDGE_BYTES))
        handle.seek(max(start, size - EDGE_BYTES))
        digest.update(handle.read(EDGE_BYTES))
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> dict[str, Any]:
    """``{"files": {name: [size, mtime_ns, hash or None]}, "sha256": digest of it all}`` for ``folder``.

    ``hash`` is the content hash (small files), the header-and-ends hash (large safetensors) or
    None (other large files: size and time only). Symlinks are followed (a hub snapshot's files are
    links to its blobs).
    """
    files: dict[str, list[Any]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in _SKIPPED:
            continue
        try:
            if not entry.is_file():
                continue
            stat = entry.stat()
            path = Path(entry.path)
            if stat.st_size <= CONTENT_HASH_BYTES:
                hashed: str | None = sha256_file(path)
            elif entry.name.endswith(".safetensors"):
                hashed = _hash_safetensors_cheaply(path, stat.st_size)
            else:
                hashed = None
        except OSError:  # unreadable now: the loader already read it, so record that it could not be
            files[entry.name] = [None, None, None]
            continue
        files[entry.name] = [int(stat.st_size), int(stat.st_mtime_ns), hashed]
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
    return {"files": files, "sha256": digest}


def hub_snapshot(model: str, revision: str | None) -> Path | None:
    """The local snapshot folder of a hub model (its name is the resolved commit), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - not a hub id, or no cache
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def model_fingerprint(location: str, revision: str | None = None) -> str:
    """The fingerprint of the model loaded from ``location`` (a folder or a hub id) as one hex digest.

    A folder: :func:`folder_fingerprint`. A hub id: its resolved commit and its snapshot folder's
    fingerprint; when no snapshot can be found (not expected after a load), the id and revision
    only (``"unresolved"``).
    """
    path = Path(location)
    commit: str | None = None
    if not path.is_dir():
        snapshot = hub_snapshot(location, revision)
        if snapshot is None:
            return hashlib.sha256(f"unresolved:{location}@{revision}".encode()).hexdigest()
        path, commit = snapshot, snapshot.name
    fingerprint = folder_fingerprint(path)
    return hashlib.sha256(f"{commit}:{fingerprint['sha256']}".encode()).hexdigest()
