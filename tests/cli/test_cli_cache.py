"""``ask``/``chat`` with the disk cache on, ``--no-cache``, and ``omnizip cache info`` / ``clear`` (tiny model)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import omnizip_cli.generation.opening
from omnizip_cli.cli import app

ROOT = Path(__file__).resolve().parents[2]
TALKING = ROOT / "samples" / "talking.mp4"
FAST = ["--model", "tiny", "--device", "cpu", "--max-new-tokens", "6", "--fps", "2", "--max-frames", "8",
        "--min-pixels", str(64 * 28 * 28), "--max-pixels", str(96 * 28 * 28)]


@pytest.fixture
def cache_on(tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("OMNIZIP_CACHE_MAX_BYTES", "1G")
    monkeypatch.setenv("OMNIZIP_CACHE", str(tmp_path))
    monkeypatch.setattr(omnizip_cli.generation.opening, "load_model", lambda spec: tiny_model)
    yield tmp_path / "prefixes"


def run(*args: Any, input: str | None = None) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_a_second_ask_reads_the_prefix_from_disk(cache_on: Path) -> None:
    first = json.loads(run("ask", TALKING, "What is said?", "Who?", *FAST, "--json").stdout)
    assert first["answers"][0]["prefix_cache"]["stored"] is True
    second = json.loads(run("ask", TALKING, "What is said?", "Who?", *FAST, "--json").stdout)
    answers = second["answers"]
    assert [a["answer"] for a in answers] == [a["answer"] for a in first["answers"]]
    assert [a["generation"]["prefix_source"] for a in answers] == ["disk", "memory"]
    cache = answers[0]["prefix_cache"]
    assert cache["source"] == "disk" and cache["saved_seconds"] > 0
    stages = answers[0]["timings"]["stages"]
    assert not any(stages[s]["ran"] for s in ("media_decode", "preprocess", "audio_encoder", "vision_encoder",
                                               "keep_plan"))
    assert stages["content_hash"]["ran"]  # hashing the file is shown, as its own stage
    assert answers[0]["timings"]["time_to_first_token_from"] == "from opening (disk cache), load excluded"
    assert answers[1]["timings"]["time_to_first_token_from"] == "from the question"
    assert first["answers"][0]["timings"]["time_to_first_token_from"] == "from media decode, load excluded"
    assert answers[0]["media"]["path"] == str(TALKING)
    report = run("ask", TALKING, "What is said?", *FAST).stderr
    assert "Prefix cache: read from disk" in report
    # --no-cache neither reads nor reports the cache
    bypass = json.loads(run("ask", TALKING, "What is said?", *FAST, "--json", "--no-cache").stdout)
    assert bypass["generation"]["prefix_source"] == "fresh" and bypass["prefix_cache"] is None
    assert bypass["answer"] == answers[0]["answer"]
    # chat shares the entry when the budget (part of the key) is the same
    chat = run("chat", TALKING, *FAST, "--json", input="What is said?\n").stdout
    assert json.loads(chat)["generation"]["prefix_source"] == "disk"
    assert json.loads(chat)["answer"] == answers[0]["answer"]


def test_cache_info_and_clear(cache_on: Path) -> None:
    empty = json.loads(run("cache", "info", "--json").stdout)
    assert empty == {"path": str(cache_on), "entries": 0, "bytes": 0, "max_bytes": 10**9, "enabled": True}
    run("ask", TALKING, "What is said?", *FAST, "-q")
    run("ask", TALKING, "What is said?", *FAST, "-q", "--no-compress")
    info = json.loads(run("cache", "info", "--json").stdout)
    assert info["entries"] == 2 and info["bytes"] > 0
    assert "entries: 2" in run("cache", "info").stdout
    assert run("cache", "clear").stdout.startswith("removed 2 entries")
    assert json.loads(run("cache", "info", "--json").stdout)["entries"] == 0


def test_a_bad_cap_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIZIP_CACHE_MAX_BYTES", "lots")
    result = CliRunner().invoke(app, ["cache", "info"])
    assert result.exit_code == 2 and result.stderr.startswith("error: OMNIZIP_CACHE_MAX_BYTES must be a size")


def test_a_failed_cache_write_is_a_warning_and_the_answer_is_given(cache_on: Path, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    """A full disk while the entry is written (safetensors raises its own error, not an OSError)."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              "message: \"No space left on device\" })")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    data = json.loads(run("ask", TALKING, "What is said?", *FAST, "--json").stdout)
    assert data["answer"] and data["prefix_cache"]["stored"] is False
    assert data["prefix_cache"]["not_stored"].startswith("write failed: Error while serializing")
    assert any("could not be written" in w and "No space left" in w for w in data["warnings"])
    report = run("ask", TALKING, "What is said?", *FAST).stderr
    assert "not stored (write failed" in report and "larger than" not in report


def test_changing_only_max_new_tokens_still_reads_the_prefix_from_disk(cache_on: Path) -> None:
    """The default prompt budget follows --max-new-tokens, but the prefix does not change: one entry."""
    first = json.loads(run("ask", TALKING, "What is said?", *FAST, "--json").stdout)
    assert first["prefix_cache"]["stored"] is True
    again = json.loads(run("ask", TALKING, "What is said?", *FAST, "--max-new-tokens", "12", "--json").stdout)
    assert again["generation"]["prefix_source"] == "disk"
    assert again["config"]["generation"]["max_new_tokens"] == 12
    assert again["answer"].startswith(first["answer"])  # greedy: the first 6 tokens are the same


def test_a_playlist_is_refused_before_it_is_hashed(cache_on: Path, tmp_path: Path) -> None:
    """With the cache on, the file is hashed first: a playlist (whose referenced files the hash cannot
    see) is refused before, in one line."""
    playlist = tmp_path / "clip.m3u8"
    playlist.write_text("#EXTM3U\n#EXTINF:6.0,\nsegment0.ts\n")
    result = CliRunner().invoke(app, ["ask", str(playlist), "q", *FAST])
    assert result.exit_code == 1 and result.stderr.startswith("error:") and "playlist" in result.stderr
    assert not cache_on.exists() or not any(cache_on.iterdir())
