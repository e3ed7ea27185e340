"""``omnizip serve``'s request checks, media resolution and stop strings, without a model."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omnizip_cli.generation.stream import StopText
from omnizip_cli.serve.errors import ApiError
from omnizip_cli.serve.media_source import resolve_media
from omnizip_cli.serve.request import MediaPart, parse_chat_request
from omnizip_cli.serve.settings import ServeSettings

VIDEO = {"type": "video_url", "video_url": {"url": "/v.mp4"}}


def user(*parts: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def refused(body: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(body)
    assert caught.value.status == 400
    return caught.value


def test_a_conversation_is_split_into_system_turns_and_question() -> None:
    chat = parse_chat_request({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Really."},
        user(text("Look:"), VIDEO, text("what is it?")), {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [text("And then?")]},
    ], "max_completion_tokens": 5, "stop": "x", "seed": 3, "user": "ignored", "stream": True,
        "stream_options": {"include_usage": True},
        "mm_processor_kwargs": {"use_audio_in_video": False, "fps": 1}, "omnizip": {"retention": 0.3}})
    assert chat.system == "Be brief.\nReally."
    assert chat.turns == (("Look:\nwhat is it?", "A cat."),)
    assert chat.question == "And then?"
    assert chat.media == MediaPart("video_url", "/v.mp4", None, None, "messages[2].content[1].video_url")
    assert (chat.max_tokens, chat.stop, chat.seed, chat.stream, chat.include_usage) == (5, ("x",), 3, True, True)
    assert chat.use_audio_in_video is False and dict(chat.media_overrides) == {"fps": 1}
    assert chat.compression.retention == 0.3
    from omnizip_cli.media import MediaOptions

    options = chat.media_options(MediaOptions())
    assert options.fps == 1 and options.use_audio is False
    assert chat.generation(256).max_new_tokens == 5 and chat.generation(256).stop == ("x",)


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [user(VIDEO)]}, "messages[0].content"),  # no question text
    ({"messages": [user(VIDEO, text("q")), user(text("q2"))]}, "messages[1].role"),  # no alternation
    ({"messages": [user(VIDEO, text("q")), {"role": "assistant", "content": "a"}]}, "messages"),  # ends on assistant
    ({"messages": [user(text("q")), {"role": "assistant", "content": "a"}, user(VIDEO, text("q"))]},
     "messages[2].content[0].video_url"),  # media not in the first user message
    ({"messages": [user(VIDEO, text("q")), {"role": "system", "content": "late"}]}, "messages[1].role"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [user({"type": "video_url", "video_url": {"uri": "x"}}, text("q"))]},
     "messages[0].content[0].video_url"),
    ({"messages": [user({"type": "input_audio", "input_audio": "abc"}, text("q"))]},
     "messages[0].content[0].input_audio"),
    ({"messages": [user(VIDEO, text("\ud800"))]}, "messages[0].content[1].text"),
    ({"messages": [user(VIDEO, text("q"))], "max_tokens": 3, "max_completion_tokens": 4}, "max_completion_tokens"),
    ({"messages": [user(VIDEO, text("q"))], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": [user(VIDEO, text("q"))], "stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": [user(VIDEO, text("q"))], "temperature": 3}, "temperature"),
    ({"messages": [user(VIDEO, text("q"))], "top_p": 0}, "top_p"),
    ({"messages": [user(VIDEO, text("q"))], "seed": -1}, "seed"),
    ({"messages": [user(VIDEO, text("q"))], "logprobs": True}, "logprobs"),
    ({"messages": [user(VIDEO, text("q"))], "tools": [{"type": "function"}]}, "tools"),
    ({"messages": [user(VIDEO, text("q"))], "frequency_penalty": 0.5}, "frequency_penalty"),
    ({"messages": [user(VIDEO, text("q"))], "modalities": ["text", "audio"]}, "modalities"),
    ({"messages": [user(VIDEO, text("q"))], "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [user(VIDEO, text("q"))], "mm_processor_kwargs": {"use_audio_in_video": "yes"}},
     "mm_processor_kwargs.use_audio_in_video"),
    ({"messages": [user(VIDEO, text("q"))], "omnizip": {"enabled": False, "preset": "35"}}, "omnizip"),
    ({"messages": [user(VIDEO, text("q"))], "omnizip": {"rho_audio": 1.5}}, "omnizip.rho_audio"),
    ({"messages": [user(VIDEO, text("q"))], "omnizip": {"speed": "max"}}, "omnizip.speed"),
])
def test_each_problem_names_its_field(body: dict[str, Any], param: str) -> None:
    error = refused(body)
    assert error.param == param, error
    assert "\n" not in error.message


def test_stop_text_holds_back_what_may_begin_a_stop_string() -> None:
    stopper = StopText(("STOP",))
    assert stopper.push("ab") == "ab"
    assert stopper.push("cST") == "c"       # "ST" may begin "STOP": held back
    assert stopper.push("x") == "STx"       # it did not
    assert stopper.push("yS") == "y"
    assert stopper.push("TOP and more") == ""
    assert stopper.hit and stopper.text == "abcSTxy" and stopper.push("z") == "" and stopper.flush() == ""
    several = StopText(("xy", "STOP"))
    assert "".join(several.push(p) for p in ("aS", "TOx", "y b")) == "aSTO" and several.text == "aSTO"
    unfinished = StopText(("END",))
    assert unfinished.push("aE") == "a" and unfinished.flush() == "E" and not unfinished.hit


# ---------------------------------------------------------------------------------------------- media
def settings(tmp_path: Path, **fields: Any) -> ServeSettings:
    return ServeSettings(media_folder=tmp_path / "media", **fields)


def part(url: str) -> MediaPart:
    return MediaPart("video_url", url, None, None, "p")


def test_data_urls_are_stored_once_by_content(tmp_path: Path) -> None:
    payload = base64.b64encode(b"not really a video").decode()
    first = resolve_media(part(f"data:video/mp4;base64,{payload}"), settings(tmp_path))
    second = resolve_media(part(f"data:video/mp4;base64,{payload}"), settings(tmp_path))
    assert first == second and first.path.read_bytes() == b"not really a video" and first.path.suffix == ".mp4"
    assert [p.name for p in (tmp_path / "media").iterdir()] == [first.path.name]  # no partial file left
    audio = resolve_media(MediaPart("input_audio", None, payload, "wav", "p"), settings(tmp_path))
    assert audio.path.suffix == ".wav"


@pytest.mark.parametrize(("url", "status", "code"), [
    ("data:video/mp4,plain", 400, "invalid_data_url"),
    ("data:image/png;base64,AAAA", 400, "invalid_data_url"),
    ("data:video/mp4;base64,", 400, "invalid_base64"),
    ("ftp://host/v.mp4", 400, "unsupported_url"),
    ("file://otherhost/v.mp4", 400, None),
    ("http://127.0.0.1:1/v.mp4", 403, "remote_media_disabled"),
])
def test_refused_urls(tmp_path: Path, url: str, status: int, code: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        resolve_media(part(url), settings(tmp_path))
    assert caught.value.status == status and (code is None or caught.value.code == code)


def test_base64_over_the_cap_is_refused_before_decoding(tmp_path: Path) -> None:
    payload = base64.b64encode(b"\0" * 2000).decode()
    with pytest.raises(ApiError) as caught:
        resolve_media(part(f"data:video/mp4;base64,{payload}"), settings(tmp_path, max_media_bytes=1000))
    assert caught.value.status == 413


def test_local_paths_only_under_the_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    (root / "escape.mp4").symlink_to(tmp_path / "b.mp4")
    (root / "inside.mp4").symlink_to(root / "sub" / "a.mp4")
    allowed = settings(tmp_path, allowed_media_paths=(root,))
    assert resolve_media(part(str(root / "sub" / "a.mp4")), allowed).path == (root / "sub" / "a.mp4").resolve()
    assert resolve_media(part((root / "inside.mp4").as_uri()), allowed).path == (root / "sub" / "a.mp4").resolve()
    for url in (str(tmp_path / "b.mp4"), str(root / "sub" / ".." / ".." / "b.mp4"), str(root / "escape.mp4"),
                (root / "escape.mp4").as_uri()):
        with pytest.raises(ApiError) as caught:
            resolve_media(part(url), allowed)
        assert caught.value.status == 403 and caught.value.code == "path_not_allowed", url
    with pytest.raises(ApiError) as caught:
        resolve_media(part(str(root / "missing.mp4")), allowed)
    assert caught.value.code == "file_not_found"


@pytest.fixture
def web_folder(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server over a folder holding clip.mp4 (12 bytes) and big.mp4 (5000 bytes)."""
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"twelve bytes")
    (folder / "big.mp4").write_bytes(b"\0" * 5000)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_remote_media_is_downloaded_with_a_cap(tmp_path: Path, web_folder: str) -> None:
    remote = settings(tmp_path, allow_remote_media=True, max_media_bytes=1000)
    fetched = resolve_media(part(f"{web_folder}/clip.mp4"), remote)
    assert fetched.path.read_bytes() == b"twelve bytes" and fetched.path.suffix == ".mp4"
    with pytest.raises(ApiError) as caught:
        resolve_media(part(f"{web_folder}/big.mp4"), remote)
    assert caught.value.status == 413
    with pytest.raises(ApiError) as caught:
        resolve_media(part(f"{web_folder}/missing.mp4"), remote)
    assert caught.value.code == "download_failed" and "404" in caught.value.message


def test_an_api_error_survives_pickling() -> None:
    """Ray replicas send their errors to the ingress pickled: every field comes back."""
    import pickle

    from omnizip_cli.serve.errors import ApiError

    error = ApiError(429, "busy", param="messages", code="queue_full", headers={"Retry-After": "3"})
    again = pickle.loads(pickle.dumps(error))
    assert again == error and str(again) == "busy" and again.body() == error.body()
