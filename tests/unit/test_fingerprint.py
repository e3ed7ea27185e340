"""The model files' fingerprint (omnizip_cli/models/fingerprint.py): what changes it, and what it costs."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from omnizip_cli.models import fingerprint
from omnizip_cli.models.fingerprint import folder_fingerprint, model_fingerprint


def _safetensors(path: Path, data: bytes, shape: int) -> None:
    header = json.dumps({"w": {"dtype": "U8", "shape": [shape], "data_offsets": [0, len(data)]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def _rewrite_keeping_time(path: Path, data: bytes) -> None:
    stat = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_small_files_are_hashed_whole(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"a": 1}')
    _safetensors(tmp_path / "model.safetensors", bytes(100), 100)
    before = model_fingerprint(str(tmp_path))
    assert model_fingerprint(str(tmp_path)) == before  # stable
    weights = tmp_path / "model.safetensors"
    _rewrite_keeping_time(weights, weights.read_bytes()[:-1] + b"\1")  # one byte, same size and time
    assert model_fingerprint(str(tmp_path)) != before


def test_large_weights_by_size_time_header_and_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprint, "CONTENT_HASH_BYTES", 1000)
    monkeypatch.setattr(fingerprint, "EDGE_BYTES", 100)
    weights = tmp_path / "model-00001-of-00001.safetensors"
    _safetensors(weights, bytes(5000), 5000)
    (tmp_path / ".hidden").write_text("ignored")
    base = folder_fingerprint(tmp_path)
    assert set(base["files"]) == {weights.name} and base["files"][weights.name][2] is not None
    data = weights.read_bytes()

    _rewrite_keeping_time(weights, data[:-1] + b"\1")  # the last bytes of the data
    assert folder_fingerprint(tmp_path)["sha256"] != base["sha256"]
    _rewrite_keeping_time(weights, data)
    assert folder_fingerprint(tmp_path)["sha256"] == base["sha256"]
    middle = len(data) // 2
    _rewrite_keeping_time(weights, data[:middle] + b"\1" + data[middle + 1:])  # the documented blind spot
    assert folder_fingerprint(tmp_path)["sha256"] == base["sha256"]
    os.utime(weights)  # ... unless its time changes, as any write does
    assert folder_fingerprint(tmp_path)["sha256"] != base["sha256"]


def test_a_hub_id_without_a_snapshot_is_keyed_by_name_and_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprint, "hub_snapshot", lambda model, revision: None)
    assert model_fingerprint("org/name") != model_fingerprint("org/name", "v2")


def test_a_hub_snapshot_is_keyed_by_its_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for commit in ("a" * 40, "b" * 40):
        (tmp_path / commit).mkdir()
        (tmp_path / commit / "config.json").write_text("{}")
    monkeypatch.setattr(fingerprint, "hub_snapshot", lambda model, revision: tmp_path / (revision or "a" * 40))
    assert model_fingerprint("org/name") != model_fingerprint("org/name", "b" * 40)
