"""Ray scale-out: a real local Ray cluster with 2 CPU workers and the fake answerer gives the same
predictions and metrics as one process (skipped only when Ray is not installed)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from omnizip_cli.errors import EnvironmentProblem, UsageError
from omnizip_cli.evaluation.datasets import load_dataset
from omnizip_cli.evaluation.fake import FakeAnswererFactory
from omnizip_cli.evaluation.protocol import parse_settings
from omnizip_cli.evaluation.runner import EvaluationRequest, Progress, run_evaluation

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def lines(out: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len({(r["item"], r["setting"]) for r in rows})
    return {(r["item"], r["setting"]): r for r in rows}


@pytest.fixture
def dataset(tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = (SAMPLES / "eval_example.jsonl").read_text().splitlines()
    # more videos than workers, so that jobs are handed out dynamically; one missing video
    for copy in range(3):
        for name in ("talking.mp4", "silent.mp4", "speech.wav"):
            shutil.copy(SAMPLES / name, folder / f"{copy}-{name}")
        for row in rows:
            data = json.loads(row)
            data["id"] = f"{copy}-{data['id']}"
            data["video"] = f"{copy}-{data['video']}"
            (folder / "eval.jsonl").open("a").write(json.dumps(data) + "\n")
    (folder / "eval.jsonl").open("a").write(json.dumps(
        {"id": "gone", "video": "missing.mp4", "question": "Q?", "options": ["x", "y"], "answer": "A"}) + "\n")
    return load_dataset(folder / "eval.jsonl")


@pytest.mark.slow
def test_two_ray_workers_match_one_process(dataset, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'omnizip[ray]')")
    settings = parse_settings(["full", "0.45", "0.35"])
    factory = FakeAnswererFactory(answer_delay=0.01)
    model = {"model": "fake"}
    single = run_evaluation(EvaluationRequest(dataset, settings, tmp_path / "single", model), factory)
    seen: list[Progress] = []
    ray_run = run_evaluation(EvaluationRequest(dataset, settings, tmp_path / "ray", model, workers=2), factory,
                             progress=seen.append)
    assert ray_run.answered == single.answered == 31 * 3
    assert single.jobs_per_worker == {"local": 10}
    assert len(ray_run.jobs_per_worker) == 2 and sum(ray_run.jobs_per_worker.values()) == 10  # both worked
    assert lines(tmp_path / "ray") == lines(tmp_path / "single")
    assert (tmp_path / "ray" / "metrics.json").read_text() == (tmp_path / "single" / "metrics.json").read_text()
    assert seen[-1].done == seen[-1].total == 93
    assert ray_run.metrics["settings"]["full"]["errors"] == 1
    assert "ray" in sys.modules


def test_workers_without_ray_is_one_clear_error(dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    request = EvaluationRequest(dataset, parse_settings(["full"]), tmp_path / "o", {"model": "fake"}, workers=2)
    with pytest.raises(EnvironmentProblem) as caught:
        run_evaluation(request, FakeAnswererFactory())
    assert 'pip install "omnizip[ray]"' in caught.value.one_line()


@pytest.mark.slow
def test_too_many_gpus_per_worker_is_refused(dataset, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'omnizip[ray]')")
    request = EvaluationRequest(dataset, parse_settings(["full"]), tmp_path / "o", {"model": "fake"}, workers=2,
                                gpus_per_worker=64)
    with pytest.raises(UsageError, match="128 GPUs"):
        run_evaluation(request, FakeAnswererFactory())


class Stop(Exception):
    pass


@pytest.mark.slow
def test_interrupted_ray_run_resumes_to_the_same_metrics(dataset, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'omnizip[ray]')")
    settings = parse_settings(["full", "0.4"])
    model = {"model": "fake"}
    whole = run_evaluation(EvaluationRequest(dataset, settings, tmp_path / "whole", model), FakeAnswererFactory())

    def stop_after_two_videos(progress: Progress) -> None:
        if progress.done >= 25:
            raise Stop

    out = tmp_path / "out"
    with pytest.raises(Stop):
        run_evaluation(EvaluationRequest(dataset, settings, out, model, workers=2), FakeAnswererFactory(),
                       progress=stop_after_two_videos)
    import ray

    assert not ray.is_initialized()  # the driver shut down the Ray instance it started
    before = lines(out)
    assert 25 <= len(before) < 62  # whole videos only: Ray hands back a video's answers together
    ok_before = sum(1 for r in before.values() if not r["error"])
    resumed = run_evaluation(EvaluationRequest(dataset, settings, out, model, workers=2), FakeAnswererFactory())
    assert resumed.resumed == ok_before and resumed.answered == 62 - ok_before
    assert lines(out) == lines(tmp_path / "whole")
    assert resumed.metrics == whole.metrics
