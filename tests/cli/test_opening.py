"""Opening a video (``generation/opening.py``, every command's and ``Session.open``'s path): decoding
beside the model load.

Plumbing only (fake media, model and session), with the overlap on (``OMNIZIP_OVERLAP=1``; by
default it is on from 4 cores): the decode really runs on another thread while the model loads (each waits for the other, so a sequential run would time out), a bad header fails
before the load, a file that fails to decode fails after it with its own error, a failed load
stops the decoding, and time to first token excludes only the load that decoding did not overlap.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import omnizip_cli.generation.opening as opening
from omnizip_cli.errors import MediaError
from omnizip_cli.generation import Session
from omnizip_cli.generation.opening import OpenOptions, exclusive_load_seconds
from omnizip_cli.media import MediaOptions, decode_media, plan_media
from omnizip_cli.media.loader import DecodeCancelled

ROOT = Path(__file__).resolve().parents[2]
TALKING = ROOT / "samples" / "talking.mp4"
WAIT = 20.0  # seconds a side waits for the other before the test fails


def _media() -> Any:
    return SimpleNamespace(summary=SimpleNamespace(decode_seconds=0.5, warnings=()))


def _loaded() -> Any:
    geometry = SimpleNamespace(token_pixels=28)
    return SimpleNamespace(device="cpu", load_seconds=0.5, warnings=[], context_length=1000, model=None,
                           adapter=SimpleNamespace(vision_geometry=lambda model: geometry))


def _open(start_media: Any, load_model: Any, opened: list[Any] | None = None) -> Any:
    def fresh_session(loaded: Any, media: Any, options: Any, **kwargs: Any) -> Any:
        if opened is not None:
            opened.append((media, kwargs))
        return SimpleNamespace(context_fit=None, summary=None)

    patch = pytest.MonkeyPatch()
    patch.setattr(opening, "start_media", start_media)
    patch.setattr(opening, "load_model", load_model)
    patch.setattr(opening, "fresh_session", fresh_session)
    try:
        # "tiny": its token size is known before loading, so the decoding can start before the load
        return Session.open("tiny", TALKING, OpenOptions(compression=None, cache=False, max_prompt_tokens=100,
                                                         question_reserve=10))
    finally:
        patch.undo()


def test_the_media_decodes_while_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIZIP_OVERLAP", "1")
    decoding, loading = threading.Event(), threading.Event()
    media = _media()

    def decode(on_audio: Any = None, cancel: Any = None) -> Any:
        decoding.set()
        assert loading.wait(WAIT), "the model load never started beside the decoding"
        return media

    def load_model(spec: Any) -> Any:
        loading.set()
        assert decoding.wait(WAIT), "the decoding never started beside the model load"
        return _loaded()

    opened_with: list[Any] = []
    before = time.perf_counter()
    opened = _open(lambda path, options, token_pixels: decode, load_model, opened_with)
    assert opened_with[0][0] is media
    assert opened_with[0][1]["early_audio"] is not None  # the audio may be encoded while the video decodes
    assert opened_with[0][1]["max_prompt_tokens"] == 100 and opened_with[0][1]["question_reserve"] == 10
    assert before <= opened.opened_at <= time.perf_counter()


def test_a_bad_header_fails_before_the_model_load() -> None:
    loads: list[Any] = []

    def start_media(path: Path, options: Any, token_pixels: int) -> Any:
        raise MediaError("not a media file")

    with pytest.raises(MediaError, match="not a media file"):
        _open(start_media, loads.append)
    assert loads == []


def test_a_file_that_cannot_be_decoded_fails_after_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIZIP_OVERLAP", "1")
    loads: list[Any] = []

    def decode(on_audio: Any = None, cancel: Any = None) -> Any:
        raise MediaError("no video frame could be decoded")

    def load_model(spec: Any) -> Any:
        loads.append(spec)
        return _loaded()

    with pytest.raises(MediaError, match="no video frame"):
        _open(lambda path, options, token_pixels: decode, load_model)
    assert len(loads) == 1


def test_a_failed_model_load_stops_the_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIZIP_OVERLAP", "1")
    seen: dict[str, Any] = {}

    def decode(on_audio: Any = None, cancel: Any = None) -> Any:
        seen["cancelled"] = cancel.wait(WAIT)
        raise DecodeCancelled("cancelled")

    def load_model(spec: Any) -> Any:
        raise RuntimeError("no such model")

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="no such model"):
        _open(lambda path, options, token_pixels: decode, load_model)
    assert seen["cancelled"] is True
    assert time.perf_counter() - started < WAIT / 2


def test_decode_media_stops_when_cancelled() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DecodeCancelled):
        decode_media(plan_media(TALKING, MediaOptions()), cancel=cancel)


@pytest.mark.parametrize(
    ("load", "decode", "excluded"),
    [
        ((1.0, 5.0), None, 4.0),  # nothing decoded (a cache hit): the whole load
        ((1.0, 5.0), (0.5, 2.0), 3.0),  # decoding ended during the load: the rest of the load
        ((1.0, 5.0), (0.5, 6.0), 0.0),  # decoding outlasted the load: none of it
        ((1.0, 5.0), (5.5, 7.0), 4.0),  # decoded after the load (a cache miss): the whole load
    ],
)
def test_exclusive_load_seconds(load: tuple[float, float], decode: tuple[float, float] | None,
                                excluded: float) -> None:
    start, end = decode if decode is not None else (None, None)
    assert exclusive_load_seconds(*load, start, end) == pytest.approx(excluded)


def test_overlap_off_decodes_first_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIZIP_OVERLAP", "0")
    events: list[tuple[str, str]] = []

    def decode(on_audio: Any = None, cancel: Any = None) -> Any:
        assert on_audio is None
        events.append(("decode", threading.current_thread().name))
        return _media()

    def load_model(spec: Any) -> Any:
        events.append(("load", threading.current_thread().name))
        time.sleep(0.2)
        return _loaded()

    opened_with: list[Any] = []
    before = time.perf_counter()
    opened = _open(lambda path, options, token_pixels: decode, load_model, opened_with)
    main = threading.current_thread().name
    assert events == [("decode", main), ("load", main)]
    assert opened_with[0][1]["early_audio"] is None
    assert opened.opened_at >= before + 0.2  # the whole load is excluded from time to first token


def test_overlap_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from omnizip_cli.generation.opening import overlap_enabled

    monkeypatch.delenv("OMNIZIP_OVERLAP", raising=False)
    assert not overlap_enabled(cpus=2)  # measured slower on the 2-core machine
    assert overlap_enabled(cpus=4) and overlap_enabled(cpus=16)
    assert overlap_enabled(True, cpus=2) and not overlap_enabled(False, cpus=16)
    monkeypatch.setenv("OMNIZIP_OVERLAP", "1")
    assert overlap_enabled(cpus=2)
    monkeypatch.setenv("OMNIZIP_OVERLAP", "0")
    assert not overlap_enabled(cpus=16)
