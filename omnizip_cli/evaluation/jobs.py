"""The unit of work of an evaluation: one video's pending (item, setting) pairs, and answering them.

Shared by the single-process loop (:mod:`omnizip_cli.evaluation.runner`) and the Ray actors
(:mod:`omnizip_cli.evaluation.ray_runner`), which both import this module (it imports neither).

Order inside a video: settings outer, questions inner, so an answerer that keeps one keep plan and
prefix per setting builds each once. A video is opened only when it has pending pairs, and once for
all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnizip_cli.errors import OmnizipError
from omnizip_cli.evaluation.benchmark_prompts import prompt_style
from omnizip_cli.evaluation.datasets import Dataset, Item
from omnizip_cli.evaluation.protocol import Prediction, Setting, VideoAnswerer
from omnizip_cli.evaluation.scoring import build_prompt, score

__all__ = ["VideoJob", "answer_job", "make_record", "plan_jobs"]


@dataclass(frozen=True)
class VideoJob:
    """The pending work on one video: its items and the (item id, setting key) pairs still to do."""

    video: Path
    items: tuple[Item, ...]
    pending: tuple[tuple[str, str], ...]
    style: str = "omnizip"  # the prompt style (:func:`omnizip_cli.evaluation.benchmark_prompts.prompt_style`)


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
            jobs.append(VideoJob(video=video, items=tuple(items), pending=pending,
                                 style=prompt_style(dataset.layout)))
    return jobs


def make_record(item: Item, setting: Setting, prediction: Prediction | None = None,
                error: BaseException | None = None, style: str = "omnizip") -> dict[str, Any]:
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
        "retention_realized": None,
    }
    if prediction is not None:
        extracted, correct = score(item, prediction.text, style)
        record.update(extracted=extracted, correct=correct, response=prediction.text)
        figures = prediction.to_dict()
        figures.pop("text")
        record.update(figures)
        before, after = prediction.tokens_before, prediction.tokens_after
        record["retention_realized"] = after / before if before and after is not None else None
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
                prediction = opened.answer(build_prompt(item, job.style), setting)
            except Exception as exc:  # noqa: BLE001
                yield make_record(item, setting, error=exc)
            else:
                yield make_record(item, setting, prediction, style=job.style)
    finally:
        opened.close()
