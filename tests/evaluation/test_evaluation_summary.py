"""The summary table (Rich, stderr) and the accuracy chart, from a real fake-answerer run."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image
from rich.console import Console

from omnizip_cli.evaluation.datasets import load_dataset
from omnizip_cli.evaluation.fake import FakeAnswererFactory
from omnizip_cli.evaluation.protocol import parse_settings
from omnizip_cli.evaluation.runner import EvaluationRequest, Progress, run_evaluation
from omnizip_cli.evaluation.summary import (
    format_progress,
    paired_rows,
    print_summary,
    render_accuracy_chart,
    summary_rows,
)
from omnizip_cli.report.drawing import BLUISH_GREEN

ROOT = Path(__file__).resolve().parents[2]


def test_table_and_chart(tmp_path: Path) -> None:
    data = load_dataset(ROOT / "samples" / "eval_example.jsonl")
    result = run_evaluation(EvaluationRequest(data, parse_settings(["full", "0.45", "0.35"]), tmp_path,
                                              {"model": "fake"}), FakeAnswererFactory())
    rows = summary_rows(result.metrics)
    assert [r["setting"] for r in rows] == ["full", "45 %", "35 %"]
    full = result.metrics["settings"]["full"]
    assert rows[0]["accuracy"] == f"{full['accuracy'] * 100:.1f}%" and rows[0]["n"] == "10"
    assert rows[0]["kept"] == "100.0%" and rows[0]["tokens"] == "100%" and rows[0]["speedup"] == "-"
    assert rows[1]["tokens"] == "45%" and rows[1]["speedup"].endswith("x")

    buffer = io.StringIO()
    print_summary(json.loads((tmp_path / "metrics.json").read_text()), Console(file=buffer, width=80,
                                                                               color_system=None))
    text = buffer.getvalue()
    assert "…" not in text  # nothing truncated at 80 columns
    assert text.index(" full ") < text.index(" 45% ") < text.index(" 35% ")  # the order asked for
    assert "eval_example: 10 questions on 3 videos" in text
    assert "accuracy by category" in text and "counting" in text

    assert "paired against full" in text and "McNemar exact" in text
    paired = paired_rows(result.metrics)
    assert [r["setting"] for r in paired] == ["45 %", "35 %"]
    m45 = result.metrics["settings"]["retention-0.45"]
    low, high = m45["delta_ci95"]
    assert paired[0]["ci"] == f"[{low * 100:+.1f}, {high * 100:+.1f}]"
    assert paired[0]["delta"] == f"{m45['delta_vs_full'] * 100:+.1f}"

    image = Image.open(tmp_path / "accuracy.png")
    assert image.size[0] == 1000 and image.size[1] >= 500
    redrawn = render_accuracy_chart(result.metrics, model="fake")
    assert redrawn.size == image.size
    # OmniZip's points are drawn in its colour where the metrics put them
    left, top, right, bottom = 90, 100, 1000 - 210, image.size[1] - 90
    x = left + (right - left) * m45["retention_realized"]
    y = bottom - (bottom - top) * m45["accuracy"]
    assert redrawn.getpixel((round(x), round(y)))[:3] == BLUISH_GREEN


def test_progress_line() -> None:
    progress = Progress(done=30, total=90, resumed=10, errors=2, elapsed_seconds=10.0, answers_per_second=2.0,
                        eta_seconds=3725.0)
    assert format_progress(progress) == "30/90 answers (2.00 answers/s, ETA 1:02:05, 2 errors)"
    three = Progress(30, 90, 10, 0, 10.0, 3.0, 20.0, settings=3)
    assert three.items_per_second == 1.0
    assert format_progress(three) == "30/90 answers (3.00 answers/s, 1.00 items/s, ETA 0:20)"
    start = Progress(0, 9, 0, 0, 0.0, None, None)
    assert format_progress(start) == "0/9 answers (-, ETA -)"
