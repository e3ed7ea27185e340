"""A real ``omnizip serve`` process for tests: start it on a free loopback port, read its address.

``ServerProcess.start(*args, env=..., endless=True)`` runs ``python -m tests.helpers.server_process
serve --model tiny --port 0 ARGS`` (the real command line: :func:`omnizip_cli.cli.main.main`), waits
for ``omnizip serve: listening on http://HOST:PORT (pid N)`` on stderr and parses it. Its stderr is
collected by a thread (``stderr_text()``).

``endless``: the tiny random model ends its greedy answers after tens to about a thousand tokens;
a test of an answer in flight needs one that runs for seconds. With ``OMNIZIP_TEST_NO_EOS=1`` this
module, run as the program, removes the end-of-answer ids (answers run to ``max_tokens``), and with
``OMNIZIP_TEST_TOKEN_DELAY=S`` sleeps S seconds per chosen token; ``OMNIZIP_TEST_FAULTS=1`` makes the
engine raise a ``RuntimeError`` on the question ``FAIL_BEFORE`` (before its first token) and at the
fifth token of the question ``FAIL_DURING`` (an unexpected exception inside a request), before
handing over to the CLI. Nothing else changes: the routes, the engine, uvicorn and the signal
handling are the real ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FAIL_BEFORE = "raise before the answer"
FAIL_DURING = "raise during the answer"


class ServerProcess:
    """One ``omnizip serve`` child process (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen, args: list[str]) -> None:
        from omnizip_cli.serve.listening import StderrWatcher

        assert proc.stderr is not None
        self.proc = proc
        self.args = args
        self._watcher = StderrWatcher(proc.stderr)

    @property
    def url(self) -> str | None:
        return self._watcher.url

    @property
    def lines(self) -> list[str]:
        return self._watcher.lines

    @classmethod
    def start(cls, *args: str, env: dict[str, str] | None = None, endless: bool = False, token_delay: float = 0.0,
              faults: bool = False, model: str = "tiny", wait: float = 120.0,
              expect_ready: bool = True) -> ServerProcess:
        """Start ``omnizip serve --model MODEL --port 0 ARGS`` (``--port`` in ARGS wins); wait until it
        listens (unless ``expect_ready`` is False: then the caller waits for it to end)."""
        environ = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH", "")) if p)
        if endless:
            environ["OMNIZIP_TEST_NO_EOS"] = "1"
        if token_delay:
            environ["OMNIZIP_TEST_TOKEN_DELAY"] = str(token_delay)
        if faults:
            environ["OMNIZIP_TEST_FAULTS"] = "1"
        command = [sys.executable, "-m", "tests.helpers.server_process", "serve", "--model", model]
        if "--port" not in args:
            command += ["--port", "0"]
        command += list(args)
        proc = subprocess.Popen(command, cwd=REPO, env=environ, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        server = cls(proc, command)
        if expect_ready:
            server.wait_ready(wait)
        return server

    def wait_ready(self, timeout: float) -> None:
        if self._watcher.wait(timeout) is None:
            self.kill()
            raise RuntimeError(f"omnizip serve did not start:\n{self.stderr_text()[-3000:]}")

    def stderr_text(self) -> str:
        return self._watcher.text()

    def client(self, api_key: str = "unused", **kwargs: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._watcher.join()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._watcher.join()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()


def _test_hooks() -> None:
    """``OMNIZIP_TEST_NO_EOS``, ``OMNIZIP_TEST_TOKEN_DELAY``, ``OMNIZIP_TEST_FAULTS`` (see the module docstring)."""
    from omnizip_cli.generation import sampling
    from omnizip_cli.serve import engine

    if os.environ.get("OMNIZIP_TEST_NO_EOS") == "1":
        sampling.end_token_ids = lambda *args, **kwargs: []
    delay = float(os.environ.get("OMNIZIP_TEST_TOKEN_DELAY") or 0)
    faults = os.environ.get("OMNIZIP_TEST_FAULTS") == "1"
    failing = threading.local()  # the worker thread's current question fails mid-answer
    choose = sampling.TokenChooser.choose

    def hooked_choose(self: Any, logits: Any, step: int) -> Any:
        if delay > 0:
            time.sleep(delay)
        if getattr(failing, "during", False) and step == 5:
            failing.during = False
            raise RuntimeError("injected failure during the answer")
        return choose(self, logits, step)

    sampling.TokenChooser.choose = hooked_choose  # type: ignore[method-assign]
    if faults:
        turn_ids = engine.Engine._turn_ids

        def hooked_turn_ids(self: Any, held: Any, request: Any) -> list[int]:
            if request.question == FAIL_BEFORE:
                raise RuntimeError("injected failure before the answer")
            failing.during = request.question == FAIL_DURING
            return turn_ids(self, held, request)

        engine.Engine._turn_ids = hooked_turn_ids  # type: ignore[method-assign]


if __name__ == "__main__":
    _test_hooks()
    sys.argv[0] = "omnizip"
    from omnizip_cli.cli.main import main

    main()
