"""``omnizip serve --replicas N`` / ``--ray-address``: the same server with its model on Ray Serve replicas.

Design. The HTTP side is the single-process server's own app (:class:`~.app.ServeApp`: the same routes,
options, errors, streaming and API key), running in the ``omnizip serve`` process; only its backend
changes. :class:`RayEngine` has the :class:`~.engine.Engine` interface the app uses (``submit`` ->
a job with ``events``, ``status()``, ``metrics``, ``keep_map_png``) and hands every chat request to a Ray
Serve deployment (:class:`OmnizipReplica`) through a :class:`~ray.serve.handle.DeploymentHandle`
(``stream=True``: answer pieces come back as they are generated; a client that goes away cancels
the call, which cancels the answer on its replica). Each replica holds one model and one
:class:`~.engine.Engine` (prefixes in memory, the one worker thread), ``num_gpus: 1`` when the
cluster has GPUs (one model per GPU), CPU replicas otherwise. Ray Serve's HTTP proxy is not
started (``proxy_location="Disabled"``): the routing key needs the video's content hash, which an
OpenAI client cannot send, so the ingress computes it and the handle carries it.

Routing: Ray Serve's model multiplexing, keyed by the prefix id (the SHA-256 of the video's content,
the media options, the compression setting and the system prompt: the key a replica's engine holds
the prefix under, and the ``prefix_id`` of the answer). The handle call names it as
``multiplexed_model_id``; a replica "loads" it (:meth:`OmnizipReplica.prefix_slot`, an
``@serve.multiplexed`` method that only records it) and Ray Serve's router then sends that key's
requests to the replica that holds it while it is healthy and not at ``max_ongoing_requests``; a new
key goes to a replica with the fewest keys (so videos spread over the replicas). A key routed to
another replica (the first one overloaded or gone) opens its prefix from the disk cache
(``$OMNIZIP_CACHE/prefixes``, shared when the replicas share a filesystem) or computes it.

Replicas report their state and metrics to a small registry actor every half second; ``/health``
lists them (``replicas``: id, state, pid, host, queue) and sums their queues; ``/metrics`` sums
their Prometheus samples (and the ingress's request counts) and adds ``omnizip_replicas``.

Faults: a replica whose process dies is replaced by Ray Serve; a request that was running on it
ends with a 503 (``code: replica_died``); a request that had not reached a replica yet is sent
once more (to a live one).

Media: requests name files the ingress resolved (allowed folders, uploads, ``data:`` URLs,
downloads); the replicas read the same paths, so on several machines these folders (and
``$OMNIZIP_CACHE``) must be on a shared filesystem.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..ray_cluster import check_resources, start_ray
from .engine import ContentHashes, prefix_spec
from .errors import ApiError

if TYPE_CHECKING:
    from ..models import ModelSpec
    from .media_source import LocalMedia
    from .request import ChatRequest
    from .settings import ServeSettings

APP_NAME = "omnizip"
DEPLOYMENT_NAME = "OmnizipModel"
#: Seconds between a replica's reports to the registry; a replica silent for STALE_S is
#: ``unresponsive``, for GONE_S dropped from ``/health``.
REPORT_S = 0.5
STALE_S = 3.0
GONE_S = 15.0
#: Prefix keys one replica tells the router it holds (least recently used first out); the engine's
#: own memory limit (``--max-prefix-memory``) decides what it really keeps.
KEYS_PER_REPLICA = 256
#: Seconds a replica gets to draw a keep map.
KEEP_MAP_TIMEOUT_S = 60.0
#: Environment variables the replicas get from the ``omnizip serve`` process (a local Ray).
PASSED_ENV = ("OMNIZIP_CACHE", "OMNIZIP_CACHE_MAX_BYTES", "OMNIZIP_DEBUG", "HF_HOME", "HF_HUB_OFFLINE",
              "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")


def import_ray_serve() -> Any:
    from ..errors import EnvironmentProblem

    try:
        from ray import serve
    except ImportError:
        raise EnvironmentProblem("omnizip serve --replicas/--ray-address needs Ray Serve, which is not installed",
                                 hint='pip install "omnizip[serve-ray]"') from None
    return serve


# ---------------------------------------------------------------------------------------------- prefix keys
def prefix_id(request: ChatRequest, settings: ServeSettings, content_sha256: str) -> str:
    """The id the engine holds the request's prefix under (:func:`.engine.prefix_spec`); the routing
    key. A request whose media options are invalid gets a key of its content alone (the replica
    answers it with the 400)."""
    from ..errors import UsageError

    try:
        return prefix_spec(request, settings, content_sha256).id
    except UsageError:
        return hashlib.sha256(content_sha256.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- replica side
class Registry:
    """A Ray actor: the replicas' latest reports (state and metrics), by replica id."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, Any]] = {}

    def report(self, replica: str, info: dict[str, Any], metrics: bytes) -> None:
        self.reports[replica] = {"info": info, "metrics": metrics, "at": time.monotonic()}

    def forget(self, replica: str) -> None:
        self.reports.pop(replica, None)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        for replica in [r for r, v in self.reports.items() if now - v["at"] > GONE_S]:
            del self.reports[replica]
        return {r: {**v, "age": now - v["at"]} for r, v in self.reports.items()}


class OmnizipReplica:
    """The body of one Ray Serve replica: a loaded model and its :class:`~.engine.Engine`."""

    def __init__(self, model: ModelSpec, settings: ServeSettings, registry: Any, verbose: bool = False) -> None:
        from ray import serve

        from ..cli.app import prepare_environment
        from ..models import load_model
        from .engine import Engine
        from .metrics import ServerMetrics

        prepare_environment(verbose)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.registry = registry
        self.engine = Engine(load_model(model), settings, ServerMetrics())
        self.started = time.time()
        self._stop = threading.Event()
        self._reporter = threading.Thread(target=self._report_loop, name="omnizip-report", daemon=True)
        self._reporter.start()

    def _info(self) -> dict[str, Any]:
        return {"replica": self.replica_id, "pid": self.pid, "host": self.host, "started": int(self.started),
                **self.engine.status()}

    def _report_loop(self) -> None:
        while not self._stop.wait(REPORT_S):
            try:
                self.registry.report.remote(self.replica_id, self._info(), self.engine.metrics.render()[0])
            except Exception:  # noqa: BLE001 - the registry is gone (shutting down): keep serving
                pass

    async def prefix_slot(self, key: str) -> str:
        return key

    def keep_map(self, prefix_id: str, title: str | None = None) -> tuple[str, Any]:
        """``("png", bytes)``, or ``("error", ApiError)`` when this replica does not hold ``prefix_id``
        or kept no keep map for it (the ingress may then ask again: see :meth:`RayEngine.keep_map_png`)."""
        try:
            return "png", self.engine.keep_map_png(prefix_id, title)
        except ApiError as error:
            return "error", error

    def check_health(self) -> None:
        if not self._reporter.is_alive() or not self.engine._worker.is_alive():
            raise RuntimeError("the model worker thread stopped")

    async def answer(self, request: ChatRequest, media: LocalMedia, waited: float = 0.0) -> Any:
        """An async generator of ``("started", replica)``, then the engine's events for the request:
        ``("text", str)``..., then ``("done", Result)`` (its ``omnizip`` naming this replica) or
        ``("error", ApiError)``. ``waited``: seconds the request spent at the ingress before this call
        (its timeout and time to first token count from its arrival there)."""
        from ray import serve

        key = serve.get_multiplexed_model_id()
        if key:
            await self.prefix_slot(key)
        try:
            job = self.engine.submit(request, media, asyncio.get_running_loop(),
                                     time.perf_counter() - max(0.0, waited))
        except ApiError as error:
            yield ("error", error)
            return
        yield ("started", self.replica_id)
        try:
            while True:
                kind, value = await job.events.get()
                if kind == "done":
                    value.omnizip["replica"] = self.replica_id
                yield (kind, value)
                if kind != "text":
                    return
        finally:
            job.cancel()  # the caller went away (or the answer ended): stop at the next token

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self.engine.close(grace=0.0)


def _with_multiplexing(cls: type) -> type:
    """``OmnizipReplica`` with its ``prefix_slot`` under ``@serve.multiplexed`` (Ray imported lazily)."""
    from ray import serve

    class Replica(cls):  # type: ignore[misc, valid-type]
        @serve.multiplexed(max_num_models_per_replica=KEYS_PER_REPLICA)
        async def prefix_slot(self, key: str) -> str:
            return key

    Replica.__name__ = Replica.__qualname__ = DEPLOYMENT_NAME
    return Replica


# ---------------------------------------------------------------------------------------------- ingress side
class RayJob:
    """One chat request sent to the replicas: the same events as :class:`~.engine.Job`."""

    def __init__(self, engine: RayEngine, request: ChatRequest, media: LocalMedia,
                 loop: asyncio.AbstractEventLoop, arrived: float | None = None) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.request = request
        self.media = media
        self.arrived = time.perf_counter() if arrived is None else arrived
        self.created = int(time.time())
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.replica: str | None = None
        self._engine = engine
        self._response: Any = None
        self._finished = False
        self._task = loop.create_task(self._run())

    def cancel(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._response is not None:
            self._response.cancel()
        self._task.cancel()

    def _end(self, kind: str, value: Any) -> None:
        self.events.put_nowait((kind, value))
        self._finished = True

    async def _run(self) -> None:
        import ray.exceptions

        engine = self._engine
        try:
            key = await asyncio.to_thread(engine.routing_key, self.request, self.media)
        except Exception as exc:  # noqa: BLE001 - an unreadable file: the replica would say the same
            self._end("error", ApiError(400, f"the media file cannot be read: {exc}", code="invalid_media"))
            return
        for attempt in (1, 2):
            started = False
            response = engine.handle.options(multiplexed_model_id=key, stream=True).answer.remote(
                self.request, self.media, time.perf_counter() - self.arrived)
            self._response = response
            try:
                async for kind, value in response:
                    if kind == "started":
                        started, self.replica = True, value
                        continue
                    if kind == "text":
                        self.events.put_nowait((kind, value))
                        continue
                    self._end(kind, value)
                    return
                self._end("error", ApiError(503, "the replica ended the answer without a result; retry the request",
                                            code="replica_died"))
                return
            except asyncio.CancelledError:
                response.cancel()
                raise
            except ray.exceptions.RayActorError as exc:
                if self.replica is not None:
                    engine.forget(self.replica)
                if not started and attempt == 1:
                    continue  # it never reached a replica: send it once more (to a live one)
                engine.metrics.failed.labels(reason="replica_died").inc()
                self._end("error", ApiError(503, "the replica answering this request stopped (its process died: "
                                                 f"{type(exc).__name__}); Ray Serve is replacing it; retry the request",
                                            code="replica_died"))
                return
            except Exception as exc:  # noqa: BLE001 - a Ray or Serve failure: a clear error, not a hang
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                engine.metrics.failed.labels(reason="ray_error").inc()
                self._end("error", ApiError(503, f"the model replicas could not answer ({type(exc).__name__}: "
                                                 f"{first}); retry the request", code="replica_unavailable"))
                return


class _AggregatedMetrics:
    """The ingress's :class:`~.metrics.ServerMetrics` (its request counts) plus the replicas' metrics,
    summed per series, in the Prometheus text format."""

    def __init__(self, engine: RayEngine) -> None:
        from .metrics import ServerMetrics

        self.own = ServerMetrics()
        self.requests = self.own.requests
        self.failed = self.own.failed
        self._engine = engine

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST
        from prometheus_client.parser import text_string_to_metric_families

        texts = [self.own.render()[0]] + [r["metrics"] for r in self._engine.reports().values()]
        families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
        for text in texts:
            for family in text_string_to_metric_families(text.decode()):
                _, _, samples = families.setdefault(family.name, (family.type, family.documentation, {}))
                for sample in family.samples:
                    series = (sample.name, tuple(sorted(sample.labels.items())))
                    samples[series] = samples.get(series, 0.0) + sample.value
        states = self._engine.replica_states()
        lines = ["# HELP omnizip_replicas Model replicas, by state", "# TYPE omnizip_replicas gauge"]
        for state in sorted(set(states) | {"running"}):
            lines.append(f'omnizip_replicas{{state="{state}"}} {states.get(state, 0)}')
        for name, (kind, doc, samples) in families.items():
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} {kind}")
            for (sample_name, labels), value in samples.items():
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{sample_name}{{{label_text}}} {_number(value)}" if labels
                             else f"{sample_name} {_number(value)}")
        return ("\n".join(lines) + "\n").encode(), CONTENT_TYPE_LATEST


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if value != int(value) else f"{int(value)}.0"


class RayEngine:
    """The :class:`~.engine.Engine` interface over the Ray Serve deployment (see the module docstring)."""

    def __init__(self, handle: Any, registry: Any, settings: ServeSettings, replicas: int,
                 owns_ray: bool) -> None:
        self.handle = handle
        self.registry = registry
        self.settings = settings
        self.target = replicas
        self.owns_ray = owns_ray
        self.metrics = _AggregatedMetrics(self)
        self.hashes = ContentHashes()
        self._reports: dict[str, dict[str, Any]] = {}
        self._deployment: dict[str, Any] = {}
        self._accepting = True
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="omnizip-replicas", daemon=True)
        self._poll_once()
        self._poller.start()

    # ------------------------------------------------------------------------------ the app's interface
    def submit(self, request: ChatRequest, media: LocalMedia, loop: asyncio.AbstractEventLoop,
               arrived: float | None = None) -> RayJob:
        if not self._accepting:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        if not any(r["state"] == "running" for r in self._replica_list()) and not self._deployment.get("running"):
            raise ApiError(503, "no model replica is running (Ray Serve is starting or replacing them); retry later",
                           code="no_replica", headers={"Retry-After": "5"})
        return RayJob(self, request, media, loop, arrived)

    def status(self) -> dict[str, Any]:
        replicas = self._replica_list()
        running = [r for r in replicas if r["state"] == "running"]
        return {
            "status": "ok" if len(running) >= self.target else "degraded" if running else "unavailable",
            "model": self.settings.model_name,
            "queue_length": sum(r.get("queue_length", 0) for r in running),
            "running": any(r.get("running") for r in running),
            "prefixes_in_memory": sum(r.get("prefixes_in_memory", 0) for r in running),
            "prefix_memory_bytes": sum(r.get("prefix_memory_bytes", 0) for r in running),
            "accepting": self._accepting,
            "replicas_target": self.target,
            "deployment": self._deployment,
            "replicas": replicas,
        }

    def begin_shutdown(self, grace: float) -> None:
        """Stop accepting (SIGTERM): the answers in flight on the replicas go on until the HTTP side has
        drained or its grace has run out (then their clients' cancellations reach the replicas)."""
        self._accepting = False

    def close(self, grace: float) -> None:
        """Stop accepting; remove the deployment (the replicas finish within ``grace`` seconds) and,
        when this process started Ray, stop it."""
        import ray
        from ray import serve

        self._accepting = False
        self._stop.set()
        self._poller.join(timeout=10)  # before Ray stops under it
        if self.owns_ray:  # the HTTP side has drained: stopping Ray stops the replicas (a controller that a
            ray.shutdown()  # Ctrl-C in the terminal already stopped would make serve.delete wait forever)
            return
        deleting = threading.Thread(target=serve.delete, args=(APP_NAME,), daemon=True)
        deleting.start()
        deleting.join(timeout=grace + 30)

    def keep_map_png(self, prefix_id: str, title: str | None = None) -> bytes:
        """The keep map of ``prefix_id``, drawn by the replica that holds the prefix (blocking: call it
        off the event loop). The call is routed by the prefix id, as the prefix's answers are, so it
        reaches the holding replica unless that one is at ``max_ongoing_requests``; a replica that
        does not hold the prefix says so and the call is sent again, up to once per replica, before
        the 404 (``prefix_not_found``, or ``keep_map_unavailable`` from the holder)."""
        error: ApiError | None = None
        for _ in range(max(1, len(self._replica_list()))):
            try:
                kind, value = self.handle.options(multiplexed_model_id=prefix_id).keep_map.remote(prefix_id, title) \
                    .result(timeout_s=KEEP_MAP_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a Ray failure: a clear error, not a hang
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise ApiError(503, f"the model replicas could not draw the keep map ({type(exc).__name__}: "
                                    f"{first}); retry", code="replica_unavailable") from None
            if kind == "png":
                return value
            error = value
            if error.code != "prefix_not_found":
                break
        assert error is not None
        raise error

    # ------------------------------------------------------------------------------ routing
    def routing_key(self, request: ChatRequest, media: LocalMedia) -> str:
        return prefix_id(request, self.settings, self.hashes.of(media))

    # ------------------------------------------------------------------------------ replica state
    def reports(self) -> dict[str, dict[str, Any]]:
        return dict(self._reports)

    def forget(self, replica: str) -> None:
        self._reports.pop(replica, None)
        try:
            self.registry.forget.remote(replica)
        except Exception:  # noqa: BLE001
            pass

    def _replica_list(self) -> list[dict[str, Any]]:
        out = []
        for replica, report in sorted(self._reports.items()):
            state = "running" if report["age"] < STALE_S else "unresponsive"
            out.append({**report["info"], "replica": replica, "state": state,
                        "last_report_seconds": round(report["age"], 2)})
        return out

    def replica_states(self) -> dict[str, int]:
        states: dict[str, int] = {}
        for replica in self._replica_list():
            states[replica["state"]] = states.get(replica["state"], 0) + 1
        return states

    def _poll_once(self) -> None:
        import ray
        from ray import serve

        try:
            self._reports = ray.get(self.registry.snapshot.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - keep the last view
            pass
        try:
            app = serve.status().applications.get(APP_NAME)
            if app is not None:
                deployment = app.deployments.get(DEPLOYMENT_NAME)
                states = {str(getattr(k, "value", k)).lower(): v for k, v in
                          (deployment.replica_states.items() if deployment is not None else ())}
                self._deployment = {"status": str(getattr(app.status, "value", app.status)).lower(),
                                    "replica_states": states, "running": states.get("running", 0)}
        except Exception:  # noqa: BLE001
            pass

    def _poll_loop(self) -> None:
        while not self._stop.wait(REPORT_S):
            try:
                self._poll_once()
            except BaseException:  # noqa: BLE001 - Ray going away under the poller (SystemExit from its client)
                if self._stop.is_set():
                    return
                raise


def start_ray_engine(model: ModelSpec, settings: ServeSettings, replicas: int, address: str | None = None, *,
                     cpus_per_replica: float = 1.0, ray_init: dict[str, Any] | None = None,
                     verbose: bool = False, replica_class: type | None = None) -> RayEngine:
    """Start (or connect to) Ray, deploy ``replicas`` model replicas and return the backend once they
    have loaded the model. ``address`` None: a local Ray for this process (stopped by ``close``).
    ``replica_class``: a subclass of :class:`OmnizipReplica` (tests inject faults with one)."""
    serve = import_ray_serve()
    import ray

    from ..errors import OmnizipError, UsageError

    if replicas < 1:
        raise UsageError("--replicas must be at least 1")
    owns_ray = start_ray(ray, address, log_to_driver=verbose, env_names=PASSED_ENV, **(ray_init or {}))
    try:
        gpus = 1 if model.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        check_resources(ray, replicas, "replicas", gpus, cpus_per_replica, hint="lower --replicas")
        serve.start(proxy_location="Disabled")
        registry = ray.remote(num_cpus=0)(Registry).remote()
        deployment = serve.deployment(
            _with_multiplexing(replica_class or OmnizipReplica), name=DEPLOYMENT_NAME, num_replicas=replicas,
            ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus},
            max_ongoing_requests=settings.max_queue + 1,
            health_check_period_s=2.0, health_check_timeout_s=30.0,
            graceful_shutdown_timeout_s=max(settings.shutdown_grace, 1.0), graceful_shutdown_wait_loop_s=0.5,
        )
        sys.stderr.write(f"omnizip serve: starting {replicas} replicas of {settings.model_name} on Ray Serve "
                         f"({'1 GPU' if gpus else f'{cpus_per_replica:g} CPU'} each)\n")
        try:
            handle = serve.run(deployment.bind(model, settings, registry, verbose), name=APP_NAME, route_prefix=None)
        except RuntimeError as exc:
            raise OmnizipError(f"the model replicas did not start: {str(exc).strip().splitlines()[-1][:300]}") \
                from None
        engine = RayEngine(handle, registry, settings, replicas, owns_ray)
        deadline = time.monotonic() + 30
        while len(engine._reports) < replicas and time.monotonic() < deadline:
            time.sleep(0.1)
            engine._poll_once()
        return engine
    except BaseException:
        if owns_ray:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        raise
