"""``run_evaluate``: what ``omnizip evaluate`` runs after parsing its options (fake answerer)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from omnizip_cli.errors import UsageError
from omnizip_cli.evaluation.command import EvaluateOptions, run_evaluate
from omnizip_cli.evaluation.fake import FakeAnswererFactory

ROOT = Path(__file__).resolve().parents[2]


def test_run_evaluate_with_progress_bar_and_summary(tmp_path: Path) -> None:
    for name in ("talking.mp4", "silent.mp4", "speech.wav"):
        shutil.copy(ROOT / "samples" / name, tmp_path / name)
    manifest = tmp_path / "eval.jsonl"
    manifest.write_text((ROOT / "samples" / "eval_example.jsonl").read_text() + '{"video": "x.mp4"}\n')
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True, color_system=None)
    options = EvaluateOptions(dataset=manifest, out=tmp_path / "out", settings=["full", "0.4"],
                              options={"max_new_tokens": 100})
    result = run_evaluate(options, {"model": "fake"}, FakeAnswererFactory(), console=console, show_progress=True)
    text = buffer.getvalue()
    assert "1 rows of eval.jsonl skipped (first: row 11: missing 'question')" in text
    assert "eval: 10 questions on 3 videos" in text and "40%" in text
    assert f"20 answers in {result.elapsed_seconds:.1f} s; results in {tmp_path / 'out'}" in text
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["options"] == {"prompt_version": 1, "max_new_tokens": 100}
    assert [s["key"] for s in config["settings"]] == ["full", "retention-0.4"]

    again = run_evaluate(options, {"model": "fake"}, FakeAnswererFactory(), console=console, show_progress=False)
    assert again.resumed == 20 and again.answered == 0
    assert "from an earlier run" in buffer.getvalue()
    with pytest.raises(UsageError, match="different settings"):
        run_evaluate(EvaluateOptions(dataset=manifest, out=tmp_path / "out", settings=["full"],
                                     options={"max_new_tokens": 100}),
                     {"model": "fake"}, FakeAnswererFactory(), console=console)
