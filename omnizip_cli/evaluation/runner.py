"""The evaluation loop: group items by video, answer every pending (item, setting), score, record.

Single process by default (no Ray import). With ``workers > 1`` or a ``ray_address`` the same video
jobs (:mod:`omnizip_cli.evaluation.jobs`) run on Ray actors (:mod:`omnizip_cli.evaluation.ray_runner`);
the driver writes the same results folder either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnizip_cli import __version__
from omnizip_cli.errors import UsageError
from omnizip_cli.evaluation.benchmark_prompts import prompt_style
from omnizip_cli.evaluation.datasets import Dataset
from omnizip_cli.evaluation.jobs import answer_job, plan_jobs
from omnizip_cli.evaluation.protocol import AnswererFactory, Setting
from omnizip_cli.evaluation.results import CHART, KIND, EvaluationFolder, compute_metrics
from omnizip_cli.evaluation.samples import sample_rows
from omnizip_cli.evaluation.scoring import PROMPT_VERSION

__all__ = [
    "EvaluationRequest",
    "EvaluationResult",
    "Progress",
    "run_evaluation",
]


@dataclass(frozen=True)
class Progress:
    """Where a run stands, after each answer (single process) or each video (Ray).

    ``done`` counts (item, setting) pairs finished, those of earlier runs (``resumed``) included,
    out of ``total``; ``errors`` failed in this run. ``answers_per_second`` is over this run's
    answers, ``eta_seconds`` extrapolates it (None until the first answer).
    """

    done: int
    total: int
    resumed: int
    errors: int
    elapsed_seconds: float
    answers_per_second: float | None
    eta_seconds: float | None
    video: str | None = None
    settings: int = 1

    @property
    def items_per_second(self) -> float | None:
        """Questions per second, each answered under every setting."""
        return None if self.answers_per_second is None else self.answers_per_second / max(self.settings, 1)


ProgressCallback = Callable[[Progress], None]


@dataclass
class EvaluationRequest:
    """What to evaluate and where to write it.

    ``model`` identifies the model and everything that changes its answers (id, revision, dtype,
    fps, max pixels, max new tokens, ...): it goes to ``config.json`` and a resumed run must match
    it. ``options`` are further run options recorded and matched the same way. ``workers`` > 1
    or ``ray_address`` runs on Ray with ``gpus_per_worker`` GPUs and ``cpus_per_worker`` CPUs per
    actor (one model per actor).
    """

    dataset: Dataset
    settings: list[Setting]
    out: Path
    model: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    workers: int = 1
    ray_address: str | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def config(self) -> dict[str, Any]:
        """The content of ``config.json`` (``kind`` marks the folder as an evaluation's). The prompt
        style is recorded only for Video-MME and WorldSense (lmms-eval's wording), so that runs of
        other layouts from before it still resume and those of the benchmarks do not mix prompts."""
        style = prompt_style(self.dataset.layout)
        extra = {"prompt_style": style} if style != "omnizip" else {}
        return {
            "kind": KIND,
            "omnizip_version": __version__,
            "model": self.model,
            "settings": [s.to_dict() for s in self.settings],
            "dataset": self.dataset.describe(),
            "options": {"prompt_version": PROMPT_VERSION, **extra, **self.options},
        }


@dataclass
class EvaluationResult:
    """What a run did: the folder, its metrics, and this run's counts."""

    out: Path
    metrics: dict[str, Any]
    answered: int
    resumed: int
    errors: int
    elapsed_seconds: float
    chart: Path | None
    jobs_per_worker: dict[str, int] = field(default_factory=dict)  # videos run per worker ("local" without Ray)


def run_evaluation(request: EvaluationRequest, factory: AnswererFactory,
                   progress: ProgressCallback | None = None) -> EvaluationResult:
    """Run (or resume) an evaluation and write the results folder; see :mod:`.results`.

    Raises :class:`UsageError` for bad options, an ``out`` that cannot be written, a folder
    holding a different run or other files, or a folder that another evaluation is writing (it
    holds the folder's lock for the whole run, so two runs never append the same answers). The
    answerer is built (the model loaded) only when something is left to do.
    """
    if not request.settings:
        raise UsageError("no settings to evaluate")
    if request.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {request.workers}")
    if not request.dataset.items:
        problems = request.dataset.problems
        first = f"; first: {problems[0]}" if problems else ""
        raise UsageError(f"{request.dataset.path} has no usable items ({len(problems)} bad rows{first})")
    folder = EvaluationFolder(request.out)
    folder.check_writable()
    with folder.lock(KIND):
        return _run_locked(request, factory, folder, progress)


def _run_locked(request: EvaluationRequest, factory: AnswererFactory, folder: EvaluationFolder,
                progress: ProgressCallback | None) -> EvaluationResult:
    """:func:`run_evaluation` once the folder is checked and locked."""
    records = folder.prepare(request.config(), overwrite=request.overwrite)
    jobs = plan_jobs(request.dataset, request.settings, records)
    total = len(request.dataset.items) * len(request.settings)
    resumed = total - sum(len(job.pending) for job in jobs)
    tracker = _Tracker(total=total, resumed=resumed, callback=progress, settings=len(request.settings))
    jobs_per_worker: dict[str, int] = {}
    try:
        if jobs and (request.workers > 1 or request.ray_address):
            from omnizip_cli.evaluation.ray_runner import run_jobs_on_ray

            jobs_per_worker = run_jobs_on_ray(jobs, request.settings, factory, lambda record: tracker.add(folder, record),
                            workers=request.workers, address=request.ray_address,
                            gpus_per_worker=request.gpus_per_worker, cpus_per_worker=request.cpus_per_worker)
        elif jobs:
            answerer = factory()
            for job in jobs:
                for record in answer_job(answerer, job, request.settings):
                    tracker.add(folder, record, video=job.video.name)
            jobs_per_worker = {"local": len(jobs)}
    finally:
        folder.close()
    all_records = folder.read_predictions()
    metrics = compute_metrics(request.dataset, request.settings, all_records)
    metrics["dataset"]["problems"] = [str(p) for p in request.dataset.problems[:100]]
    folder.write_metrics(metrics)
    folder.write_samples(sample_rows(request.dataset, request.settings, all_records))
    chart = _write_chart(folder, request, metrics)
    return EvaluationResult(out=request.out, metrics=metrics, answered=tracker.answered, resumed=resumed,
                            errors=tracker.errors, elapsed_seconds=tracker.elapsed(), chart=chart,
                            jobs_per_worker=jobs_per_worker)


def _write_chart(folder: EvaluationFolder, request: EvaluationRequest, metrics: Mapping[str, Any]) -> Path | None:
    """Draw ``accuracy.png`` from the metrics into the results folder."""
    from omnizip_cli.evaluation.summary import render_accuracy_chart

    return folder.write_chart(CHART, render_accuracy_chart(metrics, model=str(request.model.get("model", "?"))))


@dataclass
class _Tracker:
    total: int
    resumed: int
    callback: ProgressCallback | None
    settings: int = 1
    answered: int = 0
    errors: int = 0
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def add(self, folder: EvaluationFolder, record: Mapping[str, Any], video: str | None = None) -> None:
        folder.append(record)
        self.answered += 1
        self.errors += bool(record.get("error"))
        if self.callback is None:
            return
        elapsed = self.elapsed()
        rate = self.answered / elapsed if elapsed > 0 else None
        done = self.resumed + self.answered
        eta = (self.total - done) / rate if rate else None
        self.callback(Progress(done=done, total=self.total, resumed=self.resumed, errors=self.errors,
                               elapsed_seconds=elapsed, answers_per_second=rate, eta_seconds=eta,
                               video=video or record.get("video"), settings=self.settings))
