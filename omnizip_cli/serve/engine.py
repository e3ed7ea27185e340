"""The model side of the server: one model, the prefixes held in memory, one worker thread.

Every model call (opening a video, prefilling a question, decoding) runs on the engine's one worker
thread, in arrival order, so a :class:`~omnizip_cli.generation.Session` is never advanced by two
requests at once. :meth:`Engine.submit` queues a request (a 429 :class:`~.errors.ApiError` with
``Retry-After`` beyond ``max_queue`` waiting) and returns a :class:`Job`, whose events (answer text
pieces, then the result or an error) reach the event loop as they come.

Prefixes: a video's prefilled prefix (per content, media options, compression setting and system
prompt) stays in memory, least recently used first out beyond ``max_prefix_memory`` bytes; it is also
in the disk cache (unless that is off), so an evicted one comes back from disk. A conversation that
extends one answered before continues from its exact token ids (the turns are remembered per
prefix), and the KV cache keeps the longest common prefix of ids, so only new tokens are prefilled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import queue
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MediaError, OmnizipError, OutOfMemory, UsageError
from .errors import ApiError, bad_request
from .media_source import LocalMedia

if TYPE_CHECKING:
    from ..generation import Session
    from ..models.registry import LoadedModel
    from .metrics import ServerMetrics
    from .request import ChatRequest
    from .settings import ServeSettings

#: Completed conversations remembered per prefix (their exact token ids).
TURNS_PER_PREFIX = 256
#: Question tokens reserved in the prompt budget when a video is opened (as ``chat``).
QUESTION_RESERVE = 128


@dataclass
class Held:
    """A prefix held in memory: its session, the conversations answered on it, its size."""

    key: tuple[Any, ...]
    prefix_id: str
    session: Session
    path: Path
    turns: OrderedDict[tuple[tuple[str, str], ...], list[int]] = field(default_factory=OrderedDict)
    bytes: int = 0
    answers: int = 0
    warnings: list[str] = field(default_factory=list)  # the opening's
    keep_map: Any = None  # a KeepMapData (frames, plan) for GET /v1/prefixes/{id}/keep-map.png; None from disk


@dataclass
class Result:
    """A finished answer: its text, the ``omnizip`` object and the usage figures; ``stats``: the
    library's own figures (token ids, the first answer token's logits), for in-process callers."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    omnizip: dict[str, Any]
    stats: Any = None


class Job:
    """One chat request on its way through the engine. Events (on the event loop's queue):
    ``("text", str)``, then ``("done", Result)`` or ``("error", ApiError)``."""

    def __init__(self, request: ChatRequest, media: LocalMedia, loop: asyncio.AbstractEventLoop,
                 arrived: float | None = None) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.request = request
        self.media = media
        self.loop = loop
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        #: ``time.perf_counter()`` when the request arrived (the timeout and time to first token count from it)
        self.arrived = time.perf_counter() if arrived is None else arrived
        self.created = int(time.time())
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop at the next token (or skip the job if it has not started)."""
        self.cancelled.set()

    def emit(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop has closed (shutdown): nobody is listening
            pass


def tensor_bytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes of the tensors reachable from ``value`` (dataclasses, containers, cache layers)."""
    import torch

    seen = set() if seen is None else seen
    if id(value) in seen or value is None or isinstance(value, (str, int, float, bool)):
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size() if value.device.type != "meta" else 0
    if type(value).__module__ == "numpy" and hasattr(value, "nbytes"):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value):
        return sum(tensor_bytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    layers = getattr(value, "layers", None)
    if isinstance(layers, list):  # a transformers Cache
        return sum(tensor_bytes([getattr(layer, "keys", None), getattr(layer, "values", None)], seen)
                   for layer in layers)
    return 0


class ContentHashes:
    """The SHA-256 of local media files, memoised by (path, size, modification time); a file the
    server wrote itself (content-addressed) carries its own. Safe to call from several threads."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int, int], str] = {}

    def of(self, media: LocalMedia) -> str:
        if media.sha256 is not None:
            return media.sha256
        from ..integrity import sha256_file

        stat = media.path.stat()
        memo = (str(media.path), stat.st_size, stat.st_mtime_ns)
        known = self._known.get(memo)
        if known is None:
            known = self._known[memo] = sha256_file(media.path)
        return known

    def hashed(self, media: LocalMedia) -> LocalMedia:
        """``media`` with its ``sha256`` filled in: called on the request's side (a thread of the event
        loop's pool) before the job is queued, so that hashing a large file never holds the model's
        worker thread, and every request behind it, while it reads. A file that cannot be read is a
        400 ``invalid_media``."""
        if media.sha256 is not None:
            return media
        try:
            return dataclasses.replace(media, sha256=self.of(media))
        except OSError as exc:
            raise ApiError(400, f"cannot read {media.path.name} ({exc.strerror or type(exc).__name__})",
                           code="invalid_media") from None


@dataclass(frozen=True)
class PrefixSpec:
    """What a request's prefix is opened with (the server's defaults under its overrides) and the key
    it is held under: content, media options, compression setting, system prompt. ``id``: the short
    form of the key (an answer's ``omnizip.prefix_id``, and the Ray backend's routing key)."""

    media: Any
    compression: Any
    system: str | None
    key: tuple[Any, ...]

    @property
    def id(self) -> str:
        return hashlib.sha256(repr(self.key).encode()).hexdigest()[:16]


def prefix_spec(request: ChatRequest, settings: ServeSettings, content_sha256: str) -> PrefixSpec:
    """The request's :class:`PrefixSpec`; a ``UsageError`` when its media options are invalid."""
    from ..generation.prefix import canonical

    media = request.media_options(settings.media)
    compression = request.compression if request.compression is not None else settings.compression
    system = request.system if request.system is not None else settings.system
    return PrefixSpec(media, compression, system,
                      (content_sha256, canonical(dataclasses.asdict(media)), compression.key, system))


def render_keep_map_png(held: Held, title: str | None = None) -> bytes | None:
    """The keep map of a held prefix as PNG bytes; None when its data was not kept. Uses the
    :class:`~omnizip_cli.report.keep_map.KeepMapData` the engine kept (``held.keep_map``), else builds
    it from the session while its encoded media (``session.video``) is still there. ``title``: the
    picture's title instead of the file's name (an upload's file is named by its SHA-256)."""
    import io

    from ..report.keep_map import keep_map_for_session, render_keep_map

    data = held.keep_map
    if data is None:
        session = held.session
        if session.video is None or session.media is None:
            return None
        data = keep_map_for_session(session)
    if title is not None:
        data = dataclasses.replace(data, title=title)
    buffer = io.BytesIO()
    render_keep_map(data).save(buffer, format="PNG")
    return buffer.getvalue()


def _api_error(exc: BaseException) -> ApiError:
    """A library error as an HTTP error: what the user can fix is a 400; the rest a 500 or 503."""
    from ..generation import PromptTooLong, SessionBusy

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PromptTooLong):
        return ApiError(400, exc.one_line(), param="messages", code="context_length_exceeded")
    if isinstance(exc, (UsageError, MediaError)):
        return ApiError(400, exc.one_line(), code="invalid_media" if isinstance(exc, MediaError) else None)
    if isinstance(exc, OutOfMemory):
        return ApiError(503, exc.one_line(), code="out_of_memory")
    if isinstance(exc, SessionBusy):
        return ApiError(503, exc.one_line(), code="busy")
    if isinstance(exc, OmnizipError):
        return ApiError(500, exc.one_line())
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return ApiError(500, f"internal error: {type(exc).__name__}: {first}".rstrip(": "), code="internal_error")


class Engine:
    """The model, its prefixes and its worker thread (see the module docstring)."""

    def __init__(self, loaded: LoadedModel, settings: ServeSettings, metrics: ServerMetrics) -> None:
        self.loaded = loaded
        self.settings = settings
        self.metrics = metrics
        self.held: OrderedDict[tuple[Any, ...], Held] = OrderedDict()
        self.by_id: dict[str, Held] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0
        self._running: Job | None = None
        self._lock = threading.Lock()
        self.hashes = ContentHashes()
        self._job_seconds: list[float] = []
        self._accepting = True
        self._worker = threading.Thread(target=self._work, name="omnizip-model", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------ the event loop's side
    def submit(self, request: ChatRequest, media: LocalMedia, loop: asyncio.AbstractEventLoop,
               arrived: float | None = None) -> Job:
        """Queue a request that arrived at ``arrived`` (``time.perf_counter()``; None: now); a 429 when
        ``max_queue`` requests already wait, a 503 when shutting down."""
        with self._lock:
            if not self._accepting:
                raise ApiError(503, "the server is shutting down", code="shutting_down")
            if self._waiting >= self.settings.max_queue:
                self.metrics.refused.inc()
                raise ApiError(429, f"the server is busy: {self._waiting} requests are waiting (--max-queue "
                                    f"{self.settings.max_queue}); retry later", code="queue_full",
                               headers={"Retry-After": str(self.retry_after())})
            self._waiting += 1
            self.metrics.queue_length.set(self._waiting)
        job = Job(request, media, loop, arrived)
        self._queue.put(job)
        return job

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue times the recent mean answer time, 1-60."""
        recent = self._job_seconds[-20:]
        mean = sum(recent) / len(recent) if recent else 1.0
        return int(min(60, max(1, math.ceil(mean * (self._waiting + 1)))))

    def status(self) -> dict[str, Any]:
        return {
            "model": self.settings.model_name,
            "queue_length": self._waiting,
            "running": self._running is not None,
            "prefixes_in_memory": len(self.held),
            "prefix_memory_bytes": sum(h.bytes for h in self.held.values()),
            "accepting": self._accepting,
        }

    def begin_shutdown(self, grace: float) -> None:
        """Stop accepting now; on a thread, let the running and queued answers finish within ``grace``
        seconds, then end each one that is left with a 503 ``shutting_down`` error event (so that its
        client gets an error and, streaming, ``[DONE]``, rather than a connection cut by uvicorn)."""
        with self._lock:
            if not self._accepting:
                return
            self._accepting = False
        deadline = time.monotonic() + grace
        threading.Thread(target=self._cancel_at, args=(deadline,), name="omnizip-shutdown", daemon=True).start()

    def _cancel_at(self, deadline: float, why: str | None = None) -> None:
        """Wait until nothing runs or waits, or until ``deadline``; then end the running answer (an
        error event saying ``why``) and every queued one."""
        while (self._running is not None or self._waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        running = self._running
        if running is not None:
            why = why or (f"the server is shutting down: the answer was cancelled after --shutdown-grace "
                          f"{self.settings.shutdown_grace:g} s")
            running.emit("error", ApiError(503, why, code="shutting_down"))
            running.cancel()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is None:
                continue
            with self._lock:
                self._waiting -= 1
                self.metrics.queue_length.set(self._waiting)
            job.cancel()
            job.emit("error", ApiError(503, "the server is shutting down", code="shutting_down"))

    def close(self, grace: float) -> None:
        """Stop accepting; let the running answer finish within ``grace`` seconds, then cancel it and
        every queued one; stop the worker."""
        with self._lock:
            self._accepting = False
        self._cancel_at(time.monotonic() + grace, "the server is shutting down")
        self._queue.put(None)
        self._worker.join(timeout=max(grace, 5.0))

    # ------------------------------------------------------------------------------ the worker thread
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
                self.metrics.queue_length.set(self._waiting)
            if job.cancelled.is_set():
                self.metrics.cancelled.labels(when="queued").inc()
                continue
            if time.perf_counter() - job.arrived > self.settings.request_timeout:
                self.metrics.failed.labels(reason="timeout").inc()
                job.emit("error", ApiError(504, f"the request waited longer than --request-timeout "
                                                f"{self.settings.request_timeout:g} s", code="timeout"))
                continue
            self._running = job
            self.metrics.running.set(1)
            started = time.perf_counter()
            try:
                self._answer(job)
            except BaseException as exc:  # noqa: BLE001 - one request's failure never stops the worker
                error = _api_error(exc)
                if error.status >= 500 and not isinstance(exc, (OmnizipError, ApiError)):
                    sys.stderr.write(f"omnizip serve: {job.id} failed:\n{traceback.format_exc()}")
                self.metrics.failed.labels(reason=error.code or str(error.status)).inc()
                job.emit("error", error)
            finally:
                self._running = None
                self.metrics.running.set(0)
                self._job_seconds.append(time.perf_counter() - started)
                del self._job_seconds[:-100]

    def _held(self, job: Job) -> tuple[Held, bool]:
        """The prefix for the job's media and options (opened when not in memory); True when it was."""
        from ..generation import OpenOptions, Session

        request, settings = job.request, self.settings
        try:
            spec = prefix_spec(request, settings, self.hashes.of(job.media))
        except UsageError as exc:
            raise bad_request(f"mm_processor_kwargs: {exc.one_line().replace('--', '')}", "mm_processor_kwargs") \
                from None
        key = spec.key
        held = self.held.get(key)
        if held is not None:
            summary = held.session.summary
            if request.use_audio_in_video and summary is not None and "audio" not in summary.kind:
                raise self._no_audio(job.media.path)
            self.held.move_to_end(key)
            return held, True
        if request.use_audio_in_video:
            self._check_audio_track(job.media.path)
        options = OpenOptions(media=spec.media, compression=spec.compression, system=spec.system,
                              max_new_tokens=settings.max_tokens,
                              question_reserve=QUESTION_RESERVE, decoder=settings.decoder,
                              cache=settings.use_disk_cache)
        warnings: list[str] = []
        session = Session.open(self.loaded, job.media.path, options, warn=warnings.append)
        keep_map = None
        if session.video is not None and session.media is not None:
            from ..report.keep_map import keep_map_for_session

            try:
                keep_map = keep_map_for_session(session)  # arrays only: rendered when the page asks
            except Exception as exc:  # noqa: BLE001 - a keep map never fails an answer
                warnings.append(f"no keep map: {type(exc).__name__}: {exc}")
        session.video = None  # the encoded media is only needed to re-plan; the prefix is what answers
        held = Held(key=key, prefix_id=spec.id, session=session, path=job.media.path, warnings=warnings,
                    keep_map=keep_map)
        self.held[key] = held
        self.by_id[spec.id] = held
        return held, False

    def keep_map_png(self, prefix_id: str, title: str | None = None) -> bytes:
        """The keep map of held prefix ``prefix_id`` as PNG bytes, titled ``title`` (None: the file's
        name), rendered here: call it off the event loop. A 404 ``prefix_not_found`` for an id not held
        (unknown, or evicted from memory), a 404 ``keep_map_unavailable`` for a prefix whose decoded
        frames and keep plan were not kept."""
        held = self.by_id.get(prefix_id)
        if held is None:
            raise ApiError(404, f"no prefix {prefix_id!r} is held by this server (unknown, or evicted from memory)",
                           param="prefix_id", code="prefix_not_found")
        png = render_keep_map_png(held, title)
        if png is None:
            raise ApiError(404, f"no keep map for prefix {prefix_id!r}: the server did not keep its decoded "
                                "frames and keep plan (a prefix read from the disk cache has none)",
                           param="prefix_id", code="keep_map_unavailable")
        return png

    @staticmethod
    def _no_audio(path: Path) -> ApiError:
        return bad_request(f"mm_processor_kwargs.use_audio_in_video is true but {path.name} has no audio track "
                           "(send false to use the video alone)", "mm_processor_kwargs.use_audio_in_video",
                           "no_audio_track")

    def _check_audio_track(self, path: Path) -> None:
        from ..media.container import probe

        try:
            found = probe(path)
        except OmnizipError:
            return  # the opening says what is wrong with the file
        if found.audio is None:
            raise self._no_audio(path)

    def _turn_ids(self, held: Held, request: ChatRequest) -> list[int]:
        """The ids after the prefix: the conversation (exact ids where it was answered here) and the question."""
        session = held.session
        turns = request.turns
        ids: list[int] = []
        start = 0
        for k in range(len(turns), 0, -1):
            known = held.turns.get(turns[:k])
            if known is not None:
                ids, start = list(known), k
                held.turns.move_to_end(turns[:k])
                break
        tokenizer = self.loaded.processor.tokenizer
        for question, answer in turns[start:]:
            ids += session.question_ids(question, after=ids)
            ids += list(tokenizer(answer, add_special_tokens=False)["input_ids"]) + session.end_of_turn_ids()
        return ids + session.question_ids(request.question, after=ids)

    def _answer(self, job: Job) -> None:
        held, in_memory = self._held(job)
        try:
            self._answer_on(job, held, in_memory)
        finally:  # whole, cancelled or failed: a prefix just opened counts against the memory budget
            self._account(held)

    def _answer_on(self, job: Job, held: Held, in_memory: bool) -> None:
        from ..report.payload import answer_payload

        request = job.request
        session = held.session
        options = request.generation(self.settings.max_tokens)
        turn = self._turn_ids(held, request)
        prompt = session.prefill.length + len(turn)
        if prompt + options.max_new_tokens > session.context_length:
            raise ApiError(400, f"the prompt's {prompt} tokens plus max_tokens {options.max_new_tokens} exceed the "
                                f"model's context of {session.context_length}", param="max_tokens",
                           code="context_length_exceeded")
        if job.cancelled.is_set():
            self.metrics.cancelled.labels(when="answering").inc()
            return
        closed: list[list[int]] = []
        stats = None
        chunks = session.answer_turn(turn, options, origin=job.arrived, on_complete=closed.append)
        try:
            for chunk in chunks:
                if chunk.text:
                    job.emit("text", chunk.text)
                if chunk.stats is not None:
                    stats = chunk.stats
                if job.cancelled.is_set():
                    break
                if time.perf_counter() - job.arrived > self.settings.request_timeout:
                    raise ApiError(504, f"the answer took longer than --request-timeout "
                                        f"{self.settings.request_timeout:g} s", code="timeout")
        finally:
            chunks.close()
        if stats is None:  # cancelled: the client went away
            self.metrics.cancelled.labels(when="answering").inc()
            return
        if closed and stats.stop_reason != "stop":
            held.turns[(*request.turns, (request.question, stats.text))] = closed[0]
            while len(held.turns) > TURNS_PER_PREFIX:
                held.turns.popitem(last=False)
        first = held.answers == 0 and not in_memory
        held.answers += 1
        payload = answer_payload(session, stats, question=request.question,
                                 config={"media": str(held.path), "model": self.settings.model_name},
                                 include_setup=first)
        tokens = payload["tokens"]
        media_before = tokens["audio"]["before"] + tokens["video"]["before"]
        media_after = tokens["audio"]["after"] + tokens["video"]["after"]
        summary = session.summary
        omnizip = {
            "prefix_id": held.prefix_id,
            "prefix_source": stats.prefix_source,
            "prompt_tokens_before": payload["generation"]["prompt_tokens_before_compression"],
            "prompt_tokens": stats.prompt_tokens,
            "retention": media_after / media_before if media_before else 1.0,
            "audio_in_video": summary.kind == "video+audio" if summary is not None else None,
            "tokens": tokens,
            "compression": {**payload["compression"], "config": payload["config"]["compression"]},
            "media": payload["media"],
            "generation": payload["generation"],
            "timings": payload["timings"],
            "context": payload["context"],
            "prefix_cache": payload["prefix_cache"],
            "warnings": held.warnings + list(stats.warnings),
        }
        self.metrics.answered(tokens, len(stats.token_ids), stats.prefix_source, stats.time_to_first_token_seconds)
        finish = "length" if stats.stop_reason == "max_new_tokens" else "stop"
        job.emit("done", Result(text=stats.text, finish_reason=finish, prompt_tokens=stats.prompt_tokens,
                                completion_tokens=len(stats.token_ids),
                                cached_tokens=stats.prompt_tokens - stats.prefilled_tokens, omnizip=omnizip,
                                stats=stats))

    def _account(self, held: Held) -> None:
        """Measure ``held`` (its prefix, KV cache and keep map) after an answer, whole, cancelled or
        failed, then evict what no longer fits."""
        session = held.session
        held.bytes = tensor_bytes(session.prefix) + tensor_bytes(session.kv.cache) + tensor_bytes(held.keep_map)
        self._evict()

    def _evict(self) -> None:
        """Drop least recently used prefixes until the held ones fit ``max_prefix_memory``."""
        total = sum(h.bytes for h in self.held.values())
        while self.held and total > self.settings.max_prefix_memory:
            _, held = self.held.popitem(last=False)
            self.by_id.pop(held.prefix_id, None)
            total -= held.bytes
            self.metrics.evicted.inc()
        self.metrics.prefix_bytes.set(total)
        self.metrics.prefixes_held.set(len(self.held))
