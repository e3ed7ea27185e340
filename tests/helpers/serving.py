"""A real ``omnizip serve`` app on a loopback port, in this process (uvicorn on a thread), for tests.

``running_server(loaded, **settings)`` yields a :class:`RunningServer` (its ``url``, ``engine``,
``settings``, an ``openai`` client); the server stops when the block ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    engine: Any
    settings: Any

    def client(self, api_key: str = "unused", **kwargs: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)


def video_message(path: Path | str, question: str, *, kind: str = "video_url") -> dict[str, Any]:
    """A first user message with one media part (``{"url": ...}``) and the question."""
    return {"role": "user", "content": [{"type": kind, kind: {"url": str(path)}}, {"type": "text", "text": question}]}


@contextmanager
def running_server(loaded: Any, **fields: Any) -> Iterator[RunningServer]:
    """Serve ``loaded`` with :class:`~omnizip_cli.serve.settings.ServeSettings` ``fields`` (the model
    name defaults to ``loaded.name``, the samples folder is an allowed media path, the disk cache off)."""
    from omnizip_cli.serve.engine import Engine
    from omnizip_cli.serve.metrics import ServerMetrics
    from omnizip_cli.serve.settings import ServeSettings

    fields.setdefault("model_name", loaded.name)
    fields.setdefault("allowed_media_paths", (SAMPLES.resolve(),))
    fields.setdefault("use_disk_cache", False)
    fields.setdefault("max_tokens", 8)
    settings = ServeSettings(**fields)
    with serving(Engine(loaded, settings, ServerMetrics()), settings) as running:
        yield running


@contextmanager
def serving(engine: Any, settings: Any) -> Iterator[RunningServer]:
    """The app over ``engine`` (an :class:`~omnizip_cli.serve.engine.Engine` or the Ray backend) on
    a loopback port, uvicorn on a thread; the engine is closed when the block ends."""
    import uvicorn

    from omnizip_cli.serve.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(engine, settings), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", engine, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.close(grace=0.0)
