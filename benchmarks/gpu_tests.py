#!/usr/bin/env python
"""The ``gpu``-marked tests as JSON lines, one line per test the moment it finishes (the suite's
``gpu_tests`` step).

    python benchmarks/gpu_tests.py [--per-test-timeout S] [PYTEST OPTIONS...]

Runs ``pytest -m gpu`` in this process on the test files that hold ``mark.gpu`` (skipped without
CUDA). Every test's outcome is written to stdout as it is reported and flushed at once, so a run
killed part way (the suite's time limit) keeps the lines of every test that finished. pytest's own
output goes to stderr. Records (``"bench": "gpu_tests"``): ``test`` (``test``: the node id,
``outcome``: passed / failed / error / skipped, ``seconds``, ``message``: the failure's or skip's
first line) and, at the end, ``tests`` (counts, pytest's exit status, the per-test limit).

``--per-test-timeout S`` (default 60) gives each test a limit through pytest-timeout when it is
installed (a test past it fails, and the run goes on); without pytest-timeout the ``tests`` line says
so and only the suite's step limit applies. Exit status: pytest's, except 5 (no test collected),
which is 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
BENCH = "gpu_tests"
GPU_MARK = re.compile(r"mark\.gpu\b")


def gpu_test_files(tests_dir: Path = ROOT / "tests") -> list[str]:
    """The test files under ``tests_dir`` that hold gpu-marked tests, sorted (relative to the
    repository root when inside it)."""
    files = [path.resolve() for path in tests_dir.rglob("test_*.py")
             if GPU_MARK.search(path.read_text(errors="replace"))]
    return sorted(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path) for path in files)


def first_line(text: str | None) -> str | None:
    lines = (text or "").strip().splitlines()
    return lines[0][:300] if lines else None


class JsonLinesReporter:
    """A pytest plugin writing one flushed JSON line per finished test to ``stream``."""

    def __init__(self, stream: TextIO, per_test_timeout: float | None, timeout_note: str | None) -> None:
        self.stream = stream
        self.per_test_timeout = per_test_timeout
        self.timeout_note = timeout_note
        self.counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        self.seconds: dict[str, float] = {}

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps({"bench": BENCH, **record}) + "\n")
        self.stream.flush()

    def test(self, nodeid: str, outcome: str, message: str | None, phase: str) -> None:
        self.counts[outcome] += 1
        self.write({"kind": "test", "test": nodeid, "outcome": outcome, "phase": phase,
                    "seconds": round(self.seconds.get(nodeid, 0.0), 3), "message": message})

    @staticmethod
    def message(report: Any) -> str | None:
        if report.skipped and isinstance(report.longrepr, tuple):  # (file, line, "Skipped: reason")
            return first_line(str(report.longrepr[2]).removeprefix("Skipped: "))
        crash = getattr(report.longrepr, "reprcrash", None)
        return first_line(crash.message if crash is not None else str(report.longrepr or ""))

    def pytest_runtest_logreport(self, report: Any) -> None:
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + float(report.duration or 0.0)
        if report.when == "call":
            outcome = "skipped" if report.skipped else ("passed" if report.passed else "failed")
            self.test(report.nodeid, outcome, None if report.passed else self.message(report), "call")
        elif report.when == "setup" and not report.passed:
            self.test(report.nodeid, "skipped" if report.skipped else "error", self.message(report), "setup")
        elif report.when == "teardown" and report.failed:
            self.test(report.nodeid, "error", self.message(report), "teardown")

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.test(report.nodeid, "error", self.message(report), "collect")

    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        self.write({"kind": "tests", "total": sum(self.counts.values()), **self.counts, "exit_status": int(exitstatus),
                    "per_test_timeout_s": self.per_test_timeout, "per_test_timeout_note": self.timeout_note})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-test-timeout", type=float, default=60.0,
                        help="seconds per test through pytest-timeout (default 60; 0: none)")
    parser.add_argument("--tests-dir", type=Path, default=ROOT / "tests",
                        help="where to look for gpu-marked test files (default tests/)")
    args, pytest_args = parser.parse_known_args(argv)
    import pytest

    # The records keep the real stdout; everything else printed to fd 1 (pytest's report) goes to stderr.
    records = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    per_test, note = (args.per_test_timeout or None), None
    if per_test is not None and importlib.util.find_spec("pytest_timeout") is None:
        per_test, note = None, "pytest-timeout is not installed: no per-test limit (the suite's step limit applies)"
    elif per_test is not None:
        pytest_args = [f"--timeout={per_test:g}", "--timeout-method=signal", *pytest_args]
    if note:
        print(f"[{BENCH}] {note}", file=sys.stderr, flush=True)
    reporter = JsonLinesReporter(records, per_test, note)
    files = gpu_test_files(args.tests_dir)
    os.chdir(ROOT)
    rc = int(pytest.main(["-m", "gpu", "-q", "-p", "no:cacheprovider", *pytest_args, *files], plugins=[reporter]))
    records.close()
    return 0 if rc == 5 else rc  # 5: no test collected (none is gpu-marked): not a failure of the suite


if __name__ == "__main__":
    sys.exit(main())
