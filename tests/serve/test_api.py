"""``omnizip serve`` on a loopback port with the tiny model, driven by the real ``openai`` client.

Exactness: greedy answers equal ``omnizip ask`` on the same video and question; a conversation
equals :class:`~omnizip_cli.generation.Conversation` follow-ups (tokens, and the first answer
token's logits bit for bit, through the engine); a second question on a video is answered from the
prefix held in memory. Every bad request gets its status and an OpenAI-style error.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers.serving import SAMPLES, RunningServer, running_server, video_message

TALKING = SAMPLES / "talking.mp4"
SILENT = SAMPLES / "silent.mp4"
SPEECH = SAMPLES / "speech.wav"
NEW_TOKENS = 8
FAST_MEDIA = dict(fps=2.0, max_frames=8, min_pixels=64 * 28 * 28, max_pixels=96 * 28 * 28)
FAST_FLAGS = ["--fps", "2", "--max-frames", "8", "--min-pixels", str(64 * 28 * 28), "--max-pixels", str(96 * 28 * 28)]


def media_options() -> Any:
    from omnizip_cli.media import MediaOptions

    return MediaOptions(**FAST_MEDIA)


@pytest.fixture(scope="module")
def server(tiny_model: Any) -> Iterator[RunningServer]:
    with running_server(tiny_model, media=media_options(), max_tokens=NEW_TOKENS) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Any:
    return server.client()


def ask_cli(tiny_model: Any, video: Path, question: str, *extra: str) -> dict[str, Any]:
    """``omnizip ask --json`` in-process (reusing the loaded tiny model)."""
    import omnizip_cli.generation.opening as opening
    from omnizip_cli.cli import app

    patch = pytest.MonkeyPatch()
    patch.setattr(opening, "load_model", lambda spec: tiny_model)
    try:
        result = CliRunner().invoke(app, ["ask", str(video), question, "--model", "tiny", "--json", "--no-cache",
                                          "--max-new-tokens", str(NEW_TOKENS), *FAST_FLAGS, *extra],
                                    catch_exceptions=False)
    finally:
        patch.undo()
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in body["error"]["message"] and "\n" not in body["error"]["message"]
    return body["error"]


# ---------------------------------------------------------------------------------------------- answers
def test_greedy_answers_equal_omnizip_ask_streaming_or_not(tiny_model: Any, client: Any) -> None:
    question = "What is said in the video?"
    expected = ask_cli(tiny_model, TALKING, question)
    whole = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, question)])
    assert whole.choices[0].message.content == expected["answer"]
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens == expected["tokens"]["generated"]
    omnizip = whole.model_extra["omnizip"]
    assert omnizip["prompt_tokens_before"] == expected["tokens"]["prompt"]
    assert whole.usage.prompt_tokens == expected["generation"]["prompt_tokens"] < omnizip["prompt_tokens_before"]
    assert omnizip["tokens"]["video"] == expected["tokens"]["video"]
    assert omnizip["tokens"]["audio"] == expected["tokens"]["audio"]
    assert 0 < omnizip["retention"] < 1 and omnizip["audio_in_video"] is True

    stream = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, question)], stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected["answer"]
    assert chunks[0].choices[0].delta.role == "assistant"
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finished) == 1 and finished[0].model_extra["omnizip"]["prefix_source"] == "memory"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_second_question_is_answered_from_the_prefix_in_memory(client: Any) -> None:
    first = client.chat.completions.create(model="tiny", messages=[video_message(SILENT, "What happens?")])
    second = client.chat.completions.create(model="tiny", messages=[video_message(SILENT, "What colour is it?")])
    assert first.model_extra["omnizip"]["prefix_source"] == "fresh"
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.model_extra["omnizip"]["prefix_source"] == "memory"
    assert second.model_extra["omnizip"]["prefix_id"] == first.model_extra["omnizip"]["prefix_id"]
    assert second.usage.prompt_tokens_details.cached_tokens > 0
    # the video alone (silent.mp4 has no audio track): said, not dropped
    assert first.model_extra["omnizip"]["audio_in_video"] is False
    assert first.model_extra["omnizip"]["timings"]["time_to_first_token_seconds"] > 0


def test_a_conversation_equals_session_follow_ups_to_the_logit(tiny_model: Any, server: RunningServer,
                                                                  client: Any) -> None:
    from omnizip_cli.generation import GenerationOptions, OpenOptions, Session

    session = Session.open(tiny_model, TALKING, OpenOptions(media=media_options(), max_new_tokens=NEW_TOKENS,
                                                            question_reserve=128, cache=False))
    chat = session.conversation()
    options = GenerationOptions(max_new_tokens=NEW_TOKENS)
    questions = ["Describe the scene.", "And then?", "Why?"]
    expected = [chat.answer(q, options) for q in questions]

    messages: list[dict[str, Any]] = []
    for k, question in enumerate(questions[:-1]):
        messages.append(video_message(TALKING, question) if k == 0 else {"role": "user", "content": question})
        reply = client.chat.completions.create(model="tiny", messages=messages)
        assert reply.choices[0].message.content == expected[k].text
        assert reply.usage.prompt_tokens == expected[k].prompt_tokens
        if k:  # the conversation so far was in the cache: only the new turn was prefilled
            assert reply.usage.prompt_tokens_details.cached_tokens >= expected[k - 1].prompt_tokens
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})

    # the last turn through the engine (the same KV state, the same tokens forwarded): its first
    # answer token's logits, bit for bit
    messages.append({"role": "user", "content": questions[-1]})
    result = run_engine(server, {"model": "tiny", "messages": messages})
    assert result.text == expected[-1].text
    assert result.stats.token_ids == expected[-1].token_ids
    assert result.stats.prefilled_tokens == expected[-1].prefilled_tokens
    assert torch.equal(result.stats.prefill_logits, expected[-1].prefill_logits)


def run_engine(server: RunningServer, body: dict[str, Any]) -> Any:
    """Submit a request body to the server's engine directly; the Result."""
    from omnizip_cli.serve.media_source import resolve_media
    from omnizip_cli.serve.request import parse_chat_request

    async def go() -> Any:
        chat = parse_chat_request(body)
        job = server.engine.submit(chat, resolve_media(chat.media, server.settings), asyncio.get_running_loop())
        while True:
            kind, value = await job.events.get()
            if kind == "done":
                return value
            if kind == "error":
                raise value

    return asyncio.run(go())


def test_compression_options_per_request(client: Any) -> None:
    off = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")],
                                         extra_body={"omnizip": {"enabled": False}})
    strong = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")],
                                            extra_body={"omnizip": {"preset": "35"}})
    ratios = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")],
                                            extra_body={"omnizip": {"rho_audio": 0.5, "rho_video": 0.5}})
    assert off.model_extra["omnizip"]["retention"] == 1.0
    assert off.usage.prompt_tokens == off.model_extra["omnizip"]["prompt_tokens_before"]
    default = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")])
    assert strong.model_extra["omnizip"]["retention"] < default.model_extra["omnizip"]["retention"] < 1.0
    assert strong.model_extra["omnizip"]["prefix_id"] != default.model_extra["omnizip"]["prefix_id"]
    assert ratios.model_extra["omnizip"]["compression"]["config"]["rho_audio"] == 0.5
    no_audio = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")],
                                              extra_body={"mm_processor_kwargs": {"use_audio_in_video": False}})
    assert no_audio.model_extra["omnizip"]["audio_in_video"] is False
    assert no_audio.model_extra["omnizip"]["tokens"]["audio"]["before"] == 0


def test_media_given_every_way(server: RunningServer, client: Any) -> None:
    data = base64.b64encode(TALKING.read_bytes()).decode()
    by_path = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")])
    for url in (TALKING.as_uri(), f"data:video/mp4;base64,{data}"):
        reply = client.chat.completions.create(model="tiny", messages=[video_message(url, "Q?")])
        assert reply.choices[0].message.content == by_path.choices[0].message.content
    dashscope = {"role": "user", "content": [{"type": "video_url", "video_url": str(TALKING)},
                                             {"type": "text", "text": "Q?"}]}
    reply = client.chat.completions.create(model="tiny", messages=[dashscope])
    assert reply.choices[0].message.content == by_path.choices[0].message.content
    audio = base64.b64encode(SPEECH.read_bytes()).decode()
    for part in ({"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
                 {"type": "audio_url", "audio_url": {"url": str(SPEECH)}}):
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": [part, {"type": "text", "text": "What is said?"}]}])
        assert reply.model_extra["omnizip"]["tokens"]["audio"]["before"] > 0
        assert reply.model_extra["omnizip"]["tokens"]["video"]["before"] == 0
    upload = httpx.post(f"{server.url}/v1/uploads", content=TALKING.read_bytes(),
                        headers={"Content-Type": "video/mp4", "X-Filename": "clip.mp4"})
    assert upload.status_code == 200 and upload.json()["bytes"] == TALKING.stat().st_size
    reply = client.chat.completions.create(model="tiny", messages=[video_message(upload.json()["url"], "Q?")])
    assert reply.choices[0].message.content == by_path.choices[0].message.content


def test_stop_strings_cut_the_answer(client: Any) -> None:
    free = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")], max_tokens=12)
    text = free.choices[0].message.content
    stop = next((text[i:i + 2] for i in range(2, len(text) - 1) if text[i:i + 2].strip()), None)
    if stop is None:
        pytest.skip("the random answer has no usable stop string")
    cut = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")], max_tokens=12,
                                         stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")], max_tokens=12,
                                              stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text[: text.index(stop)]


def test_models_health_and_metrics(server: RunningServer, client: Any) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")])
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in ("omnizip_requests_total", "omnizip_queue_length", "omnizip_prompt_tokens_before_compression_total",
                 "omnizip_prompt_tokens_after_compression_total", 'omnizip_prefix_total{source="memory"}',
                 "omnizip_time_to_first_token_seconds_bucket"):
        assert name in text, name
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    before = sum(s.value for s in families["omnizip_prompt_tokens_before_compression"].samples)
    after = sum(s.value for s in families["omnizip_prompt_tokens_after_compression"].samples)
    assert before > after > 0


def test_the_content_hash_is_read_off_the_models_thread(server: RunningServer, client: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashing a file reads all of it: that happens on the request's side, before the job is queued,
    never on the model's worker thread (where it would hold every request behind it); the time to
    first token counts it all the same (from the request's arrival)."""
    import shutil
    import threading
    import time

    from omnizip_cli.serve.engine import ContentHashes

    copy = SAMPLES / f"hash-{tmp_path.name}.mp4"  # a file the server has not hashed yet, in its allowed root
    shutil.copyfile(SILENT, copy)
    read_on: list[str] = []
    slow = {"seconds": 0.0}
    hash_file = ContentHashes.of

    def recording(self: ContentHashes, media: Any) -> str:
        if media.sha256 is None:
            read_on.append(threading.current_thread().name)
            time.sleep(slow["seconds"])
        return hash_file(self, media)

    monkeypatch.setattr(ContentHashes, "of", recording)
    try:
        answer = client.chat.completions.create(model="tiny", messages=[video_message(copy, "Q?")])
        assert answer.choices[0].message.content is not None
        assert read_on and "omnizip-model" not in read_on, read_on
        # the time to first token still counts from the request's arrival: a slow hash is part of it
        slow["seconds"] = 0.5
        again = client.chat.completions.create(model="tiny", messages=[video_message(copy, "And?")])
    finally:
        copy.unlink()
    assert again.model_extra["omnizip"]["prefix_source"] == "memory"
    assert again.model_extra["omnizip"]["timings"]["time_to_first_token_seconds"] >= 0.5


# ---------------------------------------------------------------------------------------------- bad requests
def post(server: RunningServer, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{server.url}/v1/chat/completions", content=content,
                      headers={"Content-Type": "application/json", **kwargs.pop("headers", {})}, **kwargs)


def body_with(content: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **extra}


VIDEO = {"type": "video_url", "video_url": {"url": str(TALKING)}}
TEXT = {"type": "text", "text": "Q?"}


def test_bad_requests_get_their_status_and_an_openai_error(server: RunningServer, tmp_path: Path) -> None:
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(TALKING.read_bytes())
    cases = [
        (b"{not json", 400, "invalid_json"),
        ([1, 2], 400, None),
        (body_with([VIDEO, {"type": "hologram", "hologram": {}}, TEXT]), 400, "unknown_content_type"),
        (body_with([VIDEO, {"type": "image_url", "image_url": {"url": "x"}}, TEXT]), 400, "unsupported_content_type"),
        (body_with([VIDEO, VIDEO, TEXT]), 400, "too_many_media"),
        (body_with([TEXT]), 400, "missing_media"),
        (body_with([{"type": "video_url", "video_url": {"url": str(outside)}}, TEXT]), 403, "path_not_allowed"),
        (body_with([{"type": "video_url", "video_url": {"url": str(SAMPLES / ".." / "README.md")}}, TEXT]), 403,
         "path_not_allowed"),
        (body_with([{"type": "video_url", "video_url": {"url": "https://example.com/a.mp4"}}, TEXT]), 403,
         "remote_media_disabled"),
        (body_with([{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,@@@@"}}, TEXT]), 400,
         "invalid_base64"),
        (body_with([{"type": "video_url", "video_url": {"url": str(SILENT)}}, TEXT],
                   mm_processor_kwargs={"use_audio_in_video": True}), 400, "no_audio_track"),
        (body_with([VIDEO, TEXT], mm_processor_kwargs={"fps": -1}), 400, None),
        (body_with([VIDEO, TEXT], mm_processor_kwargs={"resolution": 3}), 400, None),
        (body_with([VIDEO, TEXT], omnizip={"preset": "50"}), 400, None),
        (body_with([VIDEO, TEXT], omnizip={"retention": 2}), 400, None),
        (body_with([VIDEO, TEXT], n=2), 400, "unsupported_parameter"),
        (body_with([VIDEO, TEXT], max_tokens=0), 400, None),
        (body_with([VIDEO, TEXT], max_tokens=10**6), 400, "context_length_exceeded"),
        (body_with([VIDEO, TEXT], temperature="hot"), 400, None),
        (body_with([VIDEO, TEXT], model="gpt-4o"), 404, "model_not_found"),
        ({"model": "tiny", "messages": [{"role": "assistant", "content": "hi"}]}, 400, None),
    ]
    for body, status, code in cases:
        response = post(server, body)
        assert response.status_code == status, (body if not isinstance(body, dict) else body.get("messages"), response.text)
        error = error_of(response)
        if code is not None:
            assert error["code"] == code, error
    assert error_of(httpx.get(f"{server.url}/v1/nothing"))["code"] == "not_found"


def test_symlink_escape_is_refused(tiny_model: Any, tmp_path: Path) -> None:
    allowed = tmp_path / "videos"
    allowed.mkdir()
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(TALKING.read_bytes())
    (allowed / "link.mp4").symlink_to(secret)
    (allowed / "real.mp4").write_bytes(TALKING.read_bytes())
    with running_server(tiny_model, media=media_options(), allowed_media_paths=(allowed,)) as running:
        escape = post(running, body_with([{"type": "video_url", "video_url": {"url": str(allowed / "link.mp4")}},
                                          TEXT]))
        assert escape.status_code == 403 and error_of(escape)["code"] == "path_not_allowed"
        inside = post(running, body_with([{"type": "video_url", "video_url": {"url": (allowed / "real.mp4").as_uri()}},
                                          TEXT]))
        assert inside.status_code == 200


def test_a_request_that_waited_past_the_timeout_is_a_504_and_counted(tiny_model: Any) -> None:
    """A request still queued at --request-timeout gets its 504 without being answered, and
    ``/metrics`` counts it with the other timeouts."""
    with running_server(tiny_model, media=media_options(), request_timeout=1e-6) as running:
        late = post(running, body_with([VIDEO, TEXT]))
        assert late.status_code == 504 and error_of(late)["code"] == "timeout"
        assert "waited longer" in error_of(late)["message"]  # refused in the queue, not cut mid-answer
        assert running.engine.held == {}  # nothing was opened for it
        text = httpx.get(f"{running.url}/metrics").text
        assert 'omnizip_answers_failed_total{reason="timeout"} 1.0' in text


def test_size_caps_and_the_api_key(tiny_model: Any) -> None:
    from omnizip_cli.serve.settings import MiB

    big = base64.b64encode(b"\0" * (MiB + 10)).decode()
    with running_server(tiny_model, media=media_options(), api_key="sesame", max_media_bytes=MiB,
                        max_request_bytes=4 * MiB) as running:
        headers = {"Authorization": "Bearer sesame"}
        over = post(running, body_with([{"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{big}"}},
                                        TEXT]), headers=headers)
        assert over.status_code == 413 and error_of(over)["code"] == "media_too_large"
        huge = post(running, "x" * (4 * MiB + 1), headers=headers)
        assert huge.status_code == 413 and error_of(huge)["code"] == "request_too_large"
        upload = httpx.post(f"{running.url}/v1/uploads", content=b"\0" * (MiB + 1),
                            headers={**headers, "Content-Type": "video/mp4"})
        assert upload.status_code == 413
        assert httpx.get(f"{running.url}/health").status_code == 200  # no key needed
        for given in (None, "Bearer wrong", "Basic sesame"):
            response = httpx.get(f"{running.url}/v1/models", headers={"Authorization": given} if given else {})
            assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"
        import openai

        with pytest.raises(openai.AuthenticationError):
            running.client(api_key="wrong").models.list()
        reply = running.client(api_key="sesame").chat.completions.create(
            model="tiny", messages=[video_message(TALKING, "Q?")])
        assert reply.choices[0].message.content


def test_qwen3_omni_is_served_the_same_way(tiny_qwen3: Any) -> None:
    from omnizip_cli.generation import GenerationOptions, OpenOptions, Session

    question = "What is said?"
    session = Session.open(tiny_qwen3, TALKING, OpenOptions(media=media_options(), max_new_tokens=NEW_TOKENS,
                                                            question_reserve=128, cache=False))
    expected = session.answer(question, GenerationOptions(max_new_tokens=NEW_TOKENS))
    with running_server(tiny_qwen3, media=media_options()) as running:
        reply = running.client().chat.completions.create(model=tiny_qwen3.name,
                                                         messages=[video_message(TALKING, question)])
    assert reply.choices[0].message.content == expected.text
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert reply.model_extra["omnizip"]["tokens"]["audio"]["after"] > 0


def test_prefixes_evicted_from_memory_come_back_from_the_disk_cache(tiny_model: Any, tmp_path: Path) -> None:
    from omnizip_cli.generation.prefix_cache import PrefixCache

    disk = PrefixCache(tmp_path / "prefixes", max_bytes=10**9)
    with running_server(tiny_model, media=media_options(), use_disk_cache=disk, max_prefix_memory=1) as running:
        client = running.client()
        first = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")])
        assert first.model_extra["omnizip"]["prefix_source"] == "fresh"
        assert first.model_extra["omnizip"]["prefix_cache"]["stored"] is True
        assert running.engine.held == {}  # over the 1-byte budget: dropped from memory after the answer
        again = client.chat.completions.create(model="tiny", messages=[video_message(TALKING, "Q?")])
        assert again.model_extra["omnizip"]["prefix_source"] == "disk"
        assert again.choices[0].message.content == first.choices[0].message.content
        metrics = httpx.get(f"{running.url}/metrics").text
        assert "omnizip_prefixes_evicted_total 2.0" in metrics
        assert 'omnizip_prefix_total{source="disk"} 1.0' in metrics
