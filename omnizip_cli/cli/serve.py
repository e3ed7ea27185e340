"""``omnizip serve``: the OpenAI-compatible server (:mod:`omnizip_cli.serve`), one model per process.

The model loads first; then uvicorn listens on ``--host``/``--port`` (127.0.0.1:8000 by default).
SIGTERM or Ctrl-C stops accepting connections, lets in-flight answers finish within
``--shutdown-grace`` seconds (then cancels them) and exits 0.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .app import app
from .options import COMPRESSION, MEDIA, MODEL, SystemOpt, with_options

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..compression import CompressionSetting
    from ..media import MediaOptions
    from ..models import ModelSpec

API_KEY_ENV = "OMNIZIP_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
@with_options(MODEL, MEDIA, COMPRESSION, stdout="json")
def serve(
    model: ModelSpec,
    media: MediaOptions,
    compression: CompressionSetting,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed at start).", min=0, max=65535)] = 8000,
    system: SystemOpt = None,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", help="Answer tokens when a request gives no max_tokens.", min=1)] = 256,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar=API_KEY_ENV, help=f"Require this Bearer token on every route but /health (or ${API_KEY_ENV}).",
        show_envvar=False)] = None,
    allowed_media_path: Annotated[list[Path] | None, typer.Option(
        "--allowed-media-path", help="A folder whose files requests may name (file:// or a path); repeatable. "
                                     "Uploads and data: URLs are always allowed.")] = None,
    allow_remote_media: Annotated[bool, typer.Option(
        "--allow-remote-media", help="Let requests name http(s) URLs (downloaded with a size cap and a timeout).")] = False,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait for the model; more get a 429.", min=0)] = 16,
    request_timeout: Annotated[float, typer.Option(
        help="Seconds from a request's arrival to its last token; longer ends with an error.", min=1)] = 600.0,
    max_prefix_memory_gb: Annotated[float, typer.Option(
        "--max-prefix-memory", help="GB of video prefixes kept in memory (least recently used first out; "
                                    "they stay in the disk cache).", min=0)] = 4.0,
    max_media_mb: Annotated[float, typer.Option(
        "--max-media-mb", help="Largest upload, download or base64 file, in MB.", min=1)] = 512.0,
    shutdown_grace: Annotated[float, typer.Option(
        help="Seconds SIGTERM leaves in-flight answers before cancelling them.", min=0)] = 30.0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the disk cache of prefixes.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Library logs and uvicorn's access log.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.", envvar="OMNIZIP_DEBUG")] = False,
    replicas: Annotated[int, typer.Option(
        "--replicas", help="Model replicas on Ray Serve (one per GPU when the cluster has GPUs); a video's "
                           "questions go to the replica holding its prefix. 1: one process, no Ray.", min=1)] = 1,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Deploy the replicas on this Ray cluster (auto, or ray://host:10001) instead of a "
                              "local Ray.")] = None,
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (chat completions with video), with a web page at /."""
    from ..errors import EnvironmentProblem, UsageError

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise EnvironmentProblem("omnizip serve needs its extra packages", hint='pip install "omnizip[serve]"') from None
    from ..serve.settings import MiB, ServeSettings

    roots = []
    for folder in allowed_media_path or []:
        if not folder.is_dir():
            raise UsageError(f"--allowed-media-path {folder} is not a folder")
        roots.append(folder.resolve())
    if api_key is not None and not api_key.strip():
        raise UsageError("--api-key is empty")
    settings = ServeSettings(
        model_name=model.model, host=host, port=port, media=media, compression=compression, system=system,
        max_tokens=max_tokens, decoder="eager" if not model.fast_decoder else "auto", use_disk_cache=not no_cache,
        max_queue=max_queue, request_timeout=request_timeout, max_prefix_memory=int(max_prefix_memory_gb * 1e9),
        max_media_bytes=int(max_media_mb * MiB), shutdown_grace=shutdown_grace, api_key=api_key,
        allowed_media_paths=tuple(roots), allow_remote_media=allow_remote_media,
    )
    if replicas > 1 or ray_address is not None:
        from ..serve.ray_backend import import_ray_serve, start_ray_engine

        import_ray_serve()  # says what to install before anything loads
        run_server(model, settings, verbose=verbose, engine_factory=lambda: start_ray_engine(
            model, settings, replicas, ray_address, verbose=verbose))
        return
    run_server(model, settings, verbose=verbose)


def run_server(model: ModelSpec, settings: Any, *, verbose: bool = False, engine_factory: Any = None) -> None:
    """Load the model, then serve until SIGTERM or Ctrl-C. ``engine_factory``: the backend instead of one
    model in this process (the Ray Serve replicas of ``--replicas``)."""
    import uvicorn

    from ..models import load_model
    from ..serve.app import create_app
    from ..serve.engine import Engine
    from ..serve.metrics import ServerMetrics
    from .app import prepare_environment

    prepare_environment(verbose)
    say = sys.stderr.write
    check_address(settings.host, settings.port)  # before the model load (minutes for a 7B), not after
    if settings.host not in LOOPBACK and settings.api_key is None:
        say(f"warning: listening on {settings.host} without --api-key: anyone who can reach this address can use "
            "the model and read the allowed media folders\n")
    if engine_factory is not None:
        engine = engine_factory()
    else:
        say(f"omnizip serve: loading {settings.model_name}\n")
        loaded = load_model(model)
        engine = Engine(loaded, settings, ServerMetrics())
    config = uvicorn.Config(create_app(engine, settings), host=settings.host, port=settings.port,
                            log_level="info" if verbose else "warning", access_log=verbose,
                            # the engine ends what is left at the grace (an error event each); uvicorn's own
                            # cut (a traceback, a dropped connection) is only the backstop after it
                            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace) + 2, lifespan="off")
    server = _Server(config, on_shutdown=lambda: engine.begin_shutdown(settings.shutdown_grace))
    try:
        server.run()
    finally:
        engine.close(grace=0.0 if server.force else settings.shutdown_grace)
    if not server.started:
        from ..errors import OmnizipError

        raise OmnizipError(f"could not listen on {settings.host}:{settings.port} (in use, or not an address of this "
                           "machine)")
    say("omnizip serve: stopped\n")


def check_address(host: str, port: int) -> None:
    """A one-line error now when ``host:port`` cannot be bound (a port in use, an address not of this
    machine), as uvicorn binds it (``SO_REUSEADDR``); port 0 always can."""
    import socket

    from ..errors import OmnizipError

    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise OmnizipError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class _Server:
    """uvicorn's server with signals handled here: SIGTERM/SIGINT stop it gracefully (a second one
    forces), and nothing is re-raised afterwards (so the command exits 0)."""

    def __init__(self, config: Any, on_shutdown: Any = None) -> None:
        import uvicorn

        outer = self

        class Server(uvicorn.Server):
            @contextmanager
            def capture_signals(self) -> Iterator[None]:
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

                def stop(signum: int, frame: Any) -> None:
                    if self.should_exit:
                        self.force_exit = True
                        outer.force = True
                    self.should_exit = True

                for s in previous:
                    signal.signal(s, stop)
                try:
                    yield
                finally:
                    for s, handler in previous.items():
                        signal.signal(s, handler)

            async def shutdown(self, sockets: Any = None) -> None:
                if on_shutdown is not None:
                    on_shutdown()  # stop taking requests; in-flight answers have the grace
                await super().shutdown(sockets)

            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started:
                    bound = [s.getsockname() for server in self.servers for s in server.sockets]
                    address = bound[0] if bound else (config.host, config.port)
                    url_host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
                    from ..serve.listening import listening_line

                    sys.stderr.write(listening_line(f"http://{url_host}:{address[1]}", os.getpid()))
                    sys.stderr.flush()

        self.force = False
        self.server = Server(config)

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    def run(self) -> None:
        self.server.run()
