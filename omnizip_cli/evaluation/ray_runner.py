"""Scale-out on Ray (``pip install "omnizip[ray]"``): one actor per worker, each with its own model.

Imported only when ``workers > 1`` or a Ray address is given; the single-process path never imports
Ray. Video jobs (:class:`~omnizip_cli.evaluation.jobs.VideoJob`) are handed out one at a time to
whichever actor is free, so a video is opened by exactly one actor, once, and long and short
videos balance out. Each actor builds its answerer from the picklable factory when it starts and
returns the records of a whole video; the driver appends them to ``predictions.jsonl`` as each
video finishes (so with Ray the results are flushed per video, not per answer).

Local (``address`` None): a Ray instance is started for the run (``num_cpus`` and ``num_gpus``
detected by Ray; each actor asks for ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs, so
``gpus_per_worker=1`` gives one model per GPU) and stopped afterwards; the workers get this
checkout of ``omnizip_cli`` on their ``PYTHONPATH``. Cluster (``address="ray://host:10001"`` or
``"auto"``): the package must be installed on the nodes (or shipped with a runtime env of your
own); the driver only connects and never shuts the cluster down.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omnizip_cli.errors import EnvironmentProblem, OmnizipError, UsageError
from omnizip_cli.evaluation.jobs import VideoJob, answer_job
from omnizip_cli.evaluation.protocol import AnswererFactory, Setting
from omnizip_cli.ray_cluster import check_resources, start_ray

__all__ = ["run_jobs_on_ray"]


class _Worker:
    """The actor body: one answerer (one loaded model) per actor."""

    def __init__(self, factory: AnswererFactory, settings: Sequence[Setting]) -> None:
        self.answerer = factory()
        self.settings = list(settings)

    def ready(self) -> bool:
        return True

    def run(self, job: VideoJob) -> tuple[str, list[dict[str, Any]]]:
        return f"{socket.gethostname()}:{os.getpid()}", list(answer_job(self.answerer, job, self.settings))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise EnvironmentProblem("--workers and --ray-address need Ray, which is not installed",
                                 hint='pip install "omnizip[ray]"') from None
    return ray


def run_jobs_on_ray(
    jobs: Sequence[VideoJob],
    settings: Sequence[Setting],
    factory: AnswererFactory,
    on_record: Callable[[Mapping[str, Any]], None],
    workers: int,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
) -> dict[str, int]:
    """Run ``jobs`` on ``workers`` Ray actors and pass every record to ``on_record`` (driver side).

    Returns how many video jobs each worker (``host:pid``) ran.

    Raises :class:`OmnizipError` when an actor dies (the records already passed on are kept, so a
    rerun resumes) and :class:`UsageError` when the cluster cannot host the workers.
    """
    ray = _import_ray()
    if gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise UsageError("GPUs per worker must be >= 0 and CPUs per worker > 0")
    started_here = start_ray(ray, address)
    actors: list[Any] = []
    jobs_per_worker: dict[str, int] = {}
    try:
        count = min(workers, len(jobs))  # no more actors (models) than videos
        check_resources(ray, count, "workers", gpus_per_worker, cpus_per_worker,
                        hint="lower --workers, or the GPUs/CPUs per worker")
        remote = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0)(_Worker)
        actors = [remote.remote(factory, list(settings)) for _ in range(count)]
        try:
            ray.get([actor.ready.remote() for actor in actors])
        except ray.exceptions.RayActorError as exc:
            raise OmnizipError(f"a Ray worker failed to start (building its model): {_cause(exc)}") from None
        queue = list(jobs)
        running: dict[Any, Any] = {}
        for actor in actors:
            if queue:
                running[actor.run.remote(queue.pop(0))] = actor
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            actor = running.pop(ref)
            try:
                worker, records = ray.get(ref)
            except ray.exceptions.RayError as exc:
                raise OmnizipError(f"a Ray worker failed: {_cause(exc)}",
                                   hint="the answers written so far are kept; rerun to resume") from None
            jobs_per_worker[worker] = jobs_per_worker.get(worker, 0) + 1
            for record in records:
                on_record(record)
            if queue:
                running[actor.run.remote(queue.pop(0))] = actor
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()
    return jobs_per_worker


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
