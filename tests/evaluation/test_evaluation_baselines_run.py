"""The issue-26 command end to end on the tiny model: every new field for every setting, samples.jsonl
and the chart; interrupted and resumed, the same metrics; on 2 Ray workers, the same predictions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from omnizip_cli.cli import app
from omnizip_cli.evaluation.datasets import load_dataset
from omnizip_cli.evaluation.protocol import parse_settings
from omnizip_cli.evaluation.runner import EvaluationRequest, Progress, run_evaluation
from omnizip_cli.evaluation.session_answerer import SessionAnswererFactory

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "samples" / "eval_example.jsonl"
SETTINGS = ["full", "45", "frames@0.45", "pixels@0.45", "random@0.45"]
MEDIA = {"fps": 2.0, "max_frames": 8}
TIMING = ("ttft_seconds_median", "decode_tokens_per_second_median", "peak_memory_bytes_max", "ttft_speedup_vs_full")
SAME = ("response", "extracted", "correct", "tokens_before", "tokens_after", "prompt_tokens", "retention_realized",
        "media")


def predictions(out: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {(r["item"], r["setting"]): r for r in rows}


def untimed(metrics: dict) -> dict:
    """metrics.json without the wall-clock figures (two real runs never time alike)."""
    return {**metrics, "settings": {key: {k: v for k, v in m.items() if k not in TIMING}
                                    for key, m in metrics["settings"].items()}}


class Interrupt(Exception):
    pass


def test_issue_command_writes_every_new_field(tiny_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", str(DATASET), "--model", "tiny", *[a for s in SETTINGS for a in ("--setting", s)],
            "--out", str(out), "--max-frames", "8", "--max-new-tokens", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["settings"]) == ["full", "preset-45", "frames@0.45", "pixels@0.45", "random@0.45"]
    for key, m in metrics["settings"].items():
        for field in ("delta_vs_full", "delta_ci95", "mcnemar_p", "flips", "retention_realized", "unparsed"):
            assert m[field] is not None, (key, field)
        assert m["paired_items"] == 10 and m["errors"] == 0
        low, high = m["delta_ci95"]
        assert low <= m["delta_vs_full"] <= high
        assert set(m["by_category"]["visual"]) >= {"delta_vs_full", "delta_ci95", "mcnemar_p", "flips"}
    assert [m["method"] for m in metrics["settings"].values()] == ["full", "omnizip", "frames", "pixels", "random"]
    rows = predictions(out)
    for (item, key), row in rows.items():
        assert row["retention_realized"] == pytest.approx(row["tokens_after"] / row["tokens_before"])
    # frames@/pixels@ on a video: other media, matched near 45 %; on the audio-only file: answered as full
    assert rows[("talking-ball-colour", "frames@0.45")]["media"]["frames"] == 2
    assert rows[("talking-ball-colour", "pixels@0.45")]["media"]["frames"] == 8
    assert abs(rows[("talking-ball-colour", "pixels@0.45")]["retention_realized"] - 0.45) <= 0.05
    assert rows[("speech-animal", "frames@0.45")]["retention_realized"] == 1.0
    # random@ keeps OmniZip's per-modality counts at 45 %: the same audio+video total as omnizip@0.45
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 50
    first = samples[0]
    assert (first["doc_id"], first["setting"], first["target"]) == (0, "full", "A")
    assert first["resps"] == [[rows[("talking-ball-colour", "full")]["response"]]]
    assert first["filtered_resps"] == [rows[("talking-ball-colour", "full")]["extracted"] or ""]
    assert {"retention_realized", "tokens_before", "tokens_after", "ttft_seconds", "accuracy"} <= set(first)
    assert Image.open(out / "accuracy.png").size[0] == 1000
    assert "paired against full" in result.stderr


def test_interrupted_and_resumed_gives_the_same_metrics(tiny_cache: Path, tmp_path: Path) -> None:
    dataset = load_dataset(DATASET)
    settings = parse_settings(SETTINGS)
    factory = SessionAnswererFactory(model={"model": "tiny", "device": "cpu"}, media=MEDIA, max_new_tokens=4)
    whole = run_evaluation(EvaluationRequest(dataset, settings, tmp_path / "whole", {"model": "tiny"}), factory)

    def stop(progress: Progress) -> None:
        if progress.done == 23:
            raise Interrupt

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        run_evaluation(EvaluationRequest(dataset, settings, out, {"model": "tiny"}), factory, progress=stop)
    resumed = run_evaluation(EvaluationRequest(dataset, settings, out, {"model": "tiny"}), factory)
    assert resumed.resumed == 23 and resumed.answered == 50 - 23
    assert untimed(json.loads((out / "metrics.json").read_text())) == untimed(whole.metrics)
    ours, theirs = predictions(out), predictions(tmp_path / "whole")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert {f: ours[key][f] for f in SAME} == {f: theirs[key][f] for f in SAME}, key
    assert (out / "samples.jsonl").read_text().count("\n") == 50


@pytest.mark.slow
def test_two_ray_workers_give_the_same_baseline_predictions(tiny_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'omnizip[ray]')")
    dataset = load_dataset(DATASET)
    settings = parse_settings(SETTINGS)
    factory = SessionAnswererFactory(model={"model": "tiny", "device": "cpu"}, media=MEDIA, max_new_tokens=4)
    os.environ.setdefault("OMNIZIP_CACHE", str(tiny_cache))
    single = run_evaluation(EvaluationRequest(dataset, settings, tmp_path / "single", {"model": "tiny"}), factory)
    ray_run = run_evaluation(EvaluationRequest(dataset, settings, tmp_path / "ray", {"model": "tiny"}, workers=2),
                             factory)
    assert ray_run.answered == single.answered == 50
    ours, theirs = predictions(tmp_path / "single"), predictions(tmp_path / "ray")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert {f: ours[key][f] for f in SAME} == {f: theirs[key][f] for f in SAME}, key
    assert untimed(json.loads((tmp_path / "ray" / "metrics.json").read_text())) == untimed(single.metrics)
