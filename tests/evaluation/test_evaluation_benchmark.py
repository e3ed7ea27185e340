"""Smoke test of ``benchmarks/evaluate_throughput.py --quick`` (fake answerer, 1 worker, no Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_evaluate_throughput_quick() -> None:
    done = subprocess.run([sys.executable, "benchmarks/evaluate_throughput.py", "--quick", "--arg", "open_delay=0",
                           "--arg", "answer_delay=0.001"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(line["bench"] == "evaluate_throughput" for line in lines)
    setup, run = lines
    assert setup["kind"] == "setup" and setup["answerer"] == "fake" and setup["items"] == 10 and setup["videos"] == 3
    assert setup["factory_args"] == {"open_delay": 0, "answer_delay": 0.001}
    assert run["kind"] == "run" and run["workers"] == 1 and run["answers"] == 30 and run["errors"] == 0
    assert run["items_per_second"] > 0 and run["jobs_per_worker"] == {"local": 3}
