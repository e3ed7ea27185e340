"""The ASGI application (Starlette): routes, authentication, body limits, errors, streaming.

Routes: ``POST /v1/chat/completions`` (JSON, or server-sent events with ``stream: true``),
``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/uploads`` (a raw file body, for the web
page), ``GET /v1/prefixes/{id}/keep-map.png``, ``GET /health`` (no key needed), ``GET /metrics``
(Prometheus) and the web page at ``/``. Every error is OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with its status; no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from .errors import ApiError, bad_request
from .media_source import ContentWriter, resolve_media, safe_suffix
from .request import parse_chat_request

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from .engine import Engine, Job, Result
    from .settings import ServeSettings

#: Routes anyone may reach without the API key.
OPEN_PATHS = ("/health", "/", "/favicon.ico")
#: Keep map PNGs kept per prefix id (the most recently rendered ones).
KEEP_MAPS_CACHED = 16
#: The longest ``?title=`` of a keep map.
MAX_TITLE_CHARS = 200


def error_response(error: ApiError) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, a 413 beyond ``limit`` bytes (checked as it arrives)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the request body is larger than the server's limit of {limit} bytes",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is larger than the server's limit of {limit} bytes",
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def usage(result: Result) -> dict[str, Any]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens}}


def sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


class ServeApp:
    """The routes over one :class:`~.engine.Engine` (see the module docstring)."""

    def __init__(self, engine: Engine, settings: ServeSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.started = int(time.time())
        self.keep_maps: dict[tuple[str, str | None], bytes] = {}  # (prefix id, title) -> PNG (see keep_map)

    # ------------------------------------------------------------------------------ plumbing
    def build(self) -> Starlette:
        from starlette.applications import Starlette
        from starlette.routing import Route

        routes = [
            Route("/", self.page, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/uploads", self.upload, methods=["POST"]),
            Route("/v1/prefixes/{prefix_id}/keep-map.png", self.keep_map, methods=["GET"]),
        ]
        self.fixed_paths = frozenset(r.path for r in routes if "{" not in r.path)  # metric labels
        app = Starlette(routes=routes)
        app.add_exception_handler(Exception, self._unexpected)
        from starlette.exceptions import HTTPException

        app.add_exception_handler(HTTPException, self._http_exception)
        app.add_middleware(_Guard, app_state=self)  # type: ignore[arg-type]
        return app

    async def _http_exception(self, request: Request, exc: Any) -> Response:
        message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return error_response(ApiError(exc.status_code, message.get(exc.status_code, str(exc.detail)),
                                       code="not_found" if exc.status_code == 404 else None))

    async def _unexpected(self, request: Request, exc: Exception) -> Response:
        sys.stderr.write(f"omnizip serve: {request.method} {request.url.path} failed:\n{traceback.format_exc()}")
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}", code="internal_error"))

    def authorised(self, request: Request) -> bool:
        key = self.settings.api_key
        if key is None or request.url.path in OPEN_PATHS:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in (self.settings.model_name, "omnizip"):
            raise ApiError(404, f"the model {name!r} does not exist on this server (it serves "
                                f"{self.settings.model_name!r})", param="model", code="model_not_found")

    # ------------------------------------------------------------------------------ routes
    async def page(self, request: Request) -> Response:
        from starlette.responses import HTMLResponse

        html = resources.files("omnizip_cli.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    async def health(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", **self.engine.status()})

    async def metrics(self, request: Request) -> Response:
        from starlette.responses import Response

        body, content_type = self.engine.metrics.render()
        return Response(body, media_type=content_type)

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.settings.model_name, "object": "model", "created": self.started, "owned_by": "omnizip"}

    async def models(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        self.check_model(request.path_params["model_id"])
        return JSONResponse(self._model_card())

    async def upload(self, request: Request) -> Response:
        """A raw file body (``Content-Type: video/...`` or ``audio/...``; ``X-Filename`` for its
        suffix), stored content-addressed; the answer's ``url`` is a ``file://`` URL chat requests may use."""
        from starlette.responses import JSONResponse

        kind = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
        if not kind.startswith(("video/", "audio/", "application/octet-stream")):
            raise ApiError(415, f"uploads must be video or audio files (Content-Type {kind})", code="unsupported_type")
        suffix = safe_suffix(request.headers.get("x-filename"), kind)
        writer = await asyncio.to_thread(ContentWriter, self.settings.media_root(), self.settings.max_media_bytes,
                                         "the upload")
        with writer:
            async for chunk in request.stream():
                writer.write(chunk)
            if writer.size == 0:
                raise bad_request("the upload is empty", code="empty_upload")
            stored = writer.finish(suffix)
        return JSONResponse({"id": stored.sha256, "object": "upload", "bytes": writer.size,
                             "url": stored.path.as_uri()})

    async def keep_map(self, request: Request) -> Response:
        """The keep map PNG of a prefix held in memory (``omnizip.prefix_id`` of an answer), rendered
        off the event loop once and kept (the last :data:`KEEP_MAPS_CACHED`); ``?title=`` names the
        picture (the page sends the name of the file it uploaded). A 404 for an unknown
        (or evicted) id, and for a prefix whose decoded frames and plan were not kept (read from the
        disk cache, or dropped after opening)."""
        from starlette.responses import Response

        prefix_id = request.path_params["prefix_id"]
        title = request.query_params.get("title")
        if title is not None and not (0 < len(title) <= MAX_TITLE_CHARS and title.isprintable()):
            raise bad_request(f"title must be 1 to {MAX_TITLE_CHARS} printable characters", "title",
                              code="invalid_title")
        png = self.keep_maps.get((prefix_id, title))
        if png is None:
            png = await asyncio.to_thread(self.engine.keep_map_png, prefix_id, title)
            self.keep_maps[(prefix_id, title)] = png
            while len(self.keep_maps) > KEEP_MAPS_CACHED:
                self.keep_maps.pop(next(iter(self.keep_maps)))
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def chat(self, request: Request) -> Response:
        arrived = time.perf_counter()  # reading the body, the file's checks and its hash count as waiting
        body = await read_body(request, self.settings.request_byte_limit)
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad_request(f"the request body is not valid JSON ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0][:120]})", code="invalid_json") from None
        chat = parse_chat_request(parsed)
        self.check_model(chat.model)
        media = await asyncio.to_thread(resolve_media, chat.media, self.settings)
        media = await asyncio.to_thread(self.engine.hashes.hashed, media)
        job = self.engine.submit(chat, media, asyncio.get_running_loop(), arrived)
        if chat.stream:
            # the status line waits for the first event, so that a request the engine refuses (a bad
            # file, a prompt too long) gets its 4xx like a non-streaming one
            watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
            try:
                first = await self._next(job)
            finally:
                watcher.cancel()
            if first[0] == "error":
                raise first[1]
            return self._streaming(job, first)
        return await self._whole(job, request)

    # ------------------------------------------------------------------------------ answers
    async def _next(self, job: Job) -> tuple[str, Any]:
        remaining = job.arrived + self.settings.request_timeout - time.perf_counter()
        try:
            return await asyncio.wait_for(job.events.get(), timeout=max(remaining, 0.0) + 1.0)
        except (asyncio.TimeoutError, TimeoutError):
            job.cancel()
            return "error", ApiError(504, f"the request took longer than --request-timeout "
                                          f"{self.settings.request_timeout:g} s", code="timeout")

    async def _whole(self, job: Job, request: Request) -> Response:
        from starlette.responses import JSONResponse

        watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
        try:
            pieces = []
            while True:
                kind, value = await self._next(job)
                if kind == "text":
                    pieces.append(value)
                elif kind == "error":
                    raise value
                else:
                    break
        finally:
            watcher.cancel()
            job.cancel()  # a no-op once done; stops the answer if this task was cancelled
        result: Result = value
        return JSONResponse({
            "id": job.id, "object": "chat.completion", "created": job.created, "model": self.settings.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason, "logprobs": None}],
            "usage": usage(result), "system_fingerprint": None, "omnizip": result.omnizip,
        })

    def _streaming(self, job: Job, first: tuple[str, Any]) -> Response:
        from starlette.responses import StreamingResponse

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            return {"id": job.id, "object": "chat.completion.chunk", "created": job.created,
                    "model": self.settings.model_name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}

        async def events() -> AsyncIterator[bytes]:
            try:
                yield sse(chunk({"role": "assistant", "content": ""}))
                pending: tuple[str, Any] | None = first
                while True:
                    kind, value = pending if pending is not None else await self._next(job)
                    pending = None
                    if kind == "text":
                        yield sse(chunk({"content": value}))
                    elif kind == "error":
                        yield sse(value.body())
                        break
                    else:
                        result: Result = value
                        yield sse(chunk({}, result.finish_reason, omnizip=result.omnizip))
                        if job.request.include_usage:
                            yield sse({"id": job.id, "object": "chat.completion.chunk", "created": job.created,
                                       "model": self.settings.model_name, "choices": [], "usage": usage(result)})
                        break
                yield b"data: [DONE]\n\n"
            finally:
                job.cancel()  # the client went away (or the stream ended): stop at the next token

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    """Cancel ``job`` when the client of a non-streaming request goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.cancel()
            return


class _Guard:
    """ASGI middleware: the API key, request counting, and :class:`ApiError` as JSON for every route."""

    def __init__(self, app: Callable[..., Awaitable[None]], app_state: ServeApp) -> None:
        self.app = app
        self.state = app_state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        status: list[int] = []

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        request = Request(scope, receive)
        try:
            if not self.state.authorised(request):
                raise ApiError(401, "a valid API key is required (Authorization: Bearer KEY)", code="invalid_api_key")
            await self.app(scope, receive, counting_send)
        except ApiError as error:
            if not status:
                await error_response(error)(scope, receive, counting_send)
        finally:
            route = scope.get("path", "")
            route = route if route in self.state.fixed_paths else "other"
            self.state.engine.metrics.requests.labels(route=route, status=str(status[0] if status else 500)).inc()


def create_app(engine: Engine, settings: ServeSettings) -> Starlette:
    """The ASGI app serving ``engine`` (what ``omnizip serve`` hands to uvicorn)."""
    return ServeApp(engine, settings).build()
