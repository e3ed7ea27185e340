"""``omnizip evaluate`` on the real Session with the tiny model: the README command end to end, and
2 local Ray workers giving the same predictions and metrics as one process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnizip_cli.cli import app
from omnizip_cli.evaluation.datasets import load_dataset
from omnizip_cli.evaluation.protocol import parse_settings
from omnizip_cli.evaluation.runner import EvaluationRequest, run_evaluation
from omnizip_cli.evaluation.session_answerer import SessionAnswererFactory

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
SMALL_MEDIA = {"fps": 2.0, "max_frames": 8, "min_pixels": 64 * 28 * 28, "max_pixels": 96 * 28 * 28}


def predictions(out: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {(r["item"], r["setting"]): r for r in rows}


def test_readme_command_runs_on_the_example_dataset(tiny_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(SAMPLES / "eval_example.jsonl"), "--model", "tiny", "--out",
                                      str(out), "--max-frames", "8", "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["settings"]) == ["full", "preset-45", "preset-35"]
    rows = predictions(out)
    assert len(rows) == 10 * 3
    full = {item: row for (item, key), row in rows.items() if key == "full"}
    compressed = {item: row for (item, key), row in rows.items() if key == "preset-35"}
    # every answer has its figures; compression kept fewer audio+video tokens than full
    talking = "talking-ball-colour"
    assert full[talking]["tokens_after"] == full[talking]["tokens_before"]
    assert compressed[talking]["tokens_after"] < compressed[talking]["tokens_before"]
    # resuming the finished run answers nothing again
    again = CliRunner().invoke(app, ["evaluate", str(SAMPLES / "eval_example.jsonl"), "--model", "tiny", "--out",
                                     str(out), "--max-frames", "8", "--max-new-tokens", "8"])
    assert again.exit_code == 0, again.output
    assert predictions(out) == rows


@pytest.mark.slow
def test_two_ray_workers_on_the_tiny_model_match_one_process(tiny_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'omnizip[ray]')")
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("talking.mp4", "speech.wav"):
        shutil.copy(SAMPLES / name, folder / name)
    rows = [json.loads(line) for line in (SAMPLES / "eval_example.jsonl").read_text().splitlines()]
    with (folder / "eval.jsonl").open("w") as file:
        for row in rows:
            if row["video"] in ("talking.mp4", "speech.wav"):
                file.write(json.dumps(row) + "\n")
    dataset = load_dataset(folder / "eval.jsonl")
    settings = parse_settings(["full", "35"])
    factory = SessionAnswererFactory(model={"model": "tiny", "device": "cpu"}, media=SMALL_MEDIA, max_new_tokens=6)
    model = {"model": "tiny"}
    os.environ.setdefault("OMNIZIP_CACHE", str(tiny_cache))  # the workers build nothing: the cache is shared
    single = run_evaluation(EvaluationRequest(dataset, settings, tmp_path / "single", model), factory)
    ray_run = run_evaluation(EvaluationRequest(dataset, settings, tmp_path / "ray", model, workers=2), factory)
    assert ray_run.answered == single.answered == len(dataset.items) * 2
    ours, theirs = predictions(tmp_path / "single"), predictions(tmp_path / "ray")
    assert ours.keys() == theirs.keys()
    for key in ours:
        for field in ("response", "extracted", "correct", "tokens_before", "tokens_after", "prompt_tokens"):
            assert ours[key][field] == theirs[key][field], (key, field)
    single_metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    ray_metrics = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    for key, a in single_metrics["settings"].items():
        b = ray_metrics["settings"][key]
        assert (a["accuracy"], a["agreement_with_full"], a["retention"]) == (
            b["accuracy"], b["agreement_with_full"], b["retention"])
