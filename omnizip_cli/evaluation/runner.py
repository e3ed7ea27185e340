"""The evaluation loop: group items by video, answer every pending (item, setting), score, record.

Single process by default (no Ray import). With ``workers > 1`` or a ``ray_address`` the same video
jobs run on Ray actors (:mod:`omnizip_cli.evaluation.ray_runner`); the driver writes the same
results folder either way.

Order inside a video: settings outer, questions inner, so an answerer that keeps one keep plan and
prefix per setting builds each once. A video is opened only when it has pending pairs, and once for
all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnizip_cli import __version__
from omnizip_cli.errors import OmnizipError, UsageError
from omnizip_cli.evaluation.datasets import Dataset, Item
from omnizip_cli.evaluation.protocol import AnswererFactory, Prediction, Setting, VideoAnswerer
from omnizip_cli.evaluation.results import CHART, EvaluationFolder, compute_metrics
from omnizip_cli.evaluation.scoring import PROMPT_VERSION, build_prompt, score

__all__ = [
    "EvaluationRequest",
    "EvaluationResult",
    "Progress",
    "VideoJob",
    "answer_job",
    "plan_jobs",
    "run_evaluation",
]


@dataclass(frozen=True)
class VideoJob:
    """The pending work on one video: its items and the (item id, setting key) pairs still to do."""

    video: Path
    items: tuple[Item, ...]
    pending: tuple[tuple[str, str], ...]


def plan_jobs(dataset: Dataset, settings: Sequence[Setting], done: Mapping[tuple[str, str], Any]) -> list[VideoJob]:
    """One job per video with pending pairs, in order of first appearance; pairs settings-outer.

    A pair is done when ``done`` has a record for it without an error (errors are retried)."""
    by_video: dict[Path, list[Item]] = {}
    for item in dataset.items:
        by_video.setdefault(item.video, []).append(item)
    jobs = []
    for video, items in by_video.items():
        pending = tuple(
            (item.id, setting.key) for setting in settings for item in items
            if (record := done.get((item.id, setting.key))) is None or record.get("error")
        )
        if pending:
            jobs.append(VideoJob(video=video, items=tuple(items), pending=pending))
    return jobs


def make_record(item: Item, setting: Setting, prediction: Prediction | None = None,
                error: BaseException | None = None) -> dict[str, Any]:
    """The ``predictions.jsonl`` line for one answer (or one failure)."""
    record: dict[str, Any] = {
        "item": item.id,
        "setting": setting.key,
        "video": item.video_name,
        "question": item.question,
        "category": item.category,
        "multiple_choice": item.is_multiple_choice,
        "answer": item.answer,
        "extracted": None,
        "correct": False,
        "response": None,
        "error": None,
        "error_type": None,
    }
    if prediction is not None:
        extracted, correct = score(item, prediction.text)
        record.update(extracted=extracted, correct=correct, response=prediction.text)
        figures = prediction.to_dict()
        figures.pop("text")
        record.update(figures)
    if error is not None:
        message = error.one_line() if isinstance(error, OmnizipError) else f"{type(error).__name__}: {error}"
        record.update(error=" ".join(message.split()) or type(error).__name__, error_type=type(error).__name__)
    return record


def answer_job(answerer: VideoAnswerer, job: VideoJob, settings: Sequence[Setting]) -> Iterator[dict[str, Any]]:
    """Answer the pending pairs of ``job`` and yield one record per pair.

    A missing video, or a video the answerer cannot open, gives an error record for each pending
    pair; a failed answer gives an error record for that pair. Failures are any ``Exception``
    (``OmnizipError`` messages are kept as they are, others get their type name), so that one
    bad video never ends a long run; ``KeyboardInterrupt`` is not caught.
    """
    items = {item.id: item for item in job.items}
    by_key = {setting.key: setting for setting in settings}
    pairs = [(items[i], by_key[s]) for i, s in job.pending]
    if not job.video.is_file():
        from omnizip_cli.errors import MediaError

        missing = MediaError(f"video not found: {job.video}")
        for item, setting in pairs:
            yield make_record(item, setting, error=missing)
        return
    try:
        opened = answerer.open(job.video)
    except Exception as exc:  # noqa: BLE001 - recorded per item, see the docstring
        for item, setting in pairs:
            yield make_record(item, setting, error=exc)
        return
    try:
        for item, setting in pairs:
            try:
                prediction = opened.answer(build_prompt(item), setting)
            except Exception as exc:  # noqa: BLE001
                yield make_record(item, setting, error=exc)
            else:
                yield make_record(item, setting, prediction)
    finally:
        opened.close()


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
        """The content of ``config.json``."""
        return {
            "omnizip_version": __version__,
            "model": self.model,
            "settings": [s.to_dict() for s in self.settings],
            "dataset": self.dataset.describe(),
            "options": {"prompt_version": PROMPT_VERSION, **self.options},
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

    Raises :class:`UsageError` for bad options or a folder holding a different run. The answerer
    is built (the model loaded) only when something is left to do.
    """
    if not request.settings:
        raise UsageError("no settings to evaluate")
    if request.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {request.workers}")
    if not request.dataset.items:
        raise UsageError(f"{request.dataset.path} has no usable items ({len(request.dataset.problems)} bad rows)")
    folder = EvaluationFolder(request.out)
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
