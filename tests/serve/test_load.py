"""A bounded load test of ``omnizip serve`` on loopback (issue 24): 16 concurrent clients (threads, the
real ``openai`` client, no retries) send 64 requests over 3 videos, half of them streaming, to a
server whose queue holds 3 and whose prefix memory holds about two of the three prefixes.

Every request is answered or refused with a 429 that carries ``Retry-After`` (nothing else), every
answer equals the sequential greedy answer for its video and question, and afterwards the server is
healthy and idle, has evicted prefixes (``omnizip_prefixes_evicted_total``) and holds no more than
``max_prefix_memory`` bytes of them.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.serving import SAMPLES, running_server, video_message

CLIENTS = 16
REQUESTS = 64
MAX_QUEUE = 8
MAX_TOKENS = 8
BACK_OFF = 0.1  # seconds (times 1-4, by client) a refused client waits before its next request
QUESTIONS = ("What happens in this video?", "Who is speaking?", "Describe the colours.", "Is there music?")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The two samples and a clip written here (with an audio track)."""
    from tests.helpers.media_factory import AudioTrack, VideoSpec, write_media

    folder = tmp_path_factory.mktemp("load-media")
    clip = write_media(folder / "moving.mp4", video=VideoSpec(width=160, height=96, fps=6, seconds=2.0),
                       audio=[AudioTrack(seconds=2.0)])
    return [SAMPLES / "talking.mp4", SAMPLES / "silent.mp4", clip]


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample ``name`` in a Prometheus text exposition."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} is not in /metrics"
    return float(found.group(1))


def ask(client: Any, model: str, video: Path, question: str, stream: bool) -> tuple[str, str | None]:
    """One request: (the answer text, the finish reason)."""
    messages = [video_message(video, question)]
    if not stream:
        response = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS)
        return response.choices[0].message.content, response.choices[0].finish_reason
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS, stream=True):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(pieces), finish


@pytest.mark.slow
def test_load_answers_or_refuses_and_stays_bounded(tiny_model: Any, videos: list[Path]) -> None:
    import openai

    roots = (videos[2].parent.resolve(), SAMPLES.resolve())
    # the sequential greedy answers, and the size of each video's prefix held in memory
    references: dict[tuple[int, str], tuple[str, str | None]] = {}
    sizes = []
    with running_server(tiny_model, allowed_media_paths=roots, max_tokens=MAX_TOKENS) as server:
        client = server.client()
        for v, video in enumerate(videos):
            for question in QUESTIONS:
                references[v, question] = ask(client, tiny_model.name, video, question, stream=False)
            sizes.append(list(server.engine.held.values())[-1].bytes)  # the one just used
    assert all(text for text, _ in references.values())
    cap = sum(sorted(sizes)[1:]) + 1  # the two largest fit; all three do not: the load must evict
    assert cap < sum(sizes)

    plan = [(k % len(videos), QUESTIONS[(k // len(videos)) % len(QUESTIONS)], k % 2 == 1) for k in range(REQUESTS)]
    outcomes: list[tuple[int, str, bool, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    with running_server(tiny_model, allowed_media_paths=roots, max_tokens=MAX_TOKENS, max_queue=MAX_QUEUE,
                        max_prefix_memory=cap, request_timeout=120) as server:

        def client_thread(index: int) -> None:
            client = server.client(timeout=120)
            start.wait()
            for k in range(index, REQUESTS, CLIENTS):
                v, question, stream = plan[k]
                try:
                    outcome: Any = ask(client, tiny_model.name, videos[v], question, stream)
                except openai.APIError as exc:  # the answer or the refusal is checked below
                    outcome = exc
                if isinstance(outcome, openai.RateLimitError):
                    time.sleep(BACK_OFF * (1 + index % 4))  # backing off (Retry-After is whole seconds)
                with lock:
                    outcomes.append((v, question, stream, outcome))

        threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in threads)

        assert len(outcomes) == REQUESTS
        answered = refused = 0
        for v, question, stream, outcome in outcomes:
            if isinstance(outcome, openai.RateLimitError):
                assert outcome.status_code == 429
                assert int(outcome.response.headers["retry-after"]) >= 1
                assert outcome.body["code"] == "queue_full"  # type: ignore[index]
                refused += 1
                continue
            assert not isinstance(outcome, Exception), f"{videos[v].name} {question!r} stream={stream}: {outcome!r}"
            assert outcome == references[v, question], (videos[v].name, question, stream)
            answered += 1
        assert refused >= 1 and answered >= REQUESTS // 4, (answered, refused)

        health = httpx.get(f"{server.url}/health", timeout=10).json()
        assert health["status"] == "ok" and health["queue_length"] == 0 and not health["running"]
        assert health["prefix_memory_bytes"] <= cap and health["prefixes_in_memory"] <= 2
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert metric(metrics, "omnizip_prefixes_evicted_total") > 0
        assert metric(metrics, "omnizip_requests_refused_total") == refused
        assert metric(metrics, "omnizip_prefix_memory_bytes") <= cap
        # and it still answers, the same as before
        again = ask(server.client(), tiny_model.name, videos[2], QUESTIONS[0], stream=True)
        assert again == references[2, QUESTIONS[0]]
