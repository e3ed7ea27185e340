"""``omnizip serve --replicas 2`` on a local Ray Serve: two CPU replicas of the tiny model behind the
same app, driven with the real ``openai`` client. One server for the module (Ray, Serve and two model
loads take most of the time); the tests run in order and the last one kills a replica.

Skipped when Ray Serve is not installed (``pip install "omnizip[serve-ray]"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from omnizip_cli.serve.ray_backend import OmnizipReplica
from tests.helpers.serving import SAMPLES, RunningServer, running_server, serving, video_message

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'omnizip[serve-ray]')")
pytestmark = pytest.mark.slow

#: A question the test replica holds after its first answer piece (the tiny model answers everything
#: within a second, too fast to kill a replica or leave a stream in the middle of an answer).
STALL = "Stall here."


class StallingReplica(OmnizipReplica):
    """The real replica, but a :data:`STALL` question waits a minute after its first event; a wait
    cancelled (the client went away) is counted in its reports (``stalls_cancelled``)."""

    stalls_cancelled = 0

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), "stalls_cancelled": self.stalls_cancelled}

    async def answer(self, request: Any, media: Any, waited: float = 0.0) -> Any:
        async with contextlib.aclosing(super().answer(request, media, waited)) as events:
            async for kind, value in events:
                yield kind, value
                if kind == "text" and request.question == STALL:
                    try:
                        await asyncio.sleep(60)
                    except asyncio.CancelledError:
                        type(self).stalls_cancelled += 1
                        raise

QUESTIONS = ["What happens in the video?", "Who is speaking?", "Describe the colours."]


@pytest.fixture(scope="module")
def ray_server(tiny_cpu_model: Any) -> Iterator[RunningServer]:
    from omnizip_cli.models import ModelSpec
    from omnizip_cli.serve.ray_backend import start_ray_engine
    from omnizip_cli.serve.settings import ServeSettings

    settings = ServeSettings(model_name=tiny_cpu_model.name, allowed_media_paths=(SAMPLES.resolve(),),
                             use_disk_cache=False, max_tokens=8, shutdown_grace=1.0)
    engine = start_ray_engine(ModelSpec(model="tiny", device="cpu", dtype="float32"), settings, 2,
                              cpus_per_replica=0.5, ray_init={"num_cpus": 2}, replica_class=StallingReplica)
    with serving(engine, settings) as running:
        yield running


def health(server: RunningServer) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{server.url}/health", timeout=10).json()


def ask(client: Any, question: str, media: str = "talking.mp4", kind: str = "video_url", **extra: Any) -> Any:
    return client.chat.completions.create(model="tiny", messages=[video_message(SAMPLES / media, question, kind=kind)],
                                          **extra)


def test_health_lists_the_replicas(ray_server: RunningServer) -> None:
    status = health(ray_server)
    assert status["status"] == "ok" and status["replicas_target"] == 2
    assert len(status["replicas"]) == 2
    assert {r["state"] for r in status["replicas"]} == {"running"}
    assert len({r["pid"] for r in status["replicas"]}) == 2
    assert status["deployment"]["replica_states"] == {"running": 2}


def test_a_videos_questions_stay_on_one_replica_and_match_one_process(ray_server: RunningServer,
                                                                      tiny_cpu_model: Any) -> None:
    client = ray_server.client()
    answers = [ask(client, q) for q in QUESTIONS]
    replicas = {a.model_extra["omnizip"]["replica"] for a in answers}
    assert len(replicas) == 1
    assert [a.model_extra["omnizip"]["prefix_source"] for a in answers] == ["fresh", "memory", "memory"]
    with running_server(tiny_cpu_model) as single:
        reference = [ask(single.client(), q) for q in QUESTIONS]
    assert [a.choices[0].message.content for a in answers] == [r.choices[0].message.content for r in reference]
    assert [a.usage.prompt_tokens for a in answers] == [r.usage.prompt_tokens for r in reference]
    assert answers[0].model_extra["omnizip"]["prefix_id"] == reference[0].model_extra["omnizip"]["prefix_id"]


def test_videos_spread_over_the_replicas(ray_server: RunningServer) -> None:
    client = ray_server.client()
    first = ask(client, QUESTIONS[0]).model_extra["omnizip"]["replica"]
    others = [ask(client, "What is this?", "silent.mp4"),
              ask(client, "What is said?", "speech.wav", kind="audio_url"),
              ask(client, "What is this?", extra_body={"mm_processor_kwargs": {"fps": 1.0}})]
    used = {first} | {o.model_extra["omnizip"]["replica"] for o in others}
    assert used == {r["replica"] for r in health(ray_server)["replicas"]}
    # each video's second question goes where its prefix is
    again = ask(client, "And then?", "silent.mp4").model_extra["omnizip"]
    assert again["replica"] == others[0].model_extra["omnizip"]["replica"] and again["prefix_source"] == "memory"


def test_keep_maps_come_from_the_replica_holding_the_prefix(ray_server: RunningServer,
                                                           tiny_cpu_model: Any) -> None:
    """Each replica draws the keep maps of the prefixes it holds, for a prefix on either replica; each
    picture is the single-process server's for the same request, byte for byte; an unknown id is a 404."""
    import httpx

    def keep_map(url: str, answer: Any) -> httpx.Response:
        return httpx.get(f"{url}/v1/prefixes/{answer.model_extra['omnizip']['prefix_id']}/keep-map.png", timeout=60)

    requests = [("What is this?", "silent.mp4", {}), (QUESTIONS[0], "talking.mp4", {}),
                ("What is this?", "talking.mp4", {"extra_body": {"mm_processor_kwargs": {"fps": 1.0}}})]
    client = ray_server.client()
    by_replica: dict[str, tuple[Any, Any]] = {}
    for question, media, extra in requests:
        answer = ask(client, question, media, **extra)
        by_replica.setdefault(answer.model_extra["omnizip"]["replica"], ((question, media, extra), answer))
    assert len(by_replica) == 2  # the videos' prefixes are spread over both replicas
    missing = httpx.get(f"{ray_server.url}/v1/prefixes/{'0' * 16}/keep-map.png", timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "prefix_not_found"
    # a replica's own 4xx reaches the client whole (the error is pickled back from the replica)
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "Q?", "silent.mp4", extra_body={"mm_processor_kwargs": {"use_audio_in_video": True}})
    assert refused.value.body["code"] == "no_audio_track"
    with running_server(tiny_cpu_model) as single:
        for replica, ((question, media, extra), answer) in by_replica.items():
            png = keep_map(ray_server.url, answer)
            assert png.status_code == 200 and png.headers["content-type"] == "image/png", (replica, png.text[:200])
            reference = keep_map(single.url, ask(single.client(), question, media, **extra))
            assert reference.status_code == 200 and png.content == reference.content


def test_time_to_first_token_counts_from_the_arrival_at_the_ingress(ray_server: RunningServer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What a request spends at the ingress (here a slow content hash) is part of its time to first
    token, reported by the replica."""
    from omnizip_cli.serve.engine import ContentHashes

    client = ray_server.client()
    assert ask(client, QUESTIONS[0]).model_extra["omnizip"]["prefix_source"] in ("fresh", "memory")
    hash_file = ContentHashes.of

    def slow(self: ContentHashes, media: Any) -> str:
        time.sleep(0.5)
        return hash_file(self, media)

    monkeypatch.setattr(ContentHashes, "of", slow)
    again = ask(client, QUESTIONS[1]).model_extra["omnizip"]
    assert again["prefix_source"] == "memory"
    assert again["timings"]["time_to_first_token_seconds"] >= 0.5


def test_streaming_and_cancellation_through_the_handle(ray_server: RunningServer) -> None:
    client = ray_server.client()
    chunks = list(ask(client, QUESTIONS[1], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ask(client, QUESTIONS[1]).choices[0].message.content
    assert chunks[-1].model_extra["omnizip"]["replica"]
    # an answer whose client goes away mid-stream is cancelled on its replica
    stream = ask(client, STALL, stream=True)
    assert any(c.choices and c.choices[0].delta.content for c in stream)  # stops at the first piece
    stream.close()
    deadline = time.monotonic() + 20
    while sum(r["stalls_cancelled"] for r in health(ray_server)["replicas"]) < 1:
        assert time.monotonic() < deadline, "the abandoned answer was not cancelled on its replica"
        time.sleep(0.2)


def test_metrics_add_up_the_replicas(ray_server: RunningServer) -> None:
    import httpx

    text = httpx.get(f"{ray_server.url}/metrics", timeout=10).text
    assert 'omnizip_replicas{state="running"} 2' in text
    memory = next(line for line in text.splitlines() if line.startswith('omnizip_prefix_total{source="memory"}'))
    assert float(memory.split()[-1]) >= 3
    assert 'route="/v1/chat/completions",status="200"' in text


def test_a_killed_replica_gives_503_and_the_server_keeps_answering(ray_server: RunningServer) -> None:
    import openai

    client = ray_server.client(timeout=60)
    holder = ask(client, "Whose video?", "silent.mp4").model_extra["omnizip"]["replica"]
    pid = next(r["pid"] for r in health(ray_server)["replicas"] if r["replica"] == holder)
    outcome: dict[str, Any] = {}

    def stalled_answer() -> None:  # routed to the holder of silent.mp4's prefix, where it stalls
        try:
            outcome["answer"] = ask(client, STALL, "silent.mp4")
        except openai.APIStatusError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=stalled_answer)
    thread.start()
    time.sleep(1.5)
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the killed request hangs"
    error = outcome.get("error")
    assert error is not None and error.status_code == 503, outcome
    assert error.body["code"] == "replica_died"
    # later requests are answered (by the surviving replica, then by the replacement too)
    for question in QUESTIONS:
        assert ask(client, question, "silent.mp4").choices[0].message.content is not None
    assert ask(client, "Again?", "silent.mp4").model_extra["omnizip"]["replica"] != holder
