"""``omnizip serve`` as a real process (issue 24): cancellation, request timeouts, crash isolation,
SIGTERM, the API key from the environment, a non-loopback bind without a key, a port in use.

The servers run the tiny model through :mod:`tests.helpers.server_process` (the real command line);
where an answer must be in flight for seconds, its end-of-answer ids are removed and each token
takes ``TOKEN_DELAY`` seconds (answers then run to ``max_tokens``: 2000 tokens are 10 s or more).
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.server_process import FAIL_BEFORE, FAIL_DURING, ServerProcess
from tests.helpers.serving import SAMPLES, video_message

KEY = "test-key-24"
TOKEN_DELAY = 0.005
LONG = 2000  # answer tokens: >= 10 s at TOKEN_DELAY, within the tiny model's 32k context
REQUEST_TIMEOUT = 3.0
VIDEO = SAMPLES / "silent.mp4"


def health(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health", timeout=10).json()


def metric(url: str, name: str, missing: float | None = None) -> float:
    """The value of series ``name`` in ``/metrics``; ``missing`` when it is not there (None: an error)."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    if found is None and missing is not None:
        return missing
    assert found, f"{name} is not in /metrics"
    return float(found.group(1))


def wait_for(predicate: Any, timeout: float, step: float = 0.02) -> float:
    """Seconds until ``predicate()`` held (an AssertionError after ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def no_traceback(server: ServerProcess) -> None:
    assert "Traceback" not in server.stderr_text(), server.stderr_text()[-3000:]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An allowed folder of broken files: random bytes, a truncated mp4, a text file named .mp4."""
    from tests.helpers.media_factory import truncate

    folder = tmp_path_factory.mktemp("serve-broken")
    (folder / "noise.mp4").write_bytes(bytes(range(256)) * 64)
    truncate(SAMPLES / "talking.mp4", folder / "truncated.mp4", 0.2)
    (folder / "text.mp4").write_text("this is not a video\n")
    return folder


@pytest.fixture(scope="module")
def server(media: Path) -> Any:
    """One endless, slow-token server with the key from ``OMNIZIP_API_KEY``, a 3-s request timeout and
    the injected faults (:mod:`tests.helpers.server_process`)."""
    with ServerProcess.start("--allowed-media-path", str(SAMPLES), "--allowed-media-path", str(media),
                             "--request-timeout", str(REQUEST_TIMEOUT), "--max-tokens", "8",
                             env={"OMNIZIP_API_KEY": KEY}, endless=True, token_delay=TOKEN_DELAY,
                             faults=True) as process:
        yield process


@pytest.mark.slow
def test_api_key_from_the_environment(server: ServerProcess) -> None:
    import openai

    assert "warning" not in server.stderr_text()  # loopback: no warning
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").models.list()
    assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 401
    assert [m.id for m in server.client(api_key=KEY).models.list().data] == ["tiny"]
    assert health(server.url)["status"] == "ok"  # /health needs no key


@pytest.mark.slow
def test_a_client_that_disconnects_cancels_its_answer(server: ServerProcess) -> None:
    client = server.client(api_key=KEY)
    generated = metric(server.url, "omnizip_generated_tokens_total")
    cancelled = 'omnizip_answers_cancelled_total{when="answering"}'
    assert metric(server.url, cancelled) == 0
    assert health(server.url)["prefix_memory_bytes"] == 0  # this video's prefix is opened by the request below
    stream = client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, "Tell me everything.")],
                                            max_tokens=LONG, stream=True)
    received = 0
    for _ in stream:
        received += 1
        if received == 10:
            break
    assert health(server.url)["running"]
    stream.close()  # the connection goes away mid-answer
    # the answer stops at its next token (it had 10 s and more to go, and 3 s before its timeout)
    assert wait_for(lambda: not health(server.url)["running"], timeout=1.5) < 1.5
    assert metric(server.url, "omnizip_generated_tokens_total") == generated  # a cancelled answer's tokens: none
    assert metric(server.url, cancelled) == 1  # but the answer itself is counted, as cancelled
    assert health(server.url)["prefix_memory_bytes"] > 0  # and the prefix it opened counts against the budget
    # the next request is served at once, and the counter does not move without one
    started = time.monotonic()
    answer = client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, "And now?")], max_tokens=4)
    assert answer.usage.completion_tokens == 4 and time.monotonic() - started < 2.0
    after = metric(server.url, "omnizip_generated_tokens_total")
    assert after == generated + 4
    time.sleep(0.3)
    assert metric(server.url, "omnizip_generated_tokens_total") == after
    no_traceback(server)


@pytest.mark.slow
def test_request_timeout_streaming_and_not(server: ServerProcess) -> None:
    """Past --request-timeout: an error event ends the stream; a non-streaming request waiting behind it
    gets a 504. Both at about the timeout, and the server goes on."""
    import openai

    client = server.client(api_key=KEY, timeout=30)
    results: dict[str, Any] = {}
    timeouts = 'omnizip_answers_failed_total{reason="timeout"}'
    timeouts_before = metric(server.url, timeouts, missing=0.0)

    def waiting() -> None:
        try:
            client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, "Queued?")], max_tokens=LONG)
        except openai.APIStatusError as exc:
            results["whole"] = (exc, time.monotonic() - started)

    started = time.monotonic()
    stream = client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, "Too long?")],
                                            max_tokens=LONG, stream=True)
    behind = threading.Thread(target=waiting)
    behind.start()
    pieces = 0
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            pieces += 1
    elapsed = time.monotonic() - started
    behind.join(timeout=30)
    assert pieces > 10 and "--request-timeout" in str(raised.value)
    assert REQUEST_TIMEOUT - 0.5 < elapsed < REQUEST_TIMEOUT + 2.0
    exc, whole_elapsed = results["whole"]
    assert exc.status_code == 504 and exc.body["code"] == "timeout"
    assert whole_elapsed < REQUEST_TIMEOUT + 2.5
    assert wait_for(lambda: not health(server.url)["running"], timeout=2.0) < 2.0
    short = client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, "Short?")], max_tokens=3)
    assert short.usage.completion_tokens == 3
    assert metric(server.url, timeouts) == timeouts_before + 2  # the one answering, and the one still queued
    no_traceback(server)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["noise.mp4", "truncated.mp4", "text.mp4"])
def test_a_broken_file_is_a_400_and_the_server_goes_on(server: ServerProcess, media: Path, name: str) -> None:
    import openai

    client = server.client(api_key=KEY)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as raised:
            response = client.chat.completions.create(model="tiny", messages=[video_message(media / name, "What?")],
                                                      max_tokens=4, stream=stream)
            for _ in response if stream else ():
                pass
        assert raised.value.body["code"] == "invalid_media", raised.value.body
    answer = client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, "Fine?")], max_tokens=4)
    assert answer.usage.completion_tokens == 4
    assert server.proc.poll() is None and health(server.url)["status"] == "ok"
    no_traceback(server)


@pytest.mark.slow
def test_a_port_in_use_is_one_line_before_the_model_loads(server: ServerProcess) -> None:
    port = server.url.rsplit(":", 1)[1]
    with ServerProcess.start("--port", port, expect_ready=False) as second:
        code = second.wait(120)
        text = second.stderr_text()
    assert code == 1, text
    lines = [line for line in text.splitlines() if not line.startswith("[transformers]")]
    assert lines == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"], text
    assert health(server.url)["status"] == "ok"  # the first one is untouched


@pytest.mark.slow
def test_an_exception_inside_a_request_never_takes_the_server_down(server: ServerProcess) -> None:
    """Runs after the tests above that check the log has no traceback: the server logs this one."""
    import openai

    client = server.client(api_key=KEY)
    with pytest.raises(openai.InternalServerError) as raised:  # before the first token: a 500
        client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, FAIL_BEFORE)], stream=True)
    assert raised.value.body == {"message": "internal error: RuntimeError: injected failure before the answer",
                                 "type": "server_error", "param": None, "code": "internal_error"}
    pieces = 0
    with pytest.raises(openai.APIError) as raised:  # mid-stream: an error event
        for _ in client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, FAIL_DURING)],
                                                max_tokens=50, stream=True):
            pieces += 1
    assert pieces >= 2 and "injected failure during the answer" in str(raised.value)
    with pytest.raises(openai.InternalServerError):  # not streaming: a 500
        client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, FAIL_DURING)], max_tokens=50)
    answer = client.chat.completions.create(model="tiny", messages=[video_message(VIDEO, "Fine?")], max_tokens=4)
    assert answer.usage.completion_tokens == 4
    state = health(server.url)
    assert server.proc.poll() is None and state["status"] == "ok" and not state["running"]
    assert metric(server.url, 'omnizip_answers_failed_total{reason="internal_error"}') == 3
    assert server.stderr_text().count("RuntimeError: injected failure") == 3  # logged with its traceback


@pytest.mark.slow
def test_sigterm_finishes_then_cancels_within_the_grace() -> None:
    """SIGTERM with one answer running (it finishes within the grace) and a long one queued behind it
    (cancelled at the grace with an error): no new connections, exit 0, "stopped". Bound to 0.0.0.0
    without a key, the server warns at start."""
    import openai

    grace = 2.0
    with ServerProcess.start("--host", "0.0.0.0", "--allowed-media-path", str(SAMPLES), "--shutdown-grace",
                             str(grace), endless=True, token_delay=TOKEN_DELAY) as server:
        assert re.search(r"warning: listening on 0\.0\.0\.0 without --api-key", server.stderr_text())
        url = "http://127.0.0.1:" + server.url.rsplit(":", 1)[1]
        client = server.client(timeout=60)
        client.base_url = f"{url}/v1"
        outcomes: dict[str, Any] = {}
        first_chunk = threading.Event()

        def short() -> None:  # 150 tokens: under a second
            pieces, finish = [], None
            try:
                for chunk in client.chat.completions.create(
                        model="tiny", messages=[video_message(VIDEO, "Short?")], max_tokens=150, stream=True):
                    first_chunk.set()
                    for choice in chunk.choices:
                        pieces.append(choice.delta.content or "")
                        finish = choice.finish_reason or finish
                outcomes["short"] = ("".join(pieces), finish)
            except openai.APIError as exc:
                outcomes["short"] = exc

        def long() -> None:
            try:
                for _ in client.chat.completions.create(
                        model="tiny", messages=[video_message(VIDEO, "Long?")], max_tokens=LONG, stream=True):
                    pass
                outcomes["long"] = "finished"
            except openai.APIError as exc:
                outcomes["long"] = (exc, time.monotonic())

        threads = [threading.Thread(target=short)]
        threads[0].start()
        assert first_chunk.wait(30)
        threads.append(threading.Thread(target=long))
        threads[1].start()
        wait_for(lambda: health(url)["queue_length"] == 1, timeout=5)
        server.signal(signal.SIGTERM)
        sent = time.monotonic()

        def refused() -> bool:
            try:
                httpx.get(f"{url}/health", timeout=1)
            except httpx.ConnectError:
                return True
            return False

        wait_for(refused, timeout=2.0, step=0.05)  # no new connections
        for thread in threads:
            thread.join(timeout=grace + 10)
        code = server.wait(grace + 20)
        exited = time.monotonic() - sent
        text = server.stderr_text()

    text_short = outcomes["short"]
    assert isinstance(text_short, tuple) and text_short[1] == "length" and text_short[0], text_short
    exc, ended = outcomes["long"]
    assert "shutting down" in str(exc)
    assert ended - sent < grace + 1.5  # cancelled at the grace
    assert code == 0 and "omnizip serve: stopped" in text and "Traceback" not in text, text[-3000:]
    assert exited < grace + 15
