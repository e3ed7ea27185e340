"""Issue 29 for ``evaluate`` (and ``profile --out``): escaped manifest text, ``--out`` checks and the
folder lock, ``-q``/``--json`` silence, the first bad row named when none is usable. The fake
answerer stands in for the model throughout. (Awkward manifest files: test_evaluation_datasets.py.)"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from omnizip_cli.cli import app
from omnizip_cli.errors import UsageError
from omnizip_cli.evaluation.command import EvaluateOptions, run_evaluate
from omnizip_cli.evaluation.fake import FakeAnswererFactory
from omnizip_cli.evaluation.profile import check_out_dir
from omnizip_cli.filelock import exclusive_lock
from omnizip_cli.report.results_folder import LOCK, METRICS

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def copy_videos(folder: Path) -> None:
    for name in ("talking.mp4", "silent.mp4", "speech.wav"):
        shutil.copy(SAMPLES / name, folder / name)


def console_buffer() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=120, force_terminal=True, color_system=None), buffer


def evaluate(options: EvaluateOptions, console: Console | None = None, **kwargs: Any):
    return run_evaluate(options, {"model": "fake"}, FakeAnswererFactory(), console=console or console_buffer()[0],
                        show_progress=False, **kwargs)


# ----------------------------------------------------------------------------- 6: escapes


def test_escape_sequences_and_markup_from_the_manifest_are_shown_escaped(tmp_path: Path) -> None:
    copy_videos(tmp_path)
    manifest = tmp_path / "bad\x1b[2Jname.jsonl"
    rows = [
        {"id": "q\x1b[31m1", "video": "talking.mp4", "question": "Colour?", "options": ["red", "blue"],
         "answer": "A", "category": "\x1b[2Jwipe[/]"},
        {"id": "q2", "video": "speech.wav", "question": "Said?", "answer": "hello", "category": "[bold]b[/bold]"},
        {"video": "talking.mp4"},  # a bad row: the warning names the manifest
    ]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    console, buffer = console_buffer()
    evaluate(EvaluateOptions(dataset=manifest, out=tmp_path / "o\x1b]0;title\x07ut", settings=["full", "0.4"]),
             console)
    text = buffer.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "bad\\x1b[2Jname.jsonl" in text  # the warning
    assert "bad\\x1b[2Jname: 2 questions" in text  # the table's title
    assert "\\x1b[2Jwipe[/]" in text and "[bold]b[/bold]" in text  # categories, markup shown as text
    assert "o\\x1b]0;title\\x07ut" in text  # the last line names the folder


# ----------------------------------------------------------------------------- 12: --out


def test_out_that_is_a_file_or_cannot_be_written_is_refused_before_any_work(tmp_path: Path) -> None:
    manifest = tmp_path / "missing.jsonl"  # never read: --out is checked first
    (tmp_path / "file").write_text("mine")
    with pytest.raises(UsageError, match="exists and is not a folder"):
        evaluate(EvaluateOptions(dataset=manifest, out=tmp_path / "file"))
    with pytest.raises(UsageError, match="cannot be written"):
        evaluate(EvaluateOptions(dataset=manifest, out=Path("/proc/omnizip-results")))
    assert (tmp_path / "file").read_text() == "mine"


def test_a_folder_of_other_files_is_not_an_evaluate_results_folder(tmp_path: Path) -> None:
    copy_videos(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": 1}')
    options = EvaluateOptions(dataset=SAMPLES / "eval_example.jsonl", out=out, overwrite=True)
    with pytest.raises(UsageError, match="not an omnizip results folder"):
        evaluate(options)
    assert (out / "metrics.json").read_text() == '{"mine": 1}'


def test_a_second_evaluate_on_the_same_out_fails_at_once(tmp_path: Path) -> None:
    copy_videos(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    options = EvaluateOptions(dataset=tmp_path / "eval.jsonl", out=out, settings=["full"])
    shutil.copy(SAMPLES / "eval_example.jsonl", options.dataset)
    with exclusive_lock(out / LOCK):
        started = time.monotonic()
        with pytest.raises(UsageError, match="another omnizip evaluate is writing") as caught:
            evaluate(options)
        assert time.monotonic() - started < 5
    assert "\n" not in caught.value.one_line()
    assert not (out / "predictions.jsonl").exists()
    assert evaluate(options).answered == 10  # the lock is released with its holder


def test_two_evaluate_processes_on_one_out_write_no_duplicate_predictions(tmp_path: Path) -> None:
    copy_videos(tmp_path)
    shutil.copy(SAMPLES / "eval_example.jsonl", tmp_path / "eval.jsonl")
    out = tmp_path / "out"
    code = (
        "import sys; from pathlib import Path; from rich.console import Console\n"
        "from omnizip_cli.evaluation.command import EvaluateOptions, run_evaluate\n"
        "from omnizip_cli.evaluation.fake import FakeAnswererFactory\n"
        f"options = EvaluateOptions(dataset=Path({str(tmp_path / 'eval.jsonl')!r}), out=Path({str(out)!r}),"
        " settings=['full', '0.4'])\n"
        "run_evaluate(options, {'model': 'fake'}, FakeAnswererFactory(answer_delay=0.15),"
        " console=Console(stderr=True), show_progress=False)\n"
    )
    first = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "predictions.jsonl").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(UsageError, match="another omnizip evaluate is writing"):
            evaluate(EvaluateOptions(dataset=tmp_path / "eval.jsonl", out=out, settings=["full", "0.4"]))
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    lines = (out / "predictions.jsonl").read_text().splitlines()
    keys = [(json.loads(line)["item"], json.loads(line)["setting"]) for line in lines]
    assert len(keys) == len(set(keys)) == 20


def test_profile_out_refuses_a_folder_that_omnizip_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": 1}')
    with pytest.raises(UsageError, match="not an omnizip results folder"):
        check_out_dir(mine)
    evaluated = tmp_path / "evaluated"
    copy_videos(tmp_path)
    evaluate(EvaluateOptions(dataset=SAMPLES / "eval_example.jsonl", out=evaluated, settings=["full"],
                             video_dir=tmp_path))
    with pytest.raises(UsageError, match="holds the results of omnizip evaluate"):
        check_out_dir(evaluated)
    profiled = tmp_path / "profiled"  # written by profile: may be written again
    profiled.mkdir()
    (profiled / "config.json").write_text(json.dumps({"schema_version": 1, "command": "profile"}))
    (profiled / "metrics.json").write_text(json.dumps({"kind": "profile"}))
    check_out_dir(profiled)
    check_out_dir(tmp_path / "new")  # missing: created
    check_out_dir(tmp_path / "new")  # empty
    assert (mine / "metrics.json").read_text() == '{"mine": 1}'


# ----------------------------------------------------------------------------- the CLI: 12, 13


@pytest.fixture
def fake_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``omnizip evaluate`` with the fake answerer instead of the model; returns a manifest."""
    import omnizip_cli.evaluation.session_answerer as session_answerer

    monkeypatch.setattr(session_answerer, "SessionAnswererFactory", lambda **_kwargs: FakeAnswererFactory())
    copy_videos(tmp_path)
    shutil.copy(SAMPLES / "eval_example.jsonl", tmp_path / "eval.jsonl")
    with (tmp_path / "eval.jsonl").open("a") as handle:
        handle.write('{"video": "talking.mp4"}\n')  # a bad row: a warning, except with --json
    return tmp_path / "eval.jsonl"


def invoke(*args: str):
    return CliRunner().invoke(app, ["evaluate", *args, "--device", "cpu", "--setting", "full"],
                              catch_exceptions=False)


def test_quiet_prints_no_table_and_json_only_the_json(fake_cli: Path, tmp_path: Path) -> None:
    quiet = invoke(str(fake_cli), "--out", str(tmp_path / "q"), "-q")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == f"{tmp_path / 'q'}\n"
    assert "questions on" not in quiet.stderr and "answers in" not in quiet.stderr
    assert quiet.stderr.startswith("warning: 1 rows of eval.jsonl skipped") and quiet.stderr.count("\n") == 1

    as_json = invoke(str(fake_cli), "--out", str(tmp_path / "j"), "--json")
    assert as_json.exit_code == 0, as_json.output
    assert as_json.stderr == ""
    assert json.loads(as_json.stdout) == json.loads((tmp_path / "j" / METRICS).read_text())


@pytest.mark.parametrize("kind", ["file", "proc", "empty"])
def test_bad_out_is_a_usage_error(fake_cli: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "taken").write_text("mine")
    out = {"file": "taken", "proc": "/proc/omnizip-results", "empty": ""}[kind]
    result = invoke(str(fake_cli), "--out", out)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert sorted(p.name for p in work.iterdir()) == ["taken"]  # nothing written in the current folder


def test_empty_out_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    for command in (["evaluate", str(SAMPLES / "eval_example.jsonl")], ["profile", str(SAMPLES / "talking.mp4")]):
        done = subprocess.run([sys.executable, "-m", "omnizip_cli", *command, "--out", ""], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "empty" in lines[0], done.stderr
        assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 14: no usable rows


def test_a_dataset_without_usable_items_names_the_first_problem(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"video": "s3://bucket/v.mp4", "question": "Q?", "answer": "a"}) + "\n")
    with pytest.raises(UsageError, match="no usable items .*first: row 1: URLs are not supported"):
        evaluate(EvaluateOptions(dataset=path, out=tmp_path / "out"))
