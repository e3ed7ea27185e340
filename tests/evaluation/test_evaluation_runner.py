"""The evaluation loop with the deterministic fake answerer: results folder, grouping, resume,
refusals, per-item failures, metrics, progress, and no Ray on the single-process path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from omnizip_cli.errors import UsageError
from omnizip_cli.evaluation.datasets import Dataset, Item, load_dataset
from omnizip_cli.evaluation.fake import FakeAnswerer, FakeAnswererFactory
from omnizip_cli.evaluation.jobs import plan_jobs
from omnizip_cli.evaluation.protocol import Prediction, Setting, parse_settings
from omnizip_cli.evaluation.results import compute_metrics
from omnizip_cli.evaluation.runner import EvaluationRequest, Progress, run_evaluation

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
SETTINGS = [
    Setting("full", "full", "full"),
    Setting("preset-45", "45 %", "preset", "45", 0.45),
    Setting("preset-35", "35 %", "preset", "35", 0.35),
]
MODEL = {"model": "fake", "max_new_tokens": 100}


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    """The sample manifest plus a question on a missing and one on an empty video."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("talking.mp4", "silent.mp4", "speech.wav"):
        shutil.copy(SAMPLES / name, folder / name)
    (folder / "empty.mp4").write_bytes(b"")
    lines = (SAMPLES / "eval_example.jsonl").read_text().splitlines()
    lines.append(json.dumps({"id": "gone", "video": "missing.mp4", "question": "Q?", "options": ["x", "y"],
                             "answer": "A", "category": "visual"}))
    lines.append(json.dumps({"id": "empty", "video": "empty.mp4", "question": "Q?", "answer": "x"}))
    (folder / "eval.jsonl").write_text("\n".join(lines) + "\n")
    return load_dataset(folder / "eval.jsonl")


def request(dataset: Dataset, out: Path, **kwargs: Any) -> EvaluationRequest:
    return EvaluationRequest(dataset=dataset, settings=kwargs.pop("settings", SETTINGS), out=out,
                             model=kwargs.pop("model", MODEL), **kwargs)


def predictions(out: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {(r["item"], r["setting"]): r for r in rows}


@dataclass
class CountingFactory:
    """A fake factory that keeps its answerers, to check how often each video is opened."""

    built: list[FakeAnswerer] = field(default_factory=list)

    def __call__(self) -> FakeAnswerer:
        self.built.append(FakeAnswerer())
        return self.built[-1]


def test_run_writes_the_results_folder(dataset: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    factory = CountingFactory()
    result = run_evaluation(request(dataset, out), factory)
    assert sorted(p.name for p in out.iterdir()) == [".omnizip.lock", "accuracy.png", "config.json", "metrics.json",
                                                     "predictions.jsonl", "samples.jsonl"]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == MODEL
    assert [s["key"] for s in config["settings"]] == ["full", "preset-45", "preset-35"]
    assert config["dataset"]["items"] == 12 and config["dataset"]["fingerprint"] == dataset.fingerprint()
    rows = predictions(out)
    assert len(rows) == 12 * 3 and result.answered == 36 and result.resumed == 0
    # each readable video opened once for all its questions and settings, in dataset order
    (answerer,) = factory.built
    assert [p.name for p in answerer.opened] == ["talking.mp4", "silent.mp4", "speech.wav"]
    # missing and empty videos: an error per item and setting, counted, not fatal
    assert rows[("gone", "full")]["error"].startswith("video not found")
    assert rows[("gone", "full")]["error_type"] == "MediaError"
    assert "empty" in rows[("empty", "preset-35")]["error"]
    assert result.errors == 6
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result.metrics and metrics["complete"]
    for key in ("full", "preset-45", "preset-35"):
        m = metrics["settings"][key]
        assert (m["items"], m["answered"], m["errors"], m["missing"]) == (12, 10, 2, 0)
        assert m["accuracy"] == m["correct"] / 10
    assert metrics["settings"]["full"]["accuracy_kept"] == 1.0
    assert metrics["settings"]["full"]["agreement_with_full"] == 1.0
    assert set(metrics["settings"]["full"]["by_category"]) == {"visual", "audio", "counting"}


def test_metrics_by_hand() -> None:
    items = [Item(id=f"q{i}", video=Path("v.mp4"), video_name="v.mp4", question="?", answer="A",
                  options=("x", "y"), category="c" if i < 2 else "d") for i in range(4)]
    data = Dataset(name="d", path=Path("d.jsonl"), layout="manifest", items=items)
    settings = SETTINGS[:2]

    def rec(item: str, setting: str, extracted: str | None, before: int = 100, after: int = 100,
            ttft: float = 1.0, error: str | None = None) -> dict:
        return {"item": item, "setting": setting, "extracted": extracted, "correct": extracted == "A",
                "multiple_choice": True, "category": "c" if item in ("q0", "q1") else "d",
                "tokens_before": before, "tokens_after": after, "ttft_seconds": ttft,
                "decode_tokens_per_second": 10.0, "peak_memory_bytes": 5, "error": error}

    rows = [rec("q0", "full", "A"), rec("q1", "full", "A"), rec("q2", "full", "B"), rec("q3", "full", "A"),
            rec("q0", "preset-45", "A", after=40, ttft=0.5), rec("q1", "preset-45", "B", after=50, ttft=0.25),
            rec("q2", "preset-45", None, after=45, ttft=0.5), rec("q3", "preset-45", None, error="boom")]
    m = compute_metrics(data, settings, {(r["item"], r["setting"]): r for r in rows})
    full, p45 = m["settings"]["full"], m["settings"]["preset-45"]
    assert full["accuracy"] == 0.75 and full["retention"] == 1.0
    assert (p45["answered"], p45["errors"], p45["correct"], p45["unparsed"]) == (3, 1, 1, 1)
    assert p45["accuracy"] == pytest.approx(1 / 3)
    # paired over q0-q2: full 2/3 correct, 45 % 1/3 -> kept 0.5; same answer only on q0 -> 1/3
    assert p45["paired_items"] == 3
    assert p45["accuracy_kept"] == pytest.approx(0.5)
    assert p45["agreement_with_full"] == pytest.approx(1 / 3)
    assert p45["retention"] == pytest.approx(135 / 300)
    assert p45["ttft_seconds_median"] == 0.5 and p45["ttft_speedup_vs_full"] == 2.0
    by_category = {name: {k: v for k, v in entry.items() if k in ("items", "correct", "accuracy")}
                   for name, entry in p45["by_category"].items()}
    assert by_category == {"c": {"items": 2, "correct": 1, "accuracy": 0.5},
                           "d": {"items": 1, "correct": 0, "accuracy": 0.0}}
    # paired statistics: q0 agrees (right), q1 flips right -> wrong, q2 wrong in both; q3 failed: left out
    assert p45["delta_vs_full"] == pytest.approx(-1 / 3)
    assert p45["flips"] == {"right_to_wrong": 1, "wrong_to_right": 0}
    assert p45["mcnemar_p"] == 1.0
    # resampled flip count ~ Binomial(3, 1/3): P(3 flips) = 1/27 > 2.5 %, P(0 flips) = 8/27 > 2.5 %
    assert p45["delta_ci95"] == [-1.0, 0.0]
    assert p45["retention_realized"] == pytest.approx(0.45)
    assert p45["retention_realized_range"] == [0.4, 0.5]
    assert p45["by_category"]["c"]["delta_vs_full"] == -0.5
    assert p45["by_category"]["c"]["flips"] == {"right_to_wrong": 1, "wrong_to_right": 0}
    assert p45["by_category"]["d"]["paired_items"] == 1 and p45["by_category"]["d"]["delta_ci95"] == [0.0, 0.0]
    assert full["delta_vs_full"] == 0.0 and full["mcnemar_p"] == 1.0 and full["method"] == "full"
    assert p45["method"] == "omnizip"


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_metrics(dataset: Dataset, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    run_evaluation(request(dataset, whole), FakeAnswererFactory())

    out = tmp_path / "resumed"

    def stop_after_seven(progress: Progress) -> None:
        if progress.done == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_evaluation(request(dataset, out), FakeAnswererFactory(), progress=stop_after_seven)
    assert len(predictions(out)) == 7 and not (out / "metrics.json").exists()
    with (out / "predictions.jsonl").open("a") as handle:  # killed mid-write: a torn last line
        handle.write('{"item": "talking-banner", "setting": "fu')

    factory = CountingFactory()
    seen: list[Progress] = []
    result = run_evaluation(request(dataset, out), factory, progress=seen.append)
    assert result.resumed == 7 and result.answered == 36 - 7
    assert seen[0].done == 8 and seen[-1].done == seen[-1].total == 36 and seen[-1].eta_seconds == 0
    assert all(p.answers_per_second and p.answers_per_second > 0 for p in seen)
    assert (out / "metrics.json").read_text() == (whole / "metrics.json").read_text()
    assert predictions(out) == predictions(whole)
    # every line is whole JSON: the torn one was cut off before appending
    assert all(json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines())

    # a finished run: nothing left but the retried errors (two videos that still fail): no model work
    again = run_evaluation(request(dataset, out), factory)
    assert again.answered == 6 and again.errors == 6
    assert [p.name for p in factory.built[-1].opened] == []
    assert (out / "metrics.json").read_text() == (whole / "metrics.json").read_text()


def test_a_fixed_video_is_retried_on_resume(dataset: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_evaluation(request(dataset, out), FakeAnswererFactory())
    shutil.copy(SAMPLES / "silent.mp4", dataset.path.parent / "missing.mp4")
    result = run_evaluation(request(dataset, out), FakeAnswererFactory())
    assert result.answered == 6 and result.errors == 3  # "gone" now answered; "empty" still fails
    assert predictions(out)[("gone", "full")]["error"] is None
    assert result.metrics["settings"]["full"]["answered"] == 11


@pytest.mark.parametrize(("change", "message"), [
    ({"settings": SETTINGS[:2]}, "different settings"),
    ({"model": {"model": "other", "max_new_tokens": 100}}, "different model"),
    ({"options": {"fps": 1.0}}, "different options"),
])
def test_a_different_run_is_refused_unless_overwrite(dataset: Dataset, tmp_path: Path, change: dict,
                                                      message: str) -> None:
    out = tmp_path / "out"
    run_evaluation(request(dataset, out), FakeAnswererFactory())
    with pytest.raises(UsageError, match=message) as caught:
        run_evaluation(request(dataset, out, **change), FakeAnswererFactory())
    assert "--overwrite" in caught.value.one_line()
    result = run_evaluation(request(dataset, out, overwrite=True, **change), FakeAnswererFactory())
    assert result.resumed == 0
    assert {s for _, s in predictions(out)} == {s.key for s in change.get("settings", SETTINGS)}


def test_a_changed_dataset_is_refused(dataset: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_evaluation(request(dataset, out), FakeAnswererFactory())
    fewer = Dataset(dataset.name, dataset.path, dataset.layout, dataset.items[:-1])
    with pytest.raises(UsageError, match="different dataset .*dataset items differ"):
        run_evaluation(request(fewer, out), FakeAnswererFactory())
    # the same items reached by another path (and videos elsewhere) resume
    (tmp_path / "videos").mkdir()
    elsewhere = load_dataset(tmp_path / "data" / ".." / "data" / "eval.jsonl", video_dir=tmp_path / "videos")
    assert run_evaluation(request(elsewhere, out), FakeAnswererFactory()).resumed == 30


def test_predictions_without_config_are_refused(dataset: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.jsonl").write_text("")
    with pytest.raises(UsageError, match="no config.json"):
        run_evaluation(request(dataset, out), FakeAnswererFactory())


@dataclass
class FailingVideo:
    def answer(self, prompt: str, setting: Setting) -> Prediction:
        if setting.key == "preset-35":
            raise RuntimeError("CUDA error: out of memory")
        return Prediction(text="A")

    def close(self) -> None:
        pass


class FailingAnswerer:
    def open(self, video: Path) -> FailingVideo:
        return FailingVideo()


def test_a_failing_answer_is_recorded_and_the_run_goes_on(dataset: Dataset, tmp_path: Path) -> None:
    result = run_evaluation(request(dataset, tmp_path / "out"), FailingAnswerer)
    rows = predictions(tmp_path / "out")
    assert rows[("talking-ball-colour", "preset-35")]["error"] == "RuntimeError: CUDA error: out of memory"
    assert rows[("talking-ball-colour", "preset-45")]["correct"] is True
    assert result.metrics["settings"]["preset-35"]["answered"] == 0
    assert result.metrics["settings"]["preset-35"]["accuracy"] is None
    assert result.metrics["settings"]["preset-35"]["accuracy_kept"] is None


def test_plan_jobs_groups_by_video_settings_outer(dataset: Dataset) -> None:
    jobs = plan_jobs(dataset, SETTINGS[:2], {("talking-ball-colour", "full"): {"error": None}})
    assert [j.video.name for j in jobs] == ["talking.mp4", "silent.mp4", "speech.wav", "missing.mp4", "empty.mp4"]
    talking = jobs[0].pending
    assert talking[0] == ("talking-bouncing-shape", "full") and len(talking) == 9
    assert talking[4] == ("talking-ball-colour", "preset-45")


def test_parse_settings() -> None:
    assert [s.key for s in parse_settings()] == ["full", "preset-45", "preset-35"]
    settings = parse_settings(["full", "45", "0.4"], [0.3])
    assert [s.key for s in settings] == ["full", "preset-45", "retention-0.4", "retention-0.3"]
    assert [s.label for s in settings] == ["full", "45 %", "40 %", "30 %"]
    assert settings[2].target_retention == 0.4
    assert [s.label for s in parse_settings(["45"], [0.45])] == ["45 %", "45 % (r)"]
    for bad, message in ((["full", "full"], "twice"), (["fast"], "unknown --setting"), (["1.5"], r"\(0, 1\]")):
        with pytest.raises(UsageError, match=message):
            parse_settings(bad)
    with pytest.raises(UsageError, match=r"\(0, 1\]"):
        parse_settings([], [0.0])


def test_bad_requests(dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="workers"):
        run_evaluation(request(dataset, tmp_path / "o", workers=0), FakeAnswererFactory())
    empty = Dataset("e", tmp_path / "e.jsonl", "manifest", [])
    with pytest.raises(UsageError, match="no usable items"):
        run_evaluation(request(empty, tmp_path / "o"), FakeAnswererFactory())


def test_single_process_path_imports_no_ray_torch_or_transformers(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path\n"
        "from omnizip_cli.evaluation.datasets import load_dataset\n"
        "from omnizip_cli.evaluation.fake import FakeAnswererFactory\n"
        "from omnizip_cli.evaluation.protocol import parse_settings\n"
        "from omnizip_cli.evaluation.runner import EvaluationRequest, run_evaluation\n"
        f"data = load_dataset({str(SAMPLES / 'eval_example.jsonl')!r})\n"
        f"r = run_evaluation(EvaluationRequest(data, parse_settings(['full', '0.4']), Path({str(tmp_path)!r}),"
        " {'model': 'fake'}), FakeAnswererFactory())\n"
        "print(r.answered, sorted(m for m in ('ray', 'torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "20 []"


def test_setting_compression_configs() -> None:
    from omnizip_cli.compression import PRESETS, config_for_retention

    full, p45, r40 = parse_settings(["full", "45", "0.4"])
    assert full.compression(250, 1440) is None
    assert p45.compression(250, 1440) == PRESETS["45"]
    # retention settings solve for this clip's own token mix (tokens per second)
    assert r40.compression(100, 1440) == config_for_retention(0.4, 10.0, 144.0)
    assert Setting.from_dict(r40.to_dict()) == r40
