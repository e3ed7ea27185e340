#!/usr/bin/env python
"""Evaluation throughput: items per second with 1 vs N workers (``omnizip evaluate --workers``).

    python benchmarks/evaluate_throughput.py                         # fake answerer, 1 and 2 CPU workers
    python benchmarks/evaluate_throughput.py --quick                 # CI smoke: 1 worker, no Ray
    python benchmarks/evaluate_throughput.py --answerer PKG.MODULE:FACTORY --arg model=tiny --workers 1 2
    python benchmarks/evaluate_throughput.py --answerer PKG.MODULE:FACTORY --arg model=Qwen/Qwen2.5-Omni-7B \\
        --workers 1 8 --gpus-per-worker 1 --copies 40                # N GPUs: one model per GPU

Dataset: ``samples/eval_example.jsonl`` (10 questions on 3 clips) with its clips copied ``--copies``
times under new names, so that there are ``3 x copies`` distinct videos to share out (``--dataset``
runs any manifest instead). Each worker count runs the whole dataset into a fresh results folder
with ``--settings`` (default ``full 45 35``), through :func:`omnizip_cli.evaluation.runner.run_evaluation`,
exactly as ``omnizip evaluate`` does: the time includes starting Ray and building each worker's
answerer (loading the model), which is what a user waits for.

``--answerer MODULE:FACTORY`` names a picklable answerer factory (see
:mod:`omnizip_cli.evaluation.protocol`), built with ``--arg key=value`` keyword arguments (values
parsed as JSON when they parse). The default, :class:`omnizip_cli.evaluation.fake.FakeAnswererFactory`
with simulated work (``open_delay`` 0.2 s per video, ``answer_delay`` 0.05 s per answer), measures
the loop and Ray's overhead and scaling, not a model: its lines say ``"answerer": "fake"``.

Output: JSON lines on stdout, progress on stderr. ``kind``:

* ``setup``: answerer, factory arguments, dataset, items, videos, settings, CPU count, Ray version;
* ``run``: ``workers``, ``seconds`` (wall, start-up included), ``items`` and ``items_per_second``
  (questions, each answered under every setting), ``answers_per_second`` (item x setting),
  ``first_answer_seconds`` (start-up: Ray, model loading, the first video), ``steady_items_per_second``
  (between the first and the last progress report: the rate once the workers are up),
  ``jobs_per_worker`` (videos per worker), ``errors``;
* ``ratio``: each worker count over 1 worker: ``speedup`` (wall) and ``steady_speedup``.

With Ray, progress is reported per finished video, so the steady rate starts after the first video.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.jsonlines import json_lines_output  # noqa: E402
DEFAULT_ANSWERER = "omnizip_cli.evaluation.fake:FakeAnswererFactory"
DEFAULT_FAKE_ARGS = {"open_delay": 0.2, "answer_delay": 0.05}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answerer", default=DEFAULT_ANSWERER, help="MODULE:FACTORY of a picklable answerer factory")
    parser.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="factory keyword argument")
    parser.add_argument("--dataset", type=Path, help="a manifest to run instead of the copied samples")
    parser.add_argument("--copies", type=int, default=4, help="copies of the sample clips (3 videos each)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    parser.add_argument("--settings", nargs="+", default=["full", "45", "35"])
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 copy, 1 worker, no Ray")
    args = parser.parse_args(argv)
    if args.quick:
        args.copies, args.workers = 1, [1]
    if args.copies < 1 or any(w < 1 for w in args.workers):
        parser.error("--copies and --workers must be at least 1")
    return args


def factory_from(spec: str, pairs: list[str]) -> tuple[Any, dict[str, Any]]:
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise SystemExit(f"error: --answerer must be MODULE:FACTORY, got {spec!r}")
    kwargs: dict[str, Any] = dict(DEFAULT_FAKE_ARGS) if spec == DEFAULT_ANSWERER else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --arg must be KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    factory_type = getattr(importlib.import_module(module_name), attribute)
    return factory_type(**kwargs), kwargs


def copied_samples(folder: Path, copies: int) -> Path:
    """The sample manifest with its clips copied ``copies`` times under distinct names."""
    rows = [json.loads(line) for line in (ROOT / "samples" / "eval_example.jsonl").read_text().splitlines()]
    out = []
    for copy in range(copies):
        for name in sorted({row["video"] for row in rows}):
            target = folder / f"c{copy}-{name}"
            try:
                os.link(ROOT / "samples" / name, target)
            except OSError:
                shutil.copy(ROOT / "samples" / name, target)
        out += [{**row, "id": f"c{copy}-{row['id']}", "video": f"c{copy}-{row['video']}"} for row in rows]
    manifest = folder / "eval.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in out))
    return manifest


def _steady_rate(marks: list[tuple[float, int]], settings: int) -> float | None:
    """Items per second between the first and the last progress report: the rate once every worker
    is up (Ray start-up and model loading excluded). None with fewer than two reports."""
    if len(marks) < 2 or marks[-1][0] <= marks[0][0]:
        return None
    return (marks[-1][1] - marks[0][1]) / settings / (marks[-1][0] - marks[0][0])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log, emit = json_lines_output("evaluate_throughput")
    from omnizip_cli.evaluation.datasets import load_dataset
    from omnizip_cli.evaluation.protocol import parse_settings
    from omnizip_cli.evaluation.runner import EvaluationRequest, run_evaluation

    factory, kwargs = factory_from(args.answerer, args.arg)
    settings = parse_settings(args.settings)
    with tempfile.TemporaryDirectory(prefix="omnizip-eval-bench-") as tmp:
        folder = Path(tmp)
        manifest = args.dataset or copied_samples(folder, args.copies)
        dataset = load_dataset(manifest)
        ray_version = None
        if max(args.workers) > 1 or args.ray_address:
            try:
                import ray

                ray_version = ray.__version__
            except ImportError:
                raise SystemExit('error: more than one worker needs Ray: pip install "omnizip[ray]"') from None
        emit({"kind": "setup", "answerer": "fake" if args.answerer == DEFAULT_ANSWERER else args.answerer,
              "factory_args": kwargs, "dataset": str(manifest if args.dataset else "samples/eval_example.jsonl"),
              "copies": None if args.dataset else args.copies, "items": len(dataset.items),
              "videos": len(dataset.videos), "settings": [s.key for s in settings], "cpus": os.cpu_count(),
              "gpus_per_worker": args.gpus_per_worker, "ray": ray_version})
        rates: dict[int, float] = {}
        steady_rates: dict[int, float | None] = {}
        for workers in args.workers:
            log(f"{workers} worker(s): {len(dataset.items)} items x {len(settings)} settings")
            request = EvaluationRequest(dataset=dataset, settings=settings, out=folder / f"out-{workers}",
                                        model={"answerer": args.answerer, **kwargs}, workers=workers,
                                        ray_address=args.ray_address, gpus_per_worker=args.gpus_per_worker,
                                        cpus_per_worker=args.cpus_per_worker)
            marks: list[tuple[float, int]] = []  # (time, answers done) at each progress report
            start = time.perf_counter()
            result = run_evaluation(request, factory, progress=lambda p: marks.append((time.perf_counter(), p.done)))
            seconds = time.perf_counter() - start
            steady = _steady_rate(marks, len(settings))
            rates[workers] = len(dataset.items) / seconds
            emit({"kind": "run", "workers": workers, "seconds": round(seconds, 3), "items": len(dataset.items),
                  "items_per_second": round(rates[workers], 3),
                  "answers_per_second": round(result.answered / seconds, 3), "answers": result.answered,
                  "errors": result.errors, "jobs_per_worker": result.jobs_per_worker,
                  "first_answer_seconds": round(marks[0][0] - start, 3) if marks else None,
                  "steady_items_per_second": None if steady is None else round(steady, 3)})
            steady_rates[workers] = steady
        if 1 in rates:
            for workers, rate in rates.items():
                if workers != 1:
                    base, here = steady_rates.get(1), steady_rates.get(workers)
                    emit({"kind": "ratio", "workers": workers, "speedup": round(rate / rates[1], 3),
                          "steady_speedup": round(here / base, 3) if base and here else None})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
